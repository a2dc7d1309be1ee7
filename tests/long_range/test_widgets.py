"""course_lib.long_range.widgets: the explorer's patterns are the library's Longformer and BigBird patterns, its
counts are the pairs a plain loop finds, and its layer counts are those of repeated one-layer hops."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.long_range import sliding_window_mask
from course_lib.long_range.bigbird import bigbird_block_layout
from course_lib.long_range.widgets import (
    PatternKind, block_sparse_pattern, global_block_indices, layers_to_reach, pattern_explorer,
)
from course_lib.viz import Explorer


@pytest.mark.parametrize("seq_len,window,global_blocks", [(1, 0, 0), (12, 0, 0), (17, 2, 0), (16, 3, 1), (20, 1, 2),
                                                          (9, 20, 3)])
def test_blocks_of_one_token_without_random_blocks_are_the_library_sliding_window(seq_len, window, global_blocks):
    pattern = block_sparse_pattern(seq_len, 1, window, global_blocks)
    expected = sliding_window_mask(seq_len, window, global_block_indices(seq_len, global_blocks))
    assert torch.equal(pattern.allowed, expected)
    assert pattern.computed == int(expected.sum()) and pattern.full == seq_len**2


def test_global_blocks_come_from_both_ends_in_turn():
    assert [global_block_indices(8, g) for g in range(5)] == [[], [0], [0, 7], [0, 1, 7], [0, 1, 6, 7]]
    assert global_block_indices(3, 3) == [0, 1, 2] and global_block_indices(1, 1) == [0]


def _plain_loop(seq_len, block_size, window, global_blocks, plan):
    """Which (query, key) token pairs the rule allows, one pair at a time."""
    globals_ = set(global_block_indices(seq_len // block_size, global_blocks))
    allowed = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    for i in range(seq_len):
        for j in range(seq_len):
            qb, kb = i // block_size, j // block_size
            allowed[i, j] = abs(qb - kb) <= window or qb in globals_ or kb in globals_ or kb in plan[qb].tolist()
    return allowed


@pytest.mark.parametrize("seq_len,block_size,window,global_blocks,random_blocks,seed", [
    (64, 4, 1, 2, 2, 0), (48, 3, 2, 1, 3, 5), (40, 8, 0, 0, 1, 1), (30, 1, 1, 3, 2, 2), (64, 8, 1, 2, 9, 0)])
def test_the_pattern_is_what_a_plain_loop_over_the_rule_allows(seq_len, block_size, window, global_blocks,
                                                               random_blocks, seed):
    pattern = block_sparse_pattern(seq_len, block_size, window, global_blocks, random_blocks, seed=seed)
    assert torch.equal(pattern.allowed, _plain_loop(seq_len, block_size, window, global_blocks, pattern.random_plan))
    num_blocks = seq_len // block_size
    globals_ = set(global_block_indices(num_blocks, global_blocks))
    for query_block, picked in enumerate(pattern.random_plan.tolist()):
        drawn = [b for b in picked if b >= 0]
        seen = {b for b in range(num_blocks) if abs(b - query_block) <= window} | globals_
        assert len(set(drawn)) == len(drawn) and not set(drawn) & seen  # new blocks only, each once
        expected = 0 if query_block in globals_ else min(random_blocks, num_blocks - len(seen))
        assert len(drawn) == expected  # as many as asked, or every block still unseen
    kinds = pattern.kind
    assert torch.equal(pattern.allowed, kinds != PatternKind.NONE)
    assert set(kinds.unique().tolist()) <= {0, 1, 2, 3}
    assert pattern.computed == int(pattern.allowed.sum())


def test_the_random_draw_depends_on_the_seed_only():
    a, b, c = (block_sparse_pattern(64, 4, 1, 2, 2, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.random_plan, b.random_plan) and not torch.equal(a.random_plan, c.random_plan)


@pytest.mark.parametrize("num_blocks,block_size,random_blocks", [(16, 4, 3), (8, 2, 1), (6, 3, 0)])
def test_bigbirds_settings_count_the_scores_bigbird_computes(num_blocks, block_size, random_blocks):
    pattern = block_sparse_pattern(num_blocks * block_size, block_size, 1, 2, random_blocks, seed=1)
    middle = num_blocks - 2
    # global rows see everything; each middle row sees the 2 global blocks, its 3 window blocks (rows 1 and nb−2
    # share one with a global block) and its random blocks.
    block_pairs = 2 * num_blocks + middle * (2 + 3 + random_blocks) - 2
    assert pattern.computed == block_pairs * block_size**2
    assert pattern.fraction == pytest.approx(block_pairs / num_blocks**2)


def test_bigbirds_settings_are_the_library_bigbird_block_layout():
    pattern = block_sparse_pattern(64, 4, 1, 2, 3, seed=2)
    layout = bigbird_block_layout(16, pattern.random_plan[1:-1])
    assert torch.equal(pattern.block_layout, layout)
    assert torch.equal(pattern.allowed, layout.repeat_interleave(4, 0).repeat_interleave(4, 1))


def _layers_by_matrix_powers(allowed, source):
    """Layer L reaches what (allowed ∪ identity)^L links to the source: the definition, computed the slow way."""
    seq_len = allowed.shape[0]
    step = (allowed | torch.eye(seq_len, dtype=torch.bool)).long()
    reach, layers = torch.eye(seq_len, dtype=torch.long), torch.full((seq_len,), -1)
    for layer in range(seq_len + 1):
        newly = (reach[:, source] > 0) & (layers < 0)
        layers[newly] = layer
        reach = (step @ reach).clamp(max=1)
    return layers


@pytest.mark.parametrize("seq_len,window", [(40, 1), (41, 3), (64, 5)])
def test_a_window_alone_needs_one_layer_per_window_of_distance(seq_len, window):
    layers = layers_to_reach(sliding_window_mask(seq_len, window), 0)
    assert layers.tolist() == [math.ceil(k / window) for k in range(seq_len)]


def test_one_global_token_brings_every_token_within_two_layers():
    allowed = sliding_window_mask(64, 2, [30])
    layers = layers_to_reach(allowed, 0)
    assert layers.max() == 2 and layers[30] == 1 and layers[63] == 2
    assert layers_to_reach(sliding_window_mask(64, 2), 0).max() == 32


@pytest.mark.parametrize("settings", [(48, 4, 1, 2, 1), (30, 1, 2, 0, 0), (36, 3, 0, 1, 2), (32, 2, 0, 0, 0)])
def test_layers_to_reach_equals_repeated_one_layer_hops(settings):
    allowed = block_sparse_pattern(*settings, seed=3).allowed
    for source in (0, settings[0] // 2 + 1):
        assert torch.equal(layers_to_reach(allowed, source), _layers_by_matrix_powers(allowed, source))


def test_a_block_diagonal_pattern_never_reaches_the_other_blocks():
    layers = layers_to_reach(block_sparse_pattern(16, 4, 0).allowed, 5)
    assert layers.tolist() == [-1] * 4 + [1, 0, 1, 1] + [-1] * 8


@pytest.mark.parametrize("call,message", [
    (lambda: block_sparse_pattern(30, 4), "not a multiple of the block size 4"),
    (lambda: block_sparse_pattern(16, 4, global_blocks=5), "more than the 4 blocks"),
    (lambda: block_sparse_pattern(16, 1, window=-1), "window must be an int ≥ 0"),
    (lambda: block_sparse_pattern(16, 0), "block_size must be an int ≥ 1"),
    (lambda: block_sparse_pattern(16, 1, random_blocks=1.5), "random_blocks must be an int"),
    (lambda: layers_to_reach(torch.ones(3, 4, dtype=torch.bool), 0), "square boolean"),
    (lambda: layers_to_reach(torch.ones(3, 3), 0), "square boolean"),
    (lambda: layers_to_reach(torch.ones(3, 3, dtype=torch.bool), 3), r"source must lie in \[0, 3\)"),
    (lambda: pattern_explorer(64, block_size=3), "block_size must divide the 64 tokens"),
    (lambda: pattern_explorer(64, block_size=16, global_blocks=5), "more than the 4 blocks"),
])
def test_bad_settings_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_explorer_draws_every_setting_and_says_so_when_a_setting_cannot_be_drawn():
    explorer = pattern_explorer()
    assert isinstance(explorer, Explorer) and explorer.png()[:4] == b"\x89PNG"
    picture, bars = explorer.figure().axes
    assert "of 4,096 scores" in picture.get_title() and "every token hears token 4 within 2 layers" in bars.get_title()
    explorer.controls["block_size"].value = 1
    explorer.controls["global_blocks"].value = 0
    explorer.controls["random_blocks"].value = 0
    picture, bars = explorer.figure().axes
    assert "every token hears token 0 within 63 layers" in bars.get_title()  # window 1: one token per layer
    explorer.controls["block_size"].value = 16
    explorer.controls["global_blocks"].value = 4
    assert len(explorer.figure().axes) == 2
    blocked = pattern_explorer(32, block_size=16, global_blocks=2)
    blocked.controls["global_blocks"].value = 3
    assert "fewer than 3 global blocks" in blocked.figure().axes[0].texts[0].get_text()
