"""The decoding lab's finished-hypothesis check: the length-normalised score beam search ranks finished beams by.

The reference, :func:`reference_finished_score`, is HF's (and :func:`course_lib.decoding.beam_search`'s):
``sum log p / generated_length ** length_penalty``, EOS counted, the prompt not; ``tests/labs/test_decoding.py``
pins that it picks the sequence the library's beam search returns. The classic wrong normalisations are
named by :func:`~course_lib.lab_checks.toolkit.diagnose`.

Not covered: the finished list itself, early stopping (``course_lib.decoding.beam_search``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..toolkit import call_student, diagnose, expect_close, expect_tensor, is_close, trials

__all__ = ["check_finished_score", "reference_finished_score"]


def reference_finished_score(sum_log_probs, sequence_length, prompt_length, length_penalty):
    """HF's (and :func:`course_lib.decoding.beam_search`'s) score of a finished hypothesis:
    ``sum log p / generated_length ** length_penalty``, EOS counted, the prompt not."""
    return sum_log_probs / (sequence_length - prompt_length) ** length_penalty


def check_finished_score(finished_score: Callable) -> None:
    """``finished_score(sum_log_probs, sequence_length, prompt_length, length_penalty)`` =
    sum_log_probs / (sequence_length - prompt_length) ** length_penalty."""
    for trial, penalty in zip(trials(6, seed=1800), (1.0, 2.0, 0.5, 1.5, -0.5, 1.0)):
        count, prompt_length = trial.randint(2, 5), trial.randint(2, 6)
        generated = torch.randint(2, 12, (count,), generator=trial.generator).to(trial.device)
        sequence_length = prompt_length + generated
        sums = -(trial.randn(count).abs() * 4 + 0.5)
        context = (f"sum_log_probs {[round(s, 3) for s in sums.tolist()]}, sequence_length "
                   f"{sequence_length.tolist()}, prompt_length={prompt_length}, length_penalty={penalty}")
        got = call_student(finished_score, sums, sequence_length, prompt_length, penalty, name="finished_score")
        expect_tensor(got, name="finished_score(...)", shape=(count,), context=context)
        expected = reference_finished_score(sums, sequence_length, prompt_length, penalty)
        if is_close(got, expected):
            continue
        lengths = generated.float()
        diagnose(got, [
            (sums, "the score is not length-normalized",
             "divide by the generated length raised to length_penalty; without it, beam search prefers "
             "short hypotheses (every token adds a negative log-probability)."),
            (sums / sequence_length.float() ** penalty,
             "the score is divided by the whole sequence length, prompt included",
             "the length counts generated tokens only (EOS included, the prompt not): "
             "sequence_length - prompt_length, as in HF."),
            (sums / (lengths - 1) ** penalty, "the score is divided by the generated length without the EOS token",
             "the end token counts: generated length = sequence_length - prompt_length."),
            (sums / lengths, "length_penalty is ignored",
             "raise the length to the power length_penalty: length ** length_penalty "
             "(1 = average log-probability per token, 0 = no normalization)."),
            (sums * lengths ** penalty, "the score is multiplied by the length instead of divided",
             "divide: sum_log_probs / length ** length_penalty."),
        ], context=context)
        expect_close(got, expected, name="finished_score(...)", context=context,
                     hint="sum_log_probs / (sequence_length - prompt_length) ** length_penalty.")
