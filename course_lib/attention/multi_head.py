"""Multi-head attention: several attentions side by side, each on its own slice of the features.

The model dimension ``D`` is cut into ``H`` heads of size ``D // H``. Each head projects the
input to its own queries, keys and values, attends, and the heads' outputs are concatenated
and mixed by one output projection. Self-attention is ``mha(x)``; cross-attention (a decoder
reading an encoder) is ``mha(x, memory)``.

The split/merge reshapes are where most bugs live, so they are two named functions::

    (B, T, D) --split_heads--> (B, H, T, D/H) --attention--> (B, H, T, D/H) --merge_heads--> (B, T, D)

:meth:`MultiHeadAttention.from_torch` copies the weights of a ``torch.nn.MultiheadAttention``
(``batch_first=True``) so the tests can pin this module to PyTorch's. Not covered: grouped-query
attention, key/value caches (see the decoding unit), rotary embeddings.
"""
from __future__ import annotations

import torch
from torch import nn

from .masks import to_additive
from .scaled_dot_product import fused_attention, scaled_dot_product_attention

__all__ = ["split_heads", "merge_heads", "MultiHeadAttention"]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, T, D)`` → ``(B, H, T, D/H)``: head ``h`` gets features ``h*D/H … (h+1)*D/H - 1``."""
    if x.ndim != 3:
        raise ValueError(f"split_heads expects (batch, seq_len, dim), got shape {tuple(x.shape)}")
    batch, seq_len, dim = x.shape
    if dim % num_heads != 0:
        raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
    # view to (B, T, H, D/H) first: a direct view to (B, H, T, D/H) would mix positions.
    return x.view(batch, seq_len, num_heads, dim // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, D/H)`` → ``(B, T, D)``, the inverse of :func:`split_heads`."""
    if x.ndim != 4:
        raise ValueError(f"merge_heads expects (batch, heads, seq_len, head_dim), got shape {tuple(x.shape)}")
    batch, heads, seq_len, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, seq_len, heads * head_dim)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with inputs and outputs shaped ``(B, T, D)``.

    ``forward(query, key=None, value=None, mask=None, key_padding_mask=None, need_weights=True)``
    returns ``(output (B, T_q, D), weights (B, H, T_q, T_k) or None)``. ``mask`` is boolean
    (True = may attend) or additive, broadcastable to ``(B, H, T_q, T_k)`` (a causal mask of shape
    ``(T_q, T_k)`` works as is); ``key_padding_mask`` is ``(B, T_k)``, True at real tokens.
    With ``need_weights=False`` the fused kernel runs and no weights are returned.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = query if key is None else key
        value = key if value is None else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[-1] != self.embed_dim:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must have shape (batch, seq_len, {self.embed_dim}), got {shape}")
        if not (query.shape[0] == key.shape[0] == value.shape[0]):
            raise ValueError(f"batch sizes differ: query {query.shape[0]}, key {key.shape[0]}, value {value.shape[0]}")
        mask = self._combine_masks(mask, key_padding_mask, key, query.dtype)

        q = split_heads(self.q_proj(query), self.num_heads)  # (B, H, T_q, D/H)
        k = split_heads(self.k_proj(key), self.num_heads)  # (B, H, T_k, D/H)
        v = split_heads(self.v_proj(value), self.num_heads)  # (B, H, T_k, D/H)
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            heads, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p)
        else:
            heads, weights = fused_attention(q, k, v, mask, dropout_p=dropout_p), None
        return self.out_proj(merge_heads(heads)), weights  # (B, T_q, D), (B, H, T_q, T_k)

    @staticmethod
    def _combine_masks(mask, key_padding_mask, key, dtype):
        if key_padding_mask is None:
            return mask
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError("key_padding_mask must be a boolean tensor (True = real token)")
        if key_padding_mask.shape != key.shape[:2]:
            raise ValueError(
                f"key_padding_mask must have shape (batch, key_len) = {tuple(key.shape[:2])}, "
                f"got {tuple(key_padding_mask.shape)}"
            )
        padding = key_padding_mask[:, None, None, :]  # (B, 1, 1, T_k)
        if mask is None:
            return padding
        if mask.dtype == torch.bool:
            return mask & padding
        return mask + to_additive(padding, dtype=mask.dtype)

    @classmethod
    def from_torch(cls, reference: nn.MultiheadAttention) -> "MultiHeadAttention":
        """A copy of ``reference``'s weights in this module (same outputs, our code)."""
        if not reference._qkv_same_embed_dim:
            raise ValueError("only nn.MultiheadAttention with kdim == vdim == embed_dim is supported")
        if reference.bias_k is not None or reference.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn are not supported")
        has_bias = reference.in_proj_bias is not None
        ours = cls(reference.embed_dim, reference.num_heads, bias=has_bias, dropout=reference.dropout)
        with torch.no_grad():
            for i, proj in enumerate((ours.q_proj, ours.k_proj, ours.v_proj)):
                rows = slice(i * reference.embed_dim, (i + 1) * reference.embed_dim)
                proj.weight.copy_(reference.in_proj_weight[rows])
                if has_bias:
                    proj.bias.copy_(reference.in_proj_bias[rows])
            ours.out_proj.weight.copy_(reference.out_proj.weight)
            if has_bias:
                ours.out_proj.bias.copy_(reference.out_proj.bias)
        return ours.to(reference.in_proj_weight.device, reference.in_proj_weight.dtype)
