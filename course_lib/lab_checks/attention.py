"""Hidden checks of lab 01, attention: scaled dot-product attention, causal mask, head split/merge.

One ``check_*`` function per graded cell of ``labs/source/01_attention/attention.ipynb``;
``RUBRIC`` lists them with their points and ``REFERENCES`` the course's own version of each
function (:mod:`course_lib.attention`). The checks are built so that one mistake costs the
points of one aspect only: the softmax axis, the 1/√d scale, the weighted sum of values and the
mask are each tested in a way the other three mistakes cannot disturb. For example
:func:`check_scaling` accepts a softmax over either axis (the axis is
:func:`check_weights_are_distributions`' business), and :func:`check_output` compares the output
with the student's *own* weights times the values.

Each check runs seeded random trials on :func:`course_lib.get_device` in fp32 and raises
:class:`~course_lib.lab_checks.toolkit.CheckFailed` saying what is wrong and hinting why; the
classic mistakes (no or a wrong scale, an inverted or upper-triangular mask, heads split or merged
without the transpose) are named by :func:`~course_lib.lab_checks.toolkit.diagnose`.
Not covered: the chapters' exercises (ungraded) and performance.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..attention import masks, multi_head, scaled_dot_product_attention
from .rubric import Criterion, Rubric
from .toolkit import (
    Trial, call_student, close_to_any, describe_shapes, diagnose, expect_close, expect_results, expect_tensor, fail,
    is_close, trials,
)

__all__ = [
    "check_weights_are_distributions", "check_scaling", "check_output", "check_mask",
    "check_causal_mask", "check_split_heads", "check_merge_heads", "REFERENCES", "RUBRIC",
]

TRIALS = 6
HEAD_SIZES = (4, 8, 9, 16)  # d > 1, so dividing by √d always changes the scores


def _random_qkv(trial: Trial, *, heads_axis: bool):
    """q (B, [H,] T_q, d), k (B, [H,] T_k, d), v (B, [H,] T_k, d_v) with T_q ≠ T_k and d ≠ d_v."""
    batch = (trial.randint(1, 3),) + ((trial.randint(1, 3),) if heads_axis else ())
    t_q = trial.randint(2, 6)
    t_k = t_q + trial.randint(1, 3)
    d = HEAD_SIZES[trial.randint(0, len(HEAD_SIZES) - 1)]
    d_v = d + trial.randint(1, 3)
    return trial.randn(*batch, t_q, d), trial.randn(*batch, t_k, d), trial.randn(*batch, t_k, d_v)


def _context(q, k, v, mask=None) -> str:
    return describe_shapes(q=q, k=k, v=v, mask=mask)


def _run_attention(attention: Callable, q, k, v, mask=None, *, to_input_device: bool = True):
    """Call the student's attention; check it returns (output, weights), weights of the right shape.

    Results are moved to the inputs' device unless ``to_input_device`` is False: a wrong device
    is :func:`check_output`'s business only.
    """
    context = _context(q, k, v, mask)
    args = (q, k, v) if mask is None else (q, k, v, mask)
    result = call_student(attention, *args, name="scaled_dot_product_attention")
    output, weights = expect_results(result, ("output", "weights"), function="scaled_dot_product_attention",
                                     context=context)
    expect_tensor(weights, name="weights", shape=(*q.shape[:-1], k.shape[-2]), context=context)
    expect_tensor(output, name="output", context=context)
    if to_input_device:
        output, weights = output.to(q.device), weights.to(q.device)
    return output, weights


def check_weights_are_distributions(attention: Callable) -> None:
    """Every query's weights are ≥ 0 and sum to 1 over the keys (no mask)."""
    for trial in trials(TRIALS, seed=100):
        q, k, v = _random_qkv(trial, heads_axis=trial.index % 2 == 1)
        _, weights = _run_attention(attention, q, k, v)
        context = _context(q, k, v)
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


def check_scaling(attention: Callable) -> None:
    """Without a mask the weights equal softmax(QKᵀ/√d) (over either axis: the axis is checked elsewhere)."""
    for trial in trials(TRIALS, seed=200):
        q, k, v = _random_qkv(trial, heads_axis=trial.index % 2 == 0)
        _, weights = _run_attention(attention, q, k, v)
        d = q.shape[-1]
        scores = q @ k.transpose(-2, -1)  # (..., T_q, T_k)

        def softmax_any_axis(scaled_scores):
            return torch.softmax(scaled_scores, -1), torch.softmax(scaled_scores, -2)

        if close_to_any(weights, softmax_any_axis(scores / math.sqrt(d))):
            continue
        context = f"{_context(q, k, v)}, so d = {d} and √d = {math.sqrt(d):.3g}"
        diagnose(weights, [
            (softmax_any_axis(scores), "the weights equal softmax(QKᵀ), not softmax(QKᵀ/√d)",
             "you forgot to divide the scores by √d (d = q.shape[-1]); without it, large heads "
             "saturate the softmax."),
            (softmax_any_axis(scores / d), "the weights equal softmax(QKᵀ/d), not softmax(QKᵀ/√d)",
             "divide by the square root of d (math.sqrt(d)), not by d."),
            (softmax_any_axis(scores * math.sqrt(d)), "the weights equal softmax(QKᵀ·√d), not softmax(QKᵀ/√d)",
             "the scale divides: scores / math.sqrt(d)."),
        ], context=context, matches=close_to_any)
        fail(f"the weights are not softmax(QKᵀ/√d) (on {context})",
             "the scores are q @ k.transpose(-2, -1) (one dot product per query/key pair), "
             "divided by math.sqrt(q.shape[-1]), then passed through softmax.")


