"""The transfer lab's distillation checks: DistilBERT's soft-target loss and its temperature.

Students write ``distillation_loss(student_logits (N, C), teacher_logits (N, C), temperature) -> scalar``:
T² · KL(softmax(teacher / T) ‖ softmax(student / T)), summed over the classes and averaged over the N
rows (``batchmean``). The reference is :func:`course_lib.transfer.distillation.distillation_loss`, pinned
to a direct ``torch`` formulation in tests/transfer.

Two cells, so each mistake costs one: :func:`check_soft_targets` grades the divergence itself at T = 1
(its direction, log-probabilities where they are needed, the mean over rows; identical logits give 0;
logits of ±1000, where a hand-written ``exp`` overflows); :func:`check_temperature` grades what the
temperature does, against the student's *own* function at T = 1: the loss at T must equal T² times the
loss of the logits divided by T (on both sides). So KL in the wrong direction fails only the first cell,
a missing T² only the second. A loss that does not depend on the logits cannot pass the second cell by
that identity: it must change when the logits do.

Classic mistakes named: KL(student ‖ teacher); ``F.kl_div`` given probabilities where it needs
log-probabilities; the soft cross-entropy (KL plus the teacher's entropy); ``reduction="mean"`` (÷ N·C) or
``"sum"``; T² missing or T instead of T²; the temperature on the student's side only, on the teacher's only,
or on neither. Not covered: gradients (the sandboxed grader exchanges values, not autograd graphs; a correct
value everywhere is the same function, hence the same gradient), the hard-label and cosine terms.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ...transfer.distillation import distillation_loss as library_distillation_loss
from ..toolkit import call_for_tensor, diagnose, expect_close, fail, is_close, trials

__all__ = ["check_soft_targets", "check_temperature", "reference_distillation_loss", "soft_target_cases",
           "temperature_cases"]


def reference_distillation_loss(student_logits, teacher_logits, temperature=2.0):
    """The lab's ``distillation_loss``: :func:`course_lib.transfer.distillation.distillation_loss`."""
    return library_distillation_loss(student_logits, teacher_logits, temperature)


def _loss(distillation_loss: Callable, student, teacher, temperature, context) -> torch.Tensor:
    value = call_for_tensor(distillation_loss, student, teacher, temperature, name="distillation_loss",
                            label="distillation_loss's result", context=context)
    if value.numel() != 1:
        fail(f"distillation_loss should return one number (a 0-d tensor), got shape {tuple(value.shape)} "
             f"(on {context})", "sum the KL over the classes and average over the rows: one number per batch.")
    return value.reshape(())


def _kl_rows(p_log, q_log):
    """KL(p ‖ q) per row, from log-probabilities (N, C) -> (N,)."""
    return (p_log.exp() * (p_log - q_log)).sum(dim=-1)


# --- the divergence itself (T = 1) -----------------------------------------------------------------

def soft_target_cases():
    """(student, teacher, context) at T = 1: random batches, then identical logits, one row, extreme logits."""
    for trial in trials(3, seed=2800):
        rows, classes = trial.randint(2, 6), trial.randint(2, 8)
        yield trial.randn(rows, classes) * 2, trial.randn(rows, classes) * 2, f"logits ({rows}, {classes})"
    for trial in trials(1, seed=2850):
        same = trial.randn(3, 4)
        yield same, same.clone(), "identical student and teacher logits (3, 4)"
        yield trial.randn(1, 5), trial.randn(1, 5), "one row, logits (1, 5)"
        offset = torch.tensor([[1000.0], [-1000.0], [500.0]], device=trial.device)
        yield offset + 3 * trial.randn(3, 6), -offset + 3 * trial.randn(3, 6), "extreme logits near ±1000 (3, 6)"


