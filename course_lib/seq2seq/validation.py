"""Input validation shared by the sequence-to-sequence models: errors that name the problem.

A wrong input to an encoder-decoder rarely crashes where the mistake is. An id past the end of
the vocabulary fails deep inside an embedding (on a GPU, as an opaque device-side assert); an
inverted padding mask trains without complaint. These checks run at the models' front door:

* :func:`validate_token_ids`: integer ``(batch, seq_len)``, non-empty, short enough for the
  positional table, every id inside the vocabulary (source and target vocabularies are easy to swap);
* :func:`validate_padding_mask`: boolean ``(batch, seq_len)``, True at real tokens, no all-padding row
  (the sign of a mask in torch.nn's opposite convention);
* :func:`validate_attn_mask`: ends in ``(query_len, key_len)``.

Not covered: checks inside attention itself (:func:`course_lib.attention.validate_attention_inputs`).
"""
from __future__ import annotations

import torch

__all__ = ["validate_token_ids", "validate_padding_mask", "validate_attn_mask"]


def validate_token_ids(ids: torch.Tensor, vocab_size: int, max_len: int, side: str) -> None:
    """Raise an error naming the problem unless ``ids`` is a non-empty ``(B, T)`` batch that fits."""
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise TypeError(f"{side} ids must be an integer tensor (batch, seq_len), got {getattr(ids, 'dtype', type(ids))}")
    if ids.ndim != 2:
        raise ValueError(f"{side} ids must have shape (batch, seq_len), got {tuple(ids.shape)}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"empty {side} batch of shape {tuple(ids.shape)}: need at least one sequence of one token")
    if ids.shape[1] > max_len:
        raise ValueError(f"{side} sequence length {ids.shape[1]} exceeds the positional table's max_len {max_len}")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"{side} token id {bad} is out of range for the {side} vocabulary of size {vocab_size} "
                         "(are source and target vocabularies swapped?)")


def validate_padding_mask(mask: torch.Tensor | None, batch: int, length: int, name: str) -> None:
    """A key padding mask must be boolean ``(batch, length)`` with a real token in every row."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a boolean tensor (True = real token), got {getattr(mask, 'dtype', type(mask))}")
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"{name} must have shape (batch, seq_len) = {(batch, length)}, got {tuple(mask.shape)}")
    empty_rows = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty_rows:
        raise ValueError(
            f"{name} has no real token in sequence(s) {empty_rows}. The course's masks are True at real "
            "tokens; torch.nn's are True at padding. Did you pass an inverted mask?"
        )


def validate_attn_mask(mask: torch.Tensor | None, t_q: int, t_k: int, name: str) -> None:
    """An attention mask must be ``(T_q, T_k)`` or broadcast to ``(B, H, T_q, T_k)``."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or None, got {type(mask).__name__}")
    if mask.ndim < 2 or tuple(mask.shape[-2:]) != (t_q, t_k):
        raise ValueError(
            f"{name} must end in (query_len, key_len) = {(t_q, t_k)}, got shape {tuple(mask.shape)}; "
            "a causal mask for a target of length T is causal_mask(T)"
        )
