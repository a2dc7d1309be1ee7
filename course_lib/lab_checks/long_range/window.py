"""The long-range lab's sliding-window checks: which keys each query sees in Longformer's pattern.

Students write ``sliding_window_mask(seq_len, window, global_positions) -> (T, T) bool``: query ``i``
sees key ``j`` when ``|i − j| ≤ window`` (``window`` keys on *each* side), and every global position
sees every key and is seen by every query. The reference is
:func:`course_lib.long_range.sliding_window.sliding_window_mask`, the mask the library's banded
attention is pinned to (tests/long_range).

Two cells. ``test_window`` grades the band alone (no global positions): random sizes, then window 0,
a window as wide as the sequence or wider, T = 1. ``test_global`` grades the global rows and columns
*on top of the student's own band* (when it is a band no wider than 2·window on each side; else on the
reference's), so a miscounted window costs only the first cell and forgotten global columns only the
second: globals at both ends, repeated and unsorted positions, every position global, T = 1.
Classic mistakes named: the window counted as the total width (``|i − j| < window`` or
``≤ window / 2``), doubled, only looking back, True meaning "masked"; global rows without their
columns or the reverse, the globals ignored.

Not covered: padding (the attention's business), dilated windows, HF's one-sided ``attention_window``
rounding (the chapter's).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...long_range.sliding_window import sliding_window_mask as library_sliding_window_mask
from ..toolkit import CheckFailed, call_for_tensor, diagnose, fail, trials

__all__ = ["check_global", "check_window", "global_cases", "reference_sliding_window_mask", "window_cases"]


def reference_sliding_window_mask(seq_len, window, global_positions=()):
    """The lab's ``sliding_window_mask``: :func:`course_lib.long_range.sliding_window.sliding_window_mask`."""
    return library_sliding_window_mask(seq_len, window, global_positions)


def _band(seq_len: int, width: int) -> torch.Tensor:
    """(T, T): |i − j| ≤ width (width −1: nothing)."""
    index = torch.arange(seq_len)
    return (index[:, None] - index[None, :]).abs() <= width


def window_cases():
    """(seq_len, window, context) for the band: a window the usual miscounts tell apart, random sizes, edges."""
    yield 10, 3, "T = 10, window 3"
    for trial in trials(3, seed=2900):
        seq_len = trial.randint(5, 14)
        window = trial.randint(1, 4)
        yield seq_len, window, f"T = {seq_len}, window {window}"
    yield 6, 0, "window 0: each query sees itself only"
    yield 5, 4, "window 4 = T − 1: every query sees every key"
    yield 4, 7, "window 7 > T: every query sees every key"
    yield 1, 0, "T = 1, window 0"
    yield 1, 3, "T = 1, window 3"


def global_cases():
    """(seq_len, window, global_positions, context): targeted layouts, then random ones."""
    yield 8, 1, [0, 7], "T = 8, window 1, globals at both ends [0, 7]"
    yield 9, 2, [6, 1, 6], "T = 9, window 2, globals [6, 1, 6] (unsorted, repeated)"
    yield 6, 0, [3], "T = 6, window 0, global [3]"
    yield 5, 1, [4, 3, 2, 1, 0], "T = 5, window 1, every position global"
    yield 4, 6, [2], "T = 4, window 6 > T, global [2]"
    yield 1, 0, [0], "T = 1, window 0, global [0]"
    for trial in trials(3, seed=2950):
        seq_len, window = trial.randint(6, 14), trial.randint(0, 3)
        positions = [trial.randint(0, seq_len - 1) for _ in range(trial.randint(1, 3))]
        yield seq_len, window, positions, f"T = {seq_len}, window {window}, globals {positions}"


def _mask(sliding_window_mask: Callable, seq_len, window, positions, context) -> torch.Tensor:
    mask = call_for_tensor(sliding_window_mask, seq_len, window, list(positions), name="sliding_window_mask",
                           shape=(seq_len, seq_len), context=context)
    if mask.dtype != torch.bool:
        fail(f"sliding_window_mask returns dtype {mask.dtype}, expected torch.bool (on {context})",
             "return a boolean tensor, True where the query may attend: a comparison such as "
             "(i - j).abs() <= window gives one.")
    return mask.cpu()


