"""The long-range lab's BigBird checks: which key blocks each query block computes.

Students write ``bigbird_block_layout(num_blocks, random_blocks) -> (nb, nb) bool``: the first and last
blocks are global (their rows and columns all True), every other query block sees its own block and one
neighbour on each side, and query block ``k + 1`` also sees the key blocks in row ``k`` of
``random_blocks`` (``(nb − 2, r)`` integers, HF's ``rand_attn`` plan; None = no random blocks). The
reference is :func:`course_lib.long_range.bigbird.bigbird_block_layout`, the picture of what the
library's block-sparse attention computes (pinned to HF ``BigBirdModel`` in tests/long_range).

Two cells. ``test_block_layout`` grades the layout without random blocks, for 3 to 12 blocks (with 3
and 4, HF's special second and second-to-last rows coincide or touch). ``test_random_blocks`` grades the
random blocks *on top of the student's own layout without them* (so a wrong window costs only the first
cell): plans as HF draws them (outside the window and the globals), plans whose blocks hit the window or
the globals or repeat (they add nothing there), the smallest plan (3 blocks, one row). It also needs at
least one random block to add something somewhere, so a layout that is all True cannot pass it.
Classic mistakes named: no global blocks, a window of 1 block or of 5, global rows without their
columns; random blocks on the wrong rows (plan row ``k`` on query block ``k`` or ``k + 2``), on the
columns' side (key block ``k + 1`` seen by the listed query blocks), made symmetric, or ignored.

Not covered: drawing the plan (``course_lib.long_range.bigbird.bigbird_random_blocks``), tokens within
blocks, several heads (HF draws one plan per head; the layout is per plan).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...long_range.bigbird import bigbird_block_layout as library_bigbird_block_layout
from ..toolkit import CheckFailed, call_for_tensor, diagnose, fail, trials

__all__ = ["check_block_layout", "check_random_blocks", "layout_cases", "random_cases",
           "reference_bigbird_block_layout"]


def reference_bigbird_block_layout(num_blocks, random_blocks=None):
    """The lab's ``bigbird_block_layout``: :func:`course_lib.long_range.bigbird.bigbird_block_layout` (on the CPU,
    where the checks compare layouts; the plan may come from the course's device)."""
    plan = random_blocks.cpu() if isinstance(random_blocks, torch.Tensor) else random_blocks
    return library_bigbird_block_layout(num_blocks, plan)


def _pattern(num_blocks: int, width: int = 1, rows: bool = True, columns: bool = True) -> torch.Tensor:
    """(nb, nb): |i − j| <= width, with the first and last blocks' rows and/or columns all True."""
    index = torch.arange(num_blocks)
    layout = (index[:, None] - index[None, :]).abs() <= width
    ends = (index == 0) | (index == num_blocks - 1)
    return layout | (ends[:, None] if rows else False) | (ends[None, :] if columns else False)


def layout_cases():
    """(num_blocks, context): the sizes where HF's special rows coincide, then longer sequences of blocks."""
    yield 8, "8 blocks"
    yield 3, "3 blocks: the second and the second-to-last query block are the same block"
    yield 4, "4 blocks: the second and second-to-last query blocks are neighbours"
    for num_blocks in (5, 6, 12):
        yield num_blocks, f"{num_blocks} blocks"


def _hf_like_plan(trial, num_blocks: int, count: int) -> torch.Tensor:
    """(nb − 2, count): for query block k + 1, ``count`` distinct key blocks outside its window and the globals."""
    rows = []
    for query in range(1, num_blocks - 1):
        allowed = [b for b in range(1, num_blocks - 1) if abs(b - query) > 1]
        order = torch.randperm(len(allowed), generator=trial.generator)[:count].tolist()
        rows.append([allowed[i] for i in order])
    return torch.tensor(rows, dtype=torch.long, device=trial.device)


def random_cases():
    """(num_blocks, random_blocks, context): HF-like plans, plans that hit the window or the globals, edges."""
    for trial in trials(3, seed=3300):
        num_blocks, count = [(8, 2), (10, 3), (7, 1)][trial.index]
        plan = _hf_like_plan(trial, num_blocks, count)
        yield num_blocks, plan, f"{num_blocks} blocks, random blocks {plan.tolist()}"
    device = next(trials(1)).device
    plan = torch.tensor([[0, 3], [4, 1], [2, 2], [5, 3]], device=device)
    yield 6, plan, f"6 blocks, random blocks {plan.tolist()} (on the globals, in the window, repeated)"
    plan = torch.tensor([[1]], device=device)
    yield 3, plan, "3 blocks, random blocks [[1]] (the middle block's own)"
    plan = torch.tensor([[3], [0]], device=device)
    yield 4, plan, "4 blocks, random blocks [[3], [0]] (both on a global block)"


def _layout(bigbird_block_layout: Callable, num_blocks, random_blocks, context) -> torch.Tensor:
    layout = call_for_tensor(bigbird_block_layout, num_blocks, random_blocks, name="bigbird_block_layout",
                             shape=(num_blocks, num_blocks), context=context)
    if layout.dtype != torch.bool:
        fail(f"bigbird_block_layout returns dtype {layout.dtype}, expected torch.bool (on {context})",
             "return a boolean (num_blocks, num_blocks) tensor, True where the query block computes the key block.")
    return layout.cpu()


