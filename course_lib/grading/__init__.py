"""Grading for the course's nbgrader labs: shared check helpers and one module of hidden checks per lab.

* :mod:`course_lib.grading.checks`: run student code on seeded random inputs, compare with the
  ``course_lib`` reference, fail with a message that says what is wrong and hints why.
* :mod:`course_lib.grading.attention_lab`: lab 01 (attention, masks, head split/merge).

A lab's hidden test cells only import its module and call one check per cell, e.g.
``attention_lab.check_scaling(scaled_dot_product_attention)``; the module's ``RUBRIC`` maps each
grade cell to its check and points. Not covered: running notebooks (nbgrader does that, see
``scripts/labs.py``) and sandboxing student code.
"""
from .checks import CheckFailed, Criterion

__all__ = ["CheckFailed", "Criterion"]
