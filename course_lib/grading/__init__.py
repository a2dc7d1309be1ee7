"""Grading for the course's nbgrader labs: shared check helpers and one module of hidden checks per lab.

* :mod:`course_lib.grading.checks`: run student code on seeded random inputs, compare with the
  ``course_lib`` reference, fail with a message that says what is wrong and hints why.
* :mod:`course_lib.grading.attention_lab`: lab 01 (attention, masks, head split/merge).
* :mod:`course_lib.grading.bpe_lab`: lab 02 (BPE pair counts, merge step, training loop, encoding).
* :mod:`course_lib.grading.seq2seq_lab`: lab 03 (additive attention, a Transformer decoder layer).
* :mod:`course_lib.grading.decoding_lab`: lab 04 (top-k/top-p filtering, one beam search step).
* :mod:`course_lib.grading.reformer_lab`: lab 05 (LSH hashing, bucket sort and chunks, reversible layers).

* :mod:`course_lib.grading.sandbox` and :mod:`course_lib.grading.autograder`: grading from outside
  the student's kernel: each graded part runs the student's cells in a fresh sandboxed process
  (:mod:`~course_lib.grading.sandbox_child`), talking plain arrays over
  :mod:`~course_lib.grading.sandbox_protocol`; the trusted parent runs the lab's checks on what
  comes back and writes the gradebook (``scripts/grade.py``, ``scripts/bench_grading.py``);
  :mod:`~course_lib.grading.feedback` builds the feedback notebooks without the hidden tests.

A lab's hidden test cells only import its module and call one check per cell, e.g.
``attention_lab.check_scaling(scaled_dot_product_attention)``; the module's ``RUBRIC`` maps each
grade cell to its check and points. Not covered: nbgrader's own notebook execution (see
``scripts/labs.py``).
"""
from .checks import CheckFailed, Criterion

__all__ = ["CheckFailed", "Criterion"]
