"""Exact attention in tiles, with an online softmax (the idea behind FlashAttention), in plain PyTorch.

The softmax over a row of scores needs the row's maximum and its sum of exponentials. Both can be kept
*running* while the keys arrive a tile at a time: when a new tile raises the maximum, everything
accumulated so far is rescaled by ``exp(old max − new max)``. At the end, dividing by the running sum
gives exactly softmax(scores) @ V, without the T×T scores ever existing.

:func:`online_softmax_update` is one step of that loop (the lab grades it).
"""
from __future__ import annotations

import torch

__all__ = ["online_softmax_update"]


def online_softmax_update(
    running_max: torch.Tensor,
    running_sum: torch.Tensor,
    accumulator: torch.Tensor,
    scores: torch.Tensor,
    values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one tile of keys into the running softmax state; returns the new ``(max, sum, accumulator)``.

    Shapes: ``running_max``, ``running_sum`` ``(..., T_q)``; ``accumulator`` ``(..., T_q, d_v)``, the
    *unnormalised* weighted sum of values; ``scores`` ``(..., T_q, T_tile)`` (already scaled and masked,
    −inf where a key is not allowed); ``values`` ``(..., T_tile, d_v)``. Start from ``max = −inf``,
    ``sum = 0``, ``accumulator = 0``; after the last tile, the output is ``accumulator / sum[..., None]``
    (a row that saw no allowed key keeps ``sum = 0``: its output is defined as zero, as in
    :func:`course_lib.attention.scaled_dot_product_attention`).
    """
    new_max = torch.maximum(running_max, scores.amax(dim=-1))  # (..., T_q)
    # A row with no allowed key so far has max −inf; shift it by 0 instead, so no (−inf) − (−inf) = NaN.
    shift = torch.where(torch.isneginf(new_max), torch.zeros_like(new_max), new_max)
    rescale = torch.exp(running_max - shift)  # (..., T_q): exp(old max − new max) ≤ 1
    exp_scores = torch.exp(scores - shift[..., None])  # (..., T_q, T_tile)
    new_sum = running_sum * rescale + exp_scores.sum(dim=-1)
    new_accumulator = accumulator * rescale[..., None] + exp_scores @ values  # (..., T_q, d_v)
    return new_max, new_sum, new_accumulator
