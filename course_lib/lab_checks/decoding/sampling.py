"""The decoding lab's sampling checks: the top-k filter and the filtered sampling distribution.

The references are the library's :func:`course_lib.decoding.processors.top_k_filter` and
:func:`~course_lib.decoding.processors.top_p_filter` (which equal HF's warpers) and, for
``filtered_distribution``, :func:`reference_distribution`: the order of :func:`course_lib.decoding.sample`
(temperature, top-k, top-p, softmax). The top-p check is :mod:`.top_p`; calling a filter and reading what it
kept (a removed score is -inf or any number <= -1e9), :mod:`.filter_results`.

Each classic mistake costs only its own cell:

* :func:`check_top_k` has no ties, :func:`check_top_k_ties` only ties at the k-th score, where
  thresholds at the k-th and the (k+1)-th score agree: keeping k+1 tokens loses the first, keeping
  exactly k tokens of a tie the second. Both end with edge cases (k = 1, k >= V) and name a top-k
  over the rows (``dim=0``) instead of the vocabulary;
* ``filtered_distribution`` is checked with the reference filters in its namespace
  (:meth:`~course_lib.lab_checks.rubric.Rubric.run`), so a wrong filter costs only its own cell;
  :func:`check_distribution_sums_to_one` checks the sums only, :func:`check_distribution_filters` the
  distribution up to a factor per row (a missing renormalisation passes it) and names a wrong order
  of the steps with :func:`~course_lib.lab_checks.toolkit.diagnose`.

Not covered: sampling itself (drawing tokens), min-p and repetition penalties, the rubric (:mod:`.decoding`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...decoding.processors import top_k_filter, top_p_filter
from ..toolkit import Trial, call_student, diagnose, expect_close, expect_tensor, fail, is_close, trials
from .filter_results import call_filter, difference

__all__ = [
    "check_top_k", "check_top_k_ties", "check_distribution_sums_to_one", "check_distribution_filters",
    "reference_distribution", "top_k_filter", "top_p_filter",
]

TRIALS = 8


# --- references ------------------------------------------------------------------------------------

def reference_distribution(logits, temperature=1.0, top_k=None, top_p=None, *, order=("t", "k", "p")):
    """Sampling probabilities as :func:`course_lib.decoding.sample` computes them (``order`` varies it
    for the checks' diagnoses: "t" temperature, "k" top-k, "p" top-p)."""
    scores = logits
    for step in order:
        if step == "t":
            scores = scores / temperature
        elif step == "k" and top_k is not None:
            scores = top_k_filter(scores, top_k)
        elif step == "p" and top_p is not None:
            scores = top_p_filter(scores, top_p)
    return scores.softmax(dim=-1)


# --- top-k ------------------------------------------------------------------------------------------

AXIS_HINT = ("k counts the tokens of a row: torch.topk(logits, k, dim=-1) over the last (vocabulary) axis "
             "gives each row's k-th largest score; dim=0 compares the rows with each other.")


def _top_k_over_rows(logits: torch.Tensor, k: int) -> torch.Tensor | None:
    """What a top-k over dim=0 keeps (the k largest of each column), or None where that would raise (k > N)."""
    return torch.isfinite(top_k_filter(logits.T, k).T) if k <= logits.shape[0] else None


def _top_k_edge_cases(device: torch.device) -> list[tuple[torch.Tensor, int]]:
    """k = 1 (greedy) on several rows, and k = V - 1, on fixed logits without ties."""
    generator = torch.Generator().manual_seed(1150)
    logits = torch.randn(3, 9, generator=generator) * 2
    return [(logits.to(device), 1), (logits[:2].to(device), 8)]


def check_top_k(top_k: Callable) -> None:
    """``top_k_filter(logits, k)`` keeps the k largest scores of each row (no ties here), -inf elsewhere."""
    cases = []
    for trial in trials(TRIALS, seed=1100):
        rows, vocab = trial.randint(1, 4), trial.randint(5, 30)
        logits = trial.randn(rows, vocab) * 2
        k = trial.randint(2, vocab - 1) if trial.index < TRIALS - 2 else (vocab, vocab + 3)[trial.index % 2]
        cases.append((logits, k))
    for logits, k in cases + _top_k_edge_cases(cases[0][0].device):
        vocab = logits.shape[-1]
        context = f"logits {tuple(logits.shape)}, k={k}"
        kept = call_filter(top_k, logits, k, "top_k_filter", context)
        expected = torch.isfinite(top_k_filter(logits, k))
        if torch.equal(kept, expected):
            continue
        counts = kept.sum(-1)
        if k >= vocab:
            fail(f"with k={k} ≥ V={vocab} every token must be kept: {difference(kept, expected)} (on {context})",
                 "when k is at least the vocabulary size there is nothing to remove: clamp k to logits.shape[-1].")
        over_rows = _top_k_over_rows(logits, k)
        if over_rows is not None and torch.equal(kept, over_rows):
            fail(f"top_k_filter keeps the k largest scores of each column, over the rows (dim=0), instead of "
                 f"each row's (on {context})", AXIS_HINT)
        if bool((counts == k + 1).all()):
            fail(f"top_k_filter keeps k+1 tokens per row instead of k (on {context})",
                 "off by one: the k-th largest score is torch.topk(logits, k).values[..., -1] "
                 "(or sorted scores[..., k - 1], counting from 0); keep the scores >= it.")
        if bool((counts == k - 1).all()):
            fail(f"top_k_filter keeps k-1 tokens per row instead of k (on {context})",
                 "keep the scores >= the k-th largest one, the k-th itself included.")
        if torch.equal(kept, torch.isfinite(top_k_filter(-logits, k))):
            fail(f"top_k_filter keeps the k smallest scores instead of the k largest (on {context})",
                 "torch.topk returns the largest values by default; keep those.")
        fail(f"top_k_filter: {difference(kept, expected)} (on {context})",
             "each row (one sequence) is filtered on its own, over the last axis: keep the k highest scores of the row.")


def _tied_logits(trial: Trial):
    """Integer-valued logits ``(N, V)`` and a k whose k-th and (k+1)-th largest scores tie in every row."""
    for _ in range(1000):
        rows, vocab = trial.randint(1, 3), trial.randint(6, 12)
        logits = torch.randint(0, 4, (rows, vocab), generator=trial.generator).float()
        k = trial.randint(1, vocab - 2)
        ranked = logits.sort(dim=-1, descending=True).values
        if bool((ranked[:, k - 1] == ranked[:, k]).all()):
            return logits.to(trial.device), k
    raise RuntimeError("could not draw tied logits")  # unreachable for these sizes


def check_top_k_ties(top_k: Callable) -> None:
    """Scores tied with the k-th largest stay, as in the library and HF: a row may keep more than k."""
    for trial in trials(TRIALS // 2, seed=1200):
        logits, k = _tied_logits(trial)
        context = f"logits {logits.cpu().tolist()}, k={k}"
        kept = call_filter(top_k, logits, k, "top_k_filter", context)
        expected = torch.isfinite(top_k_filter(logits, k))
        if torch.equal(kept, expected):
            continue
        over_rows = _top_k_over_rows(logits, k)
        if over_rows is not None and torch.equal(kept, over_rows):
            fail(f"top_k_filter keeps the k largest scores of each column, over the rows (dim=0), instead of "
                 f"each row's (on {context})", AXIS_HINT)
        hint = ("keep every score >= the k-th largest (a threshold), not the k positions torch.topk returns: "
                "tokens tied with the k-th are all kept, as HF's TopKLogitsWarper does.")
        if bool((kept.sum(-1) == k).all()):
            fail(f"top_k_filter keeps exactly k tokens although several tie with the k-th largest score: "
                 f"{difference(kept, expected)} (on {context})", hint)
        fail(f"top_k_filter: {difference(kept, expected)} (on {context})", hint)


# --- the sampling distribution ----------------------------------------------------------------------

def _sampling_settings(trial: Trial, vocab: int):
    temperature = (0.5, 0.7, 1.5, 2.0)[trial.index % 4]
    top_k = None if trial.index % 3 == 2 else trial.randint(3, vocab - 1)
    top_p = None if trial.index % 4 == 3 else (0.6, 0.75, 0.9)[trial.index % 3]
    return temperature, top_k, top_p


def _call_distribution(distribution: Callable, trial: Trial):
    rows, vocab = trial.randint(1, 4), trial.randint(8, 30)
    logits = trial.randn(rows, vocab) * 2
    settings = _sampling_settings(trial, vocab)
    context = (f"logits {tuple(logits.shape)}, temperature={settings[0]}, top_k={settings[1]}, "
               f"top_p={settings[2]}")
    probs = call_student(distribution, logits, *settings, name="filtered_distribution")
    expect_tensor(probs, name="filtered_distribution(...)", shape=tuple(logits.shape), context=context)
    return logits, settings, probs.detach().to(logits.device).float(), context


def check_distribution_sums_to_one(distribution: Callable) -> None:
    """The returned probabilities are ≥ 0 and each row sums to 1 after filtering."""
    for trial in trials(TRIALS, seed=1400):
        logits, settings, probs, context = _call_distribution(distribution, trial)
        if torch.isnan(probs).any():
            fail(f"filtered_distribution returns NaN (on {context})",
                 "at least one token survives the filters; NaN comes from a softmax over a row of -inf "
                 "or from dividing by a zero sum.")
        if (probs < 0).any() or torch.isinf(probs).any():
            fail(f"filtered_distribution returns values < 0 or infinite: scores, not probabilities (on {context})",
                 "finish with a softmax over the last axis: removed tokens (-inf) then get probability 0.")
        sums = probs.sum(-1)
        if is_close(sums, torch.ones_like(sums)):
            continue
        reference = reference_distribution(logits, *settings)
        full = (logits / settings[0]).softmax(-1)
        if bool((sums <= 1 + 1e-5).all()) and is_close(probs, full * (reference > 0)):
            fail(f"the probabilities do not sum to 1 (row sums {[round(s, 4) for s in sums.tolist()]}): the kept "
                 f"tokens still have their probabilities before filtering (on {context})",
                 "you forgot to renormalize: after removing tokens the rest must be rescaled to sum to 1. Set the "
                 "removed scores to -inf and take the softmax once, at the end (or divide by the row sums).")
        fail(f"the probabilities do not sum to 1 (row sums {[round(s, 4) for s in sums.tolist()]}) (on {context})",
             "each row is a distribution over the next token: return torch.softmax(filtered_scores, dim=-1).")


def check_distribution_filters(distribution: Callable) -> None:
    """Up to renormalisation, the distribution is the library's: temperature, then top-k, then top-p."""
    for trial in trials(TRIALS, seed=1500):
        logits, settings, probs, context = _call_distribution(distribution, trial)
        if torch.isnan(probs).any() or (probs < 0).any() or not bool((probs.sum(-1) > 0).all()):
            fail(f"filtered_distribution does not return probabilities (on {context})",
                 "return torch.softmax(filtered_scores, dim=-1): non-negative, at least one token per row.")
        shape = probs / probs.sum(-1, keepdim=True)  # what this cell grades: which tokens, in which proportions
        reference = reference_distribution(logits, *settings)
        if is_close(shape, reference):
            continue
        temperature = settings[0]

        def mistaken(order=("t", "k", "p"), logits_scale=1.0):  # computed only if no earlier diagnosis matched
            return lambda: reference_distribution(logits * logits_scale, *settings, order=order)

        diagnose(shape, [
            (mistaken(("k", "p", "t")), "the temperature is applied after the filters",
             "divide the logits by the temperature first: top-p depends on the shape of the distribution, "
             "so the temperature changes which tokens it keeps (HF's order: temperature, top-k, top-p)."),
            (mistaken(("t", "p", "k")), "top-p is applied before top-k",
             "apply top-k first, then top-p on what top-k left (the library's and HF's order)."),
            (mistaken(("t", "k")), "top-p is not applied", "apply top_p_filter when top_p is not None."),
            (mistaken(("t", "p")), "top-k is not applied", "apply top_k_filter when top_k is not None."),
            (mistaken(("k", "p")), "the temperature is not applied",
             "divide the logits by the temperature before filtering."),
            (mistaken(logits_scale=temperature ** 2), "the logits are multiplied by the temperature instead of divided",
             "logits / temperature: a temperature below 1 sharpens the distribution."),
        ], context=context)
        expect_close(shape, reference, name="filtered_distribution(...) / its row sums", context=context,
                     hint="temperature (logits / temperature), then top_k_filter, then top_p_filter, then softmax.")
