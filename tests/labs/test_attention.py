"""Lab 01 (attention): what only its checks need; what every lab shares is in ``test_structure.py``.

The checks of ``course_lib.lab_checks.attention`` called directly on mistakes no fixture holds: code
that edits its inputs in place fails, naming the input; a mask that leaks and an output built
from the keys each get their own message. The known mistakes (``tests/fixtures/labs/attention/``),
the reference solution and the notebooks: ``test_structure.py``; nbgrader: ``tests/grader/``.
"""
from __future__ import annotations

import math

import pytest
import torch

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
