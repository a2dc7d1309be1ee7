"""Task heads on the library's encoder: pool the sentence, classify it.

* :func:`pool` — one vector per sentence from the encoder's last hidden states: the first position
  (``[CLS]``/``<s>``) or the mean over the real tokens only (padding excluded).

(Skeleton: the sequence-classification head and its HF pin are added next.)
"""
from __future__ import annotations

import torch

__all__ = ["POOLINGS", "pool"]

POOLINGS = ("cls", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str = "cls") -> torch.Tensor:
    """One vector per sentence, ``(B, D)``, from hidden states ``(B, T, D)`` and a 0/1 mask ``(B, T)``.

    ``"cls"``: the first position's vector (BERT's pooler then applies dense + tanh to it).
    ``"mean"``: the average over the positions where the mask is 1, so padding changes nothing.
    """
    if how not in POOLINGS:
        raise ValueError(f"how must be one of {POOLINGS}, got {how!r}")
    if hidden.dim() != 3 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(f"hidden must be (B, T, D) and attention_mask (B, T); got {tuple(hidden.shape)} and "
                         f"{tuple(attention_mask.shape)}")
    if how == "cls":
        return hidden[:, 0]  # (B, D)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    counts = weights.sum(dim=1)  # (B, 1)
    if (counts == 0).any():
        raise ValueError("a row of attention_mask has no real token: its mean is undefined")
    return (hidden * weights).sum(dim=1) / counts  # (B, D)
