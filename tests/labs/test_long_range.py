"""Lab 09 (long_range): what only its checks need; what every lab shares is in ``test_structure.py``.

The lab's references are the library's own (``course_lib.long_range``'s ``sliding_window_mask``,
``bigbird_block_layout``, ``online_softmax_update``), pinned here to direct definitions: the band and the
global rows and columns entry by entry; the block layout as HF ``BigBirdModel``'s block-sparse attention
gathers its key blocks row by row (its special second and second-to-last rows included); the update folded
over tiles equal to torch's SDPA (causal and not) and to a masked softmax with the course's zero for a row
with no allowed key. The checks' inputs reach the edge cases the issue names (window 0, a window ≥ T, T = 1,
globals at both ends, repeated and unsorted globals; 3 and 4 blocks, random blocks on the window, the
globals and repeated; a tile raising and one lowering the max, a fully masked tile, an empty row, scores
near ±1000, batch and head dims); each mistake's cell is judged on the student's own other aspect (a
miscounted band keeps the global cell, a wrong window of blocks keeps the random-blocks cell, a missing
rescale keeps the masked cell), while a function that is all True loses both of its cells; mistakes no
fixture holds get their own message; each cell is fast. The known mistakes
(``tests/fixtures/labs/long_range/``), the reference solution and the notebooks: ``test_structure.py``;
nbgrader: ``tests/grader/``.
"""
from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from course_lib.lab_checks import long_range as long_range_checks
from course_lib.lab_checks.long_range import blocks, online_softmax, window
from course_lib.lab_checks.toolkit import CheckFailed
from tests.labs.support import kernel as lab_kernel
from tests.labtools import lab_files


@pytest.fixture(scope="module")
def kernel() -> dict:
    """The set-up cell and the solution cells run in one namespace, as in a kernel."""
    return lab_kernel(lab_files("long_range"))


def failure(grade_id: str, *functions) -> str:
    with pytest.raises(CheckFailed) as caught:
        long_range_checks.RUBRIC.run(grade_id, *functions)
    return str(caught.value)


def band(seq_len, width):
    index = torch.arange(seq_len)
    return (index[:, None] - index[None, :]).abs() <= width


def with_globals(mask, positions, rows=True, columns=True):
    mask = mask.clone()
    for position in positions:
        if rows:
            mask[position, :] = True
        if columns:
            mask[:, position] = True
    return mask


# --- the references --------------------------------------------------------------------------------------

def test_reference_mask_is_the_band_and_the_global_rows_and_columns_entry_by_entry():
    for seq_len, width, positions in [(7, 2, []), (9, 1, [8, 0, 8]), (1, 0, [0]), (4, 5, [2]), (6, 0, [])]:
        expected = torch.tensor([[abs(i - j) <= width or i in positions or j in positions for j in range(seq_len)]
                                 for i in range(seq_len)])
        assert torch.equal(window.reference_sliding_window_mask(seq_len, width, positions), expected)


def hf_block_layout(num_blocks, plan):
    """The key blocks HF's ``bigbird_block_sparse_attention`` gathers for each query block (one head): the first
    and last query blocks attend to everything; the second to blocks 0, 1, 2, the last and plan row 0; the
    middle ones (q[2:-2]) to their 3-block window, the first, the last and their plan row; the second-to-last
    to block 0, its window (−3, −2, −1) and the plan's last row."""
    layout = torch.zeros(num_blocks, num_blocks, dtype=torch.bool)
    layout[0] = layout[-1] = True
    last = num_blocks - 1
    layout[1, [0, 1, 2, last]] = True
    layout[1, plan[0]] = True
    for query in range(2, num_blocks - 2):
        layout[query, [query - 1, query, query + 1, 0, last]] = True
        layout[query, plan[query - 1]] = True
    layout[num_blocks - 2, [0, last - 2, last - 1, last]] = True
    layout[num_blocks - 2, plan[-1]] = True
    return layout


@pytest.mark.parametrize("num_blocks", [3, 4, 5, 8, 11])
def test_reference_layout_is_what_hf_block_sparse_attention_gathers(num_blocks):
    generator = torch.Generator().manual_seed(num_blocks)
    plan = torch.randint(0, num_blocks, (num_blocks - 2, 2), generator=generator)
    assert torch.equal(blocks.reference_bigbird_block_layout(num_blocks, plan).cpu(), hf_block_layout(num_blocks, plan))
    assert torch.equal(blocks.reference_bigbird_block_layout(num_blocks, None).cpu(),
                       hf_block_layout(num_blocks, torch.zeros(num_blocks - 2, 0, dtype=torch.long)))


def fold(update, scores, values, tile):
    """softmax(scores) @ values by folding tiles of keys with ``update``; a row with no allowed key gives 0."""
    lead, queries, width = scores.shape[:-2], scores.shape[-2], values.shape[-1]
    state = online_softmax.empty_state(tuple(lead), queries, width, scores.device)
    for start in range(0, scores.shape[-1], tile):
        state = update(*state, scores[..., start:start + tile], values[..., start:start + tile, :])
    _, total, accumulator = state
    return torch.where(total[..., None] > 0, accumulator / total.clamp(min=1e-30)[..., None], 0.0)


