"""The attention lab's head checks: ``split_heads`` (B, T, D) -> (B, H, T, D/H) and its inverse ``merge_heads``.

Both are compared with :mod:`course_lib.attention.multi_head` on seeded random sizes with T ≠ H (so
a missing transpose shows in the shape) and D/H ≠ H (so an interleaving one shows in the numbers),
including one head and a single position. The classic wrong reshapes are named: a plain view
without the transpose (positions mixed), features interleaved across heads, and for ``merge_heads``
the head axis moved to the wrong place before the reshape. Any layout passes (a non-contiguous
result of ``.transpose`` is as good as a contiguous one). Not covered: attention itself (:mod:`.sdpa`,
:mod:`.masks`).
"""
from __future__ import annotations

from collections.abc import Callable

from ...attention import multi_head
from ..toolkit import Trial, call_student, diagnose, expect_close, expect_tensor, fail, is_close, trials

__all__ = ["check_merge_heads", "check_split_heads"]

TRIALS = 6
EDGE_SHAPES = ((2, 3, 1, 4), (1, 1, 3, 2))  # (B, T, H, D/H): one head; one position


def _shapes(trial: Trial):
    if trial.index >= TRIALS:
        return EDGE_SHAPES[trial.index - TRIALS]
    batch, heads, head_dim = trial.randint(1, 3), trial.randint(2, 4), trial.randint(2, 5)
    head_dim += head_dim == heads  # D/H ≠ H: an interleaving shows in the numbers
    seq_len = trial.randint(2, 6)
    seq_len += seq_len == heads  # T ≠ H: a missing transpose shows in the shape
    return batch, seq_len, heads, head_dim


def check_split_heads(split_heads: Callable) -> None:
    """``split_heads(x, H)`` maps (B, T, D) to (B, H, T, D/H) like :func:`course_lib.split_heads`."""
    for trial in trials(TRIALS + len(EDGE_SHAPES), seed=500):
        batch, seq_len, heads, head_dim = _shapes(trial)
        x = trial.randn(batch, seq_len, heads * head_dim)
        context = f"x {tuple(x.shape)}, num_heads={heads}"
        got = call_student(split_heads, x, heads, name="split_heads")
        expect_tensor(got, name="split_heads(x, num_heads)", context=context)
        if tuple(got.shape) == (batch, seq_len, heads, head_dim) and seq_len != heads:
            fail(f"split_heads returned shape (B, T, H, D/H) = {tuple(got.shape)}, expected (B, H, T, D/H) "
                 f"(on {context})",
                 "after viewing x as (B, T, H, D/H), swap the T and H axes with .transpose(1, 2).")
        expected = multi_head.split_heads(x, heads)
        if is_close(got, expected):
            continue
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
    for trial in trials(TRIALS + len(EDGE_SHAPES), seed=600):
        batch, seq_len, heads, head_dim = _shapes(trial)
        x = trial.randn(batch, heads, seq_len, head_dim)
        context = f"x {tuple(x.shape)}"
        got = call_student(merge_heads, x, name="merge_heads")
        expect_tensor(got, name="merge_heads(x)", shape=(batch, seq_len, heads * head_dim), context=context)
        expected = multi_head.merge_heads(x)
        if is_close(got, expected):
            continue
        diagnose(got, [
            (x.reshape(got.shape), "merge_heads mixes positions: it reshapes (B, H, T, D/H) straight to (B, T, D)",
             "first .transpose(1, 2) back to (B, T, H, D/H), then .reshape(B, T, D) to concatenate the heads."),
            (x.permute(0, 2, 3, 1).reshape(got.shape),
             "merge_heads interleaves the heads: position t holds feature 0 of every head, then feature 1, ...",
             "moving the head axis last, (B, T, D/H, H), puts the heads side by side feature by feature; "
             "move it next to its features instead: x.transpose(1, 2) is (B, T, H, D/H), then .reshape(B, T, D)."),
            (x.transpose(1, 3).reshape(got.shape), "merge_heads transposes the wrong axes: .transpose(1, 3) swaps the "
             "heads with the features, not with the positions",
             "swap the head and position axes, x.transpose(1, 2) (B, T, H, D/H), then .reshape(B, T, D)."),
        ], context=context)
        expect_close(got, expected, name="merge_heads(x)", context=context,
                     hint="position t must hold the heads' features one after another: "
                          "x[b, 0, t], x[b, 1, t], ..., x[b, H-1, t].")
    trial = next(iter(trials(1, seed=650)))
    batch, seq_len, heads, head_dim = _shapes(trial)
    original = trial.randn(batch, seq_len, heads * head_dim)
    round_trip = call_student(merge_heads, multi_head.split_heads(original, heads), name="merge_heads")
    expect_close(round_trip, original, name="merge_heads(split_heads(x, H))",
                 context=f"x {tuple(original.shape)}, H={heads}", hint="merge_heads must undo split_heads exactly.")
