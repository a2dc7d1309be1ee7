"""A tiny trained Transformer encoder to look inside: the sequence reverser.

The chapters need a model small enough to read and trained enough that its attention means
something. The reverser maps ``"hello42"`` to ``"24olleh"``: output position ``i`` must copy
input position ``T-1-i``, so one head learns an anti-diagonal attention pattern, the clearest
picture of "attention moves information between positions" there is. It is built from the
library's own parts: embeddings, sinusoidal positions, two of :mod:`course_lib.seq2seq.layers`'
pre-norm :class:`~course_lib.seq2seq.layers.TransformerEncoderLayer` (ReLU, no dropout), a final layer
norm and a linear head.

* :func:`load_reverser` loads the committed checkpoint (``checkpoints/reverser.pt``, written by
  ``scripts/train_reverser.py``) and returns ``(model, vocab)`` on the CPU in eval mode.
* :func:`attention_maps` records the attention of one string with
  :func:`course_lib.attention.recorder.record_attention` and returns bertviz's data contract: one
  ``(1, heads, T, T)`` tensor per layer.

Not covered: decoders, cross-attention, training at scale (see the training unit).
"""
from __future__ import annotations

import pathlib
import string
from collections.abc import Sequence

import torch
from torch import nn

from ..attention.positional import SinusoidalPositionalEncoding
from ..attention.recorder import record_attention
from ..runtime import CHECKPOINT_DIR
from ..seq2seq.layers import TransformerEncoderLayer

__all__ = [
    "CharVocab", "Reverser", "REVERSER_CHECKPOINT",
    "load_reverser", "attention_maps",
]

REVERSER_CHECKPOINT = CHECKPOINT_DIR / "reverser.pt"
REVERSER_ALPHABET = string.ascii_lowercase + string.digits


class CharVocab:
    """One id per character, id 0 for padding.

    >>> vocab = CharVocab("ab")
    >>> vocab.encode("ba")
    tensor([2, 1])
    >>> vocab.decode([2, 1])
    'ba'
    """

    PAD = "<pad>"

    def __init__(self, characters: str):
        if len(set(characters)) != len(characters) or any(len(c) != 1 for c in characters):
            raise ValueError(f"characters must be distinct single characters, got {characters!r}")
        self.itos: list[str] = [self.PAD, *characters]
        self.stoi: dict[str, int] = {token: i for i, token in enumerate(self.itos)}
        self.pad_id = 0

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: str | Sequence[str]) -> torch.Tensor:
        """A string (or list of one-character tokens) → ``LongTensor (T,)``."""
        unknown = sorted({t for t in tokens if t not in self.stoi or t == self.PAD})
        if unknown:
            allowed = "".join(self.itos[1:])
            raise ValueError(f"unknown token(s) {unknown}; this vocabulary knows only {allowed!r}")
        return torch.tensor([self.stoi[t] for t in tokens], dtype=torch.long)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Ids → string; padding ids are dropped."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join(self.itos[i] for i in ids if i != self.pad_id)


class Reverser(nn.Module):
    """Encoder-only Transformer that predicts, at position ``i``, the token at ``T-1-i``."""

    def __init__(self, vocab_size: int, dim: int = 32, num_heads: int = 2, num_layers: int = 2,
                 ffn_dim: int = 64, max_len: int = 12):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, dim=dim, num_heads=num_heads, num_layers=num_layers,
                           ffn_dim=ffn_dim, max_len=max_len)
        self.vocab: CharVocab | None = None  # attached by load_reverser, used by reverse()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.positions = SinusoidalPositionalEncoding(dim, max_len=max_len)
        # The library's encoder layer, pre-norm (x + attn(norm(x)), then x + ffn(norm(x))), no dropout.
        self.layers = nn.ModuleList(TransformerEncoderLayer(dim, num_heads, ffn_dim, dropout=0.0, activation="relu",
                                                            norm_first=True) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, ids: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``ids (B, T)`` → logits ``(B, T, vocab)``; ``key_padding_mask (B, T)`` is True at real tokens."""
        if ids.ndim != 2:
            raise ValueError(f"ids must have shape (batch, seq_len), got {tuple(ids.shape)}")
        max_len = self.config["max_len"]
        if ids.shape[1] > max_len:
            raise ValueError(f"sequence length {ids.shape[1]} is longer than the {max_len} the model was trained on")
        x = self.positions(self.embedding(ids))  # (B, T, D)
        for layer in self.layers:
            x = layer(x, key_padding_mask=key_padding_mask)
        return self.head(self.final_norm(x))  # (B, T, V)

    @torch.no_grad()
    def reverse(self, text: str) -> str:
        """Greedy prediction: the model's reversal of ``text``."""
        if self.vocab is None:
            raise RuntimeError("this model has no vocabulary attached; load it with load_reverser()")
        if not text:
            return ""
        ids = self.vocab.encode(text)[None].to(self.head.weight.device)  # (1, T)
        return self.vocab.decode(self(ids).argmax(-1)[0])


def load_reverser(path: str | pathlib.Path | None = None) -> tuple[Reverser, CharVocab]:
    """The trained reverser from ``path`` (default: the committed checkpoint), in eval mode on the CPU."""
    path = pathlib.Path(path) if path is not None else REVERSER_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python scripts/train_reverser.py` to write it")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    vocab = CharVocab(checkpoint["characters"])
    model = Reverser(**checkpoint["config"])
    model.load_state_dict({name: t.float() for name, t in checkpoint["state_dict"].items()})
    model.vocab = vocab
    return model.eval(), vocab


@torch.no_grad()
def attention_maps(model: Reverser, tokens: str | Sequence[str]) -> tuple[list[str], list[torch.Tensor]]:
    """Run ``model`` on ``tokens``; return ``(token_strings, attentions)`` in bertviz's format.

    ``attentions`` holds one ``(1, heads, T, T)`` tensor per layer, ready for
    ``head_view(attentions, token_strings)``.
    """
    if model.vocab is None:
        raise RuntimeError("this model has no vocabulary attached; load it with load_reverser()")
    token_strings = list(tokens)
    if not token_strings:
        raise ValueError("tokens is empty: give at least one character")
    ids = model.vocab.encode(token_strings)[None].to(model.head.weight.device)  # (1, T)
    with record_attention(model) as recorded:  # one call per layer, in layer order
        model(ids)
    return token_strings, [weights.cpu() for _, weights in recorded]