@pytest.mark.parametrize("causal", [False, True])
def test_reference_update_folded_over_tiles_is_torch_sdpa(causal):
    generator = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 20, 8, generator=generator) for _ in range(3))
    scores = q @ k.transpose(-2, -1) / math.sqrt(8)
    if causal:
        scores = scores.masked_fill(~torch.ones(20, 20, dtype=torch.bool).tril(), -math.inf)
    got = fold(online_softmax.reference_online_softmax_update, scores, v, tile=6)
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, is_causal=causal), atol=1e-5, rtol=1e-5)


def test_reference_update_gives_zero_for_a_row_with_no_allowed_key_and_survives_large_scores():
    generator = torch.Generator().manual_seed(6)
    scores, values = torch.randn(4, 10, generator=generator) * 5 + 1000, torch.randn(10, 3, generator=generator)
    scores[1] = -math.inf
    scores[2, :7] = -math.inf  # the first tiles of row 2 are fully masked
    got = fold(online_softmax.reference_online_softmax_update, scores, values, tile=3)
    expected = torch.softmax(scores, dim=-1).nan_to_num(0.0) @ values
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[1], torch.zeros(3))


def test_checks_inputs_hold_the_edge_cases():
    windows = [(t, w) for t, w, _ in window.window_cases()]
    assert (10, 3) == windows[0] and any(w == 0 for _, w in windows) and any(w >= t for t, w in windows)
    assert any(t == 1 for t, _ in windows)
    globals_ = [(t, positions) for t, _, positions, _ in window.global_cases()]
    assert any({0, t - 1} <= set(p) for t, p in globals_)  # both ends
    assert any(len(set(p)) < len(p) for _, p in globals_) and any(p != sorted(p) for _, p in globals_)
    assert any(set(p) == set(range(t)) for t, p in globals_) and any(t == 1 for t, _ in globals_)
    assert {3, 4} <= {nb for nb, _ in blocks.layout_cases()}
    hits_window = hits_global = repeats = False
    for num_blocks, plan, _ in blocks.random_cases():
        for k, row in enumerate(plan.tolist()):
            hits_window |= any(abs(b - (k + 1)) <= 1 for b in row)
            hits_global |= any(b in (0, num_blocks - 1) for b in row)
            repeats |= len(set(row)) < len(row)
    assert hits_window and hits_global and repeats
    assert any(nb == 3 for nb, _, _ in blocks.random_cases())
    raised = lowered = large = batched = False
    for state_max, _, _, scores, _, _ in online_softmax.update_cases():
        assert torch.isfinite(state_max).all() and torch.isfinite(scores).all()
        raised |= bool((scores.amax(-1) > state_max).any())
        lowered |= bool((scores.amax(-1) < state_max).any())
        large |= bool(scores.abs().max() > 900)
        batched |= scores.dim() >= 4
    assert raised and lowered and large and batched
    fully_masked_tile = empty_row = empty_meets_masked = partial = False
    for state_max, _, _, scores, _, _ in online_softmax.masked_cases():
        masked_rows = torch.isneginf(scores).all(-1)
        fully_masked_tile |= bool((masked_rows & torch.isfinite(state_max)).any())
        empty_row |= bool((torch.isneginf(state_max) & ~masked_rows).any())
        empty_meets_masked |= bool((torch.isneginf(state_max) & masked_rows).any())
        partial |= bool((torch.isneginf(scores).any(-1) & ~masked_rows).any())
        assert not bool((scores.amax(-1) > state_max)[torch.isfinite(state_max)].any())  # no rescale needed
    assert fully_masked_tile and empty_row and empty_meets_masked and partial


def test_a_solution_folds_into_the_readable_attention_with_the_window_mask(kernel):
    """The lab's pieces together, as the closing cell shows: tiles of a windowed attention equal the course's
    readable attention with the mask."""
    from course_lib import scaled_dot_product_attention

    generator = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 40, 8, generator=generator) for _ in range(3))
    mask = kernel["sliding_window_mask"](40, 3, [0, 39])
    scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~mask, -math.inf)
    expected, _ = scaled_dot_product_attention(q, k, v, mask=mask)
    torch.testing.assert_close(fold(kernel["online_softmax_update"], scores, v, tile=7), expected,
                               atol=1e-5, rtol=1e-5)


# --- mistakes no fixture holds -----------------------------------------------------------------------------

def mask_from(rule):
    def sliding_window_mask(seq_len, window, global_positions=()):
        index = torch.arange(seq_len)
        return with_globals(rule(index[:, None], index[None, :], window), list(global_positions))
    return sliding_window_mask