def check_output(attention: Callable) -> None:
    """The output is the student's own weights applied to the values, with the right shape, dtype and device."""
    for trial in trials(TRIALS, seed=300):
        q, k, v = _random_qkv(trial, heads_axis=trial.index % 2 == 1)
        output, weights = _run_attention(attention, q, k, v, to_input_device=False)
        context = _context(q, k, v)
        expected_shape = (*q.shape[:-1], v.shape[-1])
        if tuple(output.shape) != expected_shape:
            fail(f"output has shape {tuple(output.shape)}, expected (..., T_q, d_v) = {expected_shape} (on {context})",
                 "the output averages the values: weights @ v has one row per query and v's feature size.")
        expect_tensor(output, name="output", dtype=q.dtype, device=q.device, context=context)
        expect_tensor(weights, name="weights", dtype=q.dtype, device=q.device, context=context)
        expect_close(output, weights @ v, name="output", context=f"{context}; expected weights @ v",
                     hint="the output is the weights applied to the values: return weights @ v, "
                          "with the same weights you return.")


def _random_mask(trial: Trial, t_q: int, t_k: int) -> torch.Tensor:
    """(T_q, T_k) boolean mask with a True in every row and column and a False in every row."""
    for _ in range(10_000):
        mask = trial.rand_bool(t_q, t_k)
        if mask.any(-1).all() and mask.any(-2).all() and (~mask).any(-1).all():
            return mask
    raise RuntimeError(f"could not draw a {t_q}x{t_k} mask")  # unreachable for the sizes used here


def check_mask(attention: Callable) -> None:
    """With a boolean mask (True = may attend), weights are 0 where False and > 0 where True."""
    for trial in trials(TRIALS, seed=400):
        q, k, v = _random_qkv(trial, heads_axis=True)
        t_q, t_k = q.shape[-2], k.shape[-2]
        if trial.index % 2 == 0:  # one (T_q, T_k) mask broadcast over batch and heads
            mask = _random_mask(trial, t_q, t_k)
        else:  # a different mask for every batch entry and head
            mask = torch.stack([_random_mask(trial, t_q, t_k) for _ in range(q.shape[:-2].numel())])
            mask = mask.view(*q.shape[:-2], t_q, t_k)
        _, weights = _run_attention(attention, q, k, v, mask)
        allowed = mask.expand(weights.shape)
        context = _context(q, k, v, mask)
        if torch.isnan(weights).any():
            fail(f"the weights contain NaN (on {context})",
                 "every query may attend to at least one key here, so no row should be all -inf; "
                 "fill the scores with -inf only where mask is False.")
        blocked_ok = bool((weights[~allowed].abs() <= 1e-7).all())
        allowed_ok = bool((weights[allowed] > 0).all())
        if blocked_ok and allowed_ok:
            continue
        if (weights[allowed].abs() <= 1e-7).all() and (weights[~allowed] > 0).all():
            fail("the mask is inverted: weights are 0 where mask is True and positive where it is False "
                 f"(on {context})",
                 "in this course (as in torch.nn.functional.scaled_dot_product_attention) True means 'may attend', "
                 "so block the positions where the mask is False: scores.masked_fill(~mask, float('-inf')). "
                 "torch.nn.MultiheadAttention uses the opposite convention (True = blocked).")
        unmasked_weights = _run_attention(attention, q, k, v)[1]
        if not blocked_ok and is_close(weights, unmasked_weights):
            fail(f"the mask has no effect: weights are the same with and without it (on {context})",
                 "apply the mask to the scores before the softmax: scores.masked_fill(~mask, float('-inf')).")
        if not blocked_ok:
            fail(f"weights where mask is False should be 0, the largest is {weights[~allowed].abs().max().item():.3g} "
                 f"(on {context})",
                 "set the scores to -inf where mask is False *before* the softmax, so exp(-inf) = 0.")
        fail(f"some weights where mask is True are 0 (on {context})",
             "only positions where mask is False may be removed; True means 'may attend'.")


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


def _random_split_shapes(trial: Trial):
    batch, heads, head_dim = trial.randint(1, 3), trial.randint(2, 4), trial.randint(2, 5)
    seq_len = trial.randint(2, 6)
    if seq_len == heads:  # keep T ≠ H, so a missing transpose shows up in the shape
        seq_len += 1
    return batch, seq_len, heads, head_dim


