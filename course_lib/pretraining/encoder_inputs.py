"""The encoder's front door: input checks that name the problem and the fix, and RoBERTa's position ids.

A wrong input to an encoder seldom fails where the mistake is: an id past the vocabulary fails inside an
embedding (on a GPU as an opaque device-side assert), a mask in torch.nn's inverted convention or of float
weights runs without complaint. :func:`validate_encoder_inputs` checks, before anything runs: integer
``input_ids (B, T)`` inside the vocabulary and no longer than the position table; ``attention_mask`` of the
same shape holding only 0/1, with a real token in every row; ``token_type_ids`` only when the model has a
token-type table, inside it. :func:`roberta_position_ids` is RoBERTa's numbering (see :mod:`.encoder`).
Not covered: the model itself (:mod:`.encoder`), tokenisation.
"""
from __future__ import annotations

import torch

__all__ = ["roberta_position_ids", "validate_encoder_inputs"]


def roberta_position_ids(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """RoBERTa's positions: real tokens count ``pad+1, pad+2, …``; padding gets ``pad``.

    >>> roberta_position_ids(torch.tensor([[0, 5, 6, 2, 1, 1]]), pad_token_id=1)
    tensor([[2, 3, 4, 5, 1, 1]])
    """
    real = (input_ids != pad_token_id).long()
    return real.cumsum(dim=1) * real + pad_token_id  # (B, T)


def validate_encoder_inputs(config, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                            token_type_ids: torch.Tensor | None) -> torch.Tensor:
    """Raise an error naming the problem and its fix; return the boolean ``(B, T)`` real-token mask."""
    c = config
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"input_ids must be an integer tensor (batch, seq_len), got "
                        f"{getattr(input_ids, 'dtype', type(input_ids).__name__)}")
    if input_ids.ndim != 2 or 0 in input_ids.shape:
        raise ValueError(f"input_ids must be a non-empty (batch, seq_len) tensor, got shape {tuple(input_ids.shape)}"
                         "; for one sentence use ids[None]")
    low, high = (int(v) for v in torch.aminmax(input_ids))
    if low < 0 or high >= c.vocab_size:
        raise ValueError(f"token id {low if low < 0 else high} is outside the vocabulary [0, {c.vocab_size}): "
                         "encode the text with this model's own tokenizer")
    if input_ids.shape[1] > c.max_length:
        raise ValueError(f"sequence length {input_ids.shape[1]} is longer than the {c.max_length} positions the "
                         f"model has learned: truncate the input to {c.max_length} tokens")
    if attention_mask is None:
        real = torch.ones_like(input_ids, dtype=torch.bool)
    else:
        if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != tuple(input_ids.shape):
            got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask)
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {got}"
                             " (one 1/0 per token: 1 = real token, 0 = padding)")
        if not ((attention_mask == 0) | (attention_mask == 1)).all():
            raise ValueError("attention_mask must hold only 1 (real token) and 0 (padding), got values "
                             f"{attention_mask.unique()[:6].tolist()}; pass the tokenizer's attention_mask")
        real = attention_mask.bool()
        if not real.any(dim=1).all():
            rows = (~real.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(f"attention_mask has no real token in row(s) {rows}: every sequence needs at "
                             "least one 1 (the course's masks are 1 at real tokens, torch.nn's at padding)")
    if token_type_ids is not None:
        if not c.type_vocab_size:
            raise ValueError("token_type_ids were given but this model has no token-type embeddings "
                             "(type_vocab_size=0): drop them, or use a config with type_vocab_size > 0")
        if tuple(token_type_ids.shape) != tuple(input_ids.shape):
            raise ValueError(f"token_type_ids must have the shape of input_ids {tuple(input_ids.shape)}, "
                             f"got {tuple(token_type_ids.shape)}")
        if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= c.type_vocab_size:
            raise ValueError(f"token_type_ids must be in [0, {c.type_vocab_size}), got "
                             f"{int(token_type_ids.min())}..{int(token_type_ids.max())}")
    return real
