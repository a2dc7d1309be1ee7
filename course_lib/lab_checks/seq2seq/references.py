"""What the seq2seq lab's checks compare against: the references, the parameter dicts, the random inputs.

Students work on plain tensors and dicts of parameter tensors (the sandboxed grader exchanges nothing
else), laid out as ``torch.nn.Linear`` and ``torch.nn.LayerNorm`` store them. Here:

* the references in the lab's signatures: :func:`reference_additive_attention` (a
  :class:`course_lib.seq2seq.AdditiveAttention` holding the given weights), :func:`reference_attention`
  (the notebook's locked ``multi_head_attention``: the maths of :class:`course_lib.MultiHeadAttention`),
  :func:`reference_self_attention`, :func:`reference_cross_attention` and :func:`reference_decoder_layer`
  (a :class:`course_lib.TransformerDecoderLayer` holding the given parameters);
* the lab's parameter dicts of course_lib's modules: :func:`attention_params`, :func:`decoder_params`;
* random inputs: padding masks, attention cases, decoder layers with norms that are not the identity.

Not covered: the checks (:mod:`.additive`, :mod:`.decoder`) and the rubric (:mod:`course_lib.lab_checks.seq2seq`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...attention.multi_head import MultiHeadAttention, merge_heads, split_heads
from ...attention.scaled_dot_product import scaled_dot_product_attention
from ...seq2seq.layers import TransformerDecoderLayer
from ...seq2seq.rnn import AdditiveAttention
from ..toolkit import Trial

__all__ = [
    "LAYER_SIZES", "reference_additive_attention", "reference_attention", "reference_self_attention",
    "reference_cross_attention", "reference_decoder_layer", "attention_params", "decoder_params", "self_mask",
    "random_padding", "random_attention_case", "random_layer",
]

LAYER_SIZES = ((8, 2), (12, 3), (16, 4), (8, 1), (12, 2))  # (model dim D, heads H)


def random_padding(trial: Trial, batch: int, length: int, *, full_row: bool = False) -> torch.Tensor:
    """(B, L) mask, True at real tokens, padding at the end: each row has >= 2 pads when L >= 3, except
    one full row if ``full_row`` (then every position is real in some row: a softmax over the batch axis
    stays finite)."""
    lengths = [trial.randint(1, max(1, length - 2)) for _ in range(batch)]
    if full_row:
        lengths[trial.randint(0, batch - 1)] = length
    return torch.arange(length, device=trial.device)[None, :] < torch.tensor(lengths, device=trial.device)[:, None]


def reference_additive_attention(query, keys, w_q, w_k, v, mask=None):
    """The lab's ``additive_attention`` by :class:`course_lib.seq2seq.AdditiveAttention` holding the same weights."""
    module = AdditiveAttention(query.shape[-1], keys.shape[-1], w_q.shape[0]).to(query.device)
    with torch.no_grad():
        module.W_q.weight.copy_(w_q)
        module.W_k.weight.copy_(w_k)
        module.v.weight.copy_(v[None, :])
        return module(query, keys, mask)  # (B, D_k), (B, S)


def attention_params(attention) -> dict[str, torch.Tensor]:
    """The lab's parameter dict of a :class:`course_lib.MultiHeadAttention` (nn.Linear layout)."""
    return {f"{name}_{kind}": getattr(getattr(attention, f"{name}_proj"), kind).detach().clone()
            for name in ("q", "k", "v", "out") for kind in ("weight", "bias")}


def decoder_params(layer: TransformerDecoderLayer) -> dict[str, dict[str, torch.Tensor]]:
    """The lab's nested parameter dict of a :class:`course_lib.TransformerDecoderLayer`."""
    ffn = layer.ffn
    params = {"self_attn": attention_params(layer.self_attn), "cross_attn": attention_params(layer.cross_attn),
              "ffn": {"weight1": ffn.linear1.weight, "bias1": ffn.linear1.bias,
                      "weight2": ffn.linear2.weight, "bias2": ffn.linear2.bias}}
    for name in ("norm1", "norm2", "norm3"):
        norm = getattr(layer, name)
        params[name] = {"weight": norm.weight, "bias": norm.bias}
    return {k: {n: t.detach().clone() for n, t in v.items()} for k, v in params.items()}


def reference_attention(query_input, key_value_input, p, num_heads, mask=None):
    """Queries from ``query_input`` (B, T_q, D), keys and values from ``key_value_input`` (B, T_k, D)."""
    q = split_heads(F.linear(query_input, p["q_weight"], p["q_bias"]), num_heads)  # (B, H, T_q, D/H)
    k = split_heads(F.linear(key_value_input, p["k_weight"], p["k_bias"]), num_heads)  # (B, H, T_k, D/H)
    v = split_heads(F.linear(key_value_input, p["v_weight"], p["v_bias"]), num_heads)
    heads, _ = scaled_dot_product_attention(q, k, v, mask)
    return F.linear(merge_heads(heads), p["out_weight"], p["out_bias"])  # (B, T_q, D)


