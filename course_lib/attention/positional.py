"""Sinusoidal positional encoding (Vaswani et al., 2017).

Attention by itself ignores order: permute the tokens and the outputs permute the same way.
Adding a position-dependent vector to each token embedding breaks that symmetry:

    PE[pos, 2i]   = sin(pos / 10000^(2i/D))
    PE[pos, 2i+1] = cos(pos / 10000^(2i/D))

Each pair of features is a clock ticking at its own frequency, from one turn every 2π
positions down to one every 10000·2π; ``PE[pos + k]`` is a rotation of ``PE[pos]``, so relative
offsets are easy for a linear layer to read. Not covered: learned, rotary or relative encodings.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["sinusoidal_positional_encoding", "SinusoidalPositionalEncoding"]


def sinusoidal_positional_encoding(max_len: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The ``(max_len, dim)`` table above; ``dim`` must be even.

    >>> sinusoidal_positional_encoding(2, 4)
    tensor([[0.0000, 1.0000, 0.0000, 1.0000],
            [0.8415, 0.5403, 0.0100, 0.9999]])
    """
    if max_len < 1 or dim < 2 or dim % 2:
        raise ValueError(f"need max_len >= 1 and an even dim >= 2, got max_len={max_len}, dim={dim}")
    positions = torch.arange(max_len, dtype=torch.float32)[:, None]  # (T, 1)
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))  # (D/2,)
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies)
    return table


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the table to embeddings ``(B, T, D)``, then dropout. The table is a buffer, not a parameter."""

    def __init__(self, dim: int, max_len: int = 512, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("table", sinusoidal_positional_encoding(max_len, dim), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.table.shape[1]:
            raise ValueError(f"expected embeddings of shape (batch, seq_len, {self.table.shape[1]}), got {tuple(x.shape)}")
        if x.shape[1] > self.table.shape[0]:
            raise ValueError(
                f"sequence length {x.shape[1]} exceeds the positional table's max_len {self.table.shape[0]}; "
                "build the encoding with a larger max_len"
            )
        return self.dropout(x + self.table[: x.shape[1]].to(x.dtype))
