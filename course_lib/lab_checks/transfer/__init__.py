"""Hidden checks of lab 08, transfer: pooling a sentence, aligning word tags to sub-words, the distillation loss.

``RUBRIC`` lists the graded cells of ``labs/source/08_transfer/transfer.ipynb`` with their points and
checks, ``REFERENCES`` the course's version of every function the lab asks for: the library's own
(:func:`course_lib.transfer.heads.pool`, :func:`course_lib.pretraining.tagging.align_labels`,
:func:`course_lib.transfer.distillation.distillation_loss`), which the classification head, the tagging
experiments and the distillation script use. The checks live in three parts, one per function:
:mod:`.pooling`, :mod:`.alignment` and :mod:`.distillation`; each part's docstring says which classic
mistakes it names and how a function graded in two cells loses only the cell of its mistake.

Everything a check exchanges with student code is tensors, lists of ints, ints, floats and strings, so
the sandboxed grader (:mod:`course_grader.autograder`) can grade the lab too. Not covered: the models
(the chapter's business), BERT's pooler, the hard-label and cosine terms of DistilBERT's loss.
"""
from __future__ import annotations

from ..rubric import Criterion, Rubric
from .alignment import check_align, reference_align_labels
from .distillation import check_soft_targets, check_temperature, reference_distillation_loss
from .pooling import check_pool_cls, check_pool_mean, reference_pool

__all__ = ["REFERENCES", "RUBRIC"]

# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "pool": reference_pool,
    "align_labels": reference_align_labels,
    "distillation_loss": reference_distillation_loss,
}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_pool_cls", 1, check_pool_cls, ("pool",), '"cls": the first position of every row'),
    Criterion("test_pool_mean", 2, check_pool_mean, ("pool",),
              '"mean": the average over the real tokens only, each row divided by its own count'),
    Criterion("test_align", 2, check_align, ("align_labels",),
              "[CLS] pieces [SEP]; each word's tag on its first sub-word, -100 on the rest and on the specials"),
    Criterion("test_soft_targets", 2, check_soft_targets, ("distillation_loss",),
              "KL(teacher ‖ student) from log-probabilities, averaged over rows; stable on extreme logits"),
    Criterion("test_temperature", 2, check_temperature, ("distillation_loss",),
              "both sides softened by T, the loss multiplied by T²"),
))
