"""Local attention, chunked feed-forward, reversible layers, axial embeddings and parameter counts,
pinned to HF transformers' Reformer (fp32).

HF's reversible backward runs only in training mode; those comparisons use training mode with
every dropout probability 0 and a fixed ``hash_seed``. Our own RNG replay (dropout and fresh
LSH rotations reproduced in the recomputation) is tested against plain autograd instead.
"""
from __future__ import annotations

import pytest
import torch

from course_lib.reformer import (
    AxialPositionEmbeddings, ChunkedFeedForward, LocalSelfAttention, ReformerModel, ReformerSettings,
    ReversibleSequence, apply_chunking, layer_from_hf, reformer_layer,
)

transformers = pytest.importorskip("transformers")
from transformers.models.reformer import modeling_reformer as hf_reformer

ATOL = 1e-5
NO_DROPOUT = dict(hidden_dropout_prob=0.0, lsh_attention_probs_dropout_prob=0.0,
                  local_attention_probs_dropout_prob=0.0)


def hf_config(**overrides):
    settings = dict(
        hidden_size=32, num_attention_heads=2, attention_head_size=8, local_attn_chunk_length=4,
        lsh_attn_chunk_length=4, num_buckets=4, num_hashes=2, hash_seed=7, feed_forward_size=64,
        attn_layers=["local", "lsh", "local"], axial_pos_shape=[4, 8], axial_pos_embds_dim=[12, 20],
        max_position_embeddings=32, **NO_DROPOUT,
    )
    settings.update(overrides)
    return transformers.ReformerConfig(**settings)


def padding(lengths: list[int], seq_len: int) -> torch.Tensor:
    return (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)


# --- local attention -------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    {}, {"is_decoder": True}, {"local_num_chunks_before": 2, "local_num_chunks_after": 1},
    {"local_num_chunks_before": 0}, {"local_attn_chunk_length": 16},
], ids=["default", "causal", "before2-after1", "no-lookback", "one-chunk"])
@pytest.mark.parametrize("lengths", [None, [16, 9]], ids=["no-mask", "padding-mask"])
def test_local_attention_equals_hf(overrides, lengths):
    hf = hf_reformer.LocalSelfAttention(hf_config(**overrides)).eval()
    ours = LocalSelfAttention.from_hf(hf).eval()
    x = torch.randn(2, 16, 32)
    mask = None if lengths is None else padding(lengths, 16)
    torch.testing.assert_close(ours(x, mask), hf(x, attention_mask=mask).hidden_states, atol=ATOL, rtol=0)


def test_local_attention_sees_only_its_window():
    attention = LocalSelfAttention(8, 1, 8, chunk_length=4).eval()  # look back one chunk
    x = torch.randn(1, 16, 8)
    changed = x.clone()
    changed[0, 0] += 5.0  # token 0 sits in chunk 0: visible to chunks 0 and 1 (and, wrapping, none else)
    difference = (attention(changed) - attention(x)).abs().amax(-1)[0]
    assert (difference[:8] > 1e-4).all() and (difference[8:] < 1e-6).all()


# --- chunked feed-forward --------------------------------------------------------------------

@pytest.mark.parametrize("chunk_size", [0, 1, 4])
def test_chunked_feed_forward_equals_hf(chunk_size):
    hf = hf_reformer.ChunkReformerFeedForward(hf_config(chunk_size_feed_forward=chunk_size)).eval()
    ours = ChunkedFeedForward.from_hf(hf).eval()
    x = torch.randn(2, 16, 32)
    torch.testing.assert_close(ours(x), hf(x), atol=ATOL, rtol=0)
    unchunked = ChunkedFeedForward.from_hf(hf).eval()
    unchunked.chunk_size = 0
    torch.testing.assert_close(ours(x), unchunked(x), atol=1e-6, rtol=0)


def test_apply_chunking_rejects_bad_input():
    x = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match="not a multiple of chunk_size 4"):
        apply_chunking(lambda t: t, 4, 1, x)
    with pytest.raises(ValueError, match="fn takes 1 arguments but 2"):
        apply_chunking(lambda t: t, 5, 1, x, x)
    with pytest.raises(ValueError, match="same size along dim 1"):
        apply_chunking(lambda a, b: a + b, 5, 1, x, torch.randn(2, 5, 4))


# --- axial position embeddings ---------------------------------------------------------------

