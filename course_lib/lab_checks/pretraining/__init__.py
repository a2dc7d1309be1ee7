"""Hidden checks of lab 07, pretraining: the masking rule, the masked-LM loss, the causal-LM shift and loss.

``RUBRIC`` lists the graded cells of ``labs/source/07_pretraining/pretraining.ipynb`` with their points
and checks, ``REFERENCES`` the course's version of every function the lab asks for (built on
:mod:`course_lib.pretraining.masking`). The checks live in two parts: :mod:`.masking`
(``choose_positions``, ``corrupt``: the rule exactly, the rates statistically, so a solution drawing its
random numbers in another order is not failed) and :mod:`.losses` (``mlm_loss``, ``shift_labels``,
``causal_lm_loss``: values against the library); each part's docstring says how its classic mistakes
cost only their own cell.

Everything a check exchanges with student code is tensors, ints and floats (a seed, never a
``torch.Generator``), so the sandboxed grader (:mod:`course_grader.autograder`) can grade the lab too.
Not covered: the models (the chapter's business), whole-word masking, left padding.
"""
from __future__ import annotations

from ..rubric import Criterion, Rubric
from .losses import (
    check_causal_loss, check_mlm_loss, check_shift, reference_causal_lm_loss, reference_mlm_loss,
    reference_shift_labels,
)
from .masking import check_choose, check_corrupt, check_corrupt_rates, reference_choose, reference_corrupt

__all__ = ["REFERENCES", "RUBRIC"]

# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "choose_positions": reference_choose,
    "corrupt": reference_corrupt,
    "mlm_loss": reference_mlm_loss,
    "shift_labels": reference_shift_labels,
    "causal_lm_loss": reference_causal_lm_loss,
}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_choose", 2, check_choose, ("choose_positions",),
              "ordinary tokens chosen with the given probability; special tokens and padding never"),
    Criterion("test_corrupt", 2, check_corrupt, ("corrupt",),
              "only chosen positions change, into <mask> or a random ordinary id"),
    Criterion("test_corrupt_rates", 1, check_corrupt_rates, ("corrupt",), "80 % mask, 10 % random, 10 % kept"),
    Criterion("test_mlm_loss", 2, check_mlm_loss, ("mlm_loss",),
              "mean cross-entropy over the chosen positions only; 0 when none is chosen"),
    Criterion("test_shift", 2, check_shift, ("shift_labels",),
              "position t predicts token t + 1; -100 at the end and for padding"),
    Criterion("test_causal_loss", 2, check_causal_loss, ("causal_lm_loss",),
              "mean cross-entropy against the shifted targets, shifted once"),
))
