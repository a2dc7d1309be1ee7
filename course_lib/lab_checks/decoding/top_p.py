"""The decoding lab's top-p (nucleus) check: random trials, then the boundary where the kept mass is exactly p.

The reference is the library's :func:`course_lib.decoding.processors.top_p_filter`, which equals HF's
``TopPLogitsWarper``: a token stays when the tokens *more* likely than it hold less than p (its tail, it
included, holds more than 1 - p). So the kept set is the smallest whose probability is at least p:

* the token that carries the running total over p stays (dropping it is the classic mistake, caught by
  the random trials, whose p is never near a cumulative sum);
* reaching p *exactly* is enough: with four tokens of 0.25 and p = 0.5, two stay. Random p never lands on
  a boundary, so :func:`check_top_p` ends with edge cases that do, on rows of equally likely tokens whose
  probabilities (1/2, 1/4, 1/8) and cumulative sums are exact in floating point: a filter that drops the
  token reaching p exactly, or keeps the one after it, fails there and is named. The same edge cases
  have p = 1 (every token stays) and a row with one dominant token (only it stays).

Where tokens tie, any of them may be the one kept: the edge cases compare how many of each probability a
row keeps (:func:`~.filter_results.same_kept_probabilities`). Not covered: min-p, ``min_tokens_to_keep`` > 1.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...decoding.processors import top_p_filter
from ..toolkit import Trial, fail, trials
from .filter_results import call_filter, difference, same_kept_probabilities

__all__ = ["check_top_p", "top_p_edge_cases"]

TRIALS = 8
EDGE_VOCAB = 8


def _nucleus_p(trial: Trial, probs: torch.Tensor) -> float:
    """A p at least 1e-3 away from every cumulative probability of every row (no rounding at the boundary)."""
    ranked_cumsum = probs.sort(dim=-1, descending=True).values.cumsum(-1).flatten().cpu()
    for _ in range(1000):
        p = 0.05 + 0.9 * float(torch.rand((), generator=trial.generator))
        if bool(((ranked_cumsum - p).abs() > 1e-3).all()):
            return round(p, 4)
    raise RuntimeError("could not draw p")  # unreachable for these sizes


def _edge_rows(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Rows of EDGE_VOCAB logits: m equally likely tokens (the rest -inf: probability exactly 0) at shuffled
    places, one dominant token, moderate random scores."""
    rows = {}
    for m in (8, 4, 2):
        row = torch.full((EDGE_VOCAB,), float("-inf"))
        row[torch.randperm(EDGE_VOCAB, generator=generator)[:m]] = 0.0
        rows[f"uniform{m}"] = row
    rows["dominant"] = torch.randn(EDGE_VOCAB, generator=generator)
    rows["dominant"][3] = 6.0  # probability ~0.98: alone above any p < 0.98
    rows["moderate"] = torch.randn(EDGE_VOCAB, generator=generator)
    return rows


def top_p_edge_cases(device: torch.device) -> list[tuple[torch.Tensor, float]]:
    """``(logits, p)`` pairs whose uniform rows have a cumulative sum exactly at p (p = 1: the last one)."""
    rows = _edge_rows(torch.Generator().manual_seed(1350))
    table = [(0.5, ("uniform8", "uniform4", "uniform2", "dominant")),
             (0.75, ("uniform8", "uniform4", "uniform2", "dominant")),
             (0.25, ("uniform8", "uniform4", "moderate")),
             (1.0, ("uniform8", "uniform4", "moderate", "dominant"))]
    return [(torch.stack([rows[name] for name in names]).to(device), p) for p, names in table]


def _judge_random_trial(kept, expected, logits, probs, p, context) -> None:
    # The least likely token the reference keeps is the one that carries the total to p.
    crossing = probs.masked_fill(~expected, 2.0).argmin(-1)  # (N,)
    without_crossing = expected.scatter(-1, crossing[:, None], False)
    if torch.equal(kept, without_crossing):
        fail(f"top_p_filter dropped the token that crosses p: {difference(kept, expected)} (on {context})",
             "the kept set must reach p, so the token that carries the running total to p or beyond stays: "
             "keep a token when the probability of the tokens *more* likely than it is below p "
             "(cumulative sum minus the token's own probability < p). The most likely token always stays.")
    _judge_any(kept, expected, logits, p, context)


