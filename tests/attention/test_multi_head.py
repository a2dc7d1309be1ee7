"""course_lib.attention.multi_head pinned to torch.nn.MultiheadAttention with copied weights."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from course_lib import (
    MultiHeadAttention, SinusoidalPositionalEncoding, causal_mask, merge_heads, padding_mask, split_heads,
)
from tests.conftest import available_devices

TOL = dict(atol=1e-5, rtol=1e-5)


def _pair(embed_dim, num_heads, bias=True, seed=0):
    torch.manual_seed(seed)
    reference = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True).eval()
    with torch.no_grad():  # torch zero-initialises the biases; make them matter
        for p in reference.parameters():
            p.normal_(0, 0.3)
    return reference, MultiHeadAttention.from_torch(reference).eval()


@settings(max_examples=80, deadline=None)
@given(
    batch=st.integers(1, 4),
    t_q=st.integers(1, 8),
    t_k=st.integers(1, 8),
    heads=st.sampled_from([1, 2, 4]),
    head_dim=st.integers(1, 6),
    bias=st.booleans(),
    cross=st.booleans(),
    mask_kind=st.sampled_from(["none", "causal", "padding", "both", "additive"]),
    seed=st.integers(0, 10_000),
)
def test_matches_torch_multihead_attention(batch, t_q, t_k, heads, head_dim, bias, cross, mask_kind, seed):
    embed_dim = heads * head_dim
    reference, ours = _pair(embed_dim, heads, bias, seed)
    if not cross or mask_kind in ("causal", "both"):
        t_k = t_q  # a causal mask is square; self-attention has T_k = T_q
    query = torch.randn(batch, t_q, embed_dim)
    memory = torch.randn(batch, t_k, embed_dim) if cross else query

    lengths = torch.randint(1, t_k + 1, (batch,))
    lengths[0] = t_k
    keep_keys = padding_mask(lengths, max_len=t_k)  # (B, T_k), True = real token
    attn_mask = kpm = None
    torch_kwargs = {}
    if mask_kind in ("causal", "both"):
        attn_mask = causal_mask(t_q)
        torch_kwargs["attn_mask"] = ~attn_mask  # torch: True = blocked
    if mask_kind in ("padding", "both"):
        kpm = keep_keys
        torch_kwargs["key_padding_mask"] = ~kpm
    if mask_kind == "additive":
        attn_mask = torch.randn(t_q, t_k)
        torch_kwargs["attn_mask"] = attn_mask

    expected, expected_w = reference(query, memory, memory, need_weights=True, average_attn_weights=False, **torch_kwargs)
    out, weights = ours(query, memory, memory, mask=attn_mask, key_padding_mask=kpm)
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(weights, expected_w, **TOL)
    fused, no_weights = ours(query, memory, memory, mask=attn_mask, key_padding_mask=kpm, need_weights=False)
    assert no_weights is None
    torch.testing.assert_close(fused, expected, **TOL)


def test_self_attention_defaults_key_and_value_to_query():
    _, ours = _pair(8, 2)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(ours(x)[0], ours(x, x, x)[0], atol=0, rtol=0)


def test_weights_rows_sum_to_one_per_head():
    _, ours = _pair(12, 3)
    _, weights = ours(torch.randn(2, 7, 12), mask=causal_mask(7))
    assert weights.shape == (2, 3, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7), **TOL)


def test_causal_self_attention_leaks_nothing_from_the_future():
    _, ours = _pair(8, 2)
    x = torch.randn(1, 6, 8)
    y = x.clone()
    y[:, 4:] += torch.randn(1, 2, 8) * 10
    out_x, _ = ours(x, mask=causal_mask(6))
    out_y, _ = ours(y, mask=causal_mask(6))
    torch.testing.assert_close(out_x[:, :4], out_y[:, :4], atol=0, rtol=0)
    assert not torch.allclose(out_x[:, 4:], out_y[:, 4:])


def test_self_attention_is_permutation_equivariant_without_positions():
    _, ours = _pair(16, 4)
    x = torch.randn(3, 9, 16)
    perm = torch.randperm(9)
    out, weights = ours(x)
    out_perm, weights_perm = ours(x[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], **TOL)
    torch.testing.assert_close(weights_perm, weights[:, :, perm][:, :, :, perm], **TOL)
    # ...and positional encodings break the symmetry, which is why they exist
    pe = SinusoidalPositionalEncoding(16, max_len=9)
    out_pe, _ = ours(pe(x))
    out_pe_perm, _ = ours(pe(x[:, perm]))
    assert not torch.allclose(out_pe_perm, out_pe[:, perm], atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 3), seq=st.integers(1, 6), heads=st.sampled_from([1, 2, 3, 4]), head_dim=st.integers(1, 5))
def test_split_and_merge_heads(batch, seq, heads, head_dim):
    x = torch.randn(batch, seq, heads * head_dim)
    split = split_heads(x, heads)
    assert split.shape == (batch, heads, seq, head_dim)
    # head h at position t holds the h-th slice of token t's features
    for h in range(heads):
        torch.testing.assert_close(split[:, h], x[..., h * head_dim : (h + 1) * head_dim], atol=0, rtol=0)
    torch.testing.assert_close(merge_heads(split), x, atol=0, rtol=0)


def test_bad_inputs_say_what_is_wrong():
    _, ours = _pair(8, 2)
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len, 8\)"):
        ours(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="batch sizes differ"):
        ours(torch.randn(2, 5, 8), torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(batch, key_len\) = \(2, 5\)"):
        ours(torch.randn(2, 5, 8), key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        ours(torch.randn(2, 5, 8), key_padding_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="does not broadcast"):
        ours(torch.randn(2, 5, 8), mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="not divisible"):
        split_heads(torch.randn(1, 2, 10), 3)
    with pytest.raises(ValueError, match=r"\(batch, heads, seq_len, head_dim\)"):
        merge_heads(torch.randn(2, 3, 4))


@pytest.mark.parametrize("device", available_devices())
def test_matches_torch_multihead_attention_on_every_device(device):
    reference, ours = _pair(32, 4, seed=3)
    reference, ours = reference.to(device), ours.to(device)
    x = torch.randn(4, 10, 32, device=device)
    memory = torch.randn(4, 7, 32, device=device)
    keep = padding_mask([7, 5, 3, 1], device=device)
    expected, expected_w = reference(x, memory, memory, key_padding_mask=~keep, average_attn_weights=False)
    out, weights = ours(x, memory, key_padding_mask=keep)
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(weights, expected_w, **TOL)
