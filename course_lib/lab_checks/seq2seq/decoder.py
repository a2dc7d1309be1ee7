"""The seq2seq lab's decoder checks: masked self-attention, cross-attention, a Transformer decoder layer.

* ``masked_self_attention(x, p, num_heads, key_padding_mask)`` and ``cross_attention(x, memory, p,
  num_heads, memory_key_padding_mask)``, built on the notebook's locked ``multi_head_attention``
  (the same maths as :class:`course_lib.MultiHeadAttention`);
* ``decoder_layer(x, memory, params, num_heads, norm_first, tgt_key_padding_mask,
  memory_key_padding_mask)``, compared with :class:`course_lib.TransformerDecoderLayer` (itself pinned
  to ``torch.nn.TransformerDecoderLayer``) holding ``params``.

The references and random inputs are in :mod:`.references`. Each classic mistake costs only
its cell: :func:`check_self_attention_padding` accepts a missing causal mask
(:func:`check_causal_self_attention` catches it); the decoder-layer checks run with the reference
``masked_self_attention`` and ``cross_attention`` in the student's namespace
(:meth:`~course_lib.lab_checks.rubric.Rubric.run`); a wrong residual/norm order is named by
:func:`~course_lib.lab_checks.toolkit.diagnose` against each order written out (``RESIDUAL_RULES``),
and :func:`check_decoder_padding` tests properties that hold whatever the residual/norm order.

Not covered: dropout, the encoder layer, incremental decoding with a key/value cache, the rubric (:mod:`.seq2seq`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..toolkit import call_for_tensor, close_to_any, diagnose, expect_close, expect_tensor, fail, is_close, trials
from .references import (
    random_attention_case, random_layer, random_padding, reference_attention, reference_cross_attention,
    reference_self_attention, self_mask,
)

__all__ = [
    "check_causal_self_attention", "check_self_attention_padding", "check_cross_attention",
    "check_post_norm", "check_pre_norm", "check_decoder_padding", "RESIDUAL_RULES",
]

TRIALS = 5


# --- masked self-attention ---------------------------------------------------------------------

def check_causal_self_attention(masked_self_attention: Callable) -> None:
    """Position t's output depends on positions 0..t only, and equals the reference causal self-attention."""
    for trial in trials(TRIALS, seed=400):
        p, heads, x, _ = random_attention_case(trial)
        context = f"x {tuple(x.shape)}, num_heads={heads}, no padding"
        got = call_for_tensor(masked_self_attention, x, p, heads, None, name="masked_self_attention", shape=x.shape,
                              context=context).to(x.device)
        if torch.isnan(got).any():
            fail(f"the output contains NaN (on {context})",
                 "a query whose every key is blocked gives NaN: keep the diagonal in the causal mask, "
                 "torch.ones(T, T, dtype=torch.bool).tril() (position t may see itself).")
        if is_close(got, reference_self_attention(x, p, heads)):
            continue
        cut = x.shape[1] // 2  # change the tokens after position `cut`
        changed = x.clone()
        changed[:, cut + 1:] = trial.randn(x.shape[0], x.shape[1] - cut - 1, x.shape[2])
        again = call_for_tensor(masked_self_attention, changed, p, heads, None, name="masked_self_attention",
                                shape=x.shape, context=context).to(x.device)
        if not is_close(again[:, :cut + 1], got[:, :cut + 1]):
            fail(f"the output at positions 0..{cut} changes when only the tokens after position {cut} change: the "
                 f"decoder peeks at future tokens (on {context})",
                 "at training time the whole target sentence is the input, so without a causal mask position t "
                 "reads the very token it must predict. Build torch.ones(T, T, dtype=torch.bool, "
                 "device=x.device).tril() and pass it as the mask (True = may attend).")
        diagnose(got, [
            (reference_attention(x, x, p, heads, self_mask(x, pattern="upper")),
             "the mask is upper triangular: position t attends to t..T-1",
             "query t may see keys 0..t: use .tril(), not .triu()."),
            (reference_attention(x, x, p, heads, self_mask(x, pattern="strict")),
             "the mask leaves out the diagonal: position t may not attend to itself",
             "use .tril() (diagonal included), not .tril(-1): position 0 would otherwise attend to nothing."),
        ], context=context)
        fail(f"the output is not the causal self-attention of x (on {context})",
             "queries, keys and values all come from x: multi_head_attention(x, x, p, num_heads, mask) with the "
             "lower-triangular boolean mask.")


