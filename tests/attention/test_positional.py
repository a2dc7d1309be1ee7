"""course_lib.attention.positional pinned to the formula and to HF transformers' Marian sinusoidal table."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib import SinusoidalPositionalEncoding, sinusoidal_positional_encoding


def test_matches_the_paper_formula_in_float64():
    max_len, dim = 50, 16
    table = sinusoidal_positional_encoding(max_len, dim)
    for pos in range(max_len):
        for i in range(dim // 2):
            angle = pos / 10000 ** (2 * i / dim)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_matches_hf_marian_sinusoidal_embedding():
    # Marian stores the same frequencies with all sines first, then all cosines.
    marian = pytest.importorskip("transformers.models.marian.modeling_marian")
    max_len, dim = 64, 32
    reference = marian.MarianSinusoidalPositionalEmbedding(max_len, dim)
    # transformers 5 initialises the table in _init_weights; build it the way the model does
    if hasattr(reference, "create_weight"):
        reference_table = reference.create_weight()
    else:
        reference_table = reference._init_weight(reference.weight)
    reference_table = torch.as_tensor(reference_table).float()
    ours = sinusoidal_positional_encoding(max_len, dim)
    torch.testing.assert_close(ours[:, 0::2], reference_table[:, : dim // 2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[:, 1::2], reference_table[:, dim // 2 :], atol=1e-5, rtol=1e-5)


def test_a_fixed_offset_is_a_rotation_independent_of_position():
    """PE[pos + k] = PE[pos] @ R_k, R_k block-diagonal 2x2 rotations: relative offsets are linear."""
    max_len, dim, k = 300, 16, 7
    table = sinusoidal_positional_encoding(max_len, dim)
    frequencies = 10000 ** (-torch.arange(0, dim, 2).double() / dim)
    rotation = torch.zeros(dim, dim, dtype=torch.float64)
    for i, w in enumerate(frequencies * k):
        c, s = math.cos(w), math.sin(w)
        # (sin a, cos a) -> (sin(a + w), cos(a + w))
        rotation[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    shifted = table[:-k].double() @ rotation
    torch.testing.assert_close(shifted.float(), table[k:], atol=1e-4, rtol=0)


def test_module_adds_the_table_and_checks_length():
    pe = SinusoidalPositionalEncoding(8, max_len=10)
    x = torch.zeros(2, 6, 8)
    torch.testing.assert_close(pe(x), sinusoidal_positional_encoding(10, 8)[:6].expand(2, 6, 8))
    assert not list(pe.parameters())  # a buffer, not learned
    with pytest.raises(ValueError, match="exceeds the positional table's max_len 10"):
        pe(torch.zeros(1, 11, 8))
    with pytest.raises(ValueError, match=r"\(batch, seq_len, 8\)"):
        pe(torch.zeros(1, 5, 4))


@pytest.mark.parametrize("max_len, dim", [(0, 4), (5, 3), (5, 0)])
def test_rejects_bad_sizes(max_len, dim):
    with pytest.raises(ValueError, match="even dim"):
        sinusoidal_positional_encoding(max_len, dim)
