"""Hidden checks of lab 03, encoder-decoders: additive attention and a Transformer decoder layer.

One ``check_*`` function per graded cell of ``labs/source/03_seq2seq/seq2seq_lab.ipynb``;
``RUBRIC`` lists them with their points. Students work on plain tensors and dicts of parameter
tensors (the sandboxed grader exchanges nothing else), laid out as ``torch.nn.Linear`` and
``torch.nn.LayerNorm`` store them:

* ``additive_attention(query (B, D_q), keys (B, S, D_k), W_q (A, D_q), W_k (A, D_k), v (A,),
  key_padding_mask (B, S) | None) -> (context (B, D_k), weights (B, S))``, compared with
  :class:`course_lib.AdditiveAttention` holding the same weights;
* ``masked_self_attention(x, p, num_heads, key_padding_mask)`` and ``cross_attention(x, memory, p,
  num_heads, memory_key_padding_mask)``, built on the notebook's locked ``multi_head_attention``
  (the same maths as :class:`course_lib.MultiHeadAttention`);
* ``decoder_layer(x, memory, params, num_heads, norm_first, tgt_key_padding_mask,
  memory_key_padding_mask)``, compared with :class:`course_lib.TransformerDecoderLayer` (itself pinned
  to ``torch.nn.TransformerDecoderLayer``) holding ``params``.

Each classic mistake costs only its cell: :func:`check_additive_padding` accepts a softmax over
either axis (the axis is :func:`check_additive_weights`' business) and :func:`check_additive_context`
averages with the student's *own* weights; :func:`check_self_attention_padding` accepts a missing
causal mask (:func:`check_causal_self_attention` catches it); the decoder-layer checks swap the
reference ``masked_self_attention`` and ``cross_attention`` into the student's namespace while they
run (the sandboxed grader does the same by running the source's solutions), and
:func:`check_decoder_padding` tests properties that hold whatever the residual/norm order.

Not covered: dropout, the encoder layer, incremental decoding with a key/value cache.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..attention.scaled_dot_product import scaled_dot_product_attention
from ..attention.multi_head import MultiHeadAttention, merge_heads, split_heads
from ..seq2seq.rnn import AdditiveAttention
from ..seq2seq.layers import TransformerDecoderLayer
from .rubric import Criterion, Rubric
from .toolkit import (
    Trial,
    call_student,
    expect_close,
    expect_tensor,
    fail,
    is_close,
    trials,
)

__all__ = [
    "RUBRIC",
    "attention_params",
    "check_additive_context",
    "check_additive_padding",
    "check_additive_weights",
    "check_causal_self_attention",
    "check_cross_attention",
    "check_decoder_padding",
    "check_post_norm",
    "check_pre_norm",
    "check_self_attention_padding",
    "decoder_params",
    "reference_attention",
    "reference_cross_attention",
    "reference_self_attention",
]

TRIALS = 5
LAYER_SIZES = ((8, 2), (12, 3), (16, 4), (8, 1), (12, 2))  # (model dim D, heads H)


def _clone(value):
    """A deep copy of tensors inside dicts/tuples: student code that edits its inputs changes nothing here."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _padding(trial: Trial, batch: int, length: int, *, full_row: bool = False) -> torch.Tensor:
    """(B, L) mask, True at real tokens, padding at the end: each row has >= 2 pads when L >= 3, except
    one full row if ``full_row`` (then every position is real in some row: a softmax over the batch axis
    stays finite)."""
    lengths = [trial.randint(1, max(1, length - 2)) for _ in range(batch)]
    if full_row:
        lengths[trial.randint(0, batch - 1)] = length
    return torch.arange(length, device=trial.device)[None, :] < torch.tensor(lengths, device=trial.device)[:, None]


# --- additive attention ------------------------------------------------------------------------

