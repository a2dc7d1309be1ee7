"""Sliding-window attention with global tokens (Longformer).

Each query sees the keys within ``window`` positions on either side of it; a few *global* positions
(a classifier's [CLS], a question's tokens) see every key and are seen by every query, which restores
reach across the whole document in one layer.

* :func:`sliding_window_mask` is the readable definition (a T×T boolean picture, for small T).
* :func:`sliding_window_attention` computes the same attention without ever building T×T: the queries
  are cut into blocks of ``window`` rows, and each block is scored only against the ``3·window`` keys
  around it (one strided view of the keys, no copy), plus one extra column per global key; the few
  global *query* rows are computed on their own, against every key. Memory: O(T · (window + globals)).

The pieces (:func:`global_flags`, :func:`local_attention`, :func:`global_slots`, :func:`global_rows`,
:func:`scatter_rows`) are public because :mod:`.longformer` reuses them with its separate global
projections. Not covered: dilated windows, causal (one-sided) windows, custom kernels.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..attention.scaled_dot_product import validate_attention_inputs

__all__ = ["sliding_window_mask", "sliding_window_attention", "global_flags", "local_attention", "global_slots",
           "global_rows", "scatter_rows"]


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


def sliding_window_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    window: int,
    global_positions: Sequence[int] | torch.Tensor = (),
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Longformer's attention, computed in blocks: ``(B, H, T, d_v)``, never a ``(T, T)`` tensor.

    ``query``, ``key`` ``(B, H, T, d)`` and ``value`` ``(B, H, T, d_v)`` (self-attention: one T);
    ``window`` = keys on each side (HF's ``attention_window`` is ``2 · window``); ``global_positions``:
    positions global in every row (a sequence of ints or a 1-D integer tensor), or a ``(B, T)`` boolean
    tensor, True = global, when rows differ; ``padding_mask`` ``(B, T)`` boolean, True = real token (the
    course's convention): padding keys are never attended to. Equal to
    ``scaled_dot_product_attention(q, k, v, sliding_window_mask(T, window, globals) & padding)``; as
    there, a query with no allowed key gets a zero output.
    """
    is_global, key_real = _check_inputs(query, key, value, window, global_positions, padding_mask)
    output = local_attention(query, key, value, window, is_global, key_real)  # (B, H, T, d_v)
    index, valid = global_slots(is_global)  # (B, G) each
    if index.shape[1] == 0:
        return output
    query_rows = query.gather(2, index[:, None, :, None].expand(-1, query.shape[1], -1, query.shape[3]))
    return scatter_rows(output, global_rows(query_rows, key, value, key_real), index, valid)


def global_flags(global_positions, batch: int, seq_len: int, device=None) -> torch.Tensor:
    """``(B, T)`` boolean, True at global positions, from positions shared by every row or a ``(B, T)`` mask."""
    if isinstance(global_positions, torch.Tensor) and global_positions.dtype == torch.bool:
        if tuple(global_positions.shape) != (batch, seq_len):
            raise ValueError(f"a boolean global mask must have shape (batch, seq_len) = {(batch, seq_len)}, got "
                             f"{tuple(global_positions.shape)}; for positions shared by every row pass a list of ints")
        return global_positions.to(device)
    try:
        positions = torch.as_tensor(global_positions, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"global_positions must be a sequence of ints or a (B, T) boolean tensor, "
                        f"got {global_positions!r}") from error
    if positions.numel() and (positions.is_floating_point() or positions.is_complex()):
        raise TypeError(f"global_positions must be integers, got dtype {positions.dtype}")
    if positions.ndim > 1:
        raise ValueError(f"global_positions must be a flat list of positions, got shape {tuple(positions.shape)} "
                         "(a per-row choice is a (B, T) *boolean* tensor)")
    positions = positions.long()
    if positions.numel() and (positions.min() < 0 or positions.max() >= seq_len):
        raise ValueError(f"global positions must lie in [0, {seq_len}), got {positions.tolist()}")
    flags = torch.zeros(batch, seq_len, dtype=torch.bool, device=device)
    flags[:, positions] = True
    return flags


def _check_inputs(query, key, value, window, global_positions, padding_mask):
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if isinstance(tensor, torch.Tensor) and tensor.ndim != 4:
            raise ValueError(f"query, key and value must be (batch, heads, seq_len, dim), got {name} "
                             f"{tuple(tensor.shape)}; for one head use x[:, None]")
    validate_attention_inputs(query, key, value)
    if query.shape[2] != key.shape[2]:
        raise ValueError(f"sliding-window attention is self-attention: query has {query.shape[2]} positions, "
                         f"key {key.shape[2]}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be an int ≥ 0 (keys on each side of the query), got {window!r}")
    batch, seq_len = query.shape[0], query.shape[2]
    if padding_mask is None:
        key_real = torch.ones(batch, seq_len, dtype=torch.bool, device=query.device)
    else:
        if not isinstance(padding_mask, torch.Tensor) or padding_mask.dtype != torch.bool:
            raise TypeError("padding_mask must be a boolean tensor, True = real token (course_lib.attention."
                            f"padding_mask); got {getattr(padding_mask, 'dtype', type(padding_mask).__name__)}")
        if tuple(padding_mask.shape) != (batch, seq_len):
            raise ValueError(f"padding_mask must have shape (batch, seq_len) = {(batch, seq_len)}, got "
                             f"{tuple(padding_mask.shape)}")
        key_real = padding_mask.to(query.device)
    return global_flags(global_positions, batch, seq_len, query.device), key_real