def check_self_attention_padding(masked_self_attention: Callable) -> None:
    """With a key_padding_mask (B, T), no query attends to padded target positions."""
    for trial in trials(TRIALS, seed=500):
        p, heads, x, _ = random_attention_case(trial)
        mask = random_padding(trial, x.shape[0], x.shape[1])
        context = f"x {tuple(x.shape)}, num_heads={heads}, key_padding_mask with lengths {mask.sum(1).tolist()}"
        got = call_for_tensor(masked_self_attention, x, p, heads, mask, name="masked_self_attention", shape=x.shape,
                              context=context).to(x.device)
        if torch.isnan(got).any():
            fail(f"the output contains NaN (on {context})",
                 "key_padding_mask (B, T) marks *keys*: broadcast it as key_padding_mask[:, None, None, :] (B, 1, 1, T) "
                 "and combine it with the causal mask by `&`; True = real token.")
        causal = reference_self_attention(x, p, heads, mask)
        if is_close(got, causal) or is_close(got, reference_attention(x, x, p, heads, self_mask(x, mask, "none"))):
            continue  # with or without the causal mask: that one is check_causal_self_attention's business
        diagnose(got, [
            ((reference_self_attention(x, p, heads), reference_attention(x, x, p, heads, None)),
             "the key_padding_mask has no effect: padded positions are still attended to",
             "combine both masks: mask = causal & key_padding_mask[:, None, None, :] (shape (B, 1, T, T))."),
        ], context=context, matches=close_to_any)
        fail(f"the output with padding differs from the reference masked self-attention (on {context})",
             "key_padding_mask is True at real tokens; broadcast it over the queries, "
             "key_padding_mask[:, None, None, :], and keep the causal mask: causal & padding.")


# --- cross-attention -----------------------------------------------------------------------------

def check_cross_attention(cross_attention: Callable) -> None:
    """Queries from the decoder's x, keys and values from the encoder's memory; memory padding masked."""
    for trial in trials(TRIALS, seed=600):
        p, heads, x, memory = random_attention_case(trial)
        context = f"x {tuple(x.shape)} (decoder), memory {tuple(memory.shape)} (encoder), num_heads={heads}"
        got = call_for_tensor(cross_attention, x, memory, p, heads, None, name="cross_attention", context=context)
        if tuple(got.shape) == tuple(memory.shape):
            fail(f"cross_attention returns one row per *source* position, shape {tuple(got.shape)} (on {context})",
                 "the queries come from the decoder (x): each target position asks the source a question. "
                 "Call multi_head_attention(x, memory, ...), not multi_head_attention(memory, x, ...).")
        got = expect_tensor(got, name="cross_attention's result", shape=x.shape, context=context).to(x.device)
        if is_close(got, reference_cross_attention(x, memory, p, heads)):
            continue
        diagnose(got, [
            ((reference_attention(x, x, p, heads), reference_attention(x, x, p, heads, self_mask(x))),
             "cross_attention ignores the memory: its keys and values come from the decoder's x",
             "that is self-attention again. In cross-attention the keys and values come from the encoder's "
             "output (memory), the queries from the decoder: multi_head_attention(x, memory, p, num_heads, mask)."),
        ], context=context, matches=close_to_any)
        fail(f"cross_attention's output is not attention of x's queries over memory's keys and values (on {context})",
             "multi_head_attention(x, memory, p, num_heads, mask): queries from x, keys and values from memory.")
    for trial in trials(TRIALS, seed=650):
        p, heads, x, memory = random_attention_case(trial)
        mask = random_padding(trial, memory.shape[0], memory.shape[1])
        context = (f"x {tuple(x.shape)}, memory {tuple(memory.shape)}, memory_key_padding_mask with lengths "
                   f"{mask.sum(1).tolist()}")
        got = call_for_tensor(cross_attention, x, memory, p, heads, mask, name="cross_attention", shape=x.shape,
                              context=context).to(x.device)
        if is_close(got, reference_cross_attention(x, memory, p, heads, mask)):
            continue
        diagnose(got, [
            (reference_cross_attention(x, memory, p, heads),
             "the memory_key_padding_mask has no effect: the decoder attends to the source's padding",
             "pass memory_key_padding_mask[:, None, None, :] (B, 1, 1, S) as the mask: True = real source token."),
        ], context=context)
        expect_close(got, reference_cross_attention(x, memory, p, heads, mask), name="cross_attention's result",
                     context=context,
                     hint="mask = memory_key_padding_mask[:, None, None, :]: it removes source *keys*, for every query.")


# --- the decoder layer ---------------------------------------------------------------------------

def _call_layer(decoder_layer, x, memory, params, heads, norm_first, tgt_mask=None, memory_mask=None, *, context):
    return call_for_tensor(decoder_layer, x, memory, params, heads, norm_first, tgt_mask, memory_mask,
                           name="decoder_layer", shape=x.shape, context=context).to(x.device)


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
        layer, params, heads, x, memory = random_layer(trial, norm_first)
        context = f"x {tuple(x.shape)}, memory {tuple(memory.shape)}, num_heads={heads}, norm_first={norm_first}"
        got = _call_layer(decoder_layer, x, memory, params, heads, norm_first, context=context)
        with torch.no_grad():
            expected = layer(x, memory, tgt_mask=self_mask(x))
        if is_close(got, expected):
            continue
        wrong_order = (f"decoder_layer puts the residual connection and the layer norm in the wrong order for a "
                       f"{name} layer")
        diagnose(got, [(functools.partial(_layer_with_rule, rule, x, memory, params, heads), wrong_order, hint)
                       for rule, hint in WRONG_ORDER_HINTS[norm_first].items()], context=context)
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
        layer, params, heads, x, memory = random_layer(trial, norm_first)
        tgt_mask = random_padding(trial, x.shape[0], x.shape[1])
        memory_mask = random_padding(trial, memory.shape[0], memory.shape[1])
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
            expected = layer(x, memory, tgt_mask=self_mask(x), tgt_key_padding_mask=tgt_mask,
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