def _random_additive(trial: Trial):
    """query (B, D_q), keys (B, S, D_k), W_q (A, D_q), W_k (A, D_k), v (A,) with B ≠ S and A ≠ D_k."""
    batch = trial.randint(2, 4)
    src_len = trial.randint(2, 7)
    if src_len == batch:
        src_len += 1
    d_q, d_k, a = (3, 5)[trial.randint(0, 1)], (4, 6)[trial.randint(0, 1)], (7, 8)[trial.randint(0, 1)]
    query, keys = trial.randn(batch, d_q), trial.randn(batch, src_len, d_k)
    w_q, w_k = trial.randn(a, d_q) / math.sqrt(d_q), trial.randn(a, d_k) / math.sqrt(d_k)
    return query, keys, w_q, w_k, trial.randn(a)


def reference_additive_attention(query, keys, w_q, w_k, v, mask=None):
    """The lab's ``additive_attention`` by :class:`course_lib.seq2seq.AdditiveAttention` holding the same weights."""
    module = AdditiveAttention(query.shape[-1], keys.shape[-1], w_q.shape[0]).to(query.device)
    with torch.no_grad():
        module.W_q.weight.copy_(w_q)
        module.W_k.weight.copy_(w_k)
        module.v.weight.copy_(v[None, :])
        return module(query, keys, mask)  # (B, D_k), (B, S)


def _additive_scores(query, keys, w_q, w_k, v):
    return torch.tanh(F.linear(query, w_q)[:, None, :] + F.linear(keys, w_k)) @ v  # (B, S)


def _additive_context(query, keys, mask=None) -> str:
    text = f"query {tuple(query.shape)}, keys {tuple(keys.shape)}"
    return text if mask is None else f"{text}, key_padding_mask {tuple(mask.shape)} with lengths {mask.sum(1).tolist()}"


def _run_additive(additive_attention: Callable, query, keys, w_q, w_k, v, mask=None, *, to_device=True):
    context = _additive_context(query, keys, mask)
    result = call_student(additive_attention, query, keys, w_q, w_k, v, mask, name="additive_attention")
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"additive_attention should return a pair (context, weights), got {type(result).__name__} "
             f"(on {context})", "end the function with `return context, weights`.")
    out, weights = result
    expect_tensor(weights, name="weights", context=context)
    if tuple(weights.shape) == (keys.shape[0], keys.shape[1], 1):
        fail(f"weights has shape {tuple(weights.shape)}, expected (B, S) = {tuple(keys.shape[:2])} (on {context})",
             "the score of each source position is a number: (... @ v) with v of shape (A,) gives (B, S) directly; "
             "or .squeeze(-1) the last axis.")
    expect_tensor(weights, name="weights", shape=keys.shape[:2], context=context)
    expect_tensor(out, name="context", context=context)
    return (out.to(query.device), weights.to(query.device)) if to_device else (out, weights)


def check_additive_weights(additive_attention: Callable) -> None:
    """Without padding, the weights are softmax over the source positions of vᵀ tanh(W_q q + W_k k)."""
    for trial in trials(TRIALS, seed=100):
        query, keys, w_q, w_k, v = _random_additive(trial)
        _, weights = _run_additive(additive_attention, query, keys, w_q, w_k, v)
        _, expected = reference_additive_attention(query, keys, w_q, w_k, v)
        if is_close(weights, expected):
            continue
        context = _additive_context(query, keys)
        scores = _additive_scores(query, keys, w_q, w_k, v)
        if is_close(weights, torch.softmax(scores, dim=0)):
            fail(f"the weights sum to 1 over the batch axis, not over the source positions (on {context})",
                 "scores has shape (B, S): one row per sentence. softmax(dim=0) mixes different sentences of the "
                 "batch; each sentence's weights must be a distribution over its own source positions: "
                 "torch.softmax(scores, dim=-1).")
        if is_close(weights, scores):
            fail(f"the weights are the raw scores: they do not sum to 1 (on {context})",
                 "turn the scores into weights with torch.softmax(scores, dim=-1).")
        linear_scores = (F.linear(query, w_q)[:, None, :] + F.linear(keys, w_k)) @ v
        if is_close(weights, torch.softmax(linear_scores, dim=-1)):
            fail(f"the weights are softmax(vᵀ(W_q q + W_k k)): the tanh is missing (on {context})",
                 "the additive score is vᵀ tanh(W_q q + W_k k): without the tanh the query's term is the same for "
                 "every source position and cancels in the softmax, so the weights ignore the query.")
        fail(f"the weights are not softmax over the source positions of vᵀ tanh(W_q q + W_k k) (on {context})",
             "W_q and W_k are stored like nn.Linear weights, (A, D): project with F.linear(query, W_q) (= query @ W_q.T) "
             "and F.linear(keys, W_k); add the projected query to every projected key ([:, None, :]), take tanh, "
             "multiply by v, then softmax over dim=-1.")


