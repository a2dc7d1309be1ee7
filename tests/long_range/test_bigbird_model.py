"""Our BigBird encoder (the pretraining Encoder with block-sparse self-attention) pinned to HF ``BigBirdModel``.

Tiny random config (hidden 32, 2 heads, 2 layers, block_size 4, 2 random blocks), copied weights, fp32.
Fallback bound: (5 + 2·2)·4 = 36 tokens. HF's switch to full attention is sticky, so every HF call below
starts from ``set_attention_type("block_sparse")``; whether HF switched is read from its ``attention_type``.
"""
from __future__ import annotations

import pytest
import torch

from course_lib.long_range.bigbird_model import BigBirdEncoder, bigbird_from_hf, uses_full_attention
from course_lib.pretraining.encoder import EncoderConfig

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
BLOCK_SIZE, RANDOM_BLOCKS = 4, 2
BOUND = (5 + 2 * RANDOM_BLOCKS) * BLOCK_SIZE  # 36


@pytest.fixture(scope="module")
def hf_model():
    config = transformers.BigBirdConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, block_size=BLOCK_SIZE, num_random_blocks=RANDOM_BLOCKS,
        attention_type="block_sparse", hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return transformers.BigBirdModel(config).eval()


def run_hf(model, ids, mask):
    model.set_attention_type("block_sparse")
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=mask)
    return output, model.attention_type


def inputs(seq_len: int, pad_from: int | None = None):
    generator = torch.Generator().manual_seed(seq_len)
    ids = torch.randint(1, 100, (2, seq_len), generator=generator)
    mask = torch.ones(2, seq_len, dtype=torch.long)
    if pad_from is not None:
        ids[1, pad_from:], mask[1, pad_from:] = 0, 0
    return ids, mask


def test_fallback_rule_in_numbers():
    assert uses_full_attention(BOUND, BLOCK_SIZE, RANDOM_BLOCKS) and not uses_full_attention(BOUND + 1, BLOCK_SIZE,
                                                                                            RANDOM_BLOCKS)
    assert uses_full_attention(5 * 64, 64, 0) and not uses_full_attention(11 * 64 + 1, 64, 3)  # BigBird's defaults


@pytest.mark.parametrize("seq_len, pad_from, hf_type", [
    (BOUND, 30, "original_full"),  # the longest input HF sends to full attention
    (BOUND + 1, 31, "block_sparse"),  # the shortest it keeps block-sparse (padded to 40 tokens: 10 blocks)
    (52, 23, "block_sparse"),  # a multiple of the block size; padding covers whole blocks
])
def test_last_hidden_state_equals_hf_on_both_sides_of_the_bound(hf_model, seq_len, pad_from, hf_type):
    ours = bigbird_from_hf(hf_model).eval()
    ids, mask = inputs(seq_len, pad_from)
    theirs, attention_type = run_hf(hf_model, ids, mask)
    assert attention_type == hf_type
    with torch.no_grad():
        mine = ours(ids, mask)
    assert mine.last_hidden_state.shape == theirs.last_hidden_state.shape
    assert (mine.last_hidden_state - theirs.last_hidden_state).abs().max() < ATOL  # padded positions included
    assert (mine.pooler_output - theirs.pooler_output).abs().max() < ATOL


def test_block_sparse_is_not_full_attention_here(hf_model):
    # the pin above can fail: full attention over 37 tokens gives another answer than HF's block-sparse one
    ours = bigbird_from_hf(hf_model).eval()
    ids, mask = inputs(BOUND + 1, 31)
    theirs, _ = run_hf(hf_model, ids, mask)
    for layer in ours.layers:
        layer.self_attn.num_random_blocks = 100  # a bound no input reaches: always full attention
    with torch.no_grad():
        full = ours(ids, mask).last_hidden_state
    assert (full - theirs.last_hidden_state).abs().max() > 1e-3


def test_training_mode_random_blocks_equal_hf(hf_model):
    # HF seeds numpy with the layer's index on every forward: its random blocks are reproducible; dropout is 0
    ours = bigbird_from_hf(hf_model).train()
    hf_model.train()
    try:
        ids, mask = inputs(64, 50)
        theirs, attention_type = run_hf(hf_model, ids, mask)
        with torch.no_grad():
            mine = ours(ids, mask).last_hidden_state
            eval_mode = ours.eval()(ids, mask).last_hidden_state
    finally:
        hf_model.eval()
    assert attention_type == "block_sparse"
    assert (mine - theirs.last_hidden_state).abs().max() < ATOL
    assert (eval_mode - theirs.last_hidden_state).abs().max() > 1e-3  # the random blocks do matter


def test_refusals(hf_model):
    with pytest.raises(ValueError, match="bare BigBirdModel"):
        bigbird_from_hf(transformers.BertModel(transformers.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)))
    gelu_new = transformers.BigBirdModel(transformers.BigBirdConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, block_size=4, num_random_blocks=1))  # HF's default activation is gelu_new
    with pytest.raises(ValueError, match="gelu_new"):
        bigbird_from_hf(gelu_new)
    ours = BigBirdEncoder(EncoderConfig(vocab_size=50, dim=16, num_layers=1, num_heads=2, ffn_dim=32,
                                        max_positions=30), block_size=4, num_random_blocks=1)
    with pytest.raises(ValueError, match="pad to 32"):
        ours(torch.ones(1, 29, dtype=torch.long))
    attention = ours.layers[0].self_attn.train()
    with pytest.raises(ValueError, match="older plan"):  # HF's random blocks at exactly 1024 tokens: not reproduced
        attention(torch.randn(1, 1024, 16))