def check_split_heads(split_heads: Callable) -> None:
    """``split_heads(x, H)`` maps (B, T, D) to (B, H, T, D/H) like :func:`course_lib.split_heads`."""
    for trial in trials(TRIALS, seed=500):
        batch, seq_len, heads, head_dim = _random_split_shapes(trial)
        x = trial.randn(batch, seq_len, heads * head_dim)
        context = f"x {tuple(x.shape)}, num_heads={heads}"
        got = call_student(split_heads, x, heads, name="split_heads")
        expect_tensor(got, name="split_heads(x, num_heads)", context=context)
        if tuple(got.shape) == (batch, seq_len, heads, head_dim):
            fail(f"split_heads returned shape (B, T, H, D/H) = {tuple(got.shape)}, expected (B, H, T, D/H) "
                 f"(on {context})",
                 "after viewing x as (B, T, H, D/H), swap the T and H axes with .transpose(1, 2).")
        expected = multi_head.split_heads(x, heads)
        diagnose(got, [  # is_close also compares the shapes
            (x.reshape(expected.shape), "split_heads mixes positions: it reshapes (B, T, D) straight to (B, H, T, D/H)",
             "a plain .view(B, H, T, D/H) cuts the flat memory in the wrong places, so a head gets features "
             "of several positions; view as (B, T, H, D/H) first, then .transpose(1, 2)."),
            (x.view(batch, seq_len, head_dim, heads).permute(0, 3, 1, 2),
             "split_heads interleaves the features: head h gets features h, h+H, h+2H, ...",
             "head h must get the contiguous block of features h*D/H ... (h+1)*D/H - 1: view as (B, T, H, D/H)."),
        ], context=context)
        expect_close(got, expected, name="split_heads(x, num_heads)", context=context,
                     hint="head h at position t must hold x[b, t, h*D/H:(h+1)*D/H].")


def check_merge_heads(merge_heads: Callable) -> None:
    """``merge_heads`` maps (B, H, T, D/H) to (B, T, D) and undoes :func:`course_lib.split_heads`."""
    for trial in trials(TRIALS, seed=600):
        batch, seq_len, heads, head_dim = _random_split_shapes(trial)
        x = trial.randn(batch, heads, seq_len, head_dim)
        context = f"x {tuple(x.shape)}"
        got = call_student(merge_heads, x, name="merge_heads")
        expect_tensor(got, name="merge_heads(x)", shape=(batch, seq_len, heads * head_dim), context=context)
        if is_close(got, x.reshape(got.shape)) and not is_close(got, multi_head.merge_heads(x)):
            fail(f"merge_heads mixes positions: it reshapes (B, H, T, D/H) straight to (B, T, D) (on {context})",
                 "first .transpose(1, 2) back to (B, T, H, D/H), then .reshape(B, T, D) to concatenate the heads.")
        expect_close(got, multi_head.merge_heads(x), name="merge_heads(x)", context=context,
                     hint="position t must hold the heads' features one after another: "
                          "x[b, 0, t], x[b, 1, t], ..., x[b, H-1, t].")
        original = trial.randn(batch, seq_len, heads * head_dim)
        round_trip = call_student(merge_heads, multi_head.split_heads(original, heads), name="merge_heads")
        expect_close(round_trip, original, name="merge_heads(split_heads(x, H))",
                     context=f"x {tuple(original.shape)}, H={heads}", hint="merge_heads must undo split_heads exactly.")


# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "scaled_dot_product_attention": scaled_dot_product_attention,
    "causal_mask": masks.causal_mask,
    "split_heads": multi_head.split_heads,
    "merge_heads": multi_head.merge_heads,
}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_sdpa_distribution", 2, check_weights_are_distributions, ("scaled_dot_product_attention",),
              "attention weights: each query's weights are a distribution over the keys"),
    Criterion("test_sdpa_scaling", 2, check_scaling, ("scaled_dot_product_attention",),
              "scores scaled by 1/√d before the softmax"),
    Criterion("test_sdpa_output", 2, check_output, ("scaled_dot_product_attention",),
              "output = weights @ values, with the right shape, dtype and device"),
    Criterion("test_sdpa_mask", 2, check_mask, ("scaled_dot_product_attention",),
              "boolean mask: True = may attend, False gets weight 0"),
    Criterion("test_causal_mask", 1, check_causal_mask, ("causal_mask",),
              "causal mask: lower triangular, diagonal included, boolean"),
    Criterion("test_split_heads", 2, check_split_heads, ("split_heads",),
              "split_heads: (B, T, D) -> (B, H, T, D/H)"),
    Criterion("test_merge_heads", 1, check_merge_heads, ("merge_heads",),
              "merge_heads: (B, H, T, D/H) -> (B, T, D), the inverse of split_heads"),
))
