"""Lab 01 (attention): what only its checks need; what every lab shares is in ``test_structure.py``.

The checks of ``course_lib.lab_checks.attention`` called directly on mistakes no fixture holds: code
that edits its inputs in place fails, naming the input; a mask that leaks, an output built from the
keys or one that ignores the mask, an answer of zeros each get their own message; a mistake of the
scale, the axis or the softmax costs only its own cells; the checks reach their edge cases. The known mistakes (``tests/fixtures/labs/attention/``),
the reference solution and the notebooks: ``test_structure.py``; nbgrader: ``tests/grader/``.
"""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.attention import scaled_dot_product_attention
from course_lib.lab_checks import attention as attention_checks
from course_lib.lab_checks.toolkit import CheckFailed


def test_student_code_that_edits_its_inputs_in_place_fails_naming_the_input():
    """The rule: a graded function must not modify its inputs (the caller's q would change)."""
    def scales_q_in_place(q, k, v, mask=None):
        q /= math.sqrt(q.shape[-1])
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return weights @ v, weights

    def scales_a_copy(q, k, v, mask=None):
        q = q / math.sqrt(q.shape[-1])
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return weights @ v, weights

    with pytest.raises(CheckFailed, match=r"scaled_dot_product_attention modified its input q \(shape") as failure:
        attention_checks.check_scaling(scales_q_in_place)
    assert "q = q / " not in failure.value.problem and "x = x.clone()" in failure.value.hint
    attention_checks.check_scaling(scales_a_copy)


def test_mask_check_reports_a_mask_that_leaks_as_nonzero_blocked_weights():
    def additive_minus_one(q, k, v, mask=None):  # -1 instead of -inf: blocked keys keep some weight
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        weights = torch.softmax(scores.masked_fill(~mask, -1.0) if mask is not None else scores, dim=-1)
        return weights @ v, weights

    with pytest.raises(CheckFailed, match="weights where mask is False should be 0") as failure:
        attention_checks.check_mask(additive_minus_one)
    assert "-inf" in failure.value.hint


def test_output_check_names_the_values_when_the_output_uses_the_keys():
    def returns_weights_times_keys(q, k, v, mask=None):
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return weights @ k, weights

    with pytest.raises(CheckFailed, match=r"output has shape .* expected \(\.\.\., T_q, d_v\)"):
        attention_checks.check_output(returns_weights_times_keys)


def test_a_result_that_is_not_a_pair_is_named():
    with pytest.raises(CheckFailed, match=r"should return a pair \(output, weights\), got Tensor") as failure:
        attention_checks.check_output(lambda q, k, v, mask=None: q)
    assert "return output, weights" in failure.value.hint


def _attention(weights_of, output_of=lambda weights, v, scores: weights @ v):
    """A student's attention: scaled, masked scores -> weights_of(scores, mask) -> (output_of(...), weights)."""
    def attention(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        weights = weights_of(scores, mask)
        return output_of(weights, v, scores), weights
    return attention


def _masked_softmax(scores, mask):
    if mask is None:
        return torch.softmax(scores, dim=-1)
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).masked_fill(~mask, 0.0)


def test_an_answer_of_zeros_fails_the_output_cell():
    zeros = _attention(lambda scores, mask: torch.zeros_like(scores), lambda weights, v, scores: weights @ v)
    with pytest.raises(CheckFailed, match="the weights of some query are all 0"):
        attention_checks.check_output(zeros)


def test_weights_without_softmax_cost_the_weights_cells_but_not_the_output_cell():
    raw = _attention(lambda scores, mask: scores)
    attention_checks.check_output(raw)  # its output is its weights applied to the values
    with pytest.raises(CheckFailed):
        attention_checks.check_weights_are_distributions(raw)


def test_an_output_that_ignores_the_mask_is_named():
    unmasked_output = _attention(_masked_softmax, lambda weights, v, scores: torch.softmax(scores, -1) @ v)
    with pytest.raises(CheckFailed, match="the output ignores the mask") as failure:
        attention_checks.check_mask(unmasked_output)
    assert "masked weights" in failure.value.hint


def test_the_output_of_a_query_that_may_attend_to_nothing_must_be_zero():
    def nan_output(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is None:
            weights = torch.softmax(scores, -1)
            return weights @ v, weights
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        return weights @ v, torch.nan_to_num(weights)  # zeroes the weights it returns, not the ones it used

    with pytest.raises(CheckFailed, match="the output of a query whose every key is masked should be 0, got NaN"):
        attention_checks.check_mask(nan_output)


def test_a_mask_may_be_right_with_the_scale_or_axis_wrong():
    """The scale and the softmax axis are other cells' business: the mask cell accepts them."""
    for weights_of in (lambda scores, mask: _masked_softmax(scores * 3, mask),
                       lambda scores, mask: torch.softmax(scores if mask is None else
                                                          scores.masked_fill(~mask, float("-inf")), dim=-2)):
        attention_checks.check_mask(_attention(weights_of))


def test_merge_heads_with_the_heads_and_features_swapped_is_named():
    def swaps_heads_and_features(x):
        batch, heads, seq_len, head_dim = x.shape
        return x.transpose(1, 3).reshape(batch, seq_len, heads * head_dim)

    with pytest.raises(CheckFailed, match=r"transposes the wrong axes: \.transpose\(1, 3\)"):
        attention_checks.check_merge_heads(swaps_heads_and_features)


def test_the_checks_reach_the_edge_cases():
    """A single key or query, d = 1, more queries than keys, and (masked) a query that may attend to nothing."""
    seen = []

    def spy(q, k, v, mask=None):
        seen.append((q.shape[-2], k.shape[-2], q.shape[-1], None if mask is None else bool((~mask).all(-1).any())))
        return scaled_dot_product_attention(q, k, v, mask)

    for check in (attention_checks.check_weights_are_distributions, attention_checks.check_output):
        seen.clear()
        check(spy)
        assert {t_k for _, t_k, _, _ in seen} >= {1} and {t_q for t_q, *_ in seen} >= {1}, check.__name__
        assert any(d == 1 for *_, d, _ in seen) and any(t_q > t_k for t_q, t_k, *_ in seen), check.__name__
    seen.clear()
    attention_checks.check_mask(spy)
    assert any(empty for *_, empty in seen) and any(t_k == 1 for _, t_k, _, _ in seen)
