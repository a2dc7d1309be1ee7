"""The attention lab's mask checks: ``scaled_dot_product_attention`` with a boolean mask, and ``causal_mask``.

:func:`check_mask` (``test_sdpa_mask``) first runs random masks with an allowed and a blocked key in
every row (one mask broadcast over batch and heads, or one per head), then the edge cases: a query
whose every key is masked, a single key, ``d = 1``, more queries than keys, a causal mask. It asks:

* blocked keys get weight 0 and allowed keys a positive weight;
* the allowed weights of each query still sum to 1 (the mask acts on the scores, before the
  softmax; masking the weights afterwards is named); a softmax over the query axis is accepted
  (the distribution cell grades the axis), and so is any scale (the scaling cell's);
* a query with no allowed key attends to nothing: its weights and output are 0, not NaN (the
  course's convention, as :func:`course_lib.scaled_dot_product_attention`); NaN and the uniform
  weights of a large negative fill instead of -inf are named;
* the output uses the masked weights: weights returned from before the mask, or an output computed
  from them, are named. Any other output mistake is the output cell's business.

Inverted and ignored masks are named too. :func:`check_causal_mask` (``test_causal_mask``) compares
``causal_mask(T)`` with the reference, naming .triu(), a missing diagonal and an inverted mask.
Not covered: unmasked attention (:mod:`.sdpa`), heads (:mod:`.heads`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ...attention import masks
from ..toolkit import Trial, call_student, diagnose, expect_tensor, fail, is_close, trials
from .sdpa import TRIALS, context_of, random_qkv, run_attention

__all__ = ["check_causal_mask", "check_mask"]

ZERO = 1e-7


def _random_mask(trial: Trial, t_q: int, t_k: int) -> torch.Tensor:
    """(T_q, T_k) boolean mask with a True in every row and column and a False in every row."""
    for _ in range(10_000):
        mask = trial.rand_bool(t_q, t_k)
        if mask.any(-1).all() and mask.any(-2).all() and (~mask).any(-1).all():
            return mask
    raise RuntimeError(f"could not draw a {t_q}x{t_k} mask")  # unreachable for the sizes used here


def _with_empty_rows(trial: Trial, t_q: int, t_k: int, empty: list[int]) -> torch.Tensor:
    """A random mask whose rows ``empty`` are all False; every column keeps a True elsewhere."""
    mask = torch.ones(t_q, t_k, dtype=torch.bool, device=trial.device)
    full = [row for row in range(t_q) if row not in empty]
    mask[full] = _random_mask(trial, len(full), t_k) if t_k > 1 else True
    mask[empty] = False
    return mask


def _mask_cases(seed: int) -> Iterator[tuple]:
    """Random masks first (their failures say the most), then the edge cases."""
    for trial in trials(TRIALS, seed=seed):
        q, k, v = random_qkv(trial, heads_axis=True)
        t_q, t_k = q.shape[-2], k.shape[-2]
        if trial.index % 2 == 0:  # one (T_q, T_k) mask broadcast over batch and heads
            mask = _random_mask(trial, t_q, t_k)
        else:  # a different mask for every batch entry and head
            mask = torch.stack([_random_mask(trial, t_q, t_k) for _ in range(q.shape[:-2].numel())])
            mask = mask.view(*q.shape[:-2], t_q, t_k)
        yield q, k, v, mask
    edge = iter(trials(5, seed=seed + 50))
    trial = next(edge)
    q, k, v = random_qkv(trial, heads_axis=True, sizes=(4, 6, 8, 5))
    yield q, k, v, _with_empty_rows(trial, 4, 6, [1])  # query 1 may attend to nothing
    trial = next(edge)
    q, k, v = random_qkv(trial, heads_axis=False, sizes=(3, 1, 4, 2))  # a single key, blocked for query 1
    yield q, k, v, torch.tensor([[True], [False], [True]], device=trial.device)
    trial = next(edge)
    q, k, v = random_qkv(trial, heads_axis=False, sizes=(3, 4, 1, 2))  # d = 1
    yield q, k, v, _random_mask(trial, 3, 4)
    trial = next(edge)
    q, k, v = random_qkv(trial, heads_axis=True, sizes=(6, 3, 4, 5))  # more queries than keys, one empty row
    yield q, k, v, _with_empty_rows(trial, 6, 3, [5])
    trial = next(edge)
    q, k, v = random_qkv(trial, heads_axis=True, sizes=(5, 5, 8, 3))
    yield q, k, v, masks.causal_mask(5, device=trial.device)


def _sums_to_one(sums: torch.Tensor) -> bool:
    return sums.numel() == 0 or is_close(sums, torch.ones_like(sums))


def check_mask(attention: Callable) -> None:
    """With a boolean mask (True = may attend): blocked keys get 0, the allowed ones share all the weight,
    a query with no allowed key gets zero weights and output, and the output uses the masked weights."""
    for q, k, v, mask in _mask_cases(400):
        output, weights = run_attention(attention, q, k, v, mask)
        allowed = mask.expand(weights.shape)
        empty = ~allowed.any(-1)  # (..., T_q): queries that may attend to nothing
        nothing = sorted(set(torch.nonzero(empty)[:, -1].tolist()))
        context = context_of(q, k, v, mask) + (f"; query {', '.join(map(str, nothing))} may attend to no key"
                                               if nothing else "")
        nan_rows = torch.isnan(weights).any(-1)
        if nan_rows.any() and bool((nan_rows <= empty).all()):
            fail(f"the weights of a query whose every key is masked are NaN (on {context})",
                 "a softmax over only -inf is 0/0 = NaN. Such a query attends to nothing: its weights and its output "
                 "must be 0 (the course's convention); after the softmax set the weights where the mask is False "
                 "to 0, then compute the output from those weights.")
        if nan_rows.any():
            fail(f"the weights contain NaN (on {context})",
                 "every such query may attend to at least one key, so its scores are not all -inf; "
                 "fill the scores with -inf only where mask is False.")
        live = weights[~empty]  # (n, T_k): the queries with an allowed key
        live_allowed = allowed[~empty]
        blocked_ok = bool((live[~live_allowed].abs() <= ZERO).all())
        allowed_ok = bool((live[live_allowed] > 0).all())
        rows_ok = _sums_to_one(live.sum(-1))
        columns_ok = _sums_to_one(weights.sum(-2)[allowed.any(-2)])  # softmax over the queries: another cell's
        empty_ok = bool((weights[empty].abs() <= ZERO).all())
        if blocked_ok and allowed_ok and (rows_ok or columns_ok) and empty_ok:
            _check_masked_output(attention, q, k, v, mask, output, weights, empty, context)
            continue
        if (weights[allowed].abs() <= ZERO).all() and (weights[~allowed & ~empty[..., None]] > 0).all():
            fail("the mask is inverted: weights are 0 where mask is True and positive where it is False "
                 f"(on {context})",
                 "in this course (as in torch.nn.functional.scaled_dot_product_attention) True means 'may attend', "
                 "so block the positions where the mask is False: scores.masked_fill(~mask, float('-inf')). "
                 "torch.nn.MultiheadAttention uses the opposite convention (True = blocked).")
        unmasked_output, unmasked_weights = run_attention(attention, q, k, v)
        if is_close(weights, unmasked_weights):
            if not is_close(output, unmasked_output):
                fail(f"the weights you return are from before the mask: they ignore it, while your output does not "
                     f"(on {context})",
                     "return the weights the output is made of: mask the scores, take the softmax, and return "
                     "those weights with weights @ v.")
            fail(f"the mask has no effect: weights are the same with and without it (on {context})",
                 "apply the mask to the scores before the softmax: scores.masked_fill(~mask, float('-inf')).")
        if blocked_ok and allowed_ok and not empty_ok:
            rows = weights[empty]
            uniform = is_close(rows, torch.full_like(rows, 1.0 / rows.shape[-1]))
            fail(f"a query whose every key is masked should get weight 0 everywhere, got "
                 f"{'uniform weights 1/T_k' if uniform else 'non-zero weights'} (on {context})",
                 ("a large negative number instead of -inf leaves such a row's scores equal, so the softmax makes "
                  "them uniform. " if uniform else "")
                 + "Such a query attends to nothing (the course's convention): after the softmax set the weights "
                   "where the mask is False to 0.")
        if blocked_ok and allowed_ok and is_close(weights, unmasked_weights * allowed):
            fail(f"the mask is applied after the softmax: the blocked weights are 0 but each query's remaining "
                 f"weights no longer sum to 1 (on {context})",
                 "mask the *scores* before the softmax, scores.masked_fill(~mask, float('-inf')), so the allowed "
                 "keys share all of the weight.")
        if not blocked_ok:
            fail(f"weights where mask is False should be 0, the largest is {live[~live_allowed].abs().max().item():.3g} "
                 f"(on {context})",
                 "set the scores to -inf where mask is False *before* the softmax, so exp(-inf) = 0.")
        if not allowed_ok:
            fail(f"some weights where mask is True are 0 (on {context})",
                 "only positions where mask is False may be removed; True means 'may attend'.")
        fail(f"the weights of a query over its allowed keys do not sum to 1 (on {context})",
             "mask the scores before the softmax, scores.masked_fill(~mask, float('-inf')), so the allowed keys "
             "share all of the weight.")


def _check_masked_output(attention, q, k, v, mask, output, weights, empty, context) -> None:
    """The output of a correctly masked call: made of the masked weights, 0 for a query with no allowed key.
    An output that is not ``weights @ v`` at all is the output cell's business."""
    own = weights @ v
    live = ~empty
    if is_close(output[live], own[live]):
        if empty.any() and not bool((output[empty].abs() <= ZERO).all()):
            fail(f"the output of a query whose every key is masked should be 0, got "
                 f"{'NaN' if torch.isnan(output[empty]).any() else 'non-zero values'} (on {context})",
                 "such a query attends to nothing: compute the output from the weights after you set that "
                 "query's weights to 0 (output = weights @ v, with the weights you return).")
        return
    if is_close(output, run_attention(attention, q, k, v)[0]):
        fail(f"the output ignores the mask: it equals the output without a mask, though the weights are masked "
             f"(on {context})",
             "compute the output from the masked weights, the ones you return: output = weights @ v.")


