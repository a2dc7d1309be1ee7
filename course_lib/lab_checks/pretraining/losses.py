"""The pretraining lab's loss checks: the masked-LM loss, the causal-LM label shift and the causal-LM loss.

Students write ``mlm_loss(logits (B, T, V), input_ids (B, T), chosen (B, T)) -> scalar`` (the mean
cross-entropy over the chosen positions, whose targets are the original ids; 0 when nothing is
chosen), ``shift_labels(input_ids, attention_mask) -> targets (B, T)`` (``targets[:, t] =
input_ids[:, t + 1]``; -100 at the last position and where the next token is padding) and
``causal_lm_loss(logits, input_ids, attention_mask) -> scalar``. The references are
:func:`course_lib.pretraining.masking.mlm_loss`, ``shift_labels`` and ``causal_lm_loss``, themselves
pinned to HF's ``BertForMaskedLM``/``RobertaForMaskedLM`` and ``GPT2LMHeadModel`` losses. Nothing
here is random beyond the seeded inputs, so the checks compare values (fp32, the toolkit's tolerance).

Targeted cases after random ones: rows with nothing chosen next to rows with everything chosen (the
mean runs over the batch's chosen positions, not row by row), a batch with nothing chosen (0, not nan:
the library's choice, where HF gives nan), padded rows, one-token rows and a batch with nothing to predict.

Each classic mistake costs only its cell: a loss over every position, or a mean over all positions, or
nan for an empty batch fails :func:`check_mlm_loss`; unshifted targets, a shift the wrong way, a
``torch.roll`` that wraps the first token round to the end, or padding kept as a target fail
:func:`check_shift`; a loss that shifts the already shifted targets again (logits ``[:, :-1]`` against
targets ``[:, 1:]``) fails :func:`check_causal_loss` only, since ``shift_labels`` is the reference there.

Not covered: the masking (:mod:`.masking`), left padding (the lab pads at the end), the rubric.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ...pretraining.masking import (
    IGNORE_INDEX, causal_lm_loss as library_causal_lm_loss, mlm_loss as library_mlm_loss,
    shift_labels as library_shift_labels,
)
from ..toolkit import call_for_tensor, diagnose, expect_close, fail, is_close, trials

__all__ = [
    "check_mlm_loss", "check_shift", "check_causal_loss",
    "reference_mlm_loss", "reference_shift_labels", "reference_causal_lm_loss",
]


# --- references ------------------------------------------------------------------------------

def reference_mlm_loss(logits, input_ids, chosen):
    """The lab's ``mlm_loss``: the library's on labels that are the original ids where chosen, -100 elsewhere."""
    return library_mlm_loss(logits, input_ids.masked_fill(~chosen.bool(), IGNORE_INDEX))


def reference_shift_labels(input_ids, attention_mask):
    """The lab's ``shift_labels``: :func:`course_lib.pretraining.masking.shift_labels`."""
    return library_shift_labels(input_ids, attention_mask)


def reference_causal_lm_loss(logits, input_ids, attention_mask):
    """The lab's ``causal_lm_loss``: :func:`course_lib.pretraining.masking.causal_lm_loss`."""
    return library_causal_lm_loss(logits, input_ids, attention_mask)


def _padded(trial, rows, length, vocab_size, lengths=None):
    """(ids, attention_mask) padded at the end with id 1, rows of random lengths unless ``lengths`` is given."""
    ids = torch.randint(5, vocab_size, (rows, length), generator=trial.generator)
    if lengths is None:
        lengths = torch.randint(1, length + 1, (rows,), generator=trial.generator)
        lengths[0] = length
    attention = (torch.arange(length)[None, :] < torch.as_tensor(lengths)[:, None]).long()
    return ids.masked_fill(attention == 0, 1).to(trial.device), attention.to(trial.device)


def _scalar(function, *args, name, context):
    value = call_for_tensor(function, *args, name=name, label=f"{name}'s result", context=context)
    if value.numel() != 1:
        fail(f"{name} should return one number (a 0-d tensor), got shape {tuple(value.shape)} ({context})",
             "average over the positions that have a target: the loss of the batch is a single number.")
    return value.reshape(())


# --- mlm_loss --------------------------------------------------------------------------------

