"""The hints ``call_student`` gives for an exception (:mod:`course_lib.lab_checks.hints`), on real student code.

Each case is code a student could write, with the error PyTorch or Python really raises for it, and
a phrase the hint must hold (it names the cause and what to check, with the sizes from the message).
The stub's ``NotImplementedError`` and the call machinery itself: ``test_toolkit.py``.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.lab_checks.hints import hint_for_exception
from course_lib.lab_checks.toolkit import CheckFailed, call_student

Q, K, V = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 6)


def keys_not_transposed(q, k, v):
    return torch.softmax(q @ k / math.sqrt(q.shape[-1]), dim=-1) @ v


def einsum_letters_swapped(q, k):
    return torch.einsum("bid,bdj->bij", q, k)


def weight_not_transposed(x, w):
    return x @ w  # w stored as nn.Linear stores it, (out, in)


def padding_mask_not_broadcast(scores, key_padding_mask):  # (B, H, T, S) and (B, S)
    return scores.masked_fill(~key_padding_mask, float("-inf"))


def heads_of_the_wrong_size(x, num_heads):
    return x.view(x.shape[0], x.shape[1], num_heads, 3).transpose(1, 2)


def merge_with_view_after_transpose(x):
    return x.transpose(1, 2).view(x.shape[0], x.shape[2], -1)


def float_mask(size):
    mask = torch.ones(size, size).tril()  # floats 0/1
    return torch.randn(size, size).masked_fill(~mask, float("-inf"))


def mask_of_floats_in_masked_fill(size):
    return torch.randn(size, size).masked_fill(torch.ones(size, size).triu(1), float("-inf"))


def long_scores(ids):
    return torch.softmax(ids, dim=-1)  # ids is an integer tensor


def integer_times_float(ids, weights):
    return ids @ weights


def minus_inf_in_integer_tensor(ids):
    return ids.masked_fill(ids == 0, float("-inf"))


def signature_changed(q, k):  # the lab's signature is (q, k, v, mask=None)
    return q


def third_axis_of_a_matrix(scores):
    return torch.softmax(scores, dim=2)  # scores (T_q, T_k): no axis 2


def index_past_the_end(logits, k):
    return logits[:, logits.shape[-1]]


def top_k_over_the_batch_axis(logits, k):
    values, indices = logits.topk(k, dim=0)  # (k, V), not (B, k)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep[torch.arange(logits.shape[0])[:, None], indices] = True
    return logits.masked_fill(~keep, float("-inf"))


def last_pair_read_past_the_end(ids):
    return {(ids[i], ids[i + 1]): 1 for i in range(len(ids))}


def helper_without_return(x):
    def normalise(t):
        t / t.sum()  # forgot `return`

    return normalise(x) @ x


def tensor_in_an_if(mask):
    if mask:
        return 1
    return 0


def missing_key(p):
    return p["q_proj"]


def average_of_nothing(ids):
    return sum(ids) / len(ids)


def norm_of_the_wrong_size(x, weight):
    return F.layer_norm(x, (x.shape[-1] + 1,))


def stack_of_different_lengths(xs):
    return torch.stack(xs)


def permute_with_too_few_axes(x):
    return x.permute(0, 2, 1)


CASES = [
    (keys_not_transposed, (Q, K, V), "q @ k.transpose(-2, -1)"),
    (keys_not_transposed, (Q, K, V), "b's second-to-last axis has 5 where a's last axis has 8"),
    (einsum_letters_swapped, (Q, K), "the letter d labels axes of sizes 8 and 5"),
    (weight_not_transposed, (torch.randn(4, 3), torch.randn(5, 3)), "F.linear(x, W) = x @ W.T"),
    (padding_mask_not_broadcast, (torch.randn(2, 2, 3, 4), torch.ones(2, 4, dtype=torch.bool)),
     "[:, None, None, :]"),
    (heads_of_the_wrong_size, (torch.randn(2, 3, 8), 2), "compute the new sizes from x.shape"),
    (merge_with_view_after_transpose, (torch.randn(2, 2, 3, 4),), ".reshape()"),
    (float_mask, (3,), "make it boolean"),
    (mask_of_floats_in_masked_fill, (3,), "dtype=torch.bool"),
    (long_scores, (torch.arange(4),), "integer tensor (Long)"),
    (integer_times_float, (torch.ones(2, 3, dtype=torch.long), torch.randn(3, 2)), "dtype=x.dtype"),
    (minus_inf_in_integer_tensor, (torch.arange(4),), "cannot be stored in an integer tensor"),
    (signature_changed, (Q, K, V), "keep the parameters the lab gives"),
    (third_axis_of_a_matrix, (torch.randn(3, 4),), "dim=-1 is the last"),
    (index_past_the_end, (torch.randn(2, 5), 2), "axis 1 has size 5, you asked for 5"),
    (top_k_over_the_batch_axis, (torch.randn(3, 10), 2), "x.topk(k, dim=-1)"),
    (last_pair_read_past_the_end, ([1, 2, 3],), "range(len(ids) - 1)"),
    (helper_without_return, (torch.ones(2),), "ends with `return ...`"),
    (tensor_in_an_if, (torch.ones(2, dtype=torch.bool),), ".any() or .all()"),
    (missing_key, ({"q_weight": torch.ones(1)},), "print its keys"),
    (average_of_nothing, ([],), "an empty input"),
    (norm_of_the_wrong_size, (torch.randn(2, 4), None), "x.shape[-1:]"),
    (stack_of_different_lengths, ([torch.ones(2), torch.ones(3)],), "same sizes on every other axis"),
    (permute_with_too_few_axes, (torch.ones(2, 3, 4, 5),), "one position per axis"),
]


@pytest.mark.parametrize(("student", "args", "phrase"), CASES,
                         ids=[f"{case[0].__name__}-{i}" for i, case in enumerate(CASES)])
def test_an_exception_in_student_code_gets_a_hint_on_its_cause(student, args, phrase):
    with pytest.raises(CheckFailed, match=f"^{student.__name__} raised ") as failure:
        call_student(student, *args)
    assert failure.value.hint and phrase in failure.value.hint, (str(failure.value.problem), failure.value.hint)


def test_a_device_mismatch_gets_the_device_hint():  # no GPU here: PyTorch's message on one, as it reads
    error = RuntimeError("Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!")
    assert "device=x.device" in hint_for_exception(error)


def test_not_implemented_for_an_integer_dtype_is_not_mistaken_for_the_stub():
    with pytest.raises(CheckFailed) as failure:
        call_student(long_scores, torch.arange(3))
    assert "NotImplementedError" in failure.value.problem and "raise NotImplementedError()" not in failure.value.hint


def test_an_unknown_error_gets_no_made_up_hint():
    assert hint_for_exception(RuntimeError("something nobody has seen")) is None
    assert hint_for_exception(ValueError("")) is None