def check_additive_padding(additive_attention: Callable) -> None:
    """With a key_padding_mask (True = real token), padded positions get weight 0 and the rest stays a softmax."""
    for trial in trials(TRIALS, seed=200):
        query, keys, w_q, w_k, v = _random_additive(trial)
        mask = _padding(trial, *keys.shape[:2], full_row=True)
        _, weights = _run_additive(additive_attention, query, keys, w_q, w_k, v, mask)
        context = _additive_context(query, keys, mask)
        if torch.isnan(weights).any():
            fail(f"the weights contain NaN (on {context})",
                 "every sentence has at least one real token here, so no row of scores should be all -inf: "
                 "fill with -inf only where key_padding_mask is False (True means a real token).")
        masked = _additive_scores(query, keys, w_q, w_k, v).masked_fill(~mask, float("-inf"))
        if is_close(weights, torch.softmax(masked, dim=-1)) or is_close(weights, torch.softmax(masked, dim=0)):
            continue  # the softmax axis is check_additive_weights' business
        unmasked = _run_additive(additive_attention, query, keys, w_q, w_k, v)[1]
        if is_close(weights, unmasked):
            fail(f"the padding mask has no effect: padded source positions get the same weights as without it "
                 f"(on {context})",
                 "padding is not part of the sentence: set the scores of padded positions to -inf before the "
                 "softmax, scores.masked_fill(~key_padding_mask, float('-inf')), so their weight is exactly 0.")
        if (weights[~mask].abs() <= 1e-7).all() and is_close(weights, unmasked * mask):
            fail(f"the padded weights are 0 but the rows no longer sum to 1 (on {context})",
                 "you zeroed the padding after the softmax; mask the *scores* with -inf before the softmax, so the "
                 "real positions share all of the weight.")
        if (weights[mask].abs() <= 1e-7).all():
            fail(f"the mask is inverted: real tokens get weight 0 (on {context})",
                 "key_padding_mask is True at real tokens (course convention): block where it is False, "
                 "scores.masked_fill(~key_padding_mask, float('-inf')).")
        fail(f"the weights with padding are not the softmax of the masked scores (on {context})",
             "set padded scores to -inf before the softmax: scores.masked_fill(~key_padding_mask, float('-inf')).")