def local_attention(query, key, value, window: int, is_global: torch.Tensor, key_real: torch.Tensor) -> torch.Tensor:
    """Every query over its band and the global keys: ``(B, H, T, d_v)``. Rows of global queries are
    computed as if they were local (callers overwrite them with :func:`global_rows`).

    A global key inside a query's band is scored once, as a global column (it is left out of the band).
    """
    batch, heads, seq_len, dim = query.shape
    window = min(window, seq_len - 1)  # a wider band holds the same keys
    block = max(window, 1)  # queries per block
    num_blocks = -(-seq_len // block)
    extra = num_blocks * block - seq_len  # rows added so the blocks tile the sequence
    span = block + 2 * window  # keys a block can see: [start − window, end + window)
    scale = 1.0 / math.sqrt(dim)

    query_blocks = F.pad(query, (0, 0, 0, extra)).view(batch, heads, num_blocks, block, dim)
    # Keys padded by `window` on the left and `window + extra` on the right, then one strided view: block n
    # sees padded rows [n·block, n·block + span) = original keys [n·block − window, (n+1)·block + window).
    key_windows = F.pad(key, (0, 0, window, window + extra)).unfold(2, span, block)  # (B, H, nb, d, span)
    value_windows = F.pad(value, (0, 0, window, window + extra)).unfold(2, span, block)  # (B, H, nb, d_v, span)
    band_scores = query_blocks @ key_windows * scale  # (B, H, nb, block, span)

    # Query a of a block sits at offset a + window in its key window: the band is offsets a … a + 2·window.
    offset = torch.arange(span, device=query.device)[None, :] - torch.arange(block, device=query.device)[:, None]
    in_band = (offset >= 0) & (offset <= 2 * window)  # (block, span)
    band_keys = F.pad(key_real & ~is_global, (window, window + extra)).unfold(1, span, block)  # (B, nb, span)
    band_allowed = in_band & band_keys[:, None, :, None, :]  # (B, 1, nb, block, span)

    index, valid = global_slots(is_global)  # (B, G)
    global_keys = key.gather(2, index[:, None, :, None].expand(-1, heads, -1, dim))  # (B, H, G, d)
    global_values = value.gather(2, index[:, None, :, None].expand(-1, heads, -1, value.shape[3]))
    global_scores = (query_blocks @ global_keys[:, :, None].transpose(-2, -1)) * scale  # (B, H, nb, block, G)
    global_allowed = (valid & key_real.gather(1, index))[:, None, None, None, :]  # (B, 1, 1, 1, G)

    scores = torch.cat([global_scores, band_scores], dim=-1)  # (B, H, nb, block, G + span)
    allowed = torch.cat([global_allowed.expand(-1, -1, num_blocks, block, -1),
                         band_allowed], dim=-1)
    weights = _softmax_or_zero(scores.masked_fill(~allowed, float("-inf")))
    num_global = index.shape[1]
    output = (weights[..., :num_global] @ global_values[:, :, None]  # (B, H, nb, block, d_v)
              + weights[..., num_global:] @ value_windows.transpose(-2, -1))
    return output.reshape(batch, heads, num_blocks * block, -1)[:, :, :seq_len]  # (B, H, T, d_v)


def global_slots(is_global: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's global positions, gathered: ``index (B, G)`` and ``valid (B, G)``, G = the most any row has
    (rows with fewer are filled with position 0, marked invalid)."""
    counts = is_global.sum(dim=1)  # (B,)
    most = int(counts.max()) if counts.numel() else 0
    order = torch.argsort((~is_global).to(torch.uint8), dim=1, stable=True)  # global positions first, in order
    index = order[:, :most]
    valid = torch.arange(most, device=is_global.device)[None, :] < counts[:, None]
    return index.masked_fill(~valid, 0), valid


def global_rows(query_rows: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_real: torch.Tensor) -> torch.Tensor:
    """Full attention of a few gathered query rows ``(B, H, G, d)`` over every real key: ``(B, H, G, d_v)``."""
    scores = query_rows @ key.transpose(-2, -1) / math.sqrt(query_rows.shape[-1])  # (B, H, G, T): G rows only
    weights = _softmax_or_zero(scores.masked_fill(~key_real[:, None, None, :], float("-inf")))
    return weights @ value


def scatter_rows(output: torch.Tensor, rows: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``output (B, H, T, d_v)`` with ``rows (B, H, G, d_v)`` written at positions ``index (B, G)`` where valid."""
    batch_rows, slots = valid.nonzero(as_tuple=True)  # (N,) each: the valid (row, slot) pairs
    output = output.clone()
    output[batch_rows, :, index[batch_rows, slots]] = rows[batch_rows, :, slots]  # (N, H, d_v) both sides
    return output


def _softmax_or_zero(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis; a row with no allowed score gets zero weights (not NaN)."""
    nothing_allowed = torch.isneginf(scores).all(dim=-1, keepdim=True)
    return torch.softmax(scores.masked_fill(nothing_allowed, 0.0), dim=-1).masked_fill(nothing_allowed, 0.0)
