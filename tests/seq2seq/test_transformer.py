"""course_lib's Transformer layers, stacks and full model pinned to torch.nn's with copied weights.

Reference outputs come from torch run under ``no_grad`` in eval mode, so the encoder takes
torch's fused fast path (and its nested-tensor path for padded batches), an independent
implementation. Masks: ours are True = may attend / real token; torch's are the inverse.
"""
from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from course_lib import causal_mask, padding_mask
from course_lib.attention.recorder import record_attention
from course_lib.seq2seq.layers import (
    TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer,
)
from course_lib.seq2seq.transformer import Transformer, attention_by_kind, attention_maps
from tests.conftest import available_devices

TOL = dict(atol=1e-5, rtol=1e-5)
pytestmark = [  # torch's own notes about its nested-tensor fast path, not our concern here
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning"),
    pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask:UserWarning"),
]
DEVICES = available_devices()


def _perturb(module: nn.Module, seed: int) -> nn.Module:
    """torch starts biases at 0 and norms at (1, 0); random values make every weight matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator).to(p.device))
    return module.eval()


def _lengths(batch: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length  # the longest sequence sets the padded length, as a real batch does
    return lengths


layer_settings = dict(
    batch=st.integers(1, 3), heads=st.sampled_from([1, 2, 4]), head_dim=st.integers(1, 5),
    ffn_dim=st.integers(1, 12), norm_first=st.booleans(), activation=st.sampled_from(["relu", "gelu"]),
    seed=st.integers(0, 10_000),
)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None)
@given(src_len=st.integers(1, 7), mask_kind=st.sampled_from(["none", "padding", "causal", "both", "additive"]),
       **layer_settings)
def test_encoder_layer_matches_torch(device, batch, heads, head_dim, ffn_dim, norm_first, activation, seed,
                                     src_len, mask_kind):
    torch.manual_seed(seed)
    dim = heads * head_dim
    reference = _perturb(nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout=0.3, activation=activation,
                                                    batch_first=True, norm_first=norm_first), seed).to(device)
    ours = TransformerEncoderLayer.from_torch(reference).eval()
    x = torch.randn(batch, src_len, dim, device=device)
    keep = padding_mask(_lengths(batch, src_len, seed), src_len, device=device)  # (B, S)
    mask = kpm = None
    torch_kwargs = {}
    if mask_kind in ("causal", "both"):
        mask = causal_mask(src_len, device=device)
        torch_kwargs["src_mask"] = ~mask
    if mask_kind in ("padding", "both"):
        kpm = keep
        torch_kwargs["src_key_padding_mask"] = ~keep
    if mask_kind == "additive":
        mask = torch.randn(src_len, src_len, device=device)
        torch_kwargs["src_mask"] = mask
    with torch.no_grad():
        got = ours(x, mask=mask, key_padding_mask=kpm)
        fast = reference(x, **torch_kwargs)  # torch's fused inference kernel
    slow = reference(x, **torch_kwargs).detach()  # with autograd on, torch takes its Python path
    torch.testing.assert_close(got, slow, **TOL)
    if mask_kind != "additive":  # the fast path reads a float mask as boolean: NaN (pytorch/pytorch#118628)
        torch.testing.assert_close(got, fast, **TOL)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None)
@given(tgt_len=st.integers(1, 7), src_len=st.integers(1, 7), causal=st.booleans(), tgt_padding=st.booleans(),
       memory_padding=st.booleans(), memory_mask=st.booleans(), **layer_settings)
def test_decoder_layer_matches_torch(device, batch, heads, head_dim, ffn_dim, norm_first, activation, seed,
                                     tgt_len, src_len, causal, tgt_padding, memory_padding, memory_mask):
    torch.manual_seed(seed)
    dim = heads * head_dim
    reference = _perturb(nn.TransformerDecoderLayer(dim, heads, ffn_dim, dropout=0.3, activation=activation,
                                                    batch_first=True, norm_first=norm_first), seed).to(device)
    ours = TransformerDecoderLayer.from_torch(reference).eval()
    x = torch.randn(batch, tgt_len, dim, device=device)
    memory = torch.randn(batch, src_len, dim, device=device)  # cross-attention reads a different length
    ours_kwargs, torch_kwargs = {}, {}
    if causal:
        ours_kwargs["tgt_mask"] = causal_mask(tgt_len, device=device)
        torch_kwargs["tgt_mask"] = ~ours_kwargs["tgt_mask"]
    if tgt_padding:
        ours_kwargs["tgt_key_padding_mask"] = padding_mask(_lengths(batch, tgt_len, seed), tgt_len, device=device)
        torch_kwargs["tgt_key_padding_mask"] = ~ours_kwargs["tgt_key_padding_mask"]
    if memory_padding:
        ours_kwargs["memory_key_padding_mask"] = padding_mask(_lengths(batch, src_len, seed + 1), src_len, device=device)
        torch_kwargs["memory_key_padding_mask"] = ~ours_kwargs["memory_key_padding_mask"]
    if memory_mask:  # additive masks mean the same thing in both conventions
        ours_kwargs["memory_mask"] = torch_kwargs["memory_mask"] = torch.randn(tgt_len, src_len, device=device)
    with torch.no_grad():
        expected = reference(x, memory, **torch_kwargs)
        got = ours(x, memory, **ours_kwargs)
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("final_norm", [False, True])
def test_stacks_match_torch(device, norm_first, final_norm):
    dim, heads, batch, src_len, tgt_len = 12, 3, 4, 9, 6
    norm = lambda: nn.LayerNorm(dim) if final_norm else None
    enc_ref = _perturb(nn.TransformerEncoder(
        nn.TransformerEncoderLayer(dim, heads, 20, batch_first=True, norm_first=norm_first), 3, norm(),
        enable_nested_tensor=not norm_first), 1).to(device)
    dec_ref = _perturb(nn.TransformerDecoder(
        nn.TransformerDecoderLayer(dim, heads, 20, batch_first=True, norm_first=norm_first), 2, norm()), 2).to(device)
    encoder, decoder = TransformerEncoder.from_torch(enc_ref).eval(), TransformerDecoder.from_torch(dec_ref).eval()
    assert len(encoder.layers) == 3 and len(decoder.layers) == 2 and (encoder.norm is None) != final_norm
    src, tgt = torch.randn(batch, src_len, dim, device=device), torch.randn(batch, tgt_len, dim, device=device)
    src_keep = padding_mask([9, 5, 1, 7], device=device)
    tgt_keep = padding_mask([6, 2, 4, 1], device=device)
    causal = causal_mask(tgt_len, device=device)
    with torch.no_grad():
        memory_ref = enc_ref(src, src_key_padding_mask=~src_keep)
        memory = encoder(src, key_padding_mask=src_keep)
        # torch's nested-tensor path writes zeros at padded positions; compare the real ones.
        torch.testing.assert_close(memory[src_keep], memory_ref[src_keep], **TOL)
        expected = dec_ref(tgt, memory_ref, tgt_mask=~causal, tgt_key_padding_mask=~tgt_keep,
                           memory_key_padding_mask=~src_keep)
        got = decoder(tgt, memory, tgt_mask=causal, tgt_key_padding_mask=tgt_keep, memory_key_padding_mask=src_keep)
    torch.testing.assert_close(got, expected, **TOL)


def _full_pair(norm_first, seed, device, tie=False, activation="relu", src_vocab=23, tgt_vocab=19):
    torch.manual_seed(seed)
    reference = _perturb(nn.Transformer(16, 4, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=24,
                                        dropout=0.2, activation=activation, batch_first=True,
                                        norm_first=norm_first), seed).to(device)
    ours = Transformer.from_torch(reference, src_vocab, tgt_vocab, max_len=32, tie_embeddings=tie).eval()
    return reference, ours


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_full_model_matches_torch_transformer(device, norm_first, seed):
    """Ours end to end vs our embeddings → torch.nn.Transformer → our output layer."""
    reference, ours = _full_pair(norm_first, seed, device, tie=bool(seed % 2), activation=["relu", "gelu"][seed // 2])
    generator = torch.Generator().manual_seed(seed)
    batch, src_len, tgt_len = int(torch.randint(1, 5, (1,), generator=generator)), 3 + seed * 4, 2 + seed * 3
    src = torch.randint(0, 23, (batch, src_len), generator=generator).to(device)
    tgt = torch.randint(0, 19, (batch, tgt_len), generator=generator).to(device)
    src_keep = padding_mask(_lengths(batch, src_len, seed), src_len, device=device)
    tgt_keep = padding_mask(_lengths(batch, tgt_len, seed + 7), tgt_len, device=device)
    with torch.no_grad():
        scale = math.sqrt(16)  # embeddings are scaled by √d_model before positions are added
        src_x = ours.positions(ours.src_embedding(src) * scale)
        tgt_x = ours.positions(ours.tgt_embedding(tgt) * scale)
        hidden = reference(src_x, tgt_x, tgt_mask=~causal_mask(tgt_len, device=device),
                           src_key_padding_mask=~src_keep, tgt_key_padding_mask=~tgt_keep,
                           memory_key_padding_mask=~src_keep)
        expected = ours.generator(hidden)
        got = ours(src, tgt, src_key_padding_mask=src_keep, tgt_key_padding_mask=tgt_keep)
    assert got.shape == (batch, tgt_len, 19)
    torch.testing.assert_close(got, expected, **TOL)


def test_tied_output_projection_shares_the_target_embedding():
    tied = Transformer(11, 13, dim=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, ffn_dim=8,
                       tie_embeddings=True)
    untied = Transformer(11, 13, dim=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, ffn_dim=8)
    assert tied.generator.weight is tied.tgt_embedding.weight
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(untied) - count(tied) == 13 * 8


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_sees_no_future_tokens(device, norm_first):
    _, model = _full_pair(norm_first, 3, device)
    src = torch.randint(0, 23, (2, 6), device=device)
    tgt = torch.randint(0, 19, (2, 8), device=device)
    with torch.no_grad():
        base = model(src, tgt)
        for t in range(7):
            changed = tgt.clone()
            changed[:, t + 1:] = (changed[:, t + 1:] + 1 + torch.randint(0, 17, changed[:, t + 1:].shape,
                                                                          device=device)) % 19
            logits = model(src, changed)
            torch.testing.assert_close(logits[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0)
            assert (logits[:, t + 1:] - base[:, t + 1:]).abs().max() > 1e-3  # the change did reach later steps


def test_source_padding_is_invisible():
    """Whatever sits under padded source positions cannot change the translation's logits."""
    _, model = _full_pair(False, 5, "cpu")
    src, tgt = torch.randint(1, 23, (2, 7)), torch.randint(0, 19, (2, 4))
    keep = padding_mask([7, 3])
    other = src.clone()
    other[1, 3:] = (other[1, 3:] + 5) % 23
    with torch.no_grad():
        torch.testing.assert_close(model(src, tgt, keep), model(other, tgt, keep), atol=1e-6, rtol=0)
        assert (model(src, tgt)[1] - model(other, tgt)[1]).abs().max() > 1e-3  # unmasked, it would leak


