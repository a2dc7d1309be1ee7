"""course_lib.long_range.tiled: one online-softmax step worked by hand, and tiled attention pinned to
torch's SDPA (forward and gradients), with the course's readable attention for rows that see no key."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import scaled_dot_product_attention
from course_lib.long_range import tiled
from course_lib.long_range.tiled import online_softmax_update, tiled_attention

TOL = dict(atol=1e-5, rtol=1e-5)


def _qkv(b=2, h=3, t_q=37, t_k=37, d=8, d_v=8, seed=0, dtype=torch.float32, grad=False):
    gen = torch.Generator().manual_seed(seed)
    made = [torch.randn(b, h, t, size, generator=gen, dtype=dtype) for t, size in ((t_q, d), (t_k, d), (t_k, d_v))]
    return [t.requires_grad_(grad) for t in made]


def _start(t_q, d_v):
    return torch.full((t_q,), float("-inf")), torch.zeros(t_q), torch.zeros(t_q, d_v)


# --- online_softmax_update --------------------------------------------------------------------

def test_one_update_worked_by_hand():
    """One query, scores (0, ln 3) over values 1 and 5: weights 1/4, 3/4, output 4; the state is
    max ln 3, sum 1/3 + 1 = 4/3, accumulator 1/3·1 + 1·5 = 16/3."""
    scores = torch.tensor([[0.0, math.log(3.0)]])
    values = torch.tensor([[1.0], [5.0]])
    new_max, new_sum, acc = online_softmax_update(*_start(1, 1), scores, values)
    torch.testing.assert_close(new_max, torch.tensor([math.log(3.0)]))
    torch.testing.assert_close(new_sum, torch.tensor([4 / 3]))
    torch.testing.assert_close(acc, torch.tensor([[16 / 3]]))
    torch.testing.assert_close(acc / new_sum[:, None], torch.tensor([[4.0]]))
    # a second tile with a larger score (ln 12, value 2) rescales what came before by exp(ln 3 − ln 12) = 1/4
    new_max, new_sum, acc = online_softmax_update(new_max, new_sum, acc, torch.tensor([[math.log(12.0)]]),
                                                  torch.tensor([[2.0]]))
    torch.testing.assert_close(new_sum, torch.tensor([4 / 3 / 4 + 1]))  # (1 + 3 + 12) / 12
    torch.testing.assert_close(acc / new_sum[:, None], torch.tensor([[(1 + 15 + 24) / 16]]))


def test_a_fully_masked_tile_changes_nothing_and_an_empty_row_stays_zero():
    scores = torch.tensor([[0.5, -1.0], [float("-inf"), float("-inf")]])  # row 1: no allowed key yet
    values = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    state = online_softmax_update(*_start(2, 2), scores, values)
    assert torch.isneginf(state[0][1]) and state[1][1] == 0 and not state[2][1].any()
    assert all(torch.isfinite(part[0]).all() for part in state)
    masked = online_softmax_update(*state, torch.full((2, 3), float("-inf")), torch.randn(3, 2))
    for before, after in zip(state, masked):
        torch.testing.assert_close(after, before)  # a tile of −inf adds exp(−inf) = 0 and rescales by 1


@pytest.mark.parametrize("tile", [1, 3, 5, 11])
def test_tile_by_tile_equals_softmax_over_the_whole_row(tile):
    gen = torch.Generator().manual_seed(tile)
    scores = torch.randn(2, 4, 11, generator=gen) * 4
    scores[0, 1, :7] = float("-inf")  # a row whose first tiles are all masked
    values = torch.randn(2, 11, 3, generator=gen)
    state = (torch.full((2, 4), float("-inf")), torch.zeros(2, 4), torch.zeros(2, 4, 3))
    for start in range(0, 11, tile):
        state = online_softmax_update(*state, scores[..., start:start + tile], values[:, start:start + tile])
    running_max, running_sum, acc = state
    torch.testing.assert_close(running_max, scores.amax(-1))
    torch.testing.assert_close(acc / running_sum[..., None], torch.softmax(scores, -1) @ values, **TOL)


# --- tiled_attention: forward -----------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("tile_size", [1, 8, 16, 64])
def test_equal_to_sdpa_tile_not_dividing_the_length(causal, tile_size):
    q, k, v = _qkv(t_q=37, t_k=37)  # 37 = a prime: the last tile is short for every tile size but 1
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(tiled_attention(q, k, v, causal=causal, tile_size=tile_size), expected, **TOL)


def test_equal_to_sdpa_with_padding_different_lengths_and_value_size():
    q, k, v = _qkv(t_q=19, t_k=45, d=16, d_v=5, seed=1)
    keep = torch.ones(2, 45, dtype=torch.bool)
    keep[0, 30:] = False  # sequence 0 has 30 real tokens
    keep[1, :4] = False  # sequence 1 is left-padded
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
    torch.testing.assert_close(tiled_attention(q, k, v, padding_mask=keep, tile_size=8), expected, **TOL)
    torch.testing.assert_close(tiled_attention(q, k, v, padding_mask=keep, tile_size=8, scale=0.3),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :], scale=0.3),
                               **TOL)


def test_causal_with_padding_equal_to_sdpa_and_rows_that_see_nothing_are_zero():
    """Left padding under a causal mask leaves the first queries with no key at all: the course's readable
    attention (and tiled) give 0 there; torch's SDPA gave NaN there before torch 2.5 (0 in 2.13, both
    backends), so those rows are pinned to the readable attention, the course's definition."""
    q, k, v = _qkv(t_q=29, t_k=29, seed=2)
    keep = torch.ones(2, 29, dtype=torch.bool)
    keep[1, :10] = False
    mask = keep[:, None, None, :] & torch.ones(29, 29, dtype=torch.bool).tril()
    out = tiled_attention(q, k, v, causal=True, padding_mask=keep, tile_size=4)
    readable, _ = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, readable, **TOL)
    assert not out[1, :, :10].any()
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out[:, :, 10:], sdpa[:, :, 10:], **TOL)
    torch.testing.assert_close(out[0], sdpa[0], **TOL)