def _mlm_cases():
    for trial in trials(3, seed=1600):
        rows, length, vocab = trial.randint(2, 6), trial.randint(4, 12), trial.randint(10, 40)
        ids = torch.randint(0, vocab, (rows, length), generator=trial.generator).to(trial.device)
        chosen = trial.rand_bool(rows, length, p=0.3)
        chosen[0, 0] = True
        yield trial.randn(rows, length, vocab), ids, chosen, f"logits ({rows}, {length}, {vocab}), {int(chosen.sum())} chosen"
    for trial in trials(1, seed=1650):
        ids = torch.randint(0, 20, (4, 6), generator=trial.generator).to(trial.device)
        chosen = torch.zeros(4, 6, dtype=torch.bool, device=trial.device)
        chosen[1] = True  # one row all chosen, one with a single chosen position, two with none
        chosen[3, 2] = True
        logits = trial.randn(4, 6, 20)
        yield logits, ids, chosen, "rows with nothing chosen beside an all-chosen row"
        yield logits, ids, torch.zeros_like(chosen), "a batch with nothing chosen"


def check_mlm_loss(mlm_loss: Callable) -> None:
    """Mean cross-entropy over the batch's chosen positions (targets: the original ids); 0 when none is chosen."""
    for logits, ids, chosen, context in _mlm_cases():
        got = _scalar(mlm_loss, logits, ids, chosen, name="mlm_loss", context=context)
        expected = reference_mlm_loss(logits, ids, chosen)
        if is_close(got, expected):
            continue
        if not bool(chosen.any()):
            fail(f"mlm_loss gives {got.item():.4g} for a batch with nothing chosen; the course's rule is 0 ({context})",
                 "with no target the mean is 0 / 0 (nan), which would poison a running loss: "
                 "if not chosen.any(): return logits.sum() * 0 (a 0 that backward accepts).")
        every = F.cross_entropy(logits.flatten(0, 1), ids.flatten())
        per_position = F.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="none").reshape(ids.shape)
        per_row = [per_position[row][chosen[row]].mean() for row in range(len(ids)) if chosen[row].any()]
        diagnose(got, [
            (every, "mlm_loss averages the loss over every position, the unchosen ones included",
             "only the chosen positions have a target: the model sees the others as they are, so predicting them "
             "is copying. Use labels = input_ids where chosen, -100 elsewhere (cross_entropy ignores -100)."),
            ((per_position * chosen).sum() / chosen.numel(),
             "mlm_loss sums the chosen positions' losses but divides by all B·T positions",
             "divide by the number of chosen positions (chosen.sum()), as cross_entropy with ignore_index does."),
            (lambda: torch.stack(per_row).mean(),
             "mlm_loss averages each row's chosen positions, then the rows",
             "one mean over all the batch's chosen positions: a row with 1 chosen token must not weigh as much as "
             "a row with 6."),
        ], context=context)
        expect_close(got, expected, name="mlm_loss", context=context,
                     hint="cross_entropy(logits.reshape(-1, V), labels.reshape(-1)) with labels = input_ids where chosen "
                          "and -100 elsewhere.")


# --- shift_labels ----------------------------------------------------------------------------

def _shift_cases():
    for trial in trials(3, seed=1700):
        ids, attention = _padded(trial, trial.randint(2, 5), trial.randint(2, 10), 50)
        yield ids, attention, f"input_ids {tuple(ids.shape)}, padded at the end"
    for trial in trials(1, seed=1750):
        ids, attention = _padded(trial, 3, 5, 30, lengths=[5, 1, 2])
        yield ids, attention, "rows of 5, 1 and 2 tokens"
        yield ids[:, :1], attention[:, :1], "one token per row"


