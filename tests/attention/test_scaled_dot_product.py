"""course_lib.attention pinned to torch.nn.functional.scaled_dot_product_attention."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from course_lib import causal_mask, fused_attention, scaled_dot_product_attention, to_additive
from tests.conftest import available_devices

TOL = dict(atol=1e-5, rtol=1e-5)


@st.composite
def attention_case(draw):
    """Random batch/head shapes, lengths, sizes, and a mask of a random kind."""
    lead = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))  # (B,) or (B, H)
    t_q, t_k = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    d, d_v = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    kind = draw(st.sampled_from(["none", "bool", "bool-broadcast", "additive", "causal"]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(*lead, t_q, d, generator=gen)
    k = torch.randn(*lead, t_k, d, generator=gen)
    v = torch.randn(*lead, t_k, d_v, generator=gen)
    mask = None
    if kind == "bool":
        mask = torch.rand(*lead, t_q, t_k, generator=gen) > 0.4
    elif kind == "bool-broadcast":  # one mask over keys for every query, like padding
        mask = torch.rand(*lead[:1], *([1] * len(lead[1:])), 1, t_k, generator=gen) > 0.3
    elif kind == "additive":
        blocked = torch.rand(*lead, t_q, t_k, generator=gen) > 0.6
        mask = torch.randn(*lead, t_q, t_k, generator=gen).masked_fill(blocked, float("-inf"))
    elif kind == "causal":
        mask = torch.ones(t_q, t_k, dtype=torch.bool).tril(diagonal=t_k - t_q)
    return q, k, v, mask


def _rows_with_a_key(mask, scores_shape):
    """Rows that can attend somewhere: torch's kernel gave NaN for the others before 2.13, ours zeros."""
    if mask is None:
        return torch.ones(scores_shape[:-1], dtype=torch.bool)
    allowed = mask if mask.dtype == torch.bool else ~torch.isneginf(mask)
    return allowed.expand(scores_shape).any(-1)


@settings(max_examples=150, deadline=None)
@given(attention_case())
def test_matches_torch_sdpa(case):
    q, k, v, mask = case
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    rows = _rows_with_a_key(mask, weights.shape)
    torch.testing.assert_close(out[rows], expected[rows], **TOL)
    # rows with at least one allowed key are distributions; the others attend to nothing
    torch.testing.assert_close(weights.sum(-1)[rows], torch.ones_like(weights.sum(-1)[rows]), **TOL)
    assert (weights[~rows] == 0).all() and (out[~rows] == 0).all()
    assert (weights >= 0).all()


@settings(max_examples=60, deadline=None)
@given(attention_case())
def test_fused_path_equals_manual_path(case):
    q, k, v, mask = case
    manual, _ = scaled_dot_product_attention(q, k, v, mask)
    fused = fused_attention(q, k, v, mask)
    rows = _rows_with_a_key(mask, (*q.shape[:-1], k.shape[-2]))
    torch.testing.assert_close(manual[rows], fused[rows], **TOL)


def test_weights_equal_explicit_softmax_of_scaled_scores():
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 3)
    _, weights = scaled_dot_product_attention(q, k, v)
    scores = torch.einsum("btd,bsd->bts", q, k) / math.sqrt(8)
    torch.testing.assert_close(weights, scores.softmax(-1), **TOL)


def test_custom_scale_matches_torch():
    q, k, v = torch.randn(3, 4, 6), torch.randn(3, 4, 6), torch.randn(3, 4, 6)
    out, _ = scaled_dot_product_attention(q, k, v, scale=0.7)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.7), **TOL)


def test_boolean_and_additive_masks_agree():
    q, k, v = torch.randn(2, 6, 4), torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    mask = causal_mask(6)
    out_bool, w_bool = scaled_dot_product_attention(q, k, v, mask)
    out_add, w_add = scaled_dot_product_attention(q, k, v, to_additive(mask))
    torch.testing.assert_close(out_bool, out_add, **TOL)
    torch.testing.assert_close(w_bool, w_add, **TOL)
    assert (w_bool[:, ~mask] == 0).all()