def check_additive_context(additive_attention: Callable) -> None:
    """The context is the student's own weights applied to the keys (the encoder states): (B, D_k)."""
    for trial in trials(TRIALS, seed=300):
        query, keys, w_q, w_k, v = _random_additive(trial)
        out, weights = _run_additive(additive_attention, query, keys, w_q, w_k, v, to_device=False)
        context = _additive_context(query, keys)
        batch, src_len, d_k = keys.shape
        if tuple(out.shape) == (batch, w_k.shape[0]):
            fail(f"context has shape {tuple(out.shape)} = (B, A): it averages the projected keys W_k k "
                 f"(on {context})",
                 "W_k k only serves the score; the context averages the encoder states themselves: "
                 "(weights[:, :, None] * keys).sum(dim=1), shape (B, D_k).")
        if tuple(out.shape) == (batch, 1, d_k):
            fail(f"context has shape {tuple(out.shape)}, expected (B, D_k) = {(batch, d_k)} (on {context})",
                 "weights[:, None, :] @ keys gives (B, 1, D_k): .squeeze(1) it.")
        if tuple(out.shape) == (src_len, d_k):
            fail(f"context has shape {tuple(out.shape)} = (S, D_k): the sum runs over the batch axis (on {context})",
                 "sum the weighted keys over the source positions: (weights[:, :, None] * keys).sum(dim=1).")
        expect_tensor(out, name="context", shape=(batch, d_k), dtype=keys.dtype, device=keys.device, context=context)
        expect_close(out, (weights.to(keys.device)[:, :, None] * keys).sum(dim=1), name="context",
                     context=f"{context}; expected your weights applied to the keys",
                     hint="the context is the weighted average of the keys with the weights you return: "
                          "(weights[:, :, None] * keys).sum(dim=1).")


# --- multi-head attention references -------------------------------------------------------------

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


def _self_mask(x, key_padding_mask=None, pattern: str = "causal"):
    size = x.shape[1]
    ones = torch.ones(size, size, dtype=torch.bool, device=x.device)
    mask = {"causal": ones.tril(), "none": ones, "upper": ones.triu(), "strict": ones.tril(-1)}[pattern]  # (T, T)
    return mask if key_padding_mask is None else mask & key_padding_mask[:, None, None, :]  # (B, 1, T, T)


def reference_self_attention(x, p, num_heads, key_padding_mask=None):
    """Causal self-attention of ``x`` (B, T, D); ``key_padding_mask`` (B, T) True at real tokens."""
    return reference_attention(x, x, p, num_heads, _self_mask(x, key_padding_mask))


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
        return layer(x, memory, tgt_mask=_self_mask(x), tgt_key_padding_mask=tgt_key_padding_mask,
                     memory_key_padding_mask=memory_key_padding_mask)


def _random_layer(trial: Trial, norm_first: bool):
    """A course_lib decoder layer with random weights (norms included), its params, and x, memory with T ≠ S."""
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
    src_len = tgt_len + trial.randint(1, 3)
    x, memory = trial.randn(batch, tgt_len, dim), trial.randn(batch, src_len, dim)
    return layer, decoder_params(layer), heads, x, memory


def _attention_case(trial: Trial):
    dim, heads = LAYER_SIZES[trial.index % len(LAYER_SIZES)]
    module = MultiHeadAttention(dim, heads).to(trial.device)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(trial.randn(*parameter.shape) / math.sqrt(parameter.shape[-1]))
    batch, tgt_len = trial.randint(1, 3), trial.randint(3, 6)
    src_len = tgt_len + trial.randint(1, 3)
    return attention_params(module), heads, trial.randn(batch, tgt_len, dim), trial.randn(batch, src_len, dim)


def _sublayer_output(value, name: str, shape, context: str) -> torch.Tensor:
    return expect_tensor(value, name=f"{name}'s result", shape=shape, context=context)


# --- masked self-attention ---------------------------------------------------------------------

