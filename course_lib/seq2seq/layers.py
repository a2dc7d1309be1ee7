"""Transformer encoder and decoder layers, and the stacks built from them.

An **encoder layer** lets every source position read every other (self-attention), then
transforms each position on its own (a two-layer feed-forward network). A **decoder layer**
adds a step in between: after *masked* self-attention over the target prefix, it reads the
encoder's output ("memory") with **cross-attention**, queries from the decoder, keys and values
from the encoder. Each sub-layer sits inside a residual connection with a layer norm, in one
of two placements (``norm_first``)::

    post-norm (Vaswani et al., 2017):   x = norm(x + sublayer(x))
    pre-norm  (GPT-2 and most since):   x = x + sublayer(norm(x))

Pre-norm keeps an un-normalised residual stream, so a stack of pre-norm layers needs one final
layer norm; :class:`TransformerEncoder` / :class:`TransformerDecoder` take it as ``final_norm``.

Masks follow :mod:`course_lib.attention.masks` (True = may attend, True = real token), the *opposite* of
``torch.nn``'s. Every class has ``from_torch`` copying a ``torch.nn`` module built with
``batch_first=True``; the tests pin each one to PyTorch's within 1e-5. The layers call the
fused attention kernel; :func:`course_lib.attention.record_attention` switches the
readable path on to collect the weights. Not covered: embeddings and the full model
(:mod:`course_lib.seq2seq.transformer`), key/value caches, mixture-of-experts feed-forwards.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.multi_head import MultiHeadAttention
from .validation import validate_attn_mask, validate_padding_mask

__all__ = ["TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder"]

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation_name(reference: nn.Module) -> str:
    """Which of relu/gelu a torch layer uses (torch stores a function or a module)."""
    fn = reference.activation
    if fn is F.relu or isinstance(fn, nn.ReLU):
        return "relu"
    if fn is F.gelu or (isinstance(fn, nn.GELU) and fn.approximate == "none"):
        return "gelu"
    raise ValueError(f"only relu and (exact) gelu activations can be copied, got {fn!r}")


class FeedForward(nn.Module):
    """``linear2(dropout(activation(linear1(x))))``, applied to each position separately."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, activation: str = "relu", bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.linear1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.linear2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))  # (B, T, D)


class TransformerEncoderLayer(nn.Module):
    """Self-attention then feed-forward, each wrapped in residual + layer norm.

    ``forward(x (B, S, D), mask=None, key_padding_mask=None) -> (B, S, D)``.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int = 2048, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False, layer_norm_eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(dim, num_heads, bias=bias, dropout=dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation, bias)
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _self_attention(self, x, mask, key_padding_mask):
        attended, _ = self.self_attn(x, mask=mask, key_padding_mask=key_padding_mask, need_weights=False)
        return self.dropout1(attended)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), mask, key_padding_mask)
            return x + self.dropout2(self.ffn(self.norm2(x)))
        x = self.norm1(x + self._self_attention(x, mask, key_padding_mask))
        return self.norm2(x + self.dropout2(self.ffn(x)))  # (B, S, D)

    @classmethod
    def from_torch(cls, reference: nn.TransformerEncoderLayer) -> TransformerEncoderLayer:
        """Our layer holding a copy of ``reference``'s weights (built with ``batch_first=True``)."""
        ours = cls(*_settings_of(reference))
        ours.self_attn = MultiHeadAttention.from_torch(reference.self_attn)
        _copy_ffn_and_norms(ours, reference, ["norm1", "norm2"])
        return ours.to(reference.linear1.weight.device, reference.linear1.weight.dtype)


class TransformerDecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder's memory, then feed-forward.

    ``forward(x (B, T, D), memory (B, S, D), tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None) -> (B, T, D)``. Like torch, no
    causal mask is applied unless you pass one: ``tgt_mask=causal_mask(T)``.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int = 2048, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False, layer_norm_eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(dim, num_heads, bias=bias, dropout=dropout)
        self.cross_attn = MultiHeadAttention(dim, num_heads, bias=bias, dropout=dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation, bias)
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(dim, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def _self_attention(self, x, mask, key_padding_mask):
        attended, _ = self.self_attn(x, mask=mask, key_padding_mask=key_padding_mask, need_weights=False)
        return self.dropout1(attended)

    def _cross_attention(self, x, memory, mask, key_padding_mask):
        # Queries come from the decoder, keys and values from the encoder's output.
        attended, _ = self.cross_attn(x, memory, memory, mask=mask, key_padding_mask=key_padding_mask,
                                      need_weights=False)
        return self.dropout2(attended)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, tgt_key_padding_mask: torch.Tensor | None = None,
                memory_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), tgt_mask, tgt_key_padding_mask)
            x = x + self._cross_attention(self.norm2(x), memory, memory_mask, memory_key_padding_mask)
            return x + self.dropout3(self.ffn(self.norm3(x)))
        x = self.norm1(x + self._self_attention(x, tgt_mask, tgt_key_padding_mask))
        x = self.norm2(x + self._cross_attention(x, memory, memory_mask, memory_key_padding_mask))
        return self.norm3(x + self.dropout3(self.ffn(x)))  # (B, T, D)

    @classmethod
    def from_torch(cls, reference: nn.TransformerDecoderLayer) -> TransformerDecoderLayer:
        """Our layer holding a copy of ``reference``'s weights (built with ``batch_first=True``)."""
        ours = cls(*_settings_of(reference))
        ours.self_attn = MultiHeadAttention.from_torch(reference.self_attn)
        ours.cross_attn = MultiHeadAttention.from_torch(reference.multihead_attn)
        _copy_ffn_and_norms(ours, reference, ["norm1", "norm2", "norm3"])
        return ours.to(reference.linear1.weight.device, reference.linear1.weight.dtype)


class TransformerEncoder(nn.Module):
    """``num_layers`` copies of an encoder layer, then an optional final layer norm."""

    def __init__(self, layer: TransformerEncoderLayer, num_layers: int, final_norm: nn.LayerNorm | None = None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = final_norm

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        validate_padding_mask(key_padding_mask, x.shape[0], x.shape[1], "src_key_padding_mask")
        validate_attn_mask(mask, x.shape[1], x.shape[1], "src_mask")
        for layer in self.layers:
            x = layer(x, mask, key_padding_mask)  # (B, S, D)
        return x if self.norm is None else self.norm(x)

    @classmethod
    def from_torch(cls, reference: nn.TransformerEncoder) -> TransformerEncoder:
        return _stack_from_torch(cls, TransformerEncoderLayer, reference)


class TransformerDecoder(nn.Module):
    """``num_layers`` copies of a decoder layer, each reading the same memory, then an optional final norm."""

    def __init__(self, layer: TransformerDecoderLayer, num_layers: int, final_norm: nn.LayerNorm | None = None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = final_norm

    def forward(self, x: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, tgt_key_padding_mask: torch.Tensor | None = None,
                memory_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if memory.ndim != 3 or memory.shape[0] != x.shape[0]:
            raise ValueError(f"memory must be (batch={x.shape[0]}, src_len, dim), got {tuple(memory.shape)}")
        validate_padding_mask(tgt_key_padding_mask, x.shape[0], x.shape[1], "tgt_key_padding_mask")
        validate_padding_mask(memory_key_padding_mask, memory.shape[0], memory.shape[1], "memory_key_padding_mask")
        validate_attn_mask(tgt_mask, x.shape[1], x.shape[1], "tgt_mask")
        validate_attn_mask(memory_mask, x.shape[1], memory.shape[1], "memory_mask")
        for layer in self.layers:
            x = layer(x, memory, tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask)  # (B, T, D)
        return x if self.norm is None else self.norm(x)

    @classmethod
    def from_torch(cls, reference: nn.TransformerDecoder) -> TransformerDecoder:
        return _stack_from_torch(cls, TransformerDecoderLayer, reference)


def _stack_from_torch(cls, layer_cls, reference: nn.Module) -> nn.Module:
    """Our stack holding copies of a torch stack's layers and of its final norm."""
    layers = [layer_cls.from_torch(layer) for layer in reference.layers]
    ours = cls(layers[0], 0, copy.deepcopy(reference.norm))
    ours.layers.extend(layers)
    return ours


def _settings_of(reference: nn.Module) -> tuple:
    """Our layer's constructor arguments read off a torch layer built with ``batch_first=True``."""
    if not reference.self_attn.batch_first:
        raise ValueError("from_torch copies layers built with batch_first=True (ours are (batch, seq, dim))")
    return (reference.self_attn.embed_dim, reference.self_attn.num_heads, reference.linear1.out_features,
            reference.dropout.p, _activation_name(reference), reference.norm_first, reference.norm1.eps,
            reference.linear1.bias is not None)


def _copy_ffn_and_norms(ours: nn.Module, reference: nn.Module, norms: list[str]) -> None:
    ours.ffn.linear1.load_state_dict(reference.linear1.state_dict())
    ours.ffn.linear2.load_state_dict(reference.linear2.state_dict())
    for name in norms:
        getattr(ours, name).load_state_dict(getattr(reference, name).state_dict())
