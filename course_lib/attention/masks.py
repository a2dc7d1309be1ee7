"""Attention masks: which keys each query may look at.

Course convention, used everywhere in ``course_lib``: a **boolean mask is True where
attention is allowed**, exactly like ``torch.nn.functional.scaled_dot_product_attention``.
(``torch.nn.MultiheadAttention``'s ``attn_mask`` and ``key_padding_mask`` use the opposite
convention: True there means *blocked*. Mixing the two up is the classic "inverted mask" bug.)

An **additive mask** is a float tensor added to the scores before the softmax: ``0`` keeps a
position, ``-inf`` removes it. :func:`to_additive` converts one form into the other.

Covered: causal (look-ahead) masks, padding masks, and the position ids of left-padded rows
(:func:`positions_from_mask`). Not covered: sliding-window or block-sparse masks (see the Reformer unit).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["causal_mask", "padding_mask", "positions_from_mask", "to_additive"]


def causal_mask(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(size, size)`` boolean mask; query ``i`` may attend to keys ``0..i`` only.

    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"causal_mask needs a positive integer size, got {size!r}")
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def padding_mask(
    lengths: Sequence[int] | torch.Tensor,
    max_len: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(B, T)`` boolean mask, True at real tokens and False at padding.

    ``lengths[b]`` is the number of real tokens at the start of sequence ``b``. To use it as an
    attention mask over keys, broadcast it: ``padding_mask(...)[:, None, None, :]`` has shape
    ``(B, 1, 1, T)`` and lines up with scores of shape ``(B, H, T_q, T)``.

    >>> padding_mask([2, 3]).int()
    tensor([[1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.ndim != 1 or lengths.numel() == 0:
        raise ValueError(f"lengths must be a non-empty 1-D sequence, got shape {tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    if (lengths < 0).any():
        raise ValueError(f"lengths must be >= 0, got {lengths.tolist()}")
    longest = int(lengths.max())
    max_len = longest if max_len is None else max_len
    if longest > max_len:
        raise ValueError(f"a sequence of length {longest} does not fit in max_len={max_len}")
    positions = torch.arange(max_len, device=lengths.device)  # (T,)
    return positions[None, :] < lengths[:, None]  # (B, T)


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a boolean keep-mask into an additive one: ``0`` where True, ``-inf`` where False."""
    if mask.dtype != torch.bool:
        raise TypeError(f"to_additive expects a boolean mask, got dtype {mask.dtype}")
    zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return zeros.masked_fill(~mask, float("-inf"))


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids ``(B, T)`` that count real tokens only; padding gets 0 (HF ``generate``'s rule).

    With left padding (``attention_mask`` 0 before each row's first real token) a row's first real
    token gets position 0, so a padded prompt is read exactly as the same prompt alone.

    >>> positions_from_mask(torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]))
    tensor([[0, 0, 1, 2],
            [0, 1, 2, 3]])
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)
