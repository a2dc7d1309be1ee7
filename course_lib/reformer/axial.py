"""Axial position embeddings: a ``n_max × D`` table from two small factor tables.

The ``n_max`` positions are folded into a grid ``n1 × n2`` (``axial_pos_shape``, with
``n1 · n2 = n_max``) and the hidden size is cut into ``d1 + d2 = D`` (``axial_pos_embds_dim``).
Position ``p = i · n2 + j`` gets the concatenation ``[E1[i], E2[j]]`` of a row of
``E1 (n1, d1)`` and a row of ``E2 (n2, d2)``: ``n1·d1 + n2·d2`` parameters instead of
``n_max · D`` (crime-and-punishment: 229,376 instead of 134,217,728), and no two positions share
a vector.

Covered: :class:`AxialPositionEmbeddings` (weights stored as HF does, ``(n1, 1, d1)`` and
``(1, n2, d2)``, so state dicts load either way; training-mode dropout zeroes whole
``j``-columns of the grid as HF's ``dropout2d`` does, but with one mask for the whole batch), :class:`PositionEmbeddings` (the ordinary
table, for comparison). Not covered: more than two axes (HF supports only two in evaluation
mode too), sinusoidal axial variants.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["AxialPositionEmbeddings", "PositionEmbeddings"]


class AxialPositionEmbeddings(nn.Module):
    """``forward(position_ids (B, T)) → (B, T, d1 + d2)``."""

    def __init__(
        self,
        axial_pos_shape: Sequence[int],
        axial_pos_embds_dim: Sequence[int],
        *,
        max_position_embeddings: int | None = None,
        hidden_size: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        shape, dims = tuple(axial_pos_shape), tuple(axial_pos_embds_dim)
        if len(shape) != 2 or len(dims) != 2 or min(shape + dims) < 1:
            raise ValueError(
                f"axial_pos_shape and axial_pos_embds_dim must each be two positive integers, got {shape} and {dims}"
            )
        if max_position_embeddings is not None and shape[0] * shape[1] != max_position_embeddings:
            raise ValueError(
                f"axial_pos_shape {shape} covers {shape[0] * shape[1]} positions, but max_position_embeddings "
                f"is {max_position_embeddings}: the two factors must multiply to the maximum length"
            )
        if hidden_size is not None and sum(dims) != hidden_size:
            raise ValueError(f"axial_pos_embds_dim {dims} must sum to hidden_size {hidden_size}, not {sum(dims)}")
        self.axial_pos_shape, self.axial_pos_embds_dim, self.dropout = shape, dims, dropout
        self.weights = nn.ParameterList([
            nn.Parameter(torch.randn(shape[0], 1, dims[0])),  # E1: one vector per row i
            nn.Parameter(torch.randn(1, shape[1], dims[1])),  # E2: one vector per column j
        ])

    @property
    def max_positions(self) -> int:
        return self.axial_pos_shape[0] * self.axial_pos_shape[1]

    def full_table(self) -> torch.Tensor:
        """All ``n1 · n2`` position vectors ``(n1 · n2, d1 + d2)``; row ``i·n2 + j`` is ``[E1[i], E2[j]]``.

        For pictures and tests only: it materialises the big table that the axial form avoids.
        """
        n1, n2 = self.axial_pos_shape
        return self(torch.arange(n1 * n2)[None])[0]

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        if position_ids.ndim != 2 or position_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"position_ids must be integers of shape (batch, seq_len), got {tuple(position_ids.shape)}")
        if position_ids.numel() and (int(position_ids.min()) < 0 or int(position_ids.max()) >= self.max_positions):
            raise ValueError(
                f"position ids must lie in [0, {self.max_positions}) for axial_pos_shape {self.axial_pos_shape}, "
                f"got max {int(position_ids.max())}"
            )
        n2 = self.axial_pos_shape[1]
        rows, columns = position_ids.div(n2, rounding_mode="floor"), position_ids % n2  # (B, T) each
        # only the rows actually used are built: (B, T, d1) and (B, T, d2), never (n1·n2, D)
        out = torch.cat([self.weights[0][:, 0][rows], self.weights[1][0][columns]], dim=-1)  # (B, T, D)
        if self.training and self.dropout > 0:
            # whole columns j (all rows, all features) as HF's dropout2d over the n2 axis; one mask
            # for the batch here, where HF draws one per sequence
            keep = torch.bernoulli(torch.full((n2,), 1 - self.dropout, device=out.device)) / (1 - self.dropout)
            out = out * keep[columns].unsqueeze(-1).to(out.dtype)
        return out

    @classmethod
    def from_hf(cls, reference: nn.Module) -> AxialPositionEmbeddings:
        """Copy of a ``transformers`` ``AxialPositionEmbeddings``."""
        ours = cls(reference.axial_pos_shape, reference.axial_pos_embds_dim, dropout=reference.dropout)
        ours.load_state_dict(reference.state_dict())
        return ours


class PositionEmbeddings(nn.Module):
    """The ordinary learned table ``(max_position_embeddings, D)``; ``forward(position_ids) → (B, T, D)``."""

    def __init__(self, max_position_embeddings: int, hidden_size: int, *, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.embedding = nn.Embedding(max_position_embeddings, hidden_size)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(self.embedding(position_ids), self.dropout, self.training)