def test_causal_skips_the_key_tiles_above_the_diagonal(monkeypatch):
    """With 4 tiles of queries and keys, causal computes 1 + 2 + 3 + 4 = 10 tiles of scores, not 16."""
    calls = []
    original = tiled.online_softmax_update

    def spy(*args):
        calls.append(tuple(args[3].shape))
        return original(*args)

    monkeypatch.setattr(tiled, "online_softmax_update", spy)
    q, k, v = _qkv(b=1, h=2, t_q=32, t_k=32)
    tiled_attention(q, k, v, causal=True, tile_size=8)
    assert len(calls) == 10
    calls.clear()
    tiled_attention(q, k, v, tile_size=8)
    assert len(calls) == 16


def test_memory_proxy_no_temporary_bigger_than_a_tile_and_backward_keeps_only_linear_tensors(monkeypatch):
    """A cheap stand-in for the fresh-process measurement (the benchmark records it): the scores never
    exceed one tile, and what autograd keeps for backward grows like T (Q, K, V, output, log-sum-exp)."""
    shapes = []
    original = tiled.online_softmax_update
    monkeypatch.setattr(tiled, "online_softmax_update", lambda *a: shapes.append(a[3].shape) or original(*a))
    t, tile = 96, 16
    q, k, v = _qkv(b=1, h=2, t_q=t, t_k=t, grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.numel()) or x, lambda x: x):
        out = tiled_attention(q, k, v, tile_size=tile)
    assert max(math.prod(s) for s in shapes) == 2 * tile * tile
    out.sum().backward()
    assert saved and sum(saved) <= 4 * (2 * t * 8) + 2 * t  # Q, K, V, O (each B·H·T·d) and the LSE (B·H·T)


# --- tiled_attention: backward ----------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_gradients_equal_sdpa(causal):
    q, k, v = _qkv(t_q=23, t_k=23, d=8, d_v=6, seed=3, grad=True)
    keep = torch.ones(2, 23, dtype=torch.bool)
    keep[0, 17:] = False
    upstream = torch.randn(2, 3, 23, 6, generator=torch.Generator().manual_seed(4))
    grads = torch.autograd.grad((tiled_attention(q, k, v, causal=causal, padding_mask=keep, tile_size=5)
                                 * upstream).sum(), (q, k, v))
    mask = keep[:, None, None, :] & (torch.ones(23, 23, dtype=torch.bool).tril() if causal else True)
    expected = torch.autograd.grad((F.scaled_dot_product_attention(q, k, v, attn_mask=mask) * upstream).sum(),
                                   (q, k, v))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, **TOL)


def test_gradients_of_rows_that_see_nothing_match_the_readable_attention():
    q, k, v = _qkv(b=1, h=2, t_q=12, t_k=12, seed=5, grad=True)
    keep = torch.ones(1, 12, dtype=torch.bool)
    keep[0, :5] = False  # left padding + causal: queries 0..4 see no key
    mask = keep[:, None, None, :] & torch.ones(12, 12, dtype=torch.bool).tril()
    grads = torch.autograd.grad(tiled_attention(q, k, v, causal=True, padding_mask=keep, tile_size=4).pow(2).sum(),
                                (q, k, v))
    expected = torch.autograd.grad(scaled_dot_product_attention(q, k, v, mask)[0].pow(2).sum(), (q, k, v))
    for got, want in zip(grads, expected):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, **TOL)


def test_gradcheck_in_float64():
    q, k, v = _qkv(b=1, h=2, t_q=7, t_k=7, d=3, d_v=2, seed=6, dtype=torch.float64, grad=True)
    keep = torch.tensor([[True] * 6 + [False]])
    assert torch.autograd.gradcheck(lambda q, k, v: tiled_attention(q, k, v, causal=True, padding_mask=keep,
                                                                     tile_size=3), (q, k, v))


# --- bad input --------------------------------------------------------------------------------

def test_bad_input_gets_a_clear_error():
    q, k, v = _qkv(t_q=5, t_k=6)
    with pytest.raises(ValueError, match="causal=True needs as many queries as keys"):
        tiled_attention(q, k, v, causal=True)
    with pytest.raises(ValueError, match="tile_size must be a positive int"):
        tiled_attention(q, k, v, tile_size=0)
    with pytest.raises(ValueError, match=r"padding_mask must have shape \(B, T_k\) = \(2, 6\)"):
        tiled_attention(q, k, v, padding_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="padding_mask must be a boolean"):
        tiled_attention(q, k, v, padding_mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match="same feature size"):
        tiled_attention(q, k[..., :3], v)
