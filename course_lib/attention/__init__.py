"""Attention: scaled dot-product attention, masks, multi-head attention, positional encodings.

Modules, in reading order: :mod:`.scaled_dot_product` (the readable and the fused path),
:mod:`.masks` (True = may attend), :mod:`.multi_head` (split, attend, merge; pinned to
``torch.nn.MultiheadAttention``), :mod:`.positional` (sinusoidal encodings), :mod:`.recorder` (the
attention weights of any model's forward pass); :mod:`.widgets` holds the attention chapter's explorers.
Not covered: attention of trained models (:mod:`course_lib.models`) and long-sequence attention
(:mod:`course_lib.reformer`).
"""
from .masks import causal_mask, padding_mask, positions_from_mask, to_additive
from .multi_head import MultiHeadAttention, merge_heads, split_heads
from .positional import SinusoidalPositionalEncoding, sinusoidal_positional_encoding
from .recorder import RecordedAttention, record_attention
from .scaled_dot_product import fused_attention, scaled_dot_product_attention, validate_attention_inputs

__all__ = [
    "MultiHeadAttention", "RecordedAttention", "SinusoidalPositionalEncoding", "causal_mask", "fused_attention",
    "merge_heads", "padding_mask", "positions_from_mask", "record_attention", "scaled_dot_product_attention",
    "sinusoidal_positional_encoding", "split_heads", "to_additive", "validate_attention_inputs",
]
