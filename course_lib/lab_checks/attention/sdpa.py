"""The attention lab's checks of ``scaled_dot_product_attention`` without a mask: weights, scale, output.

Inputs are seeded random ``q (B, [H,] T_q, d)``, ``k (B, [H,] T_k, d)``, ``v (B, [H,] T_k, d_v)``
with ``T_q ≠ T_k`` and ``d_v ∉ {d, T_k}`` (so keys used as values, or the pair returned swapped, show
in the shapes), then the edge cases :data:`EDGE_SIZES`: a single key, a single query, ``d = 1``,
more queries than keys. Which mistake costs which cell:

* :func:`check_weights_are_distributions` (``test_sdpa_distribution``): the weights are ≥ 0 and sum
  to 1 over the keys; a softmax over the query axis is named.
* :func:`check_scaling` (``test_sdpa_scaling``): the weights equal softmax(QKᵀ/√d) over *either* axis
  (the axis is the distribution cell's); no, a wrong or an inverted scale are named.
* :func:`check_output` (``test_sdpa_output``): the output equals the reference output. When the
  weights are wrong (a mistake the two cells above grade) it must equal *those* weights applied to the
  values instead, so a weights mistake costs nothing here; but weights with a row of zeros (no query
  attends to nothing without a mask) are no excuse, so an answer of zeros fails here too. Outputs
  made from the scores rather than the weights are named.
* every cell: ``(output, weights)`` returned as ``(weights, output)`` is named in each, since each
  reads the pair (:func:`run_attention`).

Not covered: masks (:mod:`.masks`), heads (:mod:`.heads`), the rubric (:mod:`course_lib.lab_checks.attention`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from ...attention import scaled_dot_product_attention as reference_attention
from ..toolkit import (
    Trial, call_student, close_to_any, describe_shapes, diagnose, expect_close, expect_results, expect_tensor, fail,
    is_close, trials,
)

__all__ = [
    "EDGE_SIZES", "TRIALS", "attention_cases", "check_output", "check_scaling", "check_weights_are_distributions",
    "context_of", "random_qkv", "run_attention",
]

TRIALS = 6
HEAD_SIZES = (4, 8, 9, 16)  # d > 1, so dividing by √d always changes the scores
# (T_q, T_k, d, d_v): one key, one query, d = 1 (no scale to see), more queries than keys.
EDGE_SIZES = ((3, 1, 4, 6), (1, 4, 8, 3), (3, 5, 1, 2), (5, 2, 4, 3))


def random_qkv(trial: Trial, *, heads_axis: bool, sizes: tuple[int, int, int, int] | None = None):
    """q (B, [H,] T_q, d), k (B, [H,] T_k, d), v (B, [H,] T_k, d_v): random sizes with T_q ≠ T_k and d_v ∉ {d, T_k},
    or the given ``sizes`` (T_q, T_k, d, d_v)."""
    batch = (trial.randint(1, 3),) + ((trial.randint(1, 3),) if heads_axis else ())
    if sizes is None:
        t_q = trial.randint(2, 6)
        t_k = t_q + trial.randint(1, 3)
        d = HEAD_SIZES[trial.randint(0, len(HEAD_SIZES) - 1)]
        d_v = d + trial.randint(1, 3)
        d_v += d_v == t_k
        sizes = (t_q, t_k, d, d_v)
    t_q, t_k, d, d_v = sizes
    return trial.randn(*batch, t_q, d), trial.randn(*batch, t_k, d), trial.randn(*batch, t_k, d_v)


def attention_cases(seed: int, *, edges: bool = True, heads_axis: Callable[[int], bool] = lambda i: i % 2 == 1
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:data:`TRIALS` random ``(q, k, v)``, then (with ``edges``) one of each :data:`EDGE_SIZES`."""
    for trial in trials(TRIALS, seed=seed):
        yield random_qkv(trial, heads_axis=heads_axis(trial.index))
    if edges:
        for trial, sizes in zip(trials(len(EDGE_SIZES), seed=seed + 50), EDGE_SIZES):
            yield random_qkv(trial, heads_axis=trial.index % 2 == 0, sizes=sizes)


def context_of(q, k, v, mask=None) -> str:
    return describe_shapes(q=q, k=k, v=v, mask=mask)


def run_attention(attention: Callable, q, k, v, mask=None, *, to_input_device: bool = True):
    """Call the student's attention; check it returns (output, weights), weights of the right shape.

    Results are moved to the inputs' device unless ``to_input_device`` is False: a wrong device
    is :func:`check_output`'s business only.
    """
    context = context_of(q, k, v, mask)
    args = (q, k, v) if mask is None else (q, k, v, mask)
    result = call_student(attention, *args, name="scaled_dot_product_attention")
    output, weights = expect_results(result, ("output", "weights"), function="scaled_dot_product_attention",
                                     context=context)
    weights_shape, output_shape = (*q.shape[:-1], k.shape[-2]), (*q.shape[:-1], v.shape[-1])
    if all(isinstance(t, torch.Tensor) for t in (output, weights)) and tuple(output.shape) == weights_shape \
            and tuple(weights.shape) == output_shape:
        fail(f"scaled_dot_product_attention returns (weights, output): the pair is swapped (on {context})",
             "the lab's order is (output, weights): end with `return weights @ v, weights`, or `return output, weights`.")
    expect_tensor(weights, name="weights", shape=weights_shape, context=context)
    expect_tensor(output, name="output", context=context)
    if to_input_device:
        output, weights = output.to(q.device), weights.to(q.device)
    return output, weights


