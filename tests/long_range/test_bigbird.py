"""BigBird's block layout, random-block plan and block-sparse attention, pinned to HF transformers' BigBird.

The layout is read off what HF actually computes: its block-sparse attention returns a full-size (B, H, T, T)
probability matrix holding the weights it computed and zeros elsewhere, so the (query block, key block) pairs
with a nonzero weight are the computed ones. The plan is compared with HF's own drawing code under the same
numpy seed; the attention with HF's attention module on the same projections (eval: the all-zeros plan, so
block 0 repeats; training: real random blocks), and with the readable attention under the expanded mask.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib.attention import scaled_dot_product_attention
from course_lib.long_range.bigbird import (
    bigbird_attention, bigbird_block_counts, bigbird_block_layout, bigbird_random_blocks,
)

transformers = pytest.importorskip("transformers")
from transformers.models.big_bird import modeling_big_bird as hf_big_bird

ATOL = 1e-5


def hf_attention(block_size: int, r: int, heads: int = 2, head_dim: int = 8, seed: int = 0, training: bool = False):
    config = transformers.BigBirdConfig(hidden_size=heads * head_dim, num_attention_heads=heads, block_size=block_size,
                                        num_random_blocks=r, attention_type="block_sparse", max_position_embeddings=512)
    torch.manual_seed(seed)
    return hf_big_bird.BigBirdBlockSparseAttention(config, seed=seed).train(training)


def run_hf(attention, hidden: torch.Tensor, real: torch.Tensor):
    """HF's (context (B, T, H·d), probabilities (B, H, T, T)) with its model's masks for ``real`` (B, T)."""
    masks = hf_big_bird.BigBirdModel.create_masks_for_block_sparse_attn(real.float(), attention.block_size)
    blocked, band, from_mask, to_mask = masks
    with torch.no_grad():
        return attention(hidden, band, from_mask, to_mask, blocked, blocked)


def projections(attention, hidden: torch.Tensor):
    heads = attention.num_attention_heads
    split = [layer(hidden).view(*hidden.shape[:2], heads, -1).transpose(1, 2)
             for layer in (attention.query, attention.key, attention.value)]
    return split  # query, key, value (B, H, T, d)


def hf_block_pairs(probabilities: torch.Tensor, block_size: int) -> torch.Tensor:
    batch, heads, seq_len, _ = probabilities.shape
    nb = seq_len // block_size
    blocked = probabilities.view(batch, heads, nb, block_size, nb, block_size)
    return (blocked != 0).any(dim=5).any(dim=3)  # (B, H, nb, nb)


# --- the layout -----------------------------------------------------------------------------------------

def test_layout_by_hand_without_random_blocks():
    expected = torch.tensor([[1, 1, 1, 1, 1, 1, 1],
                             [1, 1, 1, 0, 0, 0, 1],
                             [1, 1, 1, 1, 0, 0, 1],
                             [1, 0, 1, 1, 1, 0, 1],
                             [1, 0, 0, 1, 1, 1, 1],
                             [1, 0, 0, 0, 1, 1, 1],
                             [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(bigbird_block_layout(7), expected)
    assert torch.equal(bigbird_block_layout(7, torch.zeros(5, 0, dtype=torch.long)), expected)


def test_random_blocks_add_their_key_block_to_their_row_only():
    plan = torch.tensor([[4], [5], [1], [1], [2]])  # rows 1 … 5 of 7 blocks
    added = bigbird_block_layout(7, plan) & ~bigbird_block_layout(7)
    assert sorted(added.nonzero().tolist()) == [[1, 4], [2, 5], [3, 1], [4, 1], [5, 2]]


def test_counts_score_a_repeated_block_once_per_slot():
    counts = bigbird_block_counts(6, torch.zeros(4, 3, dtype=torch.long))  # HF's eval plan: r = 3 zeros
    assert counts[1:-1, 0].tolist() == [4, 4, 4, 4]  # the global block once, then once per random slot
    assert counts[0].tolist() == [1] * 6 and counts[-1].tolist() == [1] * 6  # global rows: every block once
    assert counts[1].tolist() == [4, 1, 1, 0, 0, 1]  # row 1's window holds block 0: not counted twice
    assert counts[4].tolist() == [4, 0, 0, 1, 1, 1]  # row 4's window holds the last block: not counted twice


@pytest.mark.parametrize("block_size, seq_len, r", [(4, 48, 2), (2, 30, 3), (8, 64, 1)])
def test_layout_is_what_hf_computes_in_eval_mode(block_size, seq_len, r):
    attention = hf_attention(block_size, r)
    hidden = torch.randn(1, seq_len, 16)
    _, probabilities = run_hf(attention, hidden, torch.ones(1, seq_len))
    plan = bigbird_random_blocks(seq_len // block_size, r)
    assert torch.equal(plan, torch.zeros(seq_len // block_size - 2, r, dtype=torch.long))
    expected = bigbird_block_layout(seq_len // block_size, plan)
    assert torch.equal(hf_block_pairs(probabilities, block_size), expected.expand(1, 2, *expected.shape))


@pytest.mark.parametrize("block_size, seq_len, r, seed", [(4, 48, 2, 0), (2, 40, 3, 1), (4, 64, 1, 5)])
def test_layout_and_plan_are_what_hf_computes_in_training_mode(block_size, seq_len, r, seed):
    attention = hf_attention(block_size, r, heads=3, seed=seed, training=True)  # HF seeds np.random with `seed`
    hidden = torch.randn(1, seq_len, 24)
    _, probabilities = run_hf(attention, hidden, torch.ones(1, seq_len))
    plan = bigbird_random_blocks(seq_len // block_size, r, seed=seed, training=True, num_heads=3)  # (3, nb − 2, r)
    assert len({tuple(p.flatten().tolist()) for p in plan}) == 3  # each head draws its own blocks
    assert torch.equal(hf_block_pairs(probabilities, block_size)[0], bigbird_block_layout(seq_len // block_size, plan))


@pytest.mark.parametrize("num_blocks, r, heads", [(12, 2, 1), (10, 1, 4), (8, 1, 2), (20, 3, 2)])
def test_plan_equals_hf_draws(num_blocks, r, heads):
    block_size = 2
    attention = hf_attention(block_size, r, heads=heads, training=True)
    for seed in (0, 3):
        np.random.seed(seed)
        ends, counts = attention._get_rand_attn_plan(num_blocks * block_size, block_size, r)
        theirs = attention._bigbird_block_rand_mask_with_head(
            num_blocks * block_size, num_blocks * block_size, block_size, block_size, heads, ends, counts)
        ours = bigbird_random_blocks(num_blocks, r, seed=seed, training=True, num_heads=heads)
        assert torch.equal(ours, torch.from_numpy(np.stack(theirs)).long())
    single = bigbird_random_blocks(num_blocks, r, seed=3, training=True)
    assert single.shape == (num_blocks - 2, r)


def test_plan_leaves_numpy_global_generator_alone():
    np.random.seed(11)
    expected = np.random.rand()
    np.random.seed(11)
    bigbird_random_blocks(12, 2, seed=0, training=True)
    assert np.random.rand() == expected


def test_plan_refuses_sizes_where_too_few_blocks_are_legal():
    with pytest.raises(ValueError, match="too few blocks"):
        bigbird_random_blocks(7, 1, seed=0, training=True)  # HF's own drawing fails here too (an empty draw)


@pytest.mark.parametrize("bad, message", [
    (dict(num_blocks=0), "positive int"), (dict(num_blocks=2.0), "positive int"),
    (dict(random_blocks=torch.zeros(4, 1)), "integer block indices"),
    (dict(random_blocks=torch.zeros(3, 1, dtype=torch.long)), "4 rows for 6 blocks"),
    (dict(random_blocks=torch.full((4, 1), 6)), r"lie in \[0, 6\)"),
])
def test_layout_refuses_bad_input(bad, message):
    arguments = dict(num_blocks=6, random_blocks=None) | bad
    with pytest.raises(ValueError, match=message):
        bigbird_block_layout(**arguments)


# --- the computation ------------------------------------------------------------------------------------

def readable_bigbird(query, key, value, block_size, plan, real):
    """The readable attention over the whole T×T scores, with log(counts) expanded to tokens as the mask."""
    counts = bigbird_block_counts(query.shape[2] // block_size, plan).to(query.dtype)  # (nb, nb) or (H, nb, nb)
    tokens = counts.repeat_interleave(block_size, -1).repeat_interleave(block_size, -2)  # (…, T, T)
    mask = tokens.log() + torch.zeros_like(real, dtype=query.dtype).masked_fill(~real, float("-inf"))[:, None, None]
    return scaled_dot_product_attention(query, key, value, mask)[0]


@pytest.mark.parametrize("training, seed", [(False, 0), (True, 2)])
def test_attention_equals_hf_with_padding(training, seed):
    block_size, seq_len, r, heads = 4, 48, 2, 2
    attention = hf_attention(block_size, r, heads=heads, seed=seed, training=training)
    hidden = torch.randn(2, seq_len, 16)
    real = torch.ones(2, seq_len, dtype=torch.bool)
    real[1, 29:] = False  # padding inside a block, and whole padded blocks after it
    context, _ = run_hf(attention, hidden, real)
    plan = bigbird_random_blocks(seq_len // block_size, r, seed=seed, training=training, num_heads=heads)
    with torch.no_grad():
        ours = bigbird_attention(*projections(attention, hidden), block_size, plan, padding_mask=real)
    ours = ours.transpose(1, 2).reshape(2, seq_len, -1) * real[..., None]  # HF zeroes the padded queries' rows
    assert (ours - context).abs().max() < ATOL


@pytest.mark.parametrize("plan_kind", ["zeros", "drawn", "per_head", "none"])
def test_attention_equals_readable_attention_with_expanded_mask(plan_kind):
    torch.manual_seed(0)
    block_size, nb, heads, r = 3, 9, 2, 2
    query, key, value = torch.randn(3, 2, heads, nb * block_size, 5).unbind(0)
    plan = {"zeros": torch.zeros(nb - 2, r, dtype=torch.long),
            "drawn": bigbird_random_blocks(nb, 1, seed=4, training=True),
            "per_head": bigbird_random_blocks(nb, 1, seed=4, training=True, num_heads=heads),
            "none": None}[plan_kind]
    real = torch.ones(2, nb * block_size, dtype=torch.bool)
    real[0, -5:] = False
    ours = bigbird_attention(query, key, value, block_size, plan, padding_mask=real)
    assert (ours - readable_bigbird(query, key, value, block_size, plan, real)).abs().max() < ATOL


def test_repeated_block_weighs_double():
    # one middle row, r = 1 naming block 0 again: block 0's keys weigh twice what a boolean mask would give them
    block_size, nb = 2, 5
    query, key, value = torch.randn(3, 1, 1, nb * block_size, 4).unbind(0)
    zeros = bigbird_attention(query, key, value, block_size, torch.zeros(nb - 2, 1, dtype=torch.long))
    boolean = scaled_dot_product_attention(
        query, key, value, bigbird_block_layout(nb).repeat_interleave(2, 0).repeat_interleave(2, 1))[0]
    assert torch.allclose(zeros[:, :, :2], boolean[:, :, :2], atol=ATOL)  # global rows: no plan involved
    assert not torch.allclose(zeros[:, :, 2:-2], boolean[:, :, 2:-2], atol=1e-3)


def test_attention_never_builds_the_full_score_matrix(monkeypatch):
    block_size, nb, r = 4, 32, 2  # T = 128: a T×T score matrix would be 16,384 entries per head
    query, key, value = torch.randn(3, 1, 1, nb * block_size, 4).unbind(0)
    score_rows = []  # (rows, keys) of every softmax the computation takes
    softmax = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda scores, dim: score_rows.append(scores.shape[-2:]) or softmax(scores, dim))
    bigbird_attention(query, key, value, block_size, bigbird_random_blocks(nb, r, seed=0, training=True))
    assert score_rows, "no softmax seen: the spy no longer watches the computation"
    assert max(rows * keys for rows, keys in score_rows) == block_size * nb * block_size  # a global block: bs × T


@pytest.mark.parametrize("bad, message", [
    (dict(block_size=5), "multiple of block_size"),
    (dict(block_size=12), "at least 3 blocks"),
    (dict(random_blocks=torch.zeros(3, 1, dtype=torch.long)), "4 rows for 6 blocks"),
    (dict(random_blocks=torch.zeros(3, 4, 1, dtype=torch.long)), "per-head plan needs 2 heads"),
    (dict(padding_mask=torch.ones(1, 24)), "padding_mask must be boolean"),
])
def test_attention_refuses_bad_input(bad, message):
    query = torch.randn(1, 2, 24, 4)
    arguments = dict(query=query, key=query, value=query, block_size=4, random_blocks=None) | bad
    with pytest.raises(ValueError, match=message):
        bigbird_attention(**arguments)