def check_window(sliding_window_mask: Callable) -> None:
    """No global positions: True exactly where |i − j| ≤ window."""
    for seq_len, window, context in window_cases():
        got = _mask(sliding_window_mask, seq_len, window, [], context)
        expected = reference_sliding_window_mask(seq_len, window, []).cpu()
        if torch.equal(got, expected):
            continue
        index = torch.arange(seq_len)
        diagnose(got, [
            (_band(seq_len, window - 1), "sliding_window_mask keeps |i − j| < window: the keys at distance exactly "
             "`window` are missing",
             "window counts the keys on EACH side of the query, so the band is |i − j| <= window: 2·window + 1 keys "
             "in all, the query's own included."),
            (_band(seq_len, window // 2),
             "sliding_window_mask treats window as the total width (|i − j| <= window // 2)",
             "here window is the number of keys on EACH side (HF's attention_window is the total, 2·window): keep "
             "|i − j| <= window."),
            (_band(seq_len, 2 * window), "sliding_window_mask keeps |i − j| <= 2·window: the window is doubled",
             "window is already the count on each side: keep |i − j| <= window."),
            ((index[:, None] - index[None, :] >= 0) & _band(seq_len, window),
             "sliding_window_mask only lets a query look back (j <= i)",
             "Longformer's window is two-sided for an encoder: use the absolute distance, (i - j).abs() <= window."),
            (~expected, "sliding_window_mask is inverted: True where the query may NOT attend",
             "the course's masks say True = may attend: return the band itself, not its complement."),
        ], context=context, matches=torch.equal)
        wrong = (got != expected).nonzero()[0].tolist()
        fail(f"sliding_window_mask's entry (query {wrong[0]}, key {wrong[1]}) is {bool(got[tuple(wrong)])}, expected "
             f"{bool(expected[tuple(wrong)])} (on {context})",
             "query i sees key j exactly when |i − j| <= window.")


def _own_band(sliding_window_mask: Callable, seq_len: int, window: int, context: str) -> torch.Tensor:
    """The student's mask without globals when it is a band |i − j| <= c with c <= 2·window (any miscounted
    window), so that this cell judges only the global rows and columns; otherwise the reference's band."""
    try:
        band = _mask(sliding_window_mask, seq_len, window, [], context)
    except CheckFailed:
        return _band(seq_len, window)
    for width in range(-1, 2 * window + 1):
        if torch.equal(band, _band(seq_len, width)):
            return band
    return _band(seq_len, window)


def check_global(sliding_window_mask: Callable) -> None:
    """Global positions: their rows and columns all True, every other entry as without them."""
    for seq_len, window, positions, context in global_cases():
        got = _mask(sliding_window_mask, seq_len, window, positions, context)
        band = _own_band(sliding_window_mask, seq_len, window, context)
        is_global = torch.zeros(seq_len, dtype=torch.bool)
        is_global[positions] = True
        rows, columns = band | is_global[:, None], band | is_global[None, :]
        expected = rows | columns
        if torch.equal(got, expected):
            continue
        diagnose(got, [
            (band, "sliding_window_mask ignores global_positions",
             "a global position sees every key (its row is all True) and every query sees it (its column too)."),
            (rows, "sliding_window_mask makes the global rows all True but not their columns: the globals see "
             "everyone, nobody sees them",
             "global attention is symmetric in Longformer: also set mask[:, g] = True (or | is_global[None, :])."),
            (columns, "sliding_window_mask makes the global columns all True but not their rows: everyone sees the "
             "globals, they do not see everyone",
             "a global token reads the whole sequence: also set mask[g, :] = True (or | is_global[:, None])."),
        ], context=context, matches=torch.equal)
        wrong = (got != expected).nonzero()[0].tolist()
        fail(f"sliding_window_mask's entry (query {wrong[0]}, key {wrong[1]}) is {bool(got[tuple(wrong)])}, expected "
             f"{bool(expected[tuple(wrong)])} (on {context})",
             "start from the band, then set the whole row and the whole column of each global position to True "
             "(repeated positions change nothing; their order does not matter).")