def check_causal_self_attention(masked_self_attention: Callable) -> None:
    """Position t's output depends on positions 0..t only, and equals the reference causal self-attention."""
    for trial in trials(TRIALS, seed=400):
        p, heads, x, _ = _attention_case(trial)
        context = f"x {tuple(x.shape)}, num_heads={heads}, no padding"
        got = _sublayer_output(call_student(masked_self_attention, x, _clone(p), heads, None,
                                            name="masked_self_attention"), "masked_self_attention", x.shape, context)
        got = got.to(x.device)
        if torch.isnan(got).any():
            fail(f"the output contains NaN (on {context})",
                 "a query whose every key is blocked gives NaN: keep the diagonal in the causal mask, "
                 "torch.ones(T, T, dtype=torch.bool).tril() (position t may see itself).")
        if is_close(got, reference_self_attention(x, p, heads)):
            continue
        cut = x.shape[1] // 2  # change the tokens after position `cut`
        changed = x.clone()
        changed[:, cut + 1:] = trial.randn(x.shape[0], x.shape[1] - cut - 1, x.shape[2])
        again = call_student(masked_self_attention, changed, _clone(p), heads, None, name="masked_self_attention")
        again = _sublayer_output(again, "masked_self_attention", x.shape, context).to(x.device)
        if not is_close(again[:, :cut + 1], got[:, :cut + 1]):
            fail(f"the output at positions 0..{cut} changes when only the tokens after position {cut} change: the "
                 f"decoder peeks at future tokens (on {context})",
                 "at training time the whole target sentence is the input, so without a causal mask position t "
                 "reads the very token it must predict. Build torch.ones(T, T, dtype=torch.bool, "
                 "device=x.device).tril() and pass it as the mask (True = may attend).")
        if is_close(got, reference_attention(x, x, p, heads, _self_mask(x, pattern="upper"))):
            fail(f"the mask is upper triangular: position t attends to t..T-1 (on {context})",
                 "query t may see keys 0..t: use .tril(), not .triu().")
        if is_close(got, reference_attention(x, x, p, heads, _self_mask(x, pattern="strict"))):
            fail(f"the mask leaves out the diagonal: position t may not attend to itself (on {context})",
                 "use .tril() (diagonal included), not .tril(-1): position 0 would otherwise attend to nothing.")
        fail(f"the output is not the causal self-attention of x (on {context})",
             "queries, keys and values all come from x: multi_head_attention(x, x, p, num_heads, mask) with the "
             "lower-triangular boolean mask.")


def check_self_attention_padding(masked_self_attention: Callable) -> None:
    """With a key_padding_mask (B, T), no query attends to padded target positions."""
    for trial in trials(TRIALS, seed=500):
        p, heads, x, _ = _attention_case(trial)
        mask = _padding(trial, x.shape[0], x.shape[1])
        context = f"x {tuple(x.shape)}, num_heads={heads}, key_padding_mask with lengths {mask.sum(1).tolist()}"
        got = call_student(masked_self_attention, x, _clone(p), heads, mask, name="masked_self_attention")
        got = _sublayer_output(got, "masked_self_attention", x.shape, context).to(x.device)
        if torch.isnan(got).any():
            fail(f"the output contains NaN (on {context})",
                 "key_padding_mask (B, T) marks *keys*: broadcast it as key_padding_mask[:, None, None, :] (B, 1, 1, T) "
                 "and combine it with the causal mask by `&`; True = real token.")
        causal = reference_self_attention(x, p, heads, mask)
        if is_close(got, causal) or is_close(got, reference_attention(x, x, p, heads, _self_mask(x, mask, "none"))):
            continue  # with or without the causal mask: that one is check_causal_self_attention's business
        if is_close(got, reference_self_attention(x, p, heads)) or is_close(
                got, reference_attention(x, x, p, heads, None)):
            fail(f"the key_padding_mask has no effect: padded positions are still attended to (on {context})",
                 "combine both masks: mask = causal & key_padding_mask[:, None, None, :] (shape (B, 1, T, T)).")
        fail(f"the output with padding differs from the reference masked self-attention (on {context})",
             "key_padding_mask is True at real tokens; broadcast it over the queries, "
             "key_padding_mask[:, None, None, :], and keep the causal mask: causal & padding.")


# --- cross-attention -----------------------------------------------------------------------------