def test_axial_embeddings_equal_hf():
    hf = hf_reformer.AxialPositionEmbeddings(hf_config())
    with torch.no_grad():
        for weight in hf.weights:
            weight.normal_()
    ours = AxialPositionEmbeddings.from_hf(hf)
    hf.eval(), ours.eval()
    contiguous = torch.arange(32).expand(2, 32)
    torch.testing.assert_close(ours(contiguous), hf(contiguous), atol=ATOL, rtol=0)
    shifted = torch.arange(5, 17).expand(3, 12)  # eval mode: any positions, e.g. generation offsets
    torch.testing.assert_close(ours(shifted), hf(shifted), atol=ATOL, rtol=0)
    hf.train(), ours.train()  # training mode without dropout: the whole grid
    torch.testing.assert_close(ours(contiguous), hf(contiguous), atol=ATOL, rtol=0)
    # position i*n2 + j is [E1[i], E2[j]]
    table = ours.full_table()
    torch.testing.assert_close(table[2 * 8 + 5], torch.cat([ours.weights[0][2, 0], ours.weights[1][0, 5]]))


def test_axial_shape_must_multiply_to_the_maximum_length():
    with pytest.raises(ValueError, match=r"covers 30 positions, but max_position_embeddings is 32"):
        AxialPositionEmbeddings((5, 6), (12, 20), max_position_embeddings=32)
    with pytest.raises(ValueError, match="must sum to hidden_size 32"):
        AxialPositionEmbeddings((4, 8), (12, 12), max_position_embeddings=32, hidden_size=32)
    with pytest.raises(ValueError, match=r"position ids must lie in \[0, 32\)"):
        AxialPositionEmbeddings((4, 8), (12, 20))(torch.arange(33)[None])
    with pytest.raises(ValueError, match="covers 30 positions"):
        ReformerModel(ReformerSettings(max_position_embeddings=32, axial_pos_shape=(5, 6),
                                       axial_pos_embds_dim=(12, 20), hidden_size=32))


# --- reversible layers -----------------------------------------------------------------------

@pytest.mark.parametrize("overrides,lengths", [
    ({}, None), ({"is_decoder": True}, None), ({"chunk_size_feed_forward": 4}, [16, 12]),
], ids=["encoder", "causal", "chunked-ff-padding-mask"])
def test_reversible_layers_equal_hf_outputs_and_gradients(overrides, lengths):
    encoder = hf_reformer.ReformerEncoder(hf_config(**overrides)).train()  # HF's backward needs train()
    ours = ReversibleSequence([layer_from_hf(layer) for layer in encoder.layers]).train()
    final_norm = torch.nn.LayerNorm(64, eps=1e-12)
    final_norm.load_state_dict(encoder.layer_norm.state_dict())
    mask = None if lengths is None else padding(lengths, 16)
    x_hf = torch.randn(2, 16, 32, requires_grad=True)
    x_ours = x_hf.detach().clone().requires_grad_(True)
    upstream = torch.randn(2, 16, 64)

    out_hf = encoder(x_hf, attention_mask=mask).hidden_states
    y1, y2 = ours(x_ours, x_ours, attention_mask=mask)
    out_ours = final_norm(torch.cat([y1, y2], dim=-1))
    torch.testing.assert_close(out_ours, out_hf, atol=ATOL, rtol=0)

    (out_hf * upstream).sum().backward()
    (out_ours * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_hf.grad, atol=ATOL, rtol=1e-5)
    hf_params, our_params = list(encoder.layers.parameters()), list(ours.parameters())
    assert len(hf_params) == len(our_params) > 0
    for theirs, mine in zip(hf_params, our_params):
        torch.testing.assert_close(mine.grad, theirs.grad, atol=ATOL, rtol=1e-5)


def small_stack(dropout: float, hash_seed: int | None, use_autograd: bool) -> ReversibleSequence:
    settings = ReformerSettings(hidden_size=32, attention_head_size=8, local_attn_chunk_length=4,
                                lsh_attn_chunk_length=4, num_buckets=4, num_hashes=2, hash_seed=hash_seed,
                                feed_forward_size=64, attn_layers=["local", "lsh", "lsh"],
                                hidden_dropout_prob=dropout, attention_dropout_prob=dropout)
    torch.manual_seed(1)
    return ReversibleSequence([reformer_layer(settings, kind) for kind in settings.attn_layers],
                              use_autograd=use_autograd)