def check_weights_are_distributions(attention: Callable) -> None:
    """Every query's weights are ≥ 0 and sum to 1 over the keys (no mask)."""
    for q, k, v in attention_cases(100):
        _, weights = run_attention(attention, q, k, v)
        context = context_of(q, k, v)
        if torch.isnan(weights).any():
            fail(f"the weights contain NaN (on {context})",
                 "without a mask no score should be -inf; check the softmax input.")
        if (weights < -1e-6).any():
            fail(f"some weights are negative (min {weights.min().item():.3g}) (on {context})",
                 "weights are probabilities: take the softmax of the scores and do not change them afterwards.")
        ones = torch.ones(weights.shape[:-1], device=weights.device)
        if is_close(weights.sum(-1), ones):
            continue
        if is_close(weights.sum(-2), torch.ones_like(weights.sum(-2))):
            fail(f"the weights' rows do not sum to 1, their columns do (on {context})",
                 "your weights sum to 1 down the query axis; softmax must run over the last (key) axis: "
                 "torch.softmax(scores, dim=-1).")
        fail(f"the weights' rows do not sum to 1: row sums range from {weights.sum(-1).min().item():.4g} "
             f"to {weights.sum(-1).max().item():.4g} (on {context})",
             "each query's weights must be a distribution over the keys: apply torch.softmax(scores, dim=-1) "
             "and return its result as the weights.")


def _softmax_any_axis(scaled_scores):
    return torch.softmax(scaled_scores, -1), torch.softmax(scaled_scores, -2)


def check_scaling(attention: Callable) -> None:
    """Without a mask the weights equal softmax(QKᵀ/√d) (over either axis: the axis is checked elsewhere)."""
    cases = attention_cases(200, heads_axis=lambda i: i % 2 == 0)
    for q, k, v in (case for case in cases if case[0].shape[-1] > 1 and case[1].shape[-2] > 1):  # else no scale shows
        _, weights = run_attention(attention, q, k, v)
        d = q.shape[-1]
        scores = q @ k.transpose(-2, -1)  # (..., T_q, T_k)
        if close_to_any(weights, _softmax_any_axis(scores / math.sqrt(d))):
            continue
        context = f"{context_of(q, k, v)}, so d = {d} and √d = {math.sqrt(d):.3g}"
        diagnose(weights, [
            (_softmax_any_axis(scores), "the weights equal softmax(QKᵀ), not softmax(QKᵀ/√d)",
             "you forgot to divide the scores by √d (d = q.shape[-1]); without it, large heads "
             "saturate the softmax."),
            (_softmax_any_axis(scores / d), "the weights equal softmax(QKᵀ/d), not softmax(QKᵀ/√d)",
             "divide by the square root of d (math.sqrt(d)), not by d."),
            (_softmax_any_axis(scores * math.sqrt(d)), "the weights equal softmax(QKᵀ·√d), not softmax(QKᵀ/√d)",
             "the scale divides: scores / math.sqrt(d)."),
        ], context=context, matches=close_to_any)
        fail(f"the weights are not softmax(QKᵀ/√d) (on {context})",
             "the scores are q @ k.transpose(-2, -1) (one dot product per query/key pair), "
             "divided by math.sqrt(q.shape[-1]), then passed through softmax.")


def check_output(attention: Callable) -> None:
    """The output is the reference's (or, when the weights are wrong, those weights applied to the values),
    with the right shape, dtype and device."""
    for q, k, v in attention_cases(300):
        output, weights = run_attention(attention, q, k, v, to_input_device=False)
        context = context_of(q, k, v)
        expected_shape = (*q.shape[:-1], v.shape[-1])
        if tuple(output.shape) != expected_shape:
            fail(f"output has shape {tuple(output.shape)}, expected (..., T_q, d_v) = {expected_shape} (on {context})",
                 "the output averages the values: weights @ v has one row per query and v's feature size.")
        expect_tensor(output, name="output", dtype=q.dtype, device=q.device, context=context)
        expect_tensor(weights, name="weights", dtype=q.dtype, device=q.device, context=context)
        output, weights = output.to(q.device), weights.to(q.device)
        expected_output, expected_weights = reference_attention(q, k, v)
        if is_close(output, expected_output):
            continue
        if is_close(weights, expected_weights):  # the weights are right: the output alone is wrong
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            diagnose(output, [
                (scores @ v, "the output is the scores applied to the values, not the weights",
                 "the output averages the values with the softmax's result: output = weights @ v, not scores @ v."),
            ], context=context)
            expect_close(output, expected_output, name="output", context=f"{context}; your weights are right",
                         hint="the output is the weights applied to the values: return weights @ v, "
                              "with the same weights you return.")
        if not (weights.abs().sum(-1) > 0).all():  # no softmax row is all zeros: these are not weights
            fail(f"output differs from the reference, and the weights of some query are all 0 (on {context})",
                 "without a mask every query attends to the keys: weights = softmax(scores) over the keys, "
                 "then output = weights @ v.")
        expect_close(output, weights @ v, name="output", context=f"{context}; expected your weights @ v",
                     hint="the output is the weights applied to the values: return weights @ v, "
                          "with the same weights you return.")