@pytest.mark.parametrize("norm_first", [False, True])
def test_attention_maps_follow_bertviz_contract_and_match_torch(norm_first):
    reference, model = _full_pair(norm_first, 2, "cpu")
    src, tgt = torch.randint(0, 23, (7,)), torch.randint(0, 19, (5,))
    maps = attention_maps(model, src, tgt)
    assert [len(maps[k]) for k in ("encoder_attention", "decoder_attention", "cross_attention")] == [2, 3, 3]
    shapes = {k: {tuple(w.shape) for w in v} for k, v in maps.items()}
    assert shapes == {"encoder_attention": {(1, 4, 7, 7)}, "decoder_attention": {(1, 4, 5, 5)},
                      "cross_attention": {(1, 4, 5, 7)}}
    for weights in maps.values():
        for w in weights:
            torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    for w in maps["decoder_attention"]:
        assert (w[0].triu(diagonal=1) == 0).all()  # no weight on future target tokens
    with torch.no_grad():  # layer 0's map is torch's own weights on the same input
        x = model.positions(model.src_embedding(src[None]) * 4)
        first = reference.encoder.layers[0]
        x = first.norm1(x) if norm_first else x
        _, expected = first.self_attn(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(maps["encoder_attention"][0], expected, **TOL)


def test_recording_does_not_change_the_output_and_sees_padding():
    _, model = _full_pair(True, 4, "cpu")
    src, tgt = torch.randint(0, 23, (2, 6)), torch.randint(0, 19, (2, 3))
    keep = padding_mask([6, 2])
    with torch.no_grad():
        plain = model(src, tgt, keep)
        with record_attention(model) as calls:
            recorded = model(src, tgt, keep)
    torch.testing.assert_close(recorded, plain, **TOL)  # readable path == fused path
    maps = attention_by_kind(calls)
    assert [name for name, _ in calls[:2]] == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    assert [name for name, _ in calls[2:4]] == ["decoder.layers.0.self_attn", "decoder.layers.0.cross_attn"]
    assert all((w[1, :, :, 2:] == 0).all() for w in maps["cross_attention"])  # padded source gets no weight
    with torch.no_grad():
        model(src, tgt, keep)
    assert len(calls) == 2 + 2 * 3  # the hooks are gone after the block


# --- bad input (issue 5, part 7) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model():
    return Transformer(11, 13, dim=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, ffn_dim=8,
                       max_len=10).eval()


@pytest.mark.parametrize("src, tgt, message", [
    (torch.tensor([[1, 2, 12]]), torch.tensor([[1, 2]]), "source token id 12 is out of range for the source vocabulary of size 11"),
    (torch.tensor([[1, 2, 3]]), torch.tensor([[1, 13]]), "target token id 13 is out of range for the target vocabulary of size 13"),
    (torch.tensor([[1, -1]]), torch.tensor([[1, 2]]), "source token id -1 is out of range"),
    (torch.ones(1, 11, dtype=torch.long), torch.tensor([[1, 2]]), "source sequence length 11 exceeds the positional table's max_len 10"),
    (torch.tensor([[1, 2]]), torch.ones(1, 11, dtype=torch.long), "target sequence length 11 exceeds"),
    (torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long), "empty source batch of shape (0, 4)"),
    (torch.tensor([[1, 2]]), torch.zeros(1, 0, dtype=torch.long), "empty target batch"),
    (torch.tensor([1, 2]), torch.tensor([[1, 2]]), "source ids must have shape (batch, seq_len)"),
    (torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 2]]), "source and target batch sizes differ: 2 vs 1"),
])
def test_bad_token_ids_are_named(small_model, src, tgt, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        small_model(src, tgt)


def test_float_ids_are_refused(small_model):
    with pytest.raises(TypeError, match="source ids must be an integer tensor"):
        small_model(torch.rand(1, 3), torch.tensor([[1, 2]]))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"src_key_padding_mask": torch.ones(1, 4, dtype=torch.bool)}, ValueError, r"src_key_padding_mask must have shape \(batch, seq_len\) = \(1, 3\)"),
    ({"tgt_key_padding_mask": torch.ones(2, 2, dtype=torch.bool)}, ValueError, "tgt_key_padding_mask must have shape"),
    ({"src_key_padding_mask": torch.ones(1, 3)}, TypeError, "src_key_padding_mask must be a boolean tensor"),
    ({"src_key_padding_mask": torch.zeros(1, 3, dtype=torch.bool)}, ValueError, "inverted mask"),
])
def test_bad_masks_are_named(small_model, kwargs, error, message):
    with pytest.raises(error, match=message):
        small_model(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2]]), **kwargs)


