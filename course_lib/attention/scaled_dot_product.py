"""Scaled dot-product attention, the readable way and the fused way.

    Attention(Q, K, V) = softmax(Q Kᵀ / √d + M) V

Each query scores every key with a dot product, the scores are scaled by 1/√d (so their
spread does not grow with the head size d and saturate the softmax), masked, turned into a
distribution over keys with a softmax along the *last* axis, and used to average the values.

Two paths compute the same thing:

* :func:`scaled_dot_product_attention` spells every step out and returns the weights, which
  the chapters plot. Read this one.
* :func:`fused_attention` calls ``torch.nn.functional.scaled_dot_product_attention``, which
  picks a memory-efficient kernel (FlashAttention on recent GPUs) but cannot return weights.

Masks follow :mod:`course_lib.attention.masks`: boolean True = may attend, or an additive float mask.
A query whose every key is masked attends to nothing: its weights and output are zero (torch's
fused kernel returns NaN there). Not covered: attention sinks, ALiBi, sliding windows.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["scaled_dot_product_attention", "fused_attention", "validate_attention_inputs"]


def validate_attention_inputs(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None
) -> None:
    """Raise a ``TypeError``/``ValueError`` that names the problem if the inputs do not fit.

    Expected: ``query (..., T_q, d)``, ``key (..., T_k, d)``, ``value (..., T_k, d_v)``, the same
    leading (batch, head) dimensions, one floating dtype and one device; ``mask`` boolean or of
    the query's dtype and broadcastable to ``(..., T_q, T_k)``.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ValueError(f"{name} must have shape (..., seq_len, dim), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(
            f"query, key and value must share one dtype, got {query.dtype}, {key.dtype}, {value.dtype}"
        )
    if not (query.device == key.device == value.device):
        raise ValueError(
            f"query, key and value must be on one device, got {query.device}, {key.device}, {value.device}"
        )
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query and key must have the same feature size to be dotted: query {tuple(query.shape)} "
            f"has d={query.shape[-1]}, key {tuple(key.shape)} has d={key.shape[-1]}"
        )
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"key and value must have one entry per position: key {tuple(key.shape)} has "
            f"{key.shape[-2]} positions, value {tuple(value.shape)} has {value.shape[-2]}"
        )
    if not (query.shape[:-2] == key.shape[:-2] == value.shape[:-2]):
        raise ValueError(
            "query, key and value must share their leading (batch, head) dimensions, got "
            f"{tuple(query.shape[:-2])}, {tuple(key.shape[:-2])}, {tuple(value.shape[:-2])}"
        )
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool and mask.dtype != query.dtype:
        raise TypeError(
            f"mask must be boolean (True = may attend) or additive with the query's dtype "
            f"{query.dtype}, got dtype {mask.dtype}"
        )
    if mask.device != query.device:
        raise ValueError(f"mask is on {mask.device} but query is on {query.device}")
    scores_shape = (*query.shape[:-1], key.shape[-2])
    try:
        broadcast = torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != torch.Size(scores_shape):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the attention scores' shape "
            f"{scores_shape} (..., T_q, T_k); a padding mask of shape (B, T_k) needs "
            "[:, None, None, :] to line up with (B, H, T_q, T_k)"
        )


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``query`` over ``key``/``value``; returns ``(output, weights)``.

    Shapes: query ``(..., T_q, d)``, key ``(..., T_k, d)``, value ``(..., T_k, d_v)`` →
    output ``(..., T_q, d_v)`` and weights ``(..., T_q, T_k)``, each weight row summing to 1.

    >>> q = k = v = torch.eye(2)[None]            # (B=1, T=2, d=2)
    >>> out, w = scaled_dot_product_attention(q, k, v)
    >>> w.sum(-1)
    tensor([[1., 1.]])
    """
    validate_attention_inputs(query, key, value, mask)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale

    # Scale the (T_q, d) queries rather than the (T_q, T_k) scores: the same numbers, T_k/d times less work.
    scores = (query * scale) @ key.transpose(-2, -1)  # (..., T_q, T_k)
    # `scores` is a fresh tensor that nothing else holds: masking it in place saves a T_q × T_k copy.
    if mask is not None and mask.dtype == torch.bool:
        scores.masked_fill_(~mask, float("-inf"))
    elif mask is not None:
        scores += mask
    nothing_allowed = None  # no mask: every row has keys
    if mask is not None:
        # A row with no allowed key would be softmax(-inf, ..., -inf) = NaN; give it zero weights.
        # A boolean mask says so itself, at its own (often broadcast, smaller) size.
        nothing_allowed = (~mask.any(dim=-1, keepdim=True) if mask.dtype == torch.bool
                           else torch.isneginf(scores).all(dim=-1, keepdim=True))  # (..., T_q, 1)
        if nothing_allowed.any():
            scores.masked_fill_(nothing_allowed, 0.0)  # a finite row, so softmax's gradient stays finite
        else:
            nothing_allowed = None  # the common case: no row to fix
    weights = torch.softmax(scores, dim=-1)  # over keys
    if nothing_allowed is not None:
        weights = weights.masked_fill(nothing_allowed, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ value, weights  # (..., T_q, d_v), (..., T_q, T_k)


def fused_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Same result as :func:`scaled_dot_product_attention` via torch's fused kernel; output only."""
    validate_attention_inputs(query, key, value, mask)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p, scale=scale)