def check_cross_attention(cross_attention: Callable) -> None:
    """Queries from the decoder's x, keys and values from the encoder's memory; memory padding masked."""
    for trial in trials(TRIALS, seed=600):
        p, heads, x, memory = _attention_case(trial)
        context = f"x {tuple(x.shape)} (decoder), memory {tuple(memory.shape)} (encoder), num_heads={heads}"
        got = call_student(cross_attention, x, memory, _clone(p), heads, None, name="cross_attention")
        expect_tensor(got, name="cross_attention's result", context=context)
        if tuple(got.shape) == tuple(memory.shape):
            fail(f"cross_attention returns one row per *source* position, shape {tuple(got.shape)} (on {context})",
                 "the queries come from the decoder (x): each target position asks the source a question. "
                 "Call multi_head_attention(x, memory, ...), not multi_head_attention(memory, x, ...).")
        got = _sublayer_output(got, "cross_attention", x.shape, context).to(x.device)
        if is_close(got, reference_cross_attention(x, memory, p, heads)):
            continue
        if is_close(got, reference_attention(x, x, p, heads)) or is_close(
                got, reference_attention(x, x, p, heads, _self_mask(x))):
            fail(f"cross_attention ignores the memory: its keys and values come from the decoder's x (on {context})",
                 "that is self-attention again. In cross-attention the keys and values come from the encoder's "
                 "output (memory), the queries from the decoder: multi_head_attention(x, memory, p, num_heads, mask).")
        fail(f"cross_attention's output is not attention of x's queries over memory's keys and values (on {context})",
             "multi_head_attention(x, memory, p, num_heads, mask): queries from x, keys and values from memory.")
    for trial in trials(TRIALS, seed=650):
        p, heads, x, memory = _attention_case(trial)
        mask = _padding(trial, memory.shape[0], memory.shape[1])
        context = (f"x {tuple(x.shape)}, memory {tuple(memory.shape)}, memory_key_padding_mask with lengths "
                   f"{mask.sum(1).tolist()}")
        got = call_student(cross_attention, x, memory, _clone(p), heads, mask, name="cross_attention")
        got = _sublayer_output(got, "cross_attention", x.shape, context).to(x.device)
        if is_close(got, reference_cross_attention(x, memory, p, heads, mask)):
            continue
        if is_close(got, reference_cross_attention(x, memory, p, heads)):
            fail(f"the memory_key_padding_mask has no effect: the decoder attends to the source's padding "
                 f"(on {context})",
                 "pass memory_key_padding_mask[:, None, None, :] (B, 1, 1, S) as the mask: True = real source token.")
        expect_close(got, reference_cross_attention(x, memory, p, heads, mask), name="cross_attention's result",
                     context=context,
                     hint="mask = memory_key_padding_mask[:, None, None, :]: it removes source *keys*, for every query.")


# --- the decoder layer ---------------------------------------------------------------------------


def _call_layer(decoder_layer, x, memory, params, heads, norm_first, tgt_mask=None, memory_mask=None, *, context):
    got = call_student(decoder_layer, x, memory, _clone(params), heads, norm_first, tgt_mask, memory_mask,
                       name="decoder_layer")
    return _sublayer_output(got, "decoder_layer", x.shape, context).to(x.device)


def _norm(p):
    return lambda h: F.layer_norm(h, h.shape[-1:], p["weight"], p["bias"], eps=1e-5)


RESIDUAL_RULES: dict[str, Callable] = {
    "post": lambda x, f, n: n(x + f(x)),
    "pre": lambda x, f, n: x + f(n(x)),
    "norm_on_branch": lambda x, f, n: x + n(f(x)),
    "normed_residual": lambda x, f, n: n(x) + f(n(x)),
    "no_residual_post": lambda x, f, n: n(f(x)),
    "no_residual_pre": lambda x, f, n: f(n(x)),
}


def _layer_with_rule(rule: str, x, memory, params, heads):
    """The decoder layer (reference sub-layers, no padding) with each sub-layer wrapped by ``rule``."""
    blocks = (lambda h: reference_self_attention(h, params["self_attn"], heads),
              lambda h: reference_cross_attention(h, memory, params["cross_attn"], heads),
              lambda h: F.linear(F.relu(F.linear(h, params["ffn"]["weight1"], params["ffn"]["bias1"])),
                                 params["ffn"]["weight2"], params["ffn"]["bias2"]))
    for block, norm in zip(blocks, ("norm1", "norm2", "norm3")):
        x = RESIDUAL_RULES[rule](x, block, _norm(params[norm]))
    return x


