"""The full encoder-decoder Transformer: token ids in, next-token logits out.

::

    source ids (B, S) → embed · √D + positions → encoder stack → memory (B, S, D)
    target ids (B, T) → embed · √D + positions → decoder stack (causal self-attention,
                                                 cross-attention over memory) → linear → logits (B, T, V_tgt)

Embeddings are multiplied by √D (D = model dimension) before the sinusoidal positions are
added, as in Vaswani et al. (2017, §3.4), and initialised with standard deviation 1/√D, so the
scaled embedding and the positional table both have entries of size about 1. The output
projection can share its weight matrix with the target embedding (``tie_embeddings=True``).
Both stacks end with a layer norm, as ``torch.nn.Transformer``'s do for either norm placement.

:meth:`Transformer.from_torch` copies a ``torch.nn.Transformer`` (which has no embeddings) into
our encoder and decoder; :func:`attention_maps` records every layer's self- and cross-attention with
:func:`course_lib.attention.recorder.record_attention` and :func:`attention_by_kind` groups them in
bertviz's format. Not covered: decoding (:mod:`course_lib.decoding`: ``generate`` with ``source=``),
key/value caching, learned or rotary positions.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..attention.masks import causal_mask
from ..attention.positional import SinusoidalPositionalEncoding
from ..attention.recorder import RecordedAttention, record_attention
from .layers import (
    TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer, _activation_name,
)
from .validation import validate_token_ids

__all__ = ["Transformer", "attention_by_kind", "attention_maps"]


class Transformer(nn.Module):
    """Encoder-decoder Transformer over two vocabularies (source and target).

    ``forward(src (B, S), tgt (B, T), src_key_padding_mask=None, tgt_key_padding_mask=None)``
    returns logits ``(B, T, tgt_vocab_size)``; logit ``t`` predicts target token ``t + 1``.
    Padding masks are True at real tokens. The decoder is always causal.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, dim: int = 512, num_heads: int = 8,
                 num_encoder_layers: int = 6, num_decoder_layers: int = 6, ffn_dim: int = 2048,
                 dropout: float = 0.1, activation: str = "relu", norm_first: bool = False,
                 max_len: int = 512, tie_embeddings: bool = False, layer_norm_eps: float = 1e-5):
        super().__init__()
        self.config = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, dim=dim,
                           num_heads=num_heads, num_encoder_layers=num_encoder_layers,
                           num_decoder_layers=num_decoder_layers, ffn_dim=ffn_dim, dropout=dropout,
                           activation=activation, norm_first=norm_first, max_len=max_len,
                           tie_embeddings=tie_embeddings, layer_norm_eps=layer_norm_eps)
        self.dim, self.max_len = dim, max_len
        self.src_embedding = nn.Embedding(src_vocab_size, dim)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, dim)
        self.positions = SinusoidalPositionalEncoding(dim, max_len=max_len, dropout=dropout)
        layer_args = (dim, num_heads, ffn_dim, dropout, activation, norm_first, layer_norm_eps)
        self.encoder = TransformerEncoder(TransformerEncoderLayer(*layer_args), num_encoder_layers,
                                          nn.LayerNorm(dim, eps=layer_norm_eps))
        self.decoder = TransformerDecoder(TransformerDecoderLayer(*layer_args), num_decoder_layers,
                                          nn.LayerNorm(dim, eps=layer_norm_eps))
        self.generator = nn.Linear(dim, tgt_vocab_size)
        self._reset_parameters()
        if tie_embeddings:
            self.generator.weight = self.tgt_embedding.weight  # one (V_tgt, D) matrix, two uses

    def _reset_parameters(self) -> None:
        # Xavier for every matrix, as torch.nn.Transformer does; embeddings scaled so that
        # embedding · √D has entries of size ~1, like the positional table it is added to.
        for module in (self.encoder, self.decoder, self.generator):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        for embedding in (self.src_embedding, self.tgt_embedding):
            nn.init.normal_(embedding.weight, std=self.dim**-0.5)

    def _embed(self, ids: torch.Tensor, embedding: nn.Embedding, side: str) -> torch.Tensor:
        validate_token_ids(ids, embedding.num_embeddings, self.max_len, side)
        return self.positions(embedding(ids) * math.sqrt(self.dim))  # (B, T, D)

    def encode(self, src: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Source ids ``(B, S)`` → memory ``(B, S, D)``."""
        return self.encoder(self._embed(src, self.src_embedding, "source"), key_padding_mask=src_key_padding_mask)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, tgt_key_padding_mask: torch.Tensor | None = None,
               memory_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Target ids ``(B, T)`` and memory ``(B, S, D)`` → logits ``(B, T, V_tgt)``, causally."""
        x = self._embed(tgt, self.tgt_embedding, "target")  # (B, T, D)
        look_back_only = causal_mask(tgt.shape[1], device=tgt.device)  # (T, T)
        x = self.decoder(x, memory, tgt_mask=look_back_only, tgt_key_padding_mask=tgt_key_padding_mask,
                         memory_key_padding_mask=memory_key_padding_mask)
        return self.generator(x)  # (B, T, V_tgt)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None,
                tgt_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if src.ndim == 2 and tgt.ndim == 2 and src.shape[0] != tgt.shape[0]:
            raise ValueError(f"source and target batch sizes differ: {src.shape[0]} vs {tgt.shape[0]}")
        memory = self.encode(src, src_key_padding_mask)
        return self.decode(tgt, memory, tgt_key_padding_mask, memory_key_padding_mask=src_key_padding_mask)

    @classmethod
    def from_torch(cls, reference: nn.Transformer, src_vocab_size: int, tgt_vocab_size: int,
                   max_len: int = 512, tie_embeddings: bool = False) -> Transformer:
        """Our model with ``reference``'s encoder and decoder (embeddings and output layer stay fresh)."""
        layer = reference.encoder.layers[0]
        ours = cls(src_vocab_size, tgt_vocab_size, dim=reference.d_model, num_heads=reference.nhead,
                   num_encoder_layers=len(reference.encoder.layers), num_decoder_layers=len(reference.decoder.layers),
                   ffn_dim=layer.linear1.out_features, dropout=layer.dropout.p, activation=_activation_name(layer),
                   norm_first=layer.norm_first,
                   max_len=max_len, tie_embeddings=tie_embeddings, layer_norm_eps=layer.norm1.eps)
        ours.encoder = TransformerEncoder.from_torch(reference.encoder)
        ours.decoder = TransformerDecoder.from_torch(reference.decoder)
        return ours.to(layer.linear1.weight.device)


def attention_by_kind(recorded: Iterable[RecordedAttention]) -> dict[str, list[torch.Tensor]]:
    """The Transformer's recorded attention grouped by module name, in bertviz's contract.

    ``{"encoder_attention": [...], "decoder_attention": [...], "cross_attention": [...]}`` (the keyword
    names bertviz's ``model_view`` takes), in call order: ``encoder.layers.i.self_attn`` is the encoder's
    self-attention, ``decoder.layers.i.self_attn`` the decoder's, ``decoder.layers.i.cross_attn`` the cross-attention.
    """
    maps: dict[str, list[torch.Tensor]] = {"encoder_attention": [], "decoder_attention": [], "cross_attention": []}
    for name, weights in recorded:
        parts = name.split(".")
        kind = "cross" if parts[-1] == "cross_attn" else "encoder" if "encoder" in parts else "decoder"
        maps[f"{kind}_attention"].append(weights)
    return maps


@torch.no_grad()
def attention_maps(model: Transformer, src: torch.Tensor, tgt: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Attention of one sentence pair, ``src (S,)`` and ``tgt (T,)``, in bertviz's contract.

    Returns the dict of :func:`attention_by_kind` with one ``(1, H, T_q, T_k)`` CPU tensor per layer:
    pass it as ``model_view(**maps, encoder_tokens=..., decoder_tokens=...)``.
    """
    if src.ndim != 1 or tgt.ndim != 1:
        raise ValueError(f"attention_maps takes one sentence pair, ids of shape (S,) and (T,); got "
                         f"{tuple(src.shape)} and {tuple(tgt.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with record_attention(model) as recorded:
            model(src[None].to(device), tgt[None].to(device))
    finally:
        model.train(was_training)
    return {kind: [w.cpu() for w in weights] for kind, weights in attention_by_kind(recorded).items()}