def check_soft_targets(distillation_loss: Callable) -> None:
    """At T = 1: KL(softmax(teacher) ‖ softmax(student)) summed over classes, averaged over rows."""
    for student, teacher, context in soft_target_cases():
        got = _loss(distillation_loss, student, teacher, 1.0, context)
        expected = reference_distillation_loss(student, teacher, 1.0)
        if is_close(got, expected):
            continue
        if not bool(torch.isfinite(got)):
            fail(f"distillation_loss gives {got.item()} where the answer is {expected.item():.6g} (on {context})",
                 "exp(1000) overflows: take log-probabilities with F.log_softmax(logits, dim=-1), which subtracts "
                 "each row's maximum first, never torch.exp(logits) by hand.")
        s_log, t_log = F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1)
        rows, classes = student.shape
        diagnose(got, [
            (_kl_rows(s_log, t_log).mean(), "distillation_loss computes KL(student ‖ teacher): the wrong direction",
             "the teacher's distribution is the target: KL(teacher ‖ student) = Σ p_teacher · (log p_teacher − "
             "log p_student). With F.kl_div(input, target) the input is the student's log-probabilities and the "
             "target the teacher's: F.kl_div(F.log_softmax(s), F.log_softmax(t), log_target=True, ...)."),
            ((t_log.exp() * (t_log - s_log.exp())).sum() / rows,
             "distillation_loss gives F.kl_div the student's probabilities (softmax) where it expects "
             "log-probabilities",
             "F.kl_div(input, target) assumes input is log-probabilities: pass F.log_softmax(student_logits / T, "
             "dim=-1), not F.softmax."),
            (-(t_log.exp() * s_log).sum() / rows,
             "distillation_loss computes the cross-entropy with the teacher's soft targets, not the KL divergence",
             "the two differ by the teacher's entropy (same gradients, but identical logits must give 0): add "
             "Σ p_teacher · log p_teacher, i.e. compute Σ p_teacher · (log p_teacher − log p_student)."),
            (_kl_rows(t_log, s_log).sum() / (rows * classes),
             'distillation_loss averages over rows × classes (reduction="mean")',
             'KL sums over the classes of each row, then averages over rows: reduction="batchmean" (or .sum() / N).'),
            (_kl_rows(t_log, s_log).sum(), 'distillation_loss sums over the rows (reduction="sum")',
             'average over the N rows: reduction="batchmean" (or .sum() / N), so the loss does not grow with the '
             "batch."),
        ], context=context)
        expect_close(got, expected, name="distillation_loss at T = 1", context=context,
                     hint="Σ_classes p_teacher · (log p_teacher − log p_student), averaged over the rows, with the "
                          "log-probabilities from F.log_softmax(logits, dim=-1).")


# --- the temperature -------------------------------------------------------------------------------

def temperature_cases():
    """(student, teacher, temperature, context): T above and below 1, large T, identical logits."""
    for trial, temperature in zip(trials(4, seed=2900), (2.0, 0.5, 4.0, 20.0)):
        rows, classes = trial.randint(2, 6), trial.randint(2, 8)
        student, teacher = trial.randn(rows, classes) * 3, trial.randn(rows, classes) * 3
        yield student, teacher, temperature, f"logits ({rows}, {classes}), T = {temperature:g}"
    for trial in trials(1, seed=2950):
        same = trial.randn(2, 5)
        yield same, same.clone(), 3.0, "identical logits (2, 5), T = 3"


def check_temperature(distillation_loss: Callable) -> None:
    """The loss at T equals T² × the student's own loss at T = 1 of both logits divided by T, and it depends on
    the logits (the divergence itself is graded by :func:`check_soft_targets`)."""
    for student, teacher, temperature, context in temperature_cases():
        got = _loss(distillation_loss, student, teacher, temperature, context)
        def own(s, t, _context=context):
            return _loss(distillation_loss, s, t, 1.0, f"{_context}, your function called at T = 1")
        softened = own(student / temperature, teacher / temperature)
        square = temperature ** 2
        if is_close(got, square * softened, rtol=1e-3):
            continue
        diagnose(got, [
            (softened, "distillation_loss softens both sides by T but does not multiply by T²",
             "dividing the logits by T shrinks the gradients by about 1/T²: multiply the loss by T ** 2 so that "
             "its share in the total loss stays the same whatever T (Hinton et al. 2015)."),
            (temperature * softened, "distillation_loss multiplies by T instead of T²",
             "the gradients shrink by 1/T² (one 1/T from each softened softmax's slope, one from the logits): "
             "multiply by T ** 2."),
            (lambda: square * own(student, teacher / temperature),
             "distillation_loss divides the teacher's logits by T but not the student's",
             "soften both sides: F.log_softmax(student_logits / T) against F.log_softmax(teacher_logits / T)."),
            (lambda: square * own(student / temperature, teacher),
             "distillation_loss divides the student's logits by T but not the teacher's",
             "soften both sides: the teacher's softened distribution is the target, F.log_softmax(teacher_logits / T)."),
            (lambda: square * own(student, teacher), "distillation_loss multiplies by T² but never divides the logits by T",
             "the temperature softens both distributions: divide both logits by T before the (log-)softmax."),
            (lambda: own(student, teacher), "distillation_loss ignores the temperature",
             "divide both logits by T before the (log-)softmax, and multiply the loss by T ** 2."),
        ], context=context, matches=lambda a, b: is_close(a, b, rtol=1e-3))
        expect_close(got, square * softened, name="distillation_loss", context=context, rtol=1e-3,
                     hint="T ** 2 × KL(softmax(teacher / T) ‖ softmax(student / T)): divide both logits by T, "
                          "then multiply the loss by T ** 2.")
    trial = next(trials(1, seed=2990))
    student, teacher = trial.randn(3, 4) * 3, trial.randn(3, 4) * 3
    first = _loss(distillation_loss, student, teacher, 2.0, "logits (3, 4), T = 2")
    second = _loss(distillation_loss, student.flip(0), teacher, 2.0, "other logits (3, 4), T = 2")
    if is_close(first, second):
        fail(f"distillation_loss gives {first.item():.6g} for two different batches at T = 2",
             "the loss must depend on the logits: T ** 2 × KL(softmax(teacher / T) ‖ softmax(student / T)).")