WRONG_ORDER_HINTS = {
    False: {
        "pre": "with norm_first=False the layer is post-norm, x = norm(x + sublayer(x)); you computed the pre-norm "
               "layer x + sublayer(norm(x)). Check how your code uses norm_first.",
        "norm_on_branch": "x + norm(sublayer(x)) normalises only the sub-layer's output; post-norm normalises the "
                          "sum: x = norm(x + sublayer(x)), so the residual stream is normalised after every sub-layer.",
        "normed_residual": "post-norm adds the sub-layer to its un-normalised input and normalises the sum: "
                           "x = norm(x + sublayer(x)).",
        "no_residual_post": "the residual connection is missing: add the sub-layer's input back before the norm, "
                            "x = norm(x + sublayer(x)).",
    },
    True: {
        "post": "with norm_first=True the layer is pre-norm, x = x + sublayer(norm(x)); you computed the post-norm "
                "layer norm(x + sublayer(x)). Check how your code uses norm_first.",
        "norm_on_branch": "pre-norm normalises the sub-layer's *input*, not its output: x = x + sublayer(norm(x)).",
        "normed_residual": "the residual must carry the un-normalised x: x = x + sublayer(norm(x)), not "
                           "norm(x) + sublayer(norm(x)); normalise only what goes into the sub-layer.",
        "no_residual_pre": "the residual connection is missing: x = x + sublayer(norm(x)).",
    },
}


def _check_placement(decoder_layer: Callable, norm_first: bool, seed: int) -> None:
    name = "pre-norm" if norm_first else "post-norm"
    for trial in trials(TRIALS, seed=seed):
        layer, params, heads, x, memory = _random_layer(trial, norm_first)
        context = f"x {tuple(x.shape)}, memory {tuple(memory.shape)}, num_heads={heads}, norm_first={norm_first}"
        got = _call_layer(decoder_layer, x, memory, params, heads, norm_first, context=context)
        with torch.no_grad():
            expected = layer(x, memory, tgt_mask=_self_mask(x))
        if is_close(got, expected):
            continue
        for rule, hint in WRONG_ORDER_HINTS[norm_first].items():
            if is_close(got, _layer_with_rule(rule, x, memory, params, heads)):
                fail(f"decoder_layer puts the residual connection and the layer norm in the wrong order for a "
                     f"{name} layer (on {context})", hint)
        expect_close(got, expected, name=f"decoder_layer's result ({name})", context=context,
                     hint="three sub-layers in this order, each reading the previous one's output: masked self-"
                          "attention with norm1, cross-attention over memory with norm2, feed_forward with norm3; "
                          + ("x = x + sublayer(norm(x)) for each." if norm_first else "x = norm(x + sublayer(x)) for each."))


def check_post_norm(decoder_layer: Callable) -> None:
    """``norm_first=False``: each sub-layer as x = norm(x + sublayer(x)), equal to course_lib's post-norm layer."""
    _check_placement(decoder_layer, False, seed=700)


def check_pre_norm(decoder_layer: Callable) -> None:
    """``norm_first=True``: each sub-layer as x = x + sublayer(norm(x)), equal to course_lib's pre-norm layer."""
    _check_placement(decoder_layer, True, seed=800)


