"""Lab 05 (decoding): the checks' edge cases and the forms of an answer they accept or name.

The top-p edge cases put p exactly on a cumulative sum (the library's and HF's boundary: reaching p is
enough); filters written in other forms (another dtype, a huge negative number for -inf, a non-contiguous
result, in-place assignments on a copy, other routes to the same mask) pass; a filter that writes into its
input, a top-k over the rows, a per-beam top-k that cannot run when V < K and tokens left as flat indices are
named; beams are matched to the reference's by score, ties interchangeable. What the library pins and the
beam-cache rules: ``test_decoding.py``; the fixtures, graded end to end: ``test_structure.py``.
"""
from __future__ import annotations

import math
import re

import pytest
import torch
from transformers import TopPLogitsWarper

from course_lib.decoding.processors import top_k_filter, top_p_filter
from course_lib.lab_checks.decoding import (
    beam_search as decoding_beam_search, beam_steps, sampling as decoding_sampling, top_p as decoding_top_p,
)
from course_lib.lab_checks.decoding.filter_results import same_kept_probabilities
from course_lib.lab_checks.toolkit import CheckFailed

# --- the top-p boundary ------------------------------------------------------------------------------------

def test_the_top_p_edge_cases_put_p_exactly_on_a_cumulative_sum():
    """The rows of m equally likely tokens have exact probabilities and cumulative sums in float32, so p lands on
    one of them exactly, and the library keeps the smallest set that reaches p: ceil(p * m) tokens."""
    boundaries = 0
    for logits, p in decoding_top_p.top_p_edge_cases(torch.device("cpu")):
        kept = torch.isfinite(top_p_filter(logits, p))
        for row_kept, probs in zip(kept, logits.softmax(-1)):
            m = int((probs > 0).sum())
            if bool((probs[probs > 0] == 1 / m).all()):
                assert int(row_kept.sum()) == math.ceil(p * m)
                if p * m == int(p * m):
                    assert bool((probs.sort(descending=True).values.cumsum(0) == p).any())
                    boundaries += 1
    assert boundaries >= 8


def test_the_top_p_boundary_is_hfs():
    """HF's TopPLogitsWarper keeps as many tokens of each probability as the library on the edge cases."""
    for logits, p in decoding_top_p.top_p_edge_cases(torch.device("cpu")):
        ours, theirs = torch.isfinite(top_p_filter(logits, p)), torch.isfinite(TopPLogitsWarper(p)(None, logits.clone()))
        assert bool(same_kept_probabilities(ours, theirs, logits.softmax(-1)).all()), p


# --- correct in other forms: full marks (the fixtures correct_*.py hold more, graded end to end) ---------

def _top_k_kthvalue_float64(logits, k):
    kth = -torch.kthvalue(-logits.double(), min(k, logits.shape[-1]), dim=-1, keepdim=True).values
    return torch.where(logits.double() >= kth, logits.double(), -1e30)  # float64, -1e30 for removed tokens


def _top_k_transposed(logits, k):  # a non-contiguous result
    k = min(k, logits.shape[-1])
    columns = logits.T.contiguous()
    return columns.masked_fill(columns < torch.topk(columns, k, dim=0).values[-1:], -torch.inf).T


def _top_p_searchsorted(logits, p):  # the crossing token is the first whose cumulative sum reaches p
    probs, order = logits.log_softmax(-1).exp().sort(dim=-1, descending=True)
    crossing = torch.searchsorted(probs.cumsum(-1), torch.full((len(logits), 1), p, device=logits.device))
    keep_sorted = torch.arange(logits.shape[-1], device=logits.device) <= crossing
    return logits.masked_fill(~keep_sorted.scatter(-1, order, keep_sorted), torch.finfo(logits.dtype).min)


def _top_p_shifted_mask(logits, p):  # "remove once the tokens before hold p", the mask shifted by one
    probs, order = logits.softmax(-1).sort(dim=-1, descending=True)
    remove_sorted = torch.zeros_like(probs, dtype=torch.bool)
    remove_sorted[..., 1:] = probs.cumsum(-1)[..., :-1] >= p
    out = logits.clone()
    out[remove_sorted.scatter(-1, order, remove_sorted)] = -torch.inf  # in place, on a copy
    return out