def test_bad_attention_mask_shape_is_named():
    layer = TransformerDecoder(TransformerDecoderLayer(8, 2, 8), 1)
    with pytest.raises(ValueError, match=r"tgt_mask must end in \(query_len, key_len\) = \(4, 4\)"):
        layer(torch.randn(1, 4, 8), torch.randn(1, 3, 8), tgt_mask=causal_mask(3))
    with pytest.raises(ValueError, match=r"memory_mask must end in \(query_len, key_len\) = \(4, 3\)"):
        layer(torch.randn(1, 4, 8), torch.randn(1, 3, 8), memory_mask=torch.zeros(3, 4))


def test_from_torch_refuses_sequence_first_layers():
    with pytest.raises(ValueError, match="batch_first=True"):
        TransformerEncoderLayer.from_torch(nn.TransformerEncoderLayer(8, 2, batch_first=False))
    with pytest.raises(ValueError, match="relu and"):
        TransformerEncoderLayer.from_torch(nn.TransformerEncoderLayer(8, 2, batch_first=True, activation=torch.tanh))


def test_bertviz_accepts_our_maps():
    bertviz = pytest.importorskip("bertviz")
    _, model = _full_pair(False, 1, "cpu")
    maps = attention_maps(model, torch.tensor([3, 4, 5, 6]), torch.tensor([1, 7, 8]))
    html = bertviz.model_view(**maps, encoder_tokens=list("abcd"), decoder_tokens=["<s>", "x", "y"],
                              html_action="return")
    assert "cross" in html.data.lower() and '"left_text": ["<s>", "x", "y"]' in html.data
