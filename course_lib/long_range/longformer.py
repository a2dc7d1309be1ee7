"""Longformer: RoBERTa's encoder with sliding-window + global self-attention, pinned to HF ``LongformerModel``.

The self-attention (:class:`LongformerSelfAttention`) has two sets of projections. Every token is projected
by ``query``/``key``/``value`` and attends over its band and the global keys
(:func:`.sliding_window.local_attention`); the few global tokens are projected *again* by
``query_global``/``key_global``/``value_global`` and attend over every key with those
(:func:`.sliding_window.global_rows`), and their rows replace the local ones. Padding tokens attend to nothing:
their attention output is zero (HF's choice; nothing reads them). Attention-weight dropout is not applied
(HF applies it while training; we pin eval mode).

:class:`LongformerEncoder` is :class:`course_lib.pretraining.encoder.Encoder` (RoBERTa's embeddings and
positions, post-norm layers, the pooler) with those layers swapped for :class:`LongformerLayer`, and a
``global_attention_mask`` beside the ``attention_mask`` (HF's two masks: 1 = real token; 1 = global).
HF pads the sequence to a multiple of ``attention_window`` before attending and cuts the padding off the
outputs; ours needs no padding (the blocks of :mod:`.sliding_window` handle any T), and gives the same
real-token outputs. :func:`from_hf` copies ``LongformerModel``; :meth:`LongformerSelfAttention.from_hf`
one ``LongformerSelfAttention``. Not covered: the MLM and task heads, dilation, training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attention.multi_head import merge_heads, split_heads
from ..pretraining.encoder import Encoder, EncoderConfig, EncoderOutput, copy_hf_weights, hf_encoder_names
from ..pretraining.encoder_inputs import roberta_position_ids, validate_encoder_inputs
from ..seq2seq.layers import FeedForward
from .sliding_window import global_rows, global_slots, local_attention, scatter_rows

__all__ = ["LongformerEncoderConfig", "LongformerSelfAttention", "LongformerLayer", "LongformerEncoder",
           "config_from_hf", "from_hf"]


@dataclass
class LongformerEncoderConfig(EncoderConfig):
    """:class:`EncoderConfig` plus each layer's ``window`` (keys on each side; HF's ``attention_window`` is
    twice it), with RoBERTa's defaults (positions after the padding id 1)."""

    windows: tuple[int, ...] | int = 256
    max_positions: int = 4098
    pad_token_id: int = 1
    padding_offset_positions: bool = True

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.windows, int) and not isinstance(self.windows, bool):
            self.windows = (self.windows,) * self.num_layers
        self.windows = tuple(self.windows)
        if len(self.windows) != self.num_layers or any(
                isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in self.windows):
            raise ValueError(f"windows must be one int ≥ 0 or one per layer ({self.num_layers}), got {self.windows}")


class LongformerSelfAttention(nn.Module):
    """``forward(x (B, T, D), padding_mask=None, global_mask=None) → (B, T, D)``, the heads merged, before the
    output projection (as HF's module). Masks ``(B, T)`` boolean: True = real token; True = global token
    (a padding token is never global)."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be a multiple of num_heads ({num_heads})")
        self.num_heads, self.window = num_heads, window
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.query_global, self.key_global, self.value_global = (nn.Linear(dim, dim) for _ in range(3))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                global_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"x must be (batch, seq_len, dim), got shape {tuple(x.shape)}")
        batch, seq_len, dim = x.shape
        real = _flags(padding_mask, "padding_mask", x, default=True)  # (B, T)
        is_global = _flags(global_mask, "global_mask", x, default=False) & real
        heads = [split_heads(projection(x), self.num_heads) for projection in (self.query, self.key, self.value)]
        output = local_attention(*heads, self.window, is_global, real)  # (B, H, T, d)
        index, valid = global_slots(is_global)  # (B, G)
        if index.shape[1]:
            global_inputs = x.gather(1, index[:, :, None].expand(-1, -1, dim))  # (B, G, D): global tokens only
            query_rows = split_heads(self.query_global(global_inputs), self.num_heads)  # (B, H, G, d)
            keys = split_heads(self.key_global(x), self.num_heads)  # (B, H, T, d)
            values = split_heads(self.value_global(x), self.num_heads)
            output = scatter_rows(output, global_rows(query_rows, keys, values, real), index, valid)
        return merge_heads(output.masked_fill(~real[:, None, :, None], 0.0))  # (B, T, D); padding rows zero

    @classmethod
    def from_hf(cls, hf_attention) -> LongformerSelfAttention:
        """Ours with a copy of a ``transformers`` ``LongformerSelfAttention``'s six projections."""
        ours = cls(hf_attention.embed_dim, hf_attention.num_heads, hf_attention.one_sided_attn_window_size)
        ours.load_state_dict(hf_attention.state_dict(), strict=True)
        return ours.to(hf_attention.query.weight.device).train(hf_attention.training)


def _flags(mask, name: str, x: torch.Tensor, default: bool) -> torch.Tensor:
    if mask is None:
        return torch.full(x.shape[:2], default, dtype=torch.bool, device=x.device)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"{name} must be a boolean (batch, seq_len) = {tuple(x.shape[:2])} tensor, got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
    return mask.to(x.device)


class LongformerLayer(nn.Module):
    """BERT's post-norm layer around :class:`LongformerSelfAttention`:
    ``forward(x (B, T, D), padding_mask, global_mask) → (B, T, D)``."""

    def __init__(self, config: LongformerEncoderConfig, window: int):
        super().__init__()
        self.self_attn = LongformerSelfAttention(config.dim, config.num_heads, window)
        self.out_proj = nn.Linear(config.dim, config.dim)
        self.norm1 = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config.dim, config.ffn_dim, 0.0, "gelu")  # BERT: no dropout between its linears
        self.norm2 = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.dropout1, self.dropout2 = nn.Dropout(config.dropout), nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor, global_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.out_proj(self.self_attn(x, padding_mask, global_mask))))
        return self.norm2(x + self.dropout2(self.ffn(x)))  # (B, T, D)


