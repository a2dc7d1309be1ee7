"""The transfer lab's pooling checks: one vector per sentence from the encoder's hidden states.

Students write ``pool(hidden (B, T, D), attention_mask (B, T), how) -> (B, D)``: ``how="cls"`` gives the
first position's vector (where ``[CLS]`` sits), ``how="mean"`` the mean over the real tokens only
(``attention_mask`` 1), padding excluded. The reference is :func:`course_lib.transfer.heads.pool`, the
library's classification heads' pooling. Padding sits at the end of a row and its hidden states are
random numbers, as a real encoder's are (never zeros, which would hide a mean over padding).

Inputs: random batches with padding in every batch (and one full row), a batch whose rows hold T, 1 and
2 real tokens, a batch without padding, and T = 1. The two ways of pooling are two cells, so a student
whose ``"mean"`` is wrong keeps the ``"cls"`` point and the other way round. Classic mistakes named:
[CLS] from the last position or the last real token, the mean over padding too, the masked sum divided
by T or not divided at all.

Not covered: BERT's pooler (dense + tanh, the library's head applies it after this), left padding.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...transfer.heads import pool as library_pool
from ..toolkit import call_for_tensor, diagnose, expect_close, is_close, trials

__all__ = ["check_pool_cls", "check_pool_mean", "reference_pool", "pool_cases"]


def reference_pool(hidden, attention_mask, how="cls"):
    """The lab's ``pool``: :func:`course_lib.transfer.heads.pool`."""
    return library_pool(hidden, attention_mask, how)


def _batch(trial, lengths, length, width):
    """hidden (B, T, D) with random values everywhere (padding too) and a mask that is 1 for each row's first
    ``lengths[b]`` positions."""
    mask = (torch.arange(length)[None, :] < torch.as_tensor(lengths)[:, None]).long().to(trial.device)
    return trial.randn(len(lengths), length, width), mask


def pool_cases():
    """(hidden, attention_mask, context) for both cells: padding in every random batch, then the edge cases."""
    for trial in trials(3, seed=2600):
        rows, length, width = trial.randint(2, 5), trial.randint(3, 9), trial.randint(2, 8)
        lengths = [trial.randint(1, length) for _ in range(rows)]
        lengths[0], lengths[-1] = length, min(lengths[-1], length - 1)  # one full row, one padded row at least
        hidden, mask = _batch(trial, lengths, length, width)
        yield hidden, mask, f"hidden {tuple(hidden.shape)}, real tokens per row {lengths}"
    for trial in trials(1, seed=2650):
        hidden, mask = _batch(trial, [5, 1, 2], 5, 4)
        yield hidden, mask, "rows of 5, 1 and 2 real tokens"
        hidden, mask = _batch(trial, [4, 4], 4, 3)
        yield hidden, mask, "no padding: every row is all real tokens"
        hidden, mask = _batch(trial, [1, 1, 1], 1, 6)
        yield hidden, mask, "one token per row (T = 1)"


def _pooled(pool: Callable, hidden, mask, how, context):
    rows, _, width = hidden.shape
    return call_for_tensor(pool, hidden, mask, how, name="pool", label=f'pool(..., "{how}")',
                           shape=(rows, width), context=context)


def check_pool_cls(pool: Callable) -> None:
    """``how="cls"``: the vector at position 0 of every row, whatever the padding."""
    for hidden, mask, context in pool_cases():
        got = _pooled(pool, hidden, mask, "cls", context)
        expected = reference_pool(hidden, mask, "cls")
        if is_close(got, expected):
            continue
        last_real = hidden[torch.arange(len(hidden)), mask.sum(dim=1) - 1]
        diagnose(got, [
            (hidden[:, -1], 'pool(..., "cls") takes the last position, which is padding in a padded row',
             "[CLS] is the first token BERT reads: hidden[:, 0]. (GPT-style models read the last token; BERT puts "
             "its summary token first.)"),
            (last_real, 'pool(..., "cls") takes each row\'s last real token',
             "that is a causal model's choice; BERT's [CLS] is at position 0 of every row: hidden[:, 0]."),
            (lambda: reference_pool(hidden, mask, "mean"), 'pool(..., "cls") returns the masked mean',
             'look at `how`: "cls" is the first position\'s vector, "mean" the masked mean.'),
            (hidden.mean(dim=1), 'pool(..., "cls") returns the mean over all positions',
             'look at `how`: "cls" is the first position\'s vector, hidden[:, 0].'),
        ], context=context)
        expect_close(got, expected, name='pool(..., "cls")', context=context,
                     hint="[CLS] sits at position 0: return hidden[:, 0], shape (B, D).")


def check_pool_mean(pool: Callable) -> None:
    """``how="mean"``: per row, the average of the hidden states where the mask is 1."""
    for hidden, mask, context in pool_cases():
        got = _pooled(pool, hidden, mask, "mean", context)
        expected = reference_pool(hidden, mask, "mean")
        if is_close(got, expected):
            continue
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        masked_sum = (hidden * weights).sum(dim=1)  # (B, D)
        diagnose(got, [
            (hidden.mean(dim=1), 'pool(..., "mean") averages over the padding too',
             "padding is not part of the sentence: multiply by the mask, mask = attention_mask.unsqueeze(-1), "
             "then (hidden * mask).sum(dim=1) / mask.sum(dim=1), so the count is the row's real tokens."),
            (masked_sum / hidden.shape[1], 'pool(..., "mean") sums the real tokens but divides by T, every row\'s '
             "full length",
             "divide each row by its own number of real tokens, attention_mask.sum(dim=1, keepdim=True), not by "
             "hidden.shape[1]: a short row would come out shrunk towards 0."),
            (masked_sum, 'pool(..., "mean") returns the sum of the real tokens, not their mean',
             "divide by the number of real tokens per row: attention_mask.sum(dim=1, keepdim=True)."),
            (lambda: reference_pool(hidden, mask, "cls"), 'pool(..., "mean") returns the first position',
             'look at `how`: "mean" is the masked mean of all real tokens.'),
        ], context=context)
        expect_close(got, expected, name='pool(..., "mean")', context=context,
                     hint="(hidden * m).sum(dim=1) / m.sum(dim=1) with m = attention_mask.unsqueeze(-1).float(), "
                          "shape (B, D).")
