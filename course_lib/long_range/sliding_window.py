"""Sliding-window attention with global tokens (Longformer).

Each query sees the keys within ``window`` positions on either side of it; a few *global* positions
(a classifier's [CLS], a question's tokens) see every key and are seen by every query, which restores
reach across the whole document in one layer.

:func:`sliding_window_mask` is the readable definition (a T×T boolean picture, for small T).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["sliding_window_mask"]


def sliding_window_mask(
    seq_len: int, window: int, global_positions: Sequence[int] | torch.Tensor = (), *, device=None
) -> torch.Tensor:
    """Which keys each query may attend to: ``(T, T)`` boolean, True = may attend (the course's convention).

    Query ``i`` sees key ``j`` when ``|i − j| ≤ window`` (so ``2·window + 1`` keys away from the edges),
    or when ``i`` or ``j`` is a global position. HF Longformer's ``attention_window`` is the *whole*
    window, ``2 · window``.

    >>> sliding_window_mask(4, 1).int()
    tensor([[1, 1, 0, 0],
            [1, 1, 1, 0],
            [0, 1, 1, 1],
            [0, 0, 1, 1]], dtype=torch.int32)
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be an int ≥ 0 (keys on each side of the query), got {window!r}")
    positions = torch.as_tensor(global_positions, dtype=torch.long, device=device).reshape(-1)
    if positions.numel() and (positions.min() < 0 or positions.max() >= seq_len):
        raise ValueError(f"global positions must lie in [0, {seq_len}), got {positions.tolist()}")
    index = torch.arange(seq_len, device=device)
    mask = (index[:, None] - index[None, :]).abs() <= window  # (T, T): the band
    is_global = torch.zeros(seq_len, dtype=torch.bool, device=device)
    is_global[positions] = True
    return mask | is_global[:, None] | is_global[None, :]  # global rows see all; global columns are seen by all
