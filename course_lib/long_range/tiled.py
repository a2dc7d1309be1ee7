"""Exact attention in tiles, with an online softmax (the idea behind FlashAttention), in plain PyTorch.

The softmax over a row of scores needs the row's maximum and its sum of exponentials. Both can be kept
*running* while the keys arrive a tile at a time: when a new tile raises the maximum, everything
accumulated so far is rescaled by ``exp(old max − new max)``. At the end, dividing by the running sum
gives exactly softmax(scores) @ V, without the T×T scores ever existing.

:func:`online_softmax_update` is one step of that loop (the lab grades it); :func:`tiled_attention` runs
it over query tiles × key tiles, forward and backward (backward recomputes each tile's scores from the
row's log-sum-exp, as FlashAttention does, so the T×T weights are never stored either).
Not covered: dropout on the weights, additive (float) masks, arbitrary boolean masks (padding and
causal only), speed on a GPU (this is plain PyTorch: see torch's SDPA for the fused kernels).
"""
from __future__ import annotations

import math

import torch

from ..attention.scaled_dot_product import validate_attention_inputs

__all__ = ["online_softmax_update", "tiled_attention"]

DEFAULT_TILE = 256  # tiles of 256 × 256 scores: 256 KB each in fp32 per head, few enough Python steps


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


def _check_tiled_inputs(query, key, value, causal, padding_mask, tile_size) -> None:
    validate_attention_inputs(query, key, value)
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")
    if causal and query.shape[-2] != key.shape[-2]:
        raise ValueError(
            f"causal=True needs as many queries as keys (query i sees keys 0..i), got T_q={query.shape[-2]}, "
            f"T_k={key.shape[-2]}"
        )
    if padding_mask is None:
        return
    if not isinstance(padding_mask, torch.Tensor) or padding_mask.dtype != torch.bool:
        raise TypeError("padding_mask must be a boolean tensor (B, T_k), True = a real token that may be attended to")
    if query.ndim < 3 or padding_mask.shape != (query.shape[0], key.shape[-2]):
        raise ValueError(
            f"padding_mask must have shape (B, T_k) = ({query.shape[0] if query.ndim >= 3 else '?'}, "
            f"{key.shape[-2]}) for query {tuple(query.shape)} (B, ..., T_q, d), got {tuple(padding_mask.shape)}"
        )
    if padding_mask.device != query.device:
        raise ValueError(f"padding_mask is on {padding_mask.device} but query is on {query.device}")


def _tile_scores(query_tile, key_tile, q_start, k_start, causal, key_allowed):
    """Scaled scores of one (query tile, key tile) pair, −inf where a key is not allowed: (..., tq, tk).

    ``query_tile`` is already multiplied by the scale; ``key_allowed`` is the padding mask's slice for
    these keys, shaped to broadcast, or None.
    """
    scores = query_tile @ key_tile.transpose(-2, -1)  # (..., tq, tk)
    if key_allowed is not None:
        scores.masked_fill_(~key_allowed, float("-inf"))
    if causal and k_start + key_tile.shape[-2] - 1 > q_start:  # the tile straddles the diagonal
        rows = torch.arange(q_start, q_start + query_tile.shape[-2], device=scores.device)
        cols = torch.arange(k_start, k_start + key_tile.shape[-2], device=scores.device)
        scores.masked_fill_(cols[None, :] > rows[:, None], float("-inf"))  # key after query: the future
    return scores


def _key_tiles(q_start, q_stop, num_keys, tile_size, causal):
    """Start of every key tile the query rows [q_start, q_stop) need; causal skips the tiles wholly above
    the diagonal (every key in them comes after every query of the tile)."""
    stop = min(num_keys, q_stop) if causal else num_keys
    return range(0, stop, tile_size)


def _padding_slice(padding_mask, head_ndim, k_start, k_stop):
    """The padding mask's keys [k_start, k_stop) as (B, 1 × head_ndim, 1, tk): broadcast over heads and queries."""
    if padding_mask is None:
        return None
    piece = padding_mask[:, k_start:k_stop]  # (B, tk)
    return piece.reshape(piece.shape[0], *([1] * head_ndim), 1, piece.shape[1])