def test_reversible_reconstructs_its_inputs():
    stack = small_stack(dropout=0.0, hash_seed=5, use_autograd=False).eval()
    x1, x2 = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    with torch.no_grad():
        y1, y2 = stack(x1, x2)
    r1, r2 = stack.inverse(y1, y2)
    torch.testing.assert_close(r1, x1, atol=1e-5, rtol=0)
    torch.testing.assert_close(r2, x2, atol=1e-5, rtol=0)
    block = stack.blocks[0]  # one layer: to float32 precision
    with torch.no_grad():
        b1, b2 = block(x1, x2)
    r1, r2 = block.inverse(b1, b2)
    assert (r1 - x1).abs().max() < 2e-6 and (r2 - x2).abs().max() < 2e-6


def test_reversible_gradients_equal_plain_autograd_with_dropout_and_fresh_rotations():
    """Dropout and unseeded LSH rotations must be replayed exactly in the recomputation."""
    reversible = small_stack(dropout=0.2, hash_seed=None, use_autograd=False).train()
    plain = small_stack(dropout=0.2, hash_seed=None, use_autograd=True).train()
    results = []
    for stack in (reversible, plain):
        x = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        torch.manual_seed(123)
        y1, y2 = stack(x, x)
        ((y1 * 1.5 + y2) ** 2).mean().backward()
        results.append((y1.detach(), x.grad, [p.grad for p in stack.parameters()]))
    (y_rev, gx_rev, gp_rev), (y_plain, gx_plain, gp_plain) = results
    torch.testing.assert_close(y_rev, y_plain, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx_rev, gx_plain, atol=ATOL, rtol=1e-5)
    for mine, reference in zip(gp_rev, gp_plain):
        torch.testing.assert_close(mine, reference, atol=ATOL, rtol=1e-5)


def saved_activation_numel(stack: ReversibleSequence, x: torch.Tensor) -> int:
    """Elements the forward pass keeps for the backward pass (parameters excluded)."""
    parameter_ids = {id(p) for p in stack.parameters()}
    total = 0

    def pack(tensor):
        nonlocal total
        if id(tensor) not in parameter_ids and tensor.dtype.is_floating_point:
            total += tensor.numel()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y1, y2 = stack(x, x)  # what the forward pass leaves behind
    (y1 + y2).sum().backward()  # the recomputation's short-lived graphs are not counted
    assert x.grad is not None
    return total


def test_reversible_stack_stores_only_its_last_outputs():
    x = torch.randn(2, 16, 32, requires_grad=True)
    stored_reversible = saved_activation_numel(small_stack(0.0, 5, use_autograd=False).train(), x)
    stored_plain = saved_activation_numel(small_stack(0.0, 5, use_autograd=True).train(), x)
    assert stored_reversible == 2 * x.numel()  # y1 and y2 of the last layer
    assert stored_plain > 20 * stored_reversible


def test_model_rejects_sequence_not_multiple_of_chunk_length():
    model = ReformerModel(ReformerSettings(hidden_size=32, attention_head_size=8, local_attn_chunk_length=4,
                                           lsh_attn_chunk_length=8, max_position_embeddings=64,
                                           axial_pos_shape=(8, 8), axial_pos_embds_dim=(12, 20)))
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.zeros(1, 20, dtype=torch.long))
    assert model(torch.zeros(1, 24, dtype=torch.long)).shape == (1, 24, 64)


# --- parameter counts (blog: google/reformer-crime-and-punishment) -----------------------------

CRIME_AND_PUNISHMENT = dict(  # the checkpoint's config.json, written out: nothing is downloaded
    vocab_size=320, hidden_size=256, num_attention_heads=2, attention_head_size=64,
    attn_layers=["local", "lsh", "local", "lsh", "local", "lsh"], feed_forward_size=512, hidden_act="relu",
    local_attn_chunk_length=64, lsh_attn_chunk_length=64, num_buckets=[64, 128], num_hashes=1,
    is_decoder=True, max_position_embeddings=524288, axial_pos_shape=(512, 1024), axial_pos_embds_dim=(64, 192),
)


@pytest.mark.parametrize("axial,expected", [(False, 136_572_416), (True, 2_584_064)], ids=["standard", "axial"])
def test_crime_and_punishment_parameter_counts(axial, expected):
    with torch.device("meta"):  # shapes only: no 0.5 GB table allocated
        ours = ReformerModel(ReformerSettings(axial_pos_embds=axial, **CRIME_AND_PUNISHMENT))
        theirs = transformers.ReformerModel(transformers.ReformerConfig(axial_pos_embds=axial, **CRIME_AND_PUNISHMENT))
    assert ours.num_parameters() == theirs.num_parameters() == expected
    ours_shapes = sorted(tuple(p.shape) for p in ours.parameters())
    assert ours_shapes == sorted(tuple(p.shape) for p in theirs.parameters())