class LongformerEncoder(Encoder):
    """``forward(input_ids (B, T), attention_mask=None, global_attention_mask=None, token_type_ids=None)`` →
    :class:`EncoderOutput`. ``attention_mask``: 1 = real token, 0 = padding; ``global_attention_mask``: 1 =
    global token, 0 = local (HF's two masks; any integer, float or boolean dtype)."""

    def __init__(self, config: LongformerEncoderConfig | None = None, add_pooler: bool = True, **kwargs):
        config = config or LongformerEncoderConfig(**kwargs)
        super().__init__(config, add_pooler)
        # The parent built BERT layers (one per config.num_layers); each becomes a Longformer layer with its window.
        self.layers = nn.ModuleList(LongformerLayer(config, window) for window in config.windows)
        self.layers.apply(self._init_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                global_attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> EncoderOutput:
        real = validate_encoder_inputs(self.config, input_ids, attention_mask, token_type_ids)  # (B, T) bool
        is_global = torch.zeros_like(real)
        if global_attention_mask is not None:
            if not isinstance(global_attention_mask, torch.Tensor) or global_attention_mask.shape != real.shape:
                raise ValueError(f"global_attention_mask must have the shape of input_ids {tuple(real.shape)}, got "
                                 f"{tuple(getattr(global_attention_mask, 'shape', ()))} (1 = global token, 0 = local)")
            if not ((global_attention_mask == 0) | (global_attention_mask == 1)).all():
                raise ValueError("global_attention_mask must hold only 1 (global token) and 0 (local), got values "
                                 f"{global_attention_mask.unique()[:6].tolist()}")
            is_global = global_attention_mask.bool() & real  # a padding token is never global (HF multiplies)
        x = self._embed(input_ids, token_type_ids)
        hidden_states = [x]
        for layer in self.layers:
            x = layer(x, real, is_global)  # (B, T, D)
            hidden_states.append(x)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, D)
        return EncoderOutput(x, pooled, tuple(hidden_states))

    def _embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """RoBERTa's embeddings, as :class:`Encoder` computes them: ``(B, T) → (B, T, D)``."""
        position_ids = roberta_position_ids(input_ids, self.config.pad_token_id)  # (B, T)
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(torch.zeros_like(input_ids) if token_type_ids is None
                                               else token_type_ids)
        return self.embedding_dropout(self.embedding_norm(x))


# --- HF Longformer interchange ------------------------------------------------------------------------

_LAYER_NAMES = {  # ours (inside layers.i) ← HF (inside encoder.layer.i)
    **{f"self_attn.{name}": f"attention.self.{name}"
       for name in ("query", "key", "value", "query_global", "key_global", "value_global")},
    "out_proj": "attention.output.dense", "norm1": "attention.output.LayerNorm",
    "ffn.linear1": "intermediate.dense", "ffn.linear2": "output.dense", "norm2": "output.LayerNorm",
}


def config_from_hf(hf_config) -> LongformerEncoderConfig:
    """Our config for a ``transformers`` ``LongformerConfig``; refuses what our layers do not do."""
    if hf_config.model_type != "longformer":
        raise ValueError(f"from_hf copies Longformer models, got model_type {hf_config.model_type!r}")
    if hf_config.hidden_act != "gelu":
        raise ValueError(f"only exact GELU is supported (hidden_act='gelu'), got {hf_config.hidden_act!r}")
    windows = hf_config.attention_window
    windows = [windows] * hf_config.num_hidden_layers if isinstance(windows, int) else list(windows)
    if any(w <= 0 or w % 2 for w in windows):
        raise ValueError(f"HF's attention_window must be even and positive (it is 2 · window), got {windows}")
    return LongformerEncoderConfig(
        vocab_size=hf_config.vocab_size, dim=hf_config.hidden_size, num_layers=hf_config.num_hidden_layers,
        num_heads=hf_config.num_attention_heads, ffn_dim=hf_config.intermediate_size,
        max_positions=hf_config.max_position_embeddings, type_vocab_size=hf_config.type_vocab_size,
        layer_norm_eps=hf_config.layer_norm_eps, dropout=hf_config.hidden_dropout_prob,
        pad_token_id=hf_config.pad_token_id, padding_offset_positions=True, init_std=hf_config.initializer_range,
        windows=tuple(w // 2 for w in windows))


def from_hf(hf_model) -> LongformerEncoder:
    """Our :class:`LongformerEncoder` with a copy of a ``transformers`` ``LongformerModel``'s weights (with a
    pooler when theirs has one). Same outputs, our code."""
    config = config_from_hf(hf_model.config)
    state = hf_model.state_dict()
    if "embeddings.word_embeddings.weight" not in state:
        raise ValueError(f"{type(hf_model).__name__} is not a bare LongformerModel (pass model.longformer)")
    has_pooler = "pooler.dense.weight" in state
    names = hf_encoder_names(config.num_layers, _LAYER_NAMES, pooler="pooler.dense" if has_pooler else None)
    ours = LongformerEncoder(config, add_pooler=has_pooler)
    ours.load_state_dict(copy_hf_weights(state, names), strict=True)  # a missing or extra name is an error here, never a silent init
    return ours.to(next(hf_model.parameters()).device).train(hf_model.training)
