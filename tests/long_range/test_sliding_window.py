"""Sliding-window attention with global tokens: the readable mask by hand, the chunked computation pinned to
the readable attention with that mask (within 1e-5), its memory linear in T, and its errors.

The pin to HF Longformer is in ``test_longformer.py``.
"""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from course_lib.attention import scaled_dot_product_attention
from course_lib.long_range.sliding_window import sliding_window_attention, sliding_window_mask

ATOL = 1e-5


# --- the readable mask, by hand --------------------------------------------------------------------

def test_mask_band_with_one_global_position_by_hand():
    expected = torch.tensor([
        [1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],  # position 2 is global: its row sees everything ...
        [0, 0, 1, 1, 1],  # ... and its column is seen by everyone
        [0, 0, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(sliding_window_mask(5, 1, [2]), expected)


def test_mask_window_zero_is_the_diagonal_and_a_wide_window_is_full():
    assert torch.equal(sliding_window_mask(4, 0), torch.eye(4, dtype=torch.bool))
    assert sliding_window_mask(4, 3).all() and sliding_window_mask(4, 10).all()
    assert not sliding_window_mask(4, 2)[0, 3] and not sliding_window_mask(4, 2)[3, 0]  # |0 − 3| = 3 > 2


def test_mask_globals_at_both_ends_and_repeated():
    mask = sliding_window_mask(6, 0, torch.tensor([0, 5, 5]))
    assert mask[0].all() and mask[5].all() and mask[:, 0].all() and mask[:, 5].all()
    assert mask[1:5, 1:5].equal(torch.eye(4, dtype=torch.bool))  # the middle keeps its diagonal only


@pytest.mark.parametrize("args, message", [
    ((0, 1), "seq_len must be a positive int"),
    ((True, 1), "seq_len must be a positive int"),
    ((4, -1), "window must be an int ≥ 0"),
    ((4, 1.5), "window must be an int ≥ 0"),
    ((4, 1, [4]), r"global positions must lie in \[0, 4\)"),
    ((4, 1, [-1]), r"global positions must lie in \[0, 4\)"),
])
def test_mask_bad_input_is_named(args, message):
    with pytest.raises(ValueError, match=message):
        sliding_window_mask(*args)


# --- the chunked computation equals the readable one -------------------------------------------------

def readable(query, key, value, window, is_global, real):
    """The readable attention with the readable mask, one row of the batch at a time (globals may differ)."""
    seq_len = query.shape[2]
    masks = [sliding_window_mask(seq_len, window, is_global[b].nonzero().flatten()) & real[b][None, :]
             for b in range(query.shape[0])]  # (T, T) each
    return scaled_dot_product_attention(query, key, value, torch.stack(masks)[:, None])[0]


def random_qkv(batch=2, heads=2, seq_len=13, dim=8, value_dim=None):
    return (torch.randn(batch, heads, seq_len, dim), torch.randn(batch, heads, seq_len, dim),
            torch.randn(batch, heads, seq_len, value_dim or dim))


CASES = {  # name: (seq_len, window, global positions, lengths of the rows (None = no padding))
    "T a multiple of the window": (16, 4, [], None),
    "T not a multiple of the window": (13, 4, [], None),
    "window 1": (13, 1, [], None),
    "window 0 (each token alone)": (7, 0, [], None),
    "window ≥ T": (9, 12, [], None),
    "window = T − 1": (9, 8, [3], None),
    "one global, the first token": (13, 3, [0], None),
    "many globals, some inside each other's band": (23, 3, [0, 1, 2, 10, 11, 22], None),
    "every position global": (6, 1, list(range(6)), None),
    "padding": (13, 3, [], [13, 7]),
    "padding and globals": (19, 2, [0, 5], [19, 11]),
    "a global position inside the padding": (19, 2, [0, 15], [19, 11]),
    "padding that empties a query's band": (17, 1, [], [17, 3]),
    "one token": (1, 2, [0], None),
}


@pytest.mark.parametrize("seq_len, window, positions, lengths", CASES.values(), ids=CASES.keys())
def test_chunked_equals_readable(seq_len, window, positions, lengths):
    query, key, value = random_qkv(seq_len=seq_len, value_dim=5)
    real = torch.ones(2, seq_len, dtype=torch.bool)
    for row, length in enumerate(lengths or []):
        real[row, length:] = False
    is_global = torch.zeros(2, seq_len, dtype=torch.bool)
    is_global[:, positions] = True
    ours = sliding_window_attention(query, key, value, window, positions, real if lengths else None)
    assert ours.shape == (2, 2, seq_len, 5)
    torch.testing.assert_close(ours, readable(query, key, value, window, is_global, real), atol=ATOL, rtol=0)


def test_rows_with_different_globals_as_a_boolean_mask():
    query, key, value = random_qkv(batch=3, seq_len=29)
    is_global = torch.zeros(3, 29, dtype=torch.bool)
    is_global[0, [0, 5, 28]] = True  # row 1 has none, row 2 one
    is_global[2, 3] = True
    real = torch.ones(3, 29, dtype=torch.bool)
    real[0, 20:] = False
    ours = sliding_window_attention(query, key, value, 2, is_global, real)
    torch.testing.assert_close(ours, readable(query, key, value, 2, is_global, real), atol=ATOL, rtol=0)


def test_a_query_with_no_real_key_gets_zero_like_the_readable_path():
    query, key, value = random_qkv(batch=1, seq_len=10)
    real = torch.ones(1, 10, dtype=torch.bool)
    real[0, 4:] = False  # query 9 sees keys 8, 9, 10 only: all padding
    ours = sliding_window_attention(query, key, value, 1, (), real)
    assert ours[0, :, 9].abs().max() == 0 and ours[0, :, 3].abs().min() > 0


def test_gradients_equal_the_readable_paths():
    inputs = [t.requires_grad_() for t in random_qkv(seq_len=11)]
    is_global = torch.zeros(2, 11, dtype=torch.bool)
    is_global[:, 4] = True
    ours = torch.autograd.grad(sliding_window_attention(*inputs, 2, [4]).square().sum(), inputs)
    real = torch.ones(2, 11, dtype=torch.bool)
    theirs = torch.autograd.grad(readable(*inputs, 2, is_global, real).square().sum(), inputs)
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine, reference, atol=ATOL, rtol=0)


# --- memory: linear in T, never T × T ---------------------------------------------------------------

class LargestTensor(TorchFunctionMode):
    """Records the element count of the largest tensor any torch function or tensor method returns (views
    included). A function mode, not a dispatch mode: the latter's first use imports torch._dynamo (~5 s)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


def largest_tensor(attention, seq_len, window=8, positions=(0, 1)):
    query, key, value = random_qkv(batch=1, heads=1, seq_len=seq_len, dim=4)
    with LargestTensor() as counter:
        attention(query, key, value, window, positions)
    return counter.largest


def readable_with_mask(query, key, value, window, positions):
    return scaled_dot_product_attention(query, key, value, sliding_window_mask(query.shape[2], window, positions))[0]


def test_the_counter_sees_a_t_by_t_tensor_when_one_is_built():
    assert largest_tensor(readable_with_mask, 512) >= 512 * 512


def test_largest_tensor_grows_linearly_with_t_and_stays_far_below_t_squared():
    small, large = largest_tensor(sliding_window_attention, 512), largest_tensor(sliding_window_attention, 2048)
    assert large <= 4.1 * small  # 4× the tokens: 4× the memory (T² would give 16×)
    # The largest piece is the block scores: T queries × (3·window + 2 globals) keys.
    assert large <= 2048 * (3 * 8 + 2) < 2048 * 2048 / 50


# --- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, error, message", [
    (dict(query=torch.randn(2, 13, 8)), ValueError, r"\(batch, heads, seq_len, dim\)"),
    (dict(query=torch.randn(2, 2, 12, 8)), ValueError, "self-attention: query has 12 positions, key 13"),
    (dict(key=torch.randn(2, 2, 13, 4)), ValueError, "same feature size"),
    (dict(value=torch.randn(2, 2, 13, 8, dtype=torch.float64)), TypeError, "share one dtype"),
    (dict(window=-1), ValueError, "window must be an int ≥ 0"),
    (dict(window=2.0), ValueError, "window must be an int ≥ 0"),
    (dict(window=True), ValueError, "window must be an int ≥ 0"),
    (dict(global_positions=[13]), ValueError, r"global positions must lie in \[0, 13\)"),
    (dict(global_positions=[0.5]), TypeError, "global_positions must be integers"),
    (dict(global_positions=[[0, 1]]), ValueError, "flat list of positions"),
    (dict(global_positions="cls"), TypeError, "sequence of ints or a \\(B, T\\) boolean tensor"),
    (dict(global_positions=torch.zeros(2, 12, dtype=torch.bool)), ValueError, r"\(batch, seq_len\) = \(2, 13\)"),
    (dict(padding_mask=torch.ones(2, 13)), TypeError, "padding_mask must be a boolean tensor, True = real token"),
    (dict(padding_mask=torch.ones(2, 12, dtype=torch.bool)), ValueError, r"padding_mask must have shape"),
])
def test_bad_input_is_named(change, error, message):
    query, key, value = random_qkv()
    arguments = dict(query=query, key=key, value=value, window=2, global_positions=(), padding_mask=None)
    arguments.update(change)
    with pytest.raises(error, match=message):
        sliding_window_attention(**arguments)