def _judge_any(kept, expected, logits, p, context) -> None:
    if not bool(kept.any(-1).all()):
        fail(f"top_p_filter removes every token of a row (on {context})",
             "the most likely token must always stay, even when its probability alone exceeds p.")
    if torch.equal(kept, torch.isfinite(top_p_filter(-logits, p))):
        fail(f"top_p_filter keeps the least likely tokens (on {context})",
             "sort the probabilities in descending order (most likely first) before the cumulative sum.")
    if bool((kept.sum(-1) == expected.sum(-1) + 1).all()) and bool((kept | expected).eq(kept).all()):
        fail(f"top_p_filter keeps one token too many per row: {difference(kept, expected)} (on {context})",
             "stop at the token whose probability carries the total to p: the next one is no longer needed.")
    fail(f"top_p_filter: {difference(kept, expected)} (on {context})",
         "turn each row's scores into probabilities with softmax, sort them from most to least likely, and "
         "keep tokens while the probability of the tokens before them is below p.")


def _judge_edge_case(kept, expected, logits, probs, p, context) -> None:
    ranked = probs.double().sort(dim=-1, descending=True).values
    at_boundary = (ranked.cumsum(-1) == p).any(-1) & (ranked > 0).sum(-1).gt(1)  # rows reaching p exactly
    right = same_kept_probabilities(kept, expected, probs)
    got, want = kept.sum(-1), expected.sum(-1)
    wrong = (~right).nonzero()[:, 0].tolist()
    if wrong and all(at_boundary[row] for row in wrong):
        row = wrong[0]
        share = f"{int((probs[row] > 0).sum())} equally likely tokens of probability {probs[row].max().item():g}"
        if all(got[r] == want[r] - 1 for r in wrong):
            fail(f"top_p_filter drops the token that brings the total to exactly p: row {row} has {share}, "
                 f"the first {int(want[row])} of them hold exactly p={p} and all stay; you keep {int(got[row])} "
                 f"(on {context})",
                 "reaching p is enough: the kept set is the smallest whose probability is >= p, so the token that "
                 "brings the total to exactly p stays. Keep a token when the tokens more likely than it hold less "
                 "than p (cumsum - probs < p), not only when its own cumulative sum is below p.")
        if all(got[r] == want[r] + 1 for r in wrong):
            fail(f"top_p_filter keeps a token past p: row {row} has {share}, the first {int(want[row])} of them "
                 f"already hold exactly p={p}, yet you keep {int(got[row])} (on {context})",
                 "once the kept tokens hold p (exactly p is enough) the next token is not needed: keep a token "
                 "when the tokens more likely than it hold *less than* p (cumsum - probs < p, strictly, not <=), "
                 "as HF's TopPLogitsWarper does.")
    if p == 1.0 and not bool(kept.any(-1).all() and right.all()):
        fail(f"with p=1 every token of nonzero probability stays: {difference(kept, expected)} (on {context})",
             "p = 1 asks for the whole distribution: a token stays while the tokens before it hold less than 1, "
             "which is true of every token but those of probability 0.")
    _judge_any(kept, expected, logits, p, context)


def check_top_p(top_p: Callable) -> None:
    """``top_p_filter(logits, p)`` keeps the smallest set of most likely tokens whose probability reaches p."""
    for trial in trials(TRIALS, seed=1300):
        rows, vocab = trial.randint(1, 4), trial.randint(4, 30)
        logits = trial.randn(rows, vocab) * (1 + trial.index % 3)
        probs = logits.softmax(-1)
        if trial.index == TRIALS - 1:  # p below every row's largest probability: only the top token stays
            p = round(float(probs.max(-1).values.min()) / 2, 4)
        else:
            p = _nucleus_p(trial, probs)
        context = f"logits {tuple(logits.shape)}, p={p}"
        kept = call_filter(top_p, logits, p, "top_p_filter", context)
        expected = torch.isfinite(top_p_filter(logits, p))
        if not torch.equal(kept, expected):
            _judge_random_trial(kept, expected, logits, probs, p, context)
    for logits, p in top_p_edge_cases(next(trials(1)).device):
        context = f"logits {[[round(x, 2) for x in row] for row in logits.cpu().tolist()]}, p={p}"
        kept = call_filter(top_p, logits, p, "top_p_filter", context)
        expected = torch.isfinite(top_p_filter(logits, p))
        probs = logits.softmax(-1)
        if not bool(same_kept_probabilities(kept, expected, probs).all()):
            _judge_edge_case(kept, expected, logits, probs, p, context)