def self_mask(x, key_padding_mask=None, pattern: str = "causal"):
    size = x.shape[1]
    ones = torch.ones(size, size, dtype=torch.bool, device=x.device)
    mask = {"causal": ones.tril(), "none": ones, "upper": ones.triu(), "strict": ones.tril(-1)}[pattern]  # (T, T)
    return mask if key_padding_mask is None else mask & key_padding_mask[:, None, None, :]  # (B, 1, T, T)


def reference_self_attention(x, p, num_heads, key_padding_mask=None):
    """Causal self-attention of ``x`` (B, T, D); ``key_padding_mask`` (B, T) True at real tokens."""
    return reference_attention(x, x, p, num_heads, self_mask(x, key_padding_mask))


def reference_cross_attention(x, memory, p, num_heads, memory_key_padding_mask=None):
    """Queries from the decoder's ``x`` (B, T, D), keys and values from the encoder's ``memory`` (B, S, D)."""
    mask = None if memory_key_padding_mask is None else memory_key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
    return reference_attention(x, memory, p, num_heads, mask)


def reference_decoder_layer(x, memory, params, num_heads, norm_first=False, tgt_key_padding_mask=None,
                            memory_key_padding_mask=None):
    """The lab's ``decoder_layer``: course_lib's :class:`~course_lib.seq2seq.TransformerDecoderLayer` holding ``params``."""
    dim = x.shape[-1]
    layer = TransformerDecoderLayer(dim, num_heads, ffn_dim=params["ffn"]["weight1"].shape[0], dropout=0.0,
                                    norm_first=norm_first).to(x.device).eval()
    state = {f"{block}.{part}_proj.{kind}": params[block][f"{part}_{kind}"] for block in ("self_attn", "cross_attn")
             for part in ("q", "k", "v", "out") for kind in ("weight", "bias")}
    state |= {f"ffn.linear{n}.{kind}": params["ffn"][f"{kind}{n}"] for n in (1, 2) for kind in ("weight", "bias")}
    state |= {f"{norm}.{kind}": params[norm][kind] for norm in ("norm1", "norm2", "norm3") for kind in ("weight", "bias")}
    layer.load_state_dict(state)
    with torch.no_grad():
        return layer(x, memory, tgt_mask=self_mask(x), tgt_key_padding_mask=tgt_key_padding_mask,
                     memory_key_padding_mask=memory_key_padding_mask)


def random_layer(trial: Trial, norm_first: bool, src_len: int | None = None):
    """A course_lib decoder layer with random weights (norms included), its params, and x, memory with T ≠ S
    (or S = ``src_len``)."""
    dim, heads = LAYER_SIZES[trial.index % len(LAYER_SIZES)]
    layer = TransformerDecoderLayer(dim, heads, ffn_dim=2 * dim, dropout=0.0, norm_first=norm_first)
    layer = layer.to(trial.device).eval()
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name.startswith("norm"):  # not 1 and 0: a norm in the wrong place must change the numbers
                base = 1.0 if name.endswith("weight") else 0.0
                parameter.copy_(base + 0.3 * trial.randn(*parameter.shape))
            elif parameter.ndim == 2:
                parameter.copy_(trial.randn(*parameter.shape) / math.sqrt(parameter.shape[1]))
            else:
                parameter.copy_(0.2 * trial.randn(*parameter.shape))
    batch, tgt_len = trial.randint(1, 3), trial.randint(3, 6)
    src_len = tgt_len + trial.randint(1, 3) if src_len is None else src_len
    x, memory = trial.randn(batch, tgt_len, dim), trial.randn(batch, src_len, dim)
    return layer, decoder_params(layer), heads, x, memory


def random_attention_case(trial: Trial, src_len: int | None = None):
    """Parameters of a random multi-head attention, its heads, x (B, T, D) and memory (B, S, D) with S > T,
    or S = ``src_len``."""
    dim, heads = LAYER_SIZES[trial.index % len(LAYER_SIZES)]
    module = MultiHeadAttention(dim, heads).to(trial.device)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(trial.randn(*parameter.shape) / math.sqrt(parameter.shape[-1]))
    batch, tgt_len = trial.randint(1, 3), trial.randint(3, 6)
    src_len = tgt_len + trial.randint(1, 3) if src_len is None else src_len
    return attention_params(module), heads, trial.randn(batch, tgt_len, dim), trial.randn(batch, src_len, dim)
