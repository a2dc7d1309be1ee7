"""The Reformer assembled from the components: layers, encoder stack, embeddings.

* :class:`ReformerSettings` — the hyper-parameters, named as in HF's ``ReformerConfig``.
* :class:`AttentionBlock` — ``F`` of a reversible layer: LayerNorm → local or LSH attention →
  output projection (no bias), like HF's ``ReformerAttention``.
* :func:`reformer_layer` — one reversible layer ``ReversibleBlock(AttentionBlock, ChunkedFeedForward)``;
  :func:`layer_from_hf` copies an HF ``ReformerLayer`` into one.
* :class:`ReformerModel` — word embeddings + (axial or ordinary) position embeddings, the
  reversible stack on two copies of the input, LayerNorm over the concatenated ``2·D`` streams.
  Its parameters are exactly HF's ``ReformerModel``'s, which the tests check on the blog's
  ``google/reformer-crime-and-punishment`` configuration.

Not covered: padding a sequence to a multiple of the chunk length (the model raises instead),
the language-model head, generation with bucket caches, weight initialisation matching HF.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .axial import AxialPositionEmbeddings, PositionEmbeddings
from .chunked_ff import ChunkedFeedForward
from .local_attention import LocalSelfAttention
from .lsh import NumBuckets
from .lsh_attention import LSHSelfAttention
from .reversible import ReversibleBlock, ReversibleSequence

__all__ = ["ReformerSettings", "AttentionBlock", "reformer_layer", "layer_from_hf", "ReformerModel"]


@dataclass
class ReformerSettings:
    """Hyper-parameters; names and meanings follow ``transformers.ReformerConfig``."""

    vocab_size: int = 320
    hidden_size: int = 256
    num_attention_heads: int = 2
    attention_head_size: int = 64
    attn_layers: list[str] = field(default_factory=lambda: ["local", "lsh"])
    feed_forward_size: int = 512
    hidden_act: str = "relu"
    chunk_size_feed_forward: int = 0
    local_attn_chunk_length: int = 64
    local_num_chunks_before: int = 1
    local_num_chunks_after: int = 0
    lsh_attn_chunk_length: int = 64
    lsh_num_chunks_before: int = 1
    lsh_num_chunks_after: int = 0
    num_buckets: NumBuckets = 8
    num_hashes: int = 1
    hash_seed: int | None = None
    is_decoder: bool = False
    max_position_embeddings: int = 4096
    axial_pos_embds: bool = True
    axial_pos_shape: tuple[int, int] = (64, 64)
    axial_pos_embds_dim: tuple[int, int] = (64, 192)
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.0
    attention_dropout_prob: float = 0.0

    def __post_init__(self):
        unknown = set(self.attn_layers) - {"local", "lsh"}
        if not self.attn_layers or unknown:
            raise ValueError(f"attn_layers must be a non-empty list of 'local'/'lsh', got {self.attn_layers}")


class AttentionBlock(nn.Module):
    """``F`` of a Reformer layer: ``(B, T, D) → (B, T, D)``, ``forward(x, attention_mask=None)``."""

    def __init__(self, attention: LocalSelfAttention | LSHSelfAttention, hidden_size: int,
                 *, layer_norm_eps: float = 1e-12, dropout: float = 0.0):
        super().__init__()
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.attention = attention
        self.output = nn.Linear(attention.num_heads * attention.head_size, hidden_size, bias=False)
        self.dropout = dropout

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        heads = self.attention(self.layer_norm(hidden), attention_mask)  # (B, T, H·d)
        return nn.functional.dropout(self.output(heads), self.dropout, self.training)  # (B, T, D)


def reformer_layer(settings: ReformerSettings, kind: str) -> ReversibleBlock:
    """One reversible layer with ``kind`` = ``"local"`` or ``"lsh"`` attention."""
    s = settings
    if kind == "local":
        attention = LocalSelfAttention(
            s.hidden_size, s.num_attention_heads, s.attention_head_size, s.local_attn_chunk_length,
            num_chunks_before=s.local_num_chunks_before, num_chunks_after=s.local_num_chunks_after,
            causal=s.is_decoder, dropout=s.attention_dropout_prob,
        )
    elif kind == "lsh":
        attention = LSHSelfAttention(
            s.hidden_size, s.num_attention_heads, s.attention_head_size, s.lsh_attn_chunk_length,
            s.num_buckets, num_hashes=s.num_hashes, num_chunks_before=s.lsh_num_chunks_before,
            num_chunks_after=s.lsh_num_chunks_after, causal=s.is_decoder, hash_seed=s.hash_seed,
            dropout=s.attention_dropout_prob,
        )
    else:
        raise ValueError(f"attention kind must be 'local' or 'lsh', got {kind!r}")
    f = AttentionBlock(attention, s.hidden_size, layer_norm_eps=s.layer_norm_eps, dropout=s.hidden_dropout_prob)
    g = ChunkedFeedForward(
        s.hidden_size, s.feed_forward_size, chunk_size=s.chunk_size_feed_forward, activation=s.hidden_act,
        dropout=s.hidden_dropout_prob, layer_norm_eps=s.layer_norm_eps,
    )
    return ReversibleBlock(f, g)


def layer_from_hf(reference: nn.Module) -> ReversibleBlock:
    """Copy of a ``transformers`` ``ReformerLayer`` (its attention, layer norms and feed-forward)."""
    hf_attention = reference.attention
    inner = hf_attention.self_attention
    attention = (LSHSelfAttention if hasattr(inner, "query_key") else LocalSelfAttention).from_hf(inner)
    f = AttentionBlock(attention, hf_attention.layer_norm.normalized_shape[0],
                       layer_norm_eps=hf_attention.layer_norm.eps, dropout=hf_attention.output.dropout)
    f.layer_norm.load_state_dict(hf_attention.layer_norm.state_dict())
    f.output.load_state_dict(hf_attention.output.dense.state_dict())
    return ReversibleBlock(f, ChunkedFeedForward.from_hf(reference.feed_forward))


class ReformerModel(nn.Module):
    """``forward(input_ids (B, T), attention_mask (B, T) or None) → (B, T, 2·D)``.

    ``reversible=False`` runs the same layers with ordinary autograd (stores activations).
    """

    def __init__(self, settings: ReformerSettings, *, reversible: bool = True):
        super().__init__()
        s = self.settings = settings
        self.word_embeddings = nn.Embedding(s.vocab_size, s.hidden_size)
        if s.axial_pos_embds:
            self.position_embeddings = AxialPositionEmbeddings(
                s.axial_pos_shape, s.axial_pos_embds_dim, max_position_embeddings=s.max_position_embeddings,
                hidden_size=s.hidden_size, dropout=s.hidden_dropout_prob,
            )
        else:
            self.position_embeddings = PositionEmbeddings(
                s.max_position_embeddings, s.hidden_size, dropout=s.hidden_dropout_prob
            )
        self.layers = ReversibleSequence([reformer_layer(s, kind) for kind in s.attn_layers],
                                         use_autograd=not reversible)
        self.layer_norm = nn.LayerNorm(2 * s.hidden_size, eps=s.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, seq_len = input_ids.shape
        if seq_len > self.settings.max_position_embeddings:
            raise ValueError(f"sequence length {seq_len} exceeds max_position_embeddings "
                             f"{self.settings.max_position_embeddings}")
        chunk = math.lcm(self.settings.local_attn_chunk_length, self.settings.lsh_attn_chunk_length)
        if seq_len > min(self.settings.local_attn_chunk_length, self.settings.lsh_attn_chunk_length) and seq_len % chunk:
            raise ValueError(f"sequence length {seq_len} must be a multiple of {chunk} (the chunk lengths' lcm); "
                             "pad it and pass an attention_mask")
        positions = torch.arange(seq_len, device=input_ids.device).expand(batch, seq_len)
        hidden = nn.functional.dropout(self.word_embeddings(input_ids), self.settings.hidden_dropout_prob,
                                       self.training)
        hidden = hidden + self.position_embeddings(positions)  # (B, T, D)
        y1, y2 = self.layers(hidden, hidden, attention_mask=attention_mask)
        out = self.layer_norm(torch.cat([y1, y2], dim=-1))  # (B, T, 2D)
        return nn.functional.dropout(out, self.settings.hidden_dropout_prob, self.training)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