def check_shift(shift_labels: Callable) -> None:
    """``targets[:, t] = input_ids[:, t + 1]``; -100 at the last position and where the next token is padding."""
    for ids, attention, context in _shift_cases():
        got = call_for_tensor(shift_labels, ids, attention, name="shift_labels", label="targets",
                              shape=tuple(ids.shape), context=context).to(ids.device).long()
        expected = reference_shift_labels(ids, attention)
        if torch.equal(got, expected):
            continue
        unpadded = library_shift_labels(ids)
        ignore = torch.full_like(ids[:, :1], IGNORE_INDEX)
        padded_ids = ids.masked_fill(attention == 0, IGNORE_INDEX)
        twice = torch.cat([padded_ids[:, 2:], ignore, ignore], dim=1)[:, :ids.shape[1]]
        backward = torch.cat([ignore, padded_ids[:, :-1]], dim=1)
        diagnose(got, [
            (ids, "shift_labels returns the input ids unshifted: position t would learn to copy its own token",
             "position t predicts the *next* token: targets[:, t] = input_ids[:, t + 1], and the last position "
             "gets -100 (nothing follows it)."),
            (padded_ids, "shift_labels only puts -100 at padding: the targets are not shifted",
             "targets[:, :-1] = input_ids[:, 1:] (position t predicts token t + 1), the last column -100."),
            (torch.roll(padded_ids, -1, dims=1),
             "shift_labels wraps around (torch.roll): the last position's target is the row's first token",
             "nothing follows the last token: shift with a slice, input_ids[:, 1:], and append a column of -100."),
            (backward, "shift_labels shifts the wrong way: position t gets token t - 1, which it has already seen",
             "targets[:, t] = input_ids[:, t + 1]: drop the first column, not the last."),
            (twice, "shift_labels shifts by two positions: position t gets token t + 2",
             "shift once: targets[:, :-1] = input_ids[:, 1:]."),
            (unpadded, "shift_labels keeps padding as a target: the model would learn to predict <pad>",
             "set the target to -100 wherever the next token is padding: attention_mask[:, 1:] == 0."),
        ], context=context, matches=torch.equal)
        wrong = torch.nonzero(got != expected)[0].tolist()
        fail(f"targets differ from the shifted ids at {tuple(wrong)}: got {got[tuple(wrong)].item()}, "
             f"expected {expected[tuple(wrong)].item()} ({context})",
             "targets[:, t] = input_ids[:, t + 1] where attention_mask[:, t + 1] is 1, -100 elsewhere and at the end.")


# --- causal_lm_loss --------------------------------------------------------------------------

def _causal_cases():
    for trial in trials(3, seed=1800):
        ids, attention = _padded(trial, trial.randint(2, 5), trial.randint(3, 10), 30)
        yield trial.randn(*ids.shape, 30), ids, attention, f"logits {(*ids.shape, 30)}, padded at the end"
    for trial in trials(1, seed=1850):
        ids, attention = _padded(trial, 2, 4, 20, lengths=[4, 4])
        yield trial.randn(2, 4, 20), ids, attention, "logits (2, 4, 20), no padding"
        yield trial.randn(2, 1, 20), ids[:, :1], attention[:, :1], "one token per row: nothing to predict"


def check_causal_loss(causal_lm_loss: Callable) -> None:
    """Mean cross-entropy of each position's logits against the next real token; 0 when nothing is predicted."""
    for logits, ids, attention, context in _causal_cases():
        got = _scalar(causal_lm_loss, logits, ids, attention, name="causal_lm_loss", context=context)
        expected = reference_causal_lm_loss(logits, ids, attention)
        if is_close(got, expected):
            continue
        targets = reference_shift_labels(ids, attention)
        if not bool((targets != IGNORE_INDEX).any()):
            fail(f"causal_lm_loss gives {got.item():.4g} when no position has a next token; the rule is 0 ({context})",
                 "with no target the mean is 0 / 0 (nan): return logits.sum() * 0 when (targets != -100) has no True.")
        twice = torch.cat([targets[:, 1:], torch.full_like(targets[:, :1], IGNORE_INDEX)], dim=1)
        unshifted = ids.masked_fill(attention == 0, IGNORE_INDEX)
        diagnose(got, [
            (lambda: library_mlm_loss(logits, twice),
             "causal_lm_loss shifts the targets twice: shift_labels already pairs position t with token t + 1, and "
             "logits[:, :-1] against targets[:, 1:] pairs it with t + 2",
             "shift_labels does the shift: compare logits at every position with its target, "
             "cross_entropy(logits.reshape(-1, V), shift_labels(input_ids, attention_mask).reshape(-1))."),
            (lambda: library_mlm_loss(logits, unshifted),
             "causal_lm_loss compares each position with its own token: the targets are not shifted",
             "use shift_labels(input_ids, attention_mask) as the targets: position t predicts token t + 1."),
            (lambda: library_mlm_loss(logits, library_shift_labels(ids)),
             "causal_lm_loss counts padding as a target",
             "pass attention_mask to shift_labels so that padded targets are -100."),
        ], context=context)
        expect_close(got, expected, name="causal_lm_loss", context=context,
                     hint="the mean cross-entropy over the positions whose target (shift_labels) is not -100.")