def _forward(query, key, value, causal, padding_mask, tile_size, scale):
    """Output (..., T_q, d_v) and each row's log-sum-exp (..., T_q), 0 for a row that saw no key."""
    lead, num_queries, num_keys = query.shape[:-2], query.shape[-2], key.shape[-2]
    output = query.new_empty(*lead, num_queries, value.shape[-1])
    log_sum_exp = query.new_empty(*lead, num_queries)
    for q_start in range(0, num_queries, tile_size):
        q_stop = min(q_start + tile_size, num_queries)
        query_tile = query[..., q_start:q_stop, :] * scale  # (..., tq, d)
        running_max = query.new_full((*lead, q_stop - q_start), float("-inf"))  # (..., tq)
        running_sum = query.new_zeros((*lead, q_stop - q_start))
        accumulator = query.new_zeros((*lead, q_stop - q_start, value.shape[-1]))  # (..., tq, d_v)
        for k_start in _key_tiles(q_start, q_stop, num_keys, tile_size, causal):
            k_stop = min(k_start + tile_size, num_keys)
            scores = _tile_scores(query_tile, key[..., k_start:k_stop, :], q_start, k_start, causal,
                                  _padding_slice(padding_mask, len(lead) - 1, k_start, k_stop))
            running_max, running_sum, accumulator = online_softmax_update(
                running_max, running_sum, accumulator, scores, value[..., k_start:k_stop, :])
        saw_nothing = running_sum == 0  # every key masked: output 0 (the course's convention), not 0/0
        output[..., q_start:q_stop, :] = accumulator / running_sum.masked_fill(saw_nothing, 1.0)[..., None]
        # log Σ exp(scores) = max + log(sum); 0 for an empty row, so backward's exp(−inf − 0) = 0 there
        log_sum_exp[..., q_start:q_stop] = (running_max + running_sum.log()).masked_fill(saw_nothing, 0.0)
    return output, log_sum_exp


class _TiledAttention(torch.autograd.Function):
    """Saves only Q, K, V, the output and the rows' log-sum-exp; backward recomputes every tile's scores."""

    @staticmethod
    def forward(ctx, query, key, value, causal, padding_mask, tile_size, scale):
        output, log_sum_exp = _forward(query, key, value, causal, padding_mask, tile_size, scale)
        ctx.save_for_backward(query, key, value, output, log_sum_exp)
        ctx.settings = (causal, padding_mask, tile_size, scale)
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        query, key, value, output, log_sum_exp = ctx.saved_tensors
        causal, padding_mask, tile_size, scale = ctx.settings
        lead, num_queries, num_keys = query.shape[:-2], query.shape[-2], key.shape[-2]
        grad_query, grad_key, grad_value = (torch.zeros_like(t) for t in (query, key, value))
        # dL/dscore = P ⊙ (dL/dP − Σ_j P_j dL/dP_j), and Σ_j P_j dL/dP_j = dO · O for each row
        row_dot = (grad_output * output).sum(dim=-1)  # (..., T_q)
        for q_start in range(0, num_queries, tile_size):
            q_stop = min(q_start + tile_size, num_queries)
            query_tile = query[..., q_start:q_stop, :] * scale
            grad_out_tile = grad_output[..., q_start:q_stop, :]  # (..., tq, d_v)
            for k_start in _key_tiles(q_start, q_stop, num_keys, tile_size, causal):
                k_stop = min(k_start + tile_size, num_keys)
                key_tile, value_tile = key[..., k_start:k_stop, :], value[..., k_start:k_stop, :]
                scores = _tile_scores(query_tile, key_tile, q_start, k_start, causal,
                                      _padding_slice(padding_mask, len(lead) - 1, k_start, k_stop))
                weights = torch.exp(scores - log_sum_exp[..., q_start:q_stop, None])  # (..., tq, tk): softmax
                grad_value[..., k_start:k_stop, :] += weights.transpose(-2, -1) @ grad_out_tile
                grad_weights = grad_out_tile @ value_tile.transpose(-2, -1)  # (..., tq, tk)
                grad_scores = weights * (grad_weights - row_dot[..., q_start:q_stop, None])
                grad_query[..., q_start:q_stop, :] += (grad_scores @ key_tile) * scale
                grad_key[..., k_start:k_stop, :] += grad_scores.transpose(-2, -1) @ query_tile
        return grad_query, grad_key, grad_value, None, None, None, None


def tiled_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    causal: bool = False,
    padding_mask: torch.Tensor | None = None,
    tile_size: int = DEFAULT_TILE,
    scale: float | None = None,
) -> torch.Tensor:
    """Exact attention, softmax(Q Kᵀ · scale + mask) V, computed tile by tile: output ``(..., T_q, d_v)``.

    Shapes: query ``(B, ..., T_q, d)`` (usually ``(B, H, T, d)``), key ``(B, ..., T_k, d)``, value
    ``(B, ..., T_k, d_v)``. ``causal``: query ``i`` sees keys ``0..i`` (needs ``T_q == T_k``); key
    tiles wholly in the future are skipped, not computed and masked. ``padding_mask``: ``(B, T_k)``
    boolean, True = a real token. ``scale`` defaults to ``1/√d``. Equal to torch's SDPA up to rounding;
    a query that may attend to no key at all gets output 0, as in the course's readable attention
    (torch's SDPA gave NaN there before torch 2.5).

    Memory: the largest temporary is one ``(..., tile_size, tile_size)`` tile of scores, so memory grows
    linearly in T. Differentiable: backward recomputes the tiles from Q, K, V, the output and each row's
    log-sum-exp instead of storing the T×T weights.
    """
    _check_tiled_inputs(query, key, value, causal, padding_mask, tile_size)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    return _TiledAttention.apply(query, key, value, bool(causal), padding_mask, tile_size, scale)
