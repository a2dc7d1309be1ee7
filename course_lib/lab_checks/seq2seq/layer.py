"""The seq2seq lab's decoder-layer checks: post-norm, pre-norm, and the padding masks.

``decoder_layer(x, memory, params, num_heads, norm_first, tgt_key_padding_mask,
memory_key_padding_mask)`` is compared with :class:`course_lib.TransformerDecoderLayer` (itself pinned
to ``torch.nn.TransformerDecoderLayer``) holding ``params``, on random layers whose norms are not the
identity and on a one-token source. The checks run with the reference ``masked_self_attention`` and
``cross_attention`` in the student's namespace (:meth:`~course_lib.lab_checks.rubric.Rubric.run`), so
their mistakes are not counted again here.

A wrong layer is named by :func:`~course_lib.lab_checks.toolkit.diagnose` against the classic
mistakes written out (:func:`layer_variant`): the residual and the norm in the wrong order
(``RESIDUAL_RULES`` applied to every sub-layer), the residual connection missing around one sub-layer,
one LayerNorm reused for every sub-layer, the sub-layers in the wrong order (their norms following them
or staying in place), and a self-attention without its causal mask. Such a mistake costs the
placement cell(s) it shows in: ``test_post_norm`` for ``norm_first=False``, ``test_pre_norm`` for
``norm_first=True``. :func:`check_decoder_padding` accepts the reference output, else tests only
properties that hold whatever the residual/norm order (the content of padded positions changes no
real output), so those mistakes do not cost it too.

Not covered: dropout, the encoder layer, incremental decoding with a key/value cache, the rubric
(:mod:`course_lib.lab_checks.seq2seq`).
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..toolkit import call_for_tensor, diagnose, expect_close, fail, is_close, trials
from .references import random_layer, random_padding, reference_attention, reference_cross_attention, self_mask

__all__ = ["RESIDUAL_RULES", "check_decoder_padding", "check_post_norm", "check_pre_norm", "layer_variant"]

TRIALS = 5
SUBLAYERS = ("masked self-attention", "cross-attention", "feed-forward")
NORMS = ("norm1", "norm2", "norm3")


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


def layer_variant(x, memory, params, heads, rules, *, norms=NORMS, order=(0, 1, 2), causal=True):
    """The decoder layer (reference sub-layers, no padding) with the sub-layers run in ``order`` (indexes
    into :data:`SUBLAYERS`), the one at position i wrapped by ``RESIDUAL_RULES[rules[i]]`` with
    ``params[norms[i]]``; ``causal=False`` drops the self-attention's causal mask."""
    blocks = (lambda h: reference_attention(h, h, params["self_attn"], heads, self_mask(h) if causal else None),
              lambda h: reference_cross_attention(h, memory, params["cross_attn"], heads),
              lambda h: F.linear(F.relu(F.linear(h, params["ffn"]["weight1"], params["ffn"]["bias1"])),
                                 params["ffn"]["weight2"], params["ffn"]["bias2"]))
    for position, block in enumerate(order):
        x = RESIDUAL_RULES[rules[position]](x, blocks[block], _norm(params[norms[position]]))
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


def _diagnoses(x, memory, params, heads, norm_first: bool, name: str) -> list:
    """(the layer with one classic mistake, what it is, how to fix it), computed only when reached."""
    right = "pre" if norm_first else "post"
    rule = "x = x + sublayer(norm(x))" if norm_first else "x = norm(x + sublayer(x))"
    variant = functools.partial(layer_variant, x, memory, params, heads)
    found = [(functools.partial(variant, (wrong,) * 3),
              f"decoder_layer puts the residual connection and the layer norm in the wrong order for a {name} layer",
              hint) for wrong, hint in WRONG_ORDER_HINTS[norm_first].items()]
    for position, sublayer in enumerate(SUBLAYERS):
        rules = tuple(f"no_residual_{right}" if i == position else right for i in range(3))
        found.append((functools.partial(variant, rules),
                      f"decoder_layer has no residual connection around the {sublayer} ({name})",
                      f"every sub-layer adds its input back: {rule}, the {sublayer} included."))
    for norm in NORMS:
        found.append((functools.partial(variant, (right,) * 3, norms=(norm,) * 3),
                      f"decoder_layer uses params[{norm!r}] for every sub-layer ({name})",
                      "each sub-layer has its own LayerNorm with its own weights: params['norm1'] with the masked "
                      "self-attention, params['norm2'] with the cross-attention, params['norm3'] with the feed-forward."))
    for order in itertools.permutations(range(3)):
        if order != (0, 1, 2):
            ran = ", ".join(SUBLAYERS[i] for i in order)
            for norms in (NORMS, tuple(NORMS[i] for i in order)):
                found.append((functools.partial(variant, (right,) * 3, norms=norms, order=order),
                              f"decoder_layer runs the sub-layers in the wrong order: {ran} ({name})",
                              "masked self-attention first (the target reads what it has written so far), then "
                              "cross-attention (it reads the source), then the feed-forward; each reads the "
                              "previous one's output."))
    found.append((functools.partial(variant, (right,) * 3, causal=False),
                  f"decoder_layer's self-attention is not causal: each position reads the later ones ({name})",
                  "use masked_self_attention(h, params['self_attn'], num_heads, tgt_key_padding_mask), which builds "
                  "the causal mask, rather than multi_head_attention(h, h, ...) with the padding mask alone."))
    return found


def _check_placement(decoder_layer: Callable, norm_first: bool, seed: int) -> None:
    name = "pre-norm" if norm_first else "post-norm"
    for trial in trials(TRIALS + 1, seed=seed):  # the last one with a one-token source
        layer, params, heads, x, memory = random_layer(trial, norm_first, src_len=1 if trial.index == TRIALS else None)
        context = f"x {tuple(x.shape)}, memory {tuple(memory.shape)}, num_heads={heads}, norm_first={norm_first}"
        got = _call_layer(decoder_layer, x, memory, params, heads, norm_first, context=context)
        with torch.no_grad():
            expected = layer(x, memory, tgt_mask=self_mask(x))
        if is_close(got, expected):
            continue
        with torch.no_grad():
            diagnose(got, _diagnoses(x, memory, params, heads, norm_first, name), context=context)
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