def check_decoder_padding(decoder_layer: Callable) -> None:
    """The padding masks reach the right sub-layers: the content of padded positions changes no real output.

    If the output equals the reference layer with both masks, it passes at once; otherwise only the
    properties are required (a wrong residual/norm order fails the two placement checks, not this one).
    """
    for trial in trials(TRIALS, seed=900):
        norm_first = trial.index % 2 == 1
        layer, params, heads, x, memory = _random_layer(trial, norm_first)
        tgt_mask = _padding(trial, x.shape[0], x.shape[1])
        memory_mask = _padding(trial, memory.shape[0], memory.shape[1])
        context = (f"x {tuple(x.shape)}, memory {tuple(memory.shape)}, norm_first={norm_first}, target lengths "
                   f"{tgt_mask.sum(1).tolist()}, source lengths {memory_mask.sum(1).tolist()}")
        try:
            got = _call_layer(decoder_layer, x, memory, params, heads, norm_first, tgt_mask, memory_mask,
                              context=context)
        except AssertionError as error:
            hint = getattr(error, "hint", None)
            fail(f"{getattr(error, 'problem', error)}",
                 hint or "tgt_key_padding_mask (B, T) goes to the masked self-attention, memory_key_padding_mask "
                         "(B, S) to the cross-attention.")
        with torch.no_grad():
            expected = layer(x, memory, tgt_mask=_self_mask(x), tgt_key_padding_mask=tgt_mask,
                             memory_key_padding_mask=memory_mask)
        if is_close(got, expected):
            continue
        other_memory = torch.where(memory_mask[:, :, None], memory, trial.randn(*memory.shape))
        again = _call_layer(decoder_layer, x, other_memory, params, heads, norm_first, tgt_mask, memory_mask,
                            context=context)
        if not is_close(again, got):
            fail(f"the output changes when only the padded source positions of memory change (on {context})",
                 "pass memory_key_padding_mask to cross_attention: the decoder must not read the source's padding.")
        # Change the target at its first padded position p: only position p itself may change.
        row = int(torch.argmin(tgt_mask.sum(1)))
        first_pad = int(tgt_mask[row].sum())
        if first_pad < x.shape[1] - 1:
            other_x = x.clone()
            other_x[row, first_pad] = trial.randn(x.shape[-1])
            again = _call_layer(decoder_layer, other_x, memory, params, heads, norm_first, tgt_mask, memory_mask,
                                context=context)
            keep = torch.ones(x.shape[1], dtype=torch.bool, device=x.device)
            keep[first_pad] = False
            if not is_close(again[row, keep], got[row, keep]):
                fail(f"changing the padded target position {first_pad} of sentence {row} changes the outputs at the "
                     f"other positions (on {context})",
                     "pass tgt_key_padding_mask to masked_self_attention: no query may attend to target padding.")


# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "additive_attention": reference_additive_attention,
    "masked_self_attention": reference_self_attention,
    "cross_attention": reference_cross_attention,
    "decoder_layer": reference_decoder_layer,
}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_additive_weights", 2, check_additive_weights, ("additive_attention",),
              "additive attention: softmax over the source positions of vᵀ tanh(W_q q + W_k k)"),
    Criterion("test_additive_padding", 1, check_additive_padding, ("additive_attention",),
              "additive attention: padded source positions get weight 0"),
    Criterion("test_additive_context", 1, check_additive_context, ("additive_attention",),
              "additive attention: context = the weights applied to the keys, (B, D_k)"),
    Criterion("test_causal_self_attention", 2, check_causal_self_attention, ("masked_self_attention",),
              "decoder self-attention is causal: no position reads a later one"),
    Criterion("test_self_attention_padding", 1, check_self_attention_padding, ("masked_self_attention",),
              "decoder self-attention ignores target padding"),
    Criterion("test_cross_attention", 2, check_cross_attention, ("cross_attention",),
              "cross-attention: queries from the decoder, keys and values from the memory, source padding masked"),
    Criterion("test_post_norm", 2, check_post_norm, ("decoder_layer",),
              "post-norm decoder layer: x = norm(x + sublayer(x)), equal to course_lib's"),
    Criterion("test_pre_norm", 2, check_pre_norm, ("decoder_layer",),
              "pre-norm decoder layer: x = x + sublayer(norm(x)), equal to course_lib's"),
    Criterion("test_decoder_padding", 1, check_decoder_padding, ("decoder_layer",),
              "decoder layer: target and source padding masks reach the right sub-layers"),
))
