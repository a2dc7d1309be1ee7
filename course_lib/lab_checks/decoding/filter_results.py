"""Calling a student's top-k or top-p filter and reading what it kept: shared by :mod:`.sampling` and :mod:`.top_p`.

* :func:`call_filter` calls the filter through :func:`~course_lib.lab_checks.toolkit.call_student` and fails a
  filter that changes its input logits in place (:func:`refusing_in_place`), or that raised because it ran
  ``torch.topk`` over the rows or with ``k`` larger than the vocabulary, with a hint that names the cause;
* :func:`kept_tokens` turns the filtered scores into the mask of kept tokens, accepting any removed score at or
  below :data:`REMOVED_AT_MOST` (``-inf``, ``-1e9``, ``torch.finfo(dtype).min``: the same probabilities after the
  softmax) and naming the classic wrong forms (0 for removed tokens, probabilities, changed scores);
* :func:`difference` says in which row a kept mask differs from the expected one, :func:`same_kept_probabilities`
  compares kept sets where tied tokens make several sets equally right.

Not covered: which tokens a filter must keep (the checks in :mod:`.sampling` and :mod:`.top_p`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..toolkit import CheckFailed, call_student, clone_nested, expect_tensor, fail, is_close

__all__ = ["REMOVED_AT_MOST", "call_filter", "kept_tokens", "difference", "refusing_in_place",
           "same_kept_probabilities"]

REMOVED_AT_MOST = -1e9  # a removed token's score: -inf, or a number so negative that its probability is exactly 0

IN_PLACE_HINT = ("work on a copy: logits.masked_fill(remove, float('-inf')) returns a new tensor, while "
                 "masked_fill_, logits[remove] = ... or logits -= ... change the caller's logits (in generate, "
                 "the model's own output, which later steps read again).")


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return [tensor for item in items for tensor in _tensors(item)]


def refusing_in_place(function: Callable, name: str, what: str = "its input") -> Callable:
    """``function``, failing (:class:`~course_lib.lab_checks.toolkit.CheckFailed`) when a call changes a tensor
    it was given. Called through ``call_student``, which copies the inputs first, so the check's own tensors
    stay intact either way; this only tells the student. (A sandboxed student function cannot be watched
    this way: its inputs are copied into another process.)"""
    def watched(*args, **kwargs):
        before = _tensors(clone_nested((args, kwargs)))
        result = function(*args, **kwargs)
        after = _tensors((args, kwargs))
        if any(old.shape != new.shape or not torch.equal(old, new.detach()) for old, new in zip(before, after)):
            fail(f"{name} modifies {what} in place: a graded function must not modify its inputs", IN_PLACE_HINT)
        return result

    watched.__name__ = name
    return watched


def call_filter(function: Callable, logits: torch.Tensor, value, name: str, context: str) -> torch.Tensor:
    """``name(logits, value)`` for a top-k (``value`` = k) or top-p filter; returns its kept mask (:func:`kept_tokens`)."""
    rows, vocab = logits.shape
    try:
        result = call_student(refusing_in_place(function, name, "its input logits"), logits, value, name=name)
    except CheckFailed as error:
        out_of_range = "out of range" in error.problem
        if name == "top_k_filter" and out_of_range and value >= vocab:  # e.g. torch.topk with k > V
            fail(f"{error.problem} (on {context})", "k may exceed the vocabulary size V: then every token stays "
                 "(clamp it: k = min(k, logits.shape[-1])).")
        if name == "top_k_filter" and out_of_range and value > rows:
            fail(f"{error.problem} (on {context})",
                 f"k counts the tokens of a row, so torch.topk(logits, k, dim=-1) runs over the last (vocabulary) "
                 f"axis; over dim=0, the rows, there are only N = {rows} entries, fewer than k = {value}.")
        raise
    return kept_tokens(result, logits, f"{name}(logits, {value})", context)


def kept_tokens(result, logits: torch.Tensor, name: str, context: str) -> torch.Tensor:
    """Boolean mask of the tokens ``result`` keeps; fail unless removed scores are ``<=`` :data:`REMOVED_AT_MOST`
    (-inf or a huge negative number) and kept ones unchanged."""
    expect_tensor(result, name=name, shape=tuple(logits.shape), context=context)
    result = result.detach().to(logits.device).float()  # float64's finfo.min becomes -inf: removed either way
    if torch.isnan(result).any():
        fail(f"{name} contains NaN (on {context})", "removed tokens get -inf; no division or softmax is needed here.")
    if (result == float("inf")).any():
        fail(f"{name} contains +inf (on {context})", "a removed token's score is -inf (float('-inf')), not +inf.")
    kept = result > REMOVED_AT_MOST
    if is_close(result[kept], logits[kept]):
        return kept
    changed = ~torch.isclose(result, logits, atol=1e-5, rtol=1e-4)
    if bool((result[changed] == 0).all()):
        fail(f"{name} sets removed tokens to 0 instead of -inf (on {context})",
             "0 is an ordinary score (probability ∝ e⁰ = 1); only -inf gives a token probability 0 after softmax: "
             "logits.masked_fill(remove, float('-inf')).")
    ones = torch.ones(len(result), device=result.device)
    if is_close(result.exp().sum(-1), ones) or is_close(result.sum(-1), ones):
        fail(f"{name} returns probabilities, not scores (on {context})",
             "return the logits themselves, with -inf at the removed tokens: the softmax comes later.")
    fail(f"{name} changes the scores of the tokens it keeps (on {context})",
         "return a copy of the logits with -inf at the removed tokens and every other score unchanged.")


def difference(kept: torch.Tensor, expected: torch.Tensor) -> str:
    """``'row 1 keeps tokens [0, 3], expected [0, 3, 4]'`` for the first row where the masks differ."""
    row = int((kept != expected).any(-1).nonzero()[0, 0])
    return (f"row {row} keeps tokens {kept[row].nonzero()[:, 0].tolist()}, "
            f"expected {expected[row].nonzero()[:, 0].tolist()}")


def same_kept_probabilities(kept: torch.Tensor, expected: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Per row, whether both masks keep the same probabilities (as a multiset): where tokens tie, any of them
    may be the one kept, so only how many of each probability stay is compared."""
    def kept_sorted(mask):
        return probs.masked_fill(~mask, -1.0).sort(dim=-1, descending=True).values

    return (kept_sorted(kept) == kept_sorted(expected)).all(dim=-1)