@pytest.mark.parametrize(("grade_id", "function", "phrase"), [
    ("test_window", mask_from(lambda i, j, w: (i - j).abs() <= 2 * w), "window is doubled"),
    ("test_window", mask_from(lambda i, j, w: (i - j >= 0) & (i - j <= w)), "only lets a query look back"),
    ("test_window", lambda t, w, g=(): ~window.reference_sliding_window_mask(t, w, g), "inverted"),
    ("test_window", lambda t, w, g=(): window.reference_sliding_window_mask(t, w, g).int(), "expected torch.bool"),
    ("test_window", lambda t, w, g=(): None, "did you forget a `return`"),
    ("test_global", lambda t, w, g=(): band(t, w), "ignores global_positions"),
    ("test_global", lambda t, w, g=(): band(t, w) | band(t, w).new_ones(t, t).triu(), "(query"),
])
def test_mask_mistakes_no_fixture_holds_are_named(grade_id, function, phrase):
    assert phrase in failure(grade_id, function)


def layout_from(width=1, rows=True, columns=True, offset=1, swap=False, symmetric=False, use_plan=True):
    def bigbird_block_layout(num_blocks, random_blocks=None):
        layout = blocks._pattern(num_blocks, width, rows, columns)
        if random_blocks is not None and use_plan:
            added = blocks._scatter(num_blocks, random_blocks, row_offset=offset, swap=swap)
            layout = layout | added | (added.T if symmetric else False)
        return layout
    return bigbird_block_layout


@pytest.mark.parametrize(("grade_id", "function", "phrase"), [
    ("test_block_layout", layout_from(width=2), "window is 5 blocks"),
    ("test_block_layout", layout_from(columns=False), "not their columns"),
    ("test_block_layout", layout_from(rows=False), "not their rows"),
    ("test_random_blocks", layout_from(offset=2), "one row too late"),
    ("test_random_blocks", layout_from(swap=True), "instead of columns"),
    ("test_random_blocks", layout_from(symmetric=True), "symmetric"),
    ("test_random_blocks", layout_from(use_plan=False), "ignores random_blocks"),
    ("test_random_blocks", lambda nb, plan=None: torch.ones(nb, nb, dtype=torch.bool), "computes too much"),
])
def test_layout_mistakes_no_fixture_holds_are_named(grade_id, function, phrase):
    assert phrase in failure(grade_id, function)


def tile_max_only(running_max, running_sum, accumulator, scores, values):
    new_max = scores.amax(dim=-1)
    rescale = torch.exp(running_max - new_max)
    weights = torch.exp(scores - new_max[..., None])
    return new_max, running_sum * rescale + weights.sum(-1), accumulator * rescale[..., None] + weights @ values


def no_max_subtracted(running_max, running_sum, accumulator, scores, values):
    """Sums of plain exp, the 'max' kept only for show: exp(1000) overflows."""
    new_max = torch.maximum(running_max, scores.amax(dim=-1))
    weights = torch.exp(scores)
    return new_max, running_sum + weights.sum(-1), accumulator + weights @ values


def empty_max_reset_to_zero(running_max, running_sum, accumulator, scores, values):
    new_max, new_sum, new_accumulator = online_softmax.reference_online_softmax_update(
        running_max, running_sum, accumulator, scores, values)
    return torch.nan_to_num(new_max, neginf=0.0), new_sum, new_accumulator


@pytest.mark.parametrize(("grade_id", "function", "phrase"), [
    ("test_online_update", tile_max_only, "the tile's own maximum"),
    ("test_online_update", no_max_subtracted, "without subtracting the maximum"),
    ("test_online_masked", empty_max_reset_to_zero, "a finite maximum"),
    ("test_online_update", lambda m, s, a, scores, v: (m, s), "(new_max, new_sum, new_accumulator)"),
    ("test_online_masked", lambda m, s, a, scores, v: (m, s, a[..., 0]), "has shape"),
])
def test_update_mistakes_no_fixture_holds_are_named(grade_id, function, phrase):
    assert phrase in failure(grade_id, function)


def test_each_mistake_is_judged_on_the_students_other_aspect():
    """A doubled window keeps the global cell, a 5-block window the random-blocks cell; an all-True mask (a band
    wider than 2·window) is judged on the reference's band and loses both cells."""
    long_range_checks.RUBRIC.run("test_global", mask_from(lambda i, j, w: (i - j).abs() <= 2 * w))
    long_range_checks.RUBRIC.run("test_random_blocks", layout_from(width=2))
    long_range_checks.RUBRIC.run("test_random_blocks", layout_from(rows=False, columns=False))

    def everything(seq_len, window, global_positions=()):
        return torch.ones(seq_len, seq_len, dtype=torch.bool)

    assert "entry" in failure("test_window", everything) and "entry" in failure("test_global", everything)


# --- CI time -------------------------------------------------------------------------------------------------

def test_each_cell_is_fast(kernel):
    """CI time: every cell's hidden checks on the reference solution within 1 s on a shared 2-core machine."""
    for criterion in long_range_checks.RUBRIC:
        start = time.perf_counter()
        long_range_checks.RUBRIC.run(criterion.grade_id, *(kernel[name] for name in criterion.functions))
        assert time.perf_counter() - start < 1.0, criterion.grade_id
