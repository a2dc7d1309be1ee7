"""The seq2seq lab's decoder attention checks: masked self-attention and cross-attention.

``masked_self_attention(x, p, num_heads, key_padding_mask)`` and ``cross_attention(x, memory, p,
num_heads, memory_key_padding_mask)``, built on the notebook's locked ``multi_head_attention`` (the
same maths as :class:`course_lib.MultiHeadAttention`), are compared with the references of
:mod:`.references`, on random cases with padding in every row and on a one-token source. Each
classic mistake costs only its cell: :func:`check_self_attention_padding` accepts a missing causal
mask (:func:`check_causal_self_attention` catches it).

Not covered: the decoder layer (:mod:`.layer`), the rubric (:mod:`course_lib.lab_checks.seq2seq`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..toolkit import call_for_tensor, close_to_any, diagnose, expect_close, expect_tensor, fail, is_close, trials
from .references import (
    random_attention_case, random_padding, reference_attention, reference_cross_attention, reference_self_attention,
    self_mask,
)

__all__ = ["check_causal_self_attention", "check_self_attention_padding", "check_cross_attention"]

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
    for trial in trials(TRIALS + 1, seed=600):  # the last one with a one-token source
        p, heads, x, memory = random_attention_case(trial, src_len=1 if trial.index == TRIALS else None)
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
