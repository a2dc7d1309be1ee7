"""The labs' hidden checks: one module per lab, each a ``RUBRIC`` of graded checks, built on :mod:`.toolkit`.

* :mod:`.toolkit`: run student code on seeded random inputs, compare with the ``course_lib``
  reference, fail with a message that says what is wrong and hints why (:class:`CheckFailed`).
* :mod:`.attention` (lab 01), :mod:`.tokenization` (lab 02), :mod:`.seq2seq` (lab 04),
  :mod:`.decoding` (lab 05), :mod:`.reformer` (lab 06): a lab's number is its chapter's.

A lab's hidden test cells import its module and call one check per cell, e.g.
``attention_checks.check_scaling(scaled_dot_product_attention)``; the module's ``RUBRIC`` maps each
grade cell to its check and points. These modules are imported by the student's kernel when nbgrader
runs the hidden tests, so they ship with the course. Grading from outside the kernel (sandboxed,
in parallel, with feedback) is the instructor's package, ``course_grader``.
"""
from .toolkit import CheckFailed, Criterion

__all__ = ["CheckFailed", "Criterion"]
