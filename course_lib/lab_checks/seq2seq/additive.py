"""The seq2seq lab's additive-attention checks: the weights, the padding mask, the context vector.

``additive_attention(query (B, D_q), keys (B, S, D_k), W_q (A, D_q), W_k (A, D_k), v (A,),
key_padding_mask (B, S) | None) -> (context (B, D_k), weights (B, S))`` is compared with
:class:`course_lib.AdditiveAttention` holding the same weights
(:func:`~course_lib.lab_checks.references.reference_additive_attention`).

Besides random cases: a one-token source (weights and context) and padding in every sentence. Each
classic mistake costs only its cell: :func:`check_additive_padding` accepts a softmax over either
axis (the axis is :func:`check_additive_weights`' business, which names a softmax over the batch, raw
scores and a missing tanh with :func:`~course_lib.lab_checks.toolkit.diagnose`), and
:func:`check_additive_context` compares with the reference context, or, when the weights are wrong
(the weights cell's), with those weights applied to the keys, provided no sentence's weights are all
zero. Contexts of the wrong shape are named: the projected keys averaged, ``weights @ keys``
broadcast to (B, B, D_k), a sum over the batch or the features, an axis left to squeeze.

Not covered: the RNN encoder-decoder around it (the chapter's business), the rubric (:mod:`.seq2seq`).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..toolkit import ATOL, RTOL, Trial, call_student, diagnose, expect_close, expect_results, expect_tensor, fail, is_close, trials
from .references import random_padding, reference_additive_attention

__all__ = ["check_additive_weights", "check_additive_padding", "check_additive_context"]

TRIALS = 5


def _random_additive(trial: Trial, src_len: int | None = None):
    """query (B, D_q), keys (B, S, D_k), W_q (A, D_q), W_k (A, D_k), v (A,) with B ≠ S and A ≠ D_k (S = ``src_len``
    if given: 1 is a one-token source)."""
    batch = trial.randint(2, 4)
    src_len = trial.randint(2, 7) if src_len is None else src_len
    if src_len == batch:
        src_len += 1
    d_q, d_k, a = (3, 5)[trial.randint(0, 1)], (4, 6)[trial.randint(0, 1)], (7, 8)[trial.randint(0, 1)]
    query, keys = trial.randn(batch, d_q), trial.randn(batch, src_len, d_k)
    w_q, w_k = trial.randn(a, d_q) / math.sqrt(d_q), trial.randn(a, d_k) / math.sqrt(d_k)
    return query, keys, w_q, w_k, trial.randn(a)


def _same_with_nan(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """:func:`~..toolkit.is_close`, with NaN matching NaN."""
    return actual.shape == expected.shape and bool(torch.allclose(actual.float(), expected.float(), atol=ATOL,
                                                                  rtol=RTOL, equal_nan=True))


def _additive_scores(query, keys, w_q, w_k, v):
    return torch.tanh(F.linear(query, w_q)[:, None, :] + F.linear(keys, w_k)) @ v  # (B, S)


def _additive_context(query, keys, mask=None) -> str:
    text = f"query {tuple(query.shape)}, keys {tuple(keys.shape)}"
    return text if mask is None else f"{text}, key_padding_mask {tuple(mask.shape)} with lengths {mask.sum(1).tolist()}"


def _run_additive(additive_attention: Callable, query, keys, w_q, w_k, v, mask=None, *, to_device=True):
    context = _additive_context(query, keys, mask)
    result = call_student(additive_attention, query, keys, w_q, w_k, v, mask, name="additive_attention")
    out, weights = expect_results(result, ("context", "weights"), function="additive_attention", context=context)
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
    for trial in trials(TRIALS + 1, seed=100):  # the last one with a one-token source
        query, keys, w_q, w_k, v = _random_additive(trial, 1 if trial.index == TRIALS else None)
        _, weights = _run_additive(additive_attention, query, keys, w_q, w_k, v)
        _, expected = reference_additive_attention(query, keys, w_q, w_k, v)
        if is_close(weights, expected):
            continue
        context = _additive_context(query, keys)
        scores = _additive_scores(query, keys, w_q, w_k, v)
        linear_scores = (F.linear(query, w_q)[:, None, :] + F.linear(keys, w_k)) @ v
        diagnose(weights, [
            (torch.softmax(scores, dim=0), "the weights sum to 1 over the batch axis, not over the source positions",
             "scores has shape (B, S): one row per sentence. softmax(dim=0) mixes different sentences of the "
             "batch; each sentence's weights must be a distribution over its own source positions: "
             "torch.softmax(scores, dim=-1)."),
            (scores, "the weights are the raw scores: they do not sum to 1",
             "turn the scores into weights with torch.softmax(scores, dim=-1)."),
            (torch.softmax(linear_scores, dim=-1), "the weights are softmax(vᵀ(W_q q + W_k k)): the tanh is missing",
             "the additive score is vᵀ tanh(W_q q + W_k k): without the tanh the query's term is the same for "
             "every source position and cancels in the softmax, so the weights ignore the query."),
        ], context=context)
        fail(f"the weights are not softmax over the source positions of vᵀ tanh(W_q q + W_k k) (on {context})",
             "W_q and W_k are stored like nn.Linear weights, (A, D): project with F.linear(query, W_q) (= query @ W_q.T) "
             "and F.linear(keys, W_k); add the projected query to every projected key ([:, None, :]), take tanh, "
             "multiply by v, then softmax over dim=-1.")


def check_additive_padding(additive_attention: Callable) -> None:
    """With a key_padding_mask (True = real token), padded positions get weight 0 and the rest stays a softmax."""
    for trial in trials(TRIALS + 1, seed=200):  # the last one with padding in every sentence
        query, keys, w_q, w_k, v = _random_additive(trial)
        mask = random_padding(trial, *keys.shape[:2], full_row=trial.index < TRIALS)
        _, weights = _run_additive(additive_attention, query, keys, w_q, w_k, v, mask)
        context = _additive_context(query, keys, mask)
        masked = _additive_scores(query, keys, w_q, w_k, v).masked_fill(~mask, float("-inf"))
        if is_close(weights, torch.softmax(masked, dim=-1)) or _same_with_nan(weights, torch.softmax(masked, dim=0)):
            continue  # the softmax axis is check_additive_weights' business (over the batch a padded column is NaN)
        if torch.isnan(weights).any():
            fail(f"the weights contain NaN (on {context})",
                 "every sentence has at least one real token here, so no row of scores should be all -inf: "
                 "fill with -inf only where key_padding_mask is False (True means a real token).")
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
    """The context is the reference's, (B, D_k): the weights applied to the keys (the encoder states).

    When the weights are wrong (the weights cell's business) the context must be *those* weights applied to
    the keys, and weights with a row of zeros are no excuse: without padding no sentence attends to nothing.
    """
    for trial in trials(TRIALS + 1, seed=300):  # the last one with a one-token source
        query, keys, w_q, w_k, v = _random_additive(trial, 1 if trial.index == TRIALS else None)
        out, weights = _run_additive(additive_attention, query, keys, w_q, w_k, v, to_device=False)
        context = _additive_context(query, keys)
        batch, src_len, d_k = keys.shape
        if tuple(out.shape) == (batch, w_k.shape[0]):
            fail(f"context has shape {tuple(out.shape)} = (B, A): it averages the projected keys W_k k "
                 f"(on {context})",
                 "W_k k only serves the score; the context averages the encoder states themselves: "
                 "(weights[:, :, None] * keys).sum(dim=1), shape (B, D_k).")
        if tuple(out.shape) == (batch, batch, d_k):
            fail(f"context has shape {tuple(out.shape)} = (B, B, D_k): weights @ keys broadcasts the (B, S) weights "
                 f"over the batch, so every sentence's weights meet every sentence's keys (on {context})",
                 "give each sentence's weights a row axis of their own: (weights[:, None, :] @ keys).squeeze(1), "
                 "torch.bmm(weights.unsqueeze(1), keys).squeeze(1), or (weights[:, :, None] * keys).sum(dim=1).")
        if tuple(out.shape) == (batch, 1, d_k):
            fail(f"context has shape {tuple(out.shape)}, expected (B, D_k) = {(batch, d_k)} (on {context})",
                 "weights[:, None, :] @ keys gives (B, 1, D_k): .squeeze(1) it.")
        if tuple(out.shape) == (src_len, d_k) and src_len != batch:
            fail(f"context has shape {tuple(out.shape)} = (S, D_k): the sum runs over the batch axis (on {context})",
                 "sum the weighted keys over the source positions: (weights[:, :, None] * keys).sum(dim=1).")
        if tuple(out.shape) == (batch, src_len) and src_len != d_k:
            fail(f"context has shape {tuple(out.shape)} = (B, S): the sum runs over the features (on {context})",
                 "sum the weighted keys over the source positions, dim=1, keeping the features: "
                 "(weights[:, :, None] * keys).sum(dim=1).")
        expect_tensor(out, name="context", shape=(batch, d_k), dtype=keys.dtype, device=keys.device, context=context)
        out, weights = out.to(keys.device), weights.to(keys.device)
        expected_context, expected_weights = reference_additive_attention(query, keys, w_q, w_k, v)
        if is_close(out, expected_context):
            continue
        hint = ("the context is the weighted average of the keys with the weights you return: "
                "(weights[:, :, None] * keys).sum(dim=1).")
        if is_close(weights, expected_weights):
            expect_close(out, expected_context, name="context", context=f"{context}; your weights are right", hint=hint)
        if not (weights.abs().sum(-1) > 0).all():
            fail(f"context differs from the reference, and the weights of some sentence are all 0 (on {context})",
                 "without padding every sentence attends to its source: weights = softmax(scores, dim=-1), "
                 "then context = (weights[:, :, None] * keys).sum(dim=1).")
        expect_close(out, (weights[:, :, None] * keys).sum(dim=1), name="context",
                     context=f"{context}; expected your weights applied to the keys", hint=hint)