def _first_difference(got, expected, context, hint) -> None:
    wrong = (got != expected).nonzero()[0].tolist()
    fail(f"bigbird_block_layout's entry (query block {wrong[0]}, key block {wrong[1]}) is {bool(got[tuple(wrong)])}, "
         f"expected {bool(expected[tuple(wrong)])} (on {context})", hint)


def check_block_layout(bigbird_block_layout: Callable) -> None:
    """No random blocks: global first and last blocks, a window of 3 blocks."""
    for num_blocks, context in layout_cases():
        got = _layout(bigbird_block_layout, num_blocks, None, context)
        expected = reference_bigbird_block_layout(num_blocks, None).cpu()
        if torch.equal(got, expected):
            continue
        diagnose(got, [
            (_pattern(num_blocks, rows=False, columns=False), "bigbird_block_layout has no global blocks",
             "the first and last blocks are global: their rows and their columns are all True."),
            (_pattern(num_blocks, width=0),
             "bigbird_block_layout's window is 1 block (each query block sees only itself)",
             "BigBird's sliding window is 3 blocks: the query block and one neighbour on each side, |i − j| <= 1."),
            (_pattern(num_blocks, width=2), "bigbird_block_layout's window is 5 blocks (two neighbours on each side)",
             "BigBird's sliding window is 3 blocks: |i − j| <= 1."),
            (_pattern(num_blocks, columns=False), "bigbird_block_layout makes the first and last rows all True but "
             "not their columns",
             "global blocks are seen by every query block too: layout[:, 0] and layout[:, -1] are all True."),
            (_pattern(num_blocks, rows=False), "bigbird_block_layout makes the first and last columns all True but "
             "not their rows",
             "global blocks also see every key block: layout[0] and layout[-1] are all True."),
        ], context=context, matches=torch.equal)
        _first_difference(got, expected, context, "global first and last blocks (rows and columns), and "
                          "|i − j| <= 1 for the others.")


def _scatter(num_blocks: int, random_blocks: torch.Tensor, row_offset: int = 1, swap: bool = False) -> torch.Tensor:
    """(nb, nb): True at (k + row_offset, random_blocks[k, m]) for every listed block (transposed if ``swap``)."""
    layout = torch.zeros(num_blocks, num_blocks, dtype=torch.bool)
    plan = random_blocks.cpu()
    rows = torch.arange(plan.shape[0])[:, None].expand_as(plan) + row_offset
    keep = (rows >= 0) & (rows < num_blocks)
    rows, columns = rows[keep], plan[keep]
    layout[(columns, rows) if swap else (rows, columns)] = True
    return layout


def _own_layout(bigbird_block_layout: Callable, num_blocks: int, context: str) -> torch.Tensor:
    try:
        return _layout(bigbird_block_layout, num_blocks, None, context)
    except CheckFailed:  # that is the other cell's failure; judge the random blocks on the reference's layout
        return reference_bigbird_block_layout(num_blocks, None).cpu()


def check_random_blocks(bigbird_block_layout: Callable) -> None:
    """With a plan: the layout without it, plus (k + 1, random_blocks[k, m]) for every listed block."""
    added_somewhere = False
    for num_blocks, plan, context in random_cases():
        got = _layout(bigbird_block_layout, num_blocks, plan, context)
        base = _own_layout(bigbird_block_layout, num_blocks, context)
        random = _scatter(num_blocks, plan)
        expected = base | random
        added_somewhere |= bool((random & ~base).any())
        if torch.equal(got, expected):
            continue
        diagnose(got, [
            (base, "bigbird_block_layout ignores random_blocks",
             "row k of random_blocks lists the key blocks that query block k + 1 also sees: set "
             "layout[k + 1, random_blocks[k]] = True."),
            (base | _scatter(num_blocks, plan, row_offset=0), "bigbird_block_layout puts row k of random_blocks on "
             "query block k (one row too early)",
             "the plan has no row for the global first block: its row k belongs to query block k + 1."),
            (base | _scatter(num_blocks, plan, row_offset=2), "bigbird_block_layout puts row k of random_blocks on "
             "query block k + 2 (one row too late)",
             "row k of the plan belongs to query block k + 1 (rows 1 … num_blocks − 2)."),
            (base | _scatter(num_blocks, plan, swap=True), "bigbird_block_layout writes the random blocks as rows "
             "(query blocks) instead of columns (key blocks)",
             "random_blocks[k] lists KEY blocks: layout[k + 1, random_blocks[k]] = True, not layout[random_blocks[k], "
             "k + 1]."),
            (expected | _scatter(num_blocks, plan, swap=True), "bigbird_block_layout makes the random blocks "
             "symmetric",
             "random attention is one-way: query block k + 1 sees the listed key blocks; they do not see it back "
             "(unless the window or a global block already does)."),
        ], context=context, matches=torch.equal)
        _first_difference(got, expected, context, "the layout without random blocks, plus layout[k + 1, "
                          "random_blocks[k, m]] = True for every k and m.")
    if not added_somewhere:
        fail("bigbird_block_layout's layout without random blocks already computes every block the random blocks "
             "name, in every case: it computes too much",
             "without random blocks, only the global first and last blocks and the 3-block window are True.")