def test_causal_mask_leaks_nothing_from_the_future():
    q, k, v = torch.randn(1, 8, 4), torch.randn(1, 8, 4), torch.randn(1, 8, 4)
    out, _ = scaled_dot_product_attention(q, k, v, causal_mask(8))
    k2, v2 = k.clone(), v.clone()
    k2[:, 5:], v2[:, 5:] = torch.randn(1, 3, 4) * 100, torch.randn(1, 3, 4) * 100
    out2, _ = scaled_dot_product_attention(q, k2, v2, causal_mask(8))
    torch.testing.assert_close(out[:, :5], out2[:, :5], atol=0, rtol=0)  # bit-identical past
    assert not torch.allclose(out[:, 5:], out2[:, 5:])  # the future did change


def test_permuting_keys_and_values_together_changes_nothing():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 6, 4), torch.randn(2, 6, 5)
    perm = torch.randperm(6)
    out, _ = scaled_dot_product_attention(q, k, v)
    out_perm, _ = scaled_dot_product_attention(q, k[:, perm], v[:, perm])
    torch.testing.assert_close(out, out_perm, **TOL)


def test_fully_masked_row_gives_zeros_not_nan():
    q, k, v = torch.randn(1, 2, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert torch.isfinite(out).all()
    assert (weights[0, 1] == 0).all() and (out[0, 1] == 0).all()


def test_gradients_flow_like_torch():
    q, k, v = (torch.randn(2, 5, 4, requires_grad=True) for _ in range(3))
    mask = causal_mask(5)
    scaled_dot_product_attention(q, k, v, mask)[0].pow(2).sum().backward()
    ours = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    F.scaled_dot_product_attention(q, k, v, attn_mask=mask).pow(2).sum().backward()
    for mine, theirs in zip(ours, (q.grad, k.grad, v.grad)):
        torch.testing.assert_close(mine, theirs, **TOL)


@pytest.mark.parametrize(
    "q_shape, k_shape, v_shape, message",
    [
        ((2, 4, 8), (2, 4, 6), (2, 4, 8), "same feature size"),
        ((2, 4, 8), (2, 5, 8), (2, 4, 8), "one entry per position"),
        ((2, 4, 8), (3, 4, 8), (3, 4, 8), "leading"),
        ((8,), (4, 8), (4, 8), r"\(\.\.\., seq_len, dim\)"),
    ],
)
def test_mismatched_shapes_say_what_is_wrong(q_shape, k_shape, v_shape, message):
    with pytest.raises(ValueError, match=message):
        scaled_dot_product_attention(torch.randn(q_shape), torch.randn(k_shape), torch.randn(v_shape))


def test_bad_dtypes_say_what_is_wrong():
    x = torch.randn(1, 3, 4)
    with pytest.raises(TypeError, match="floating-point"):
        scaled_dot_product_attention(x.long(), x, x)
    with pytest.raises(TypeError, match="share one dtype"):
        scaled_dot_product_attention(x, x.double(), x)
    with pytest.raises(TypeError, match="torch.Tensor"):
        scaled_dot_product_attention(x.numpy(), x, x)


def test_bad_masks_say_what_is_wrong():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"does not broadcast"):
        scaled_dot_product_attention(x, x, x, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[:, None, None, :\]"):
        scaled_dot_product_attention(x, x, x, torch.ones(5, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean .* or additive"):
        scaled_dot_product_attention(x, x, x, torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="boolean .* or additive"):
        scaled_dot_product_attention(x, x, x, torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="dropout_p"):
        scaled_dot_product_attention(x, x, x, dropout_p=1.5)


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive", "causal"])
def test_matches_torch_sdpa_on_every_device(device, mask_kind):
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        b, h, t_q, d = (int(x) for x in torch.randint(1, 9, (4,), generator=gen))
        t_k = t_q if mask_kind == "causal" else int(torch.randint(1, 9, (1,), generator=gen))
        q, k, v = torch.randn(b, h, t_q, d, generator=gen), torch.randn(b, h, t_k, d, generator=gen), torch.randn(b, h, t_k, d, generator=gen)
        mask = {
            "none": None,
            "bool": torch.rand(b, 1, t_q, t_k, generator=gen) > 0.3,
            "additive": torch.randn(1, h, t_q, t_k, generator=gen),
            "causal": causal_mask(t_q),
        }[mask_kind]
        q, k, v = q.to(device), k.to(device), v.to(device)
        mask = None if mask is None else mask.to(device)
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        rows = _rows_with_a_key(mask, weights.shape).to(device)
        assert out.device.type == device
        torch.testing.assert_close(out[rows], expected[rows], **TOL)