def check_causal_mask(causal_mask: Callable) -> None:
    """``causal_mask(T)`` is the (T, T) boolean lower-triangular mask, diagonal included."""
    for size in (5, 8, 13, 1, 2, 3):  # a larger size first: its failure message says more
        mask = call_student(causal_mask, size, name="causal_mask")
        context = f"causal_mask({size})"
        expect_tensor(mask, name=context, shape=(size, size))
        expected = masks.causal_mask(size)
        pattern = mask.detach().cpu()
        if mask.dtype != torch.bool:
            fail(f"{context} has dtype {mask.dtype}, expected torch.bool",
                 "return a boolean mask, True where attending is allowed "
                 "(e.g. torch.ones(T, T, dtype=torch.bool).tril()); "
                 "float 0/-inf masks are the additive form, a different convention.")
        if torch.equal(pattern, expected):
            continue
        ones = torch.ones(size, size, dtype=torch.bool)
        diagnose(pattern, [
            (ones.triu(), f"{context} is upper triangular: query i would attend to keys i..T-1, the future",
             "a causal mask lets query i see keys j <= i: use .tril(), not .triu()."),
            (ones.tril(-1), f"{context} has False on the diagonal: a position may not attend to itself",
             "use .tril() (diagonal included), not .tril(-1); the first query would otherwise attend to nothing."),
            (~expected, f"{context} is inverted: True above the diagonal, False on and below it",
             "True means 'may attend' (as in torch's scaled_dot_product_attention): query i may see keys 0..i. "
             "torch.nn.MultiheadAttention's attn_mask uses the opposite convention."),
        ], matches=torch.equal)
        fail(f"{context} is not the lower-triangular mask: got {pattern.int().tolist()}",
             "entry [i, j] must be True exactly when j <= i.")