@pytest.mark.parametrize(("check", "variant"), [
    (decoding_sampling.check_top_k, _top_k_kthvalue_float64),
    (decoding_sampling.check_top_k_ties, _top_k_kthvalue_float64),
    (decoding_sampling.check_top_k, _top_k_transposed),
    (decoding_sampling.check_top_k_ties, _top_k_transposed),
    (decoding_top_p.check_top_p, top_p_filter),
    (decoding_top_p.check_top_p, _top_p_searchsorted),
    (decoding_top_p.check_top_p, _top_p_shifted_mask),
], ids=lambda value: getattr(value, "__name__", ""))
def test_correct_filters_written_differently_pass(check, variant):
    check(variant)


# --- mistakes the filters' and the beam step's checks name ---------------------------------------------

def _top_k_over_rows_where_it_runs(logits, k):  # dim=0 where k <= N (no RuntimeError to name the axis by)
    if k > len(logits):
        return top_k_filter(logits, k)
    return logits.masked_fill(logits < torch.topk(logits, k, dim=0).values[-1:], -torch.inf)


def _top_p_in_place(logits, p):
    remove = ~torch.isfinite(top_p_filter(logits, p))
    logits[remove] = -torch.inf
    return logits


def _per_beam_then_prompt(log_probs, beam_scores, cache, num_beams):
    """Top K of each beam, then top K of those: right, but torch.topk(K) over a beam's V < K tokens raises."""
    batch = len(log_probs) // num_beams
    best, tokens = (log_probs + beam_scores[:, None]).topk(num_beams, dim=-1)  # (B*K, K)
    scores, index = best.view(batch, -1).topk(num_beams, dim=-1)
    rows = (index // num_beams + torch.arange(batch)[:, None] * num_beams).flatten()
    tokens = tokens.view(batch, -1).gather(1, index).flatten()
    return scores.flatten(), tokens, rows, tuple((k[rows], v[rows]) for k, v in cache)


def _flat_index_tokens(log_probs, beam_scores, cache, num_beams):
    scores, tokens, rows, new_cache = beam_steps.reference_beam_step(log_probs, beam_scores, cache, num_beams)
    return scores, (rows % num_beams) * log_probs.shape[-1] + tokens, rows, new_cache


@pytest.mark.parametrize(("check", "wrong", "message"), [
    (decoding_sampling.check_top_k, _top_k_over_rows_where_it_runs, "each column, over the rows (dim=0)"),
    (decoding_top_p.check_top_p, _top_p_in_place, "must not modify its inputs"),
    (decoding_beam_search.check_beam_scores, _per_beam_then_prompt, "one beam's V tokens cannot fill K places"),
    (decoding_beam_search.check_beam_scores, _flat_index_tokens, "yours are indices into the K*V candidates"),
])
def test_more_mistakes_are_named(check, wrong, message):
    with pytest.raises(CheckFailed, match=re.escape(message)) as failure:
        check(wrong)
    assert failure.value.hint


def test_rows_agree_up_to_the_order_of_the_students_scores_and_ties():
    exp_scores, exp_rows = torch.tensor([-1.0, -2.0, -3.0, -3.0]), torch.tensor([1, 0, 2, 3])
    agree = beam_steps.rows_agree
    assert agree(torch.tensor([1, 0, 3, 2]), exp_scores, exp_rows, exp_scores, 2)  # tied beams swapped
    assert agree(torch.tensor([0, 1, 2, 3]), exp_scores[[1, 0, 2, 3]], exp_rows, exp_scores, 2)  # their order
    assert not agree(torch.tensor([0, 1, 2, 3]), exp_scores, exp_rows, exp_scores, 2)  # rows in the wrong order
    assert not agree(torch.tensor([0, 0, 2, 2]), exp_scores, exp_rows, exp_scores, 2)  # not the same beams
