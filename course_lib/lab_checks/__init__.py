"""The labs' hidden checks: one module per lab, each a ``RUBRIC`` of graded checks, built on :mod:`.toolkit`.

* :mod:`.toolkit`: run student code on seeded random inputs, compare with the ``course_lib``
  reference, fail with a message that says what is wrong and hints why (:class:`CheckFailed`),
  name a classic mistake (:func:`~.toolkit.diagnose`); :mod:`.rubric`: a lab's graded cells and references.
* One module per lab, named after its topic, numbered by its chapter: :mod:`.attention` (lab 01),
  :mod:`.tokenization` (lab 02), :mod:`.seq2seq` (lab 04), :mod:`.decoding` (lab 05), :mod:`.reformer`
  (lab 06). Each holds the lab's ``RUBRIC`` and ``REFERENCES``; a lab whose checks would not fit one
  short module keeps them in parts beside it, ``<topic>_<part>.py`` (e.g. :mod:`.decoding_sampling`,
  :mod:`.decoding_beam_search`), its references and inputs in ``<topic>_references.py`` where they are many.

A lab's hidden test cells import its module and run one criterion of its ``RUBRIC`` per cell, e.g.
``attention_checks.RUBRIC.run("test_sdpa_scaling", scaled_dot_product_attention)``; the
``RUBRIC`` (:mod:`.rubric`) maps each grade cell to its check and points, and holds the reference
of every function the lab asks for. These modules are imported by the student's kernel when nbgrader
runs the hidden tests, so they ship with the course. Grading from outside the kernel (sandboxed,
in parallel, with feedback) is the instructor's package, ``course_grader``.
"""
from .rubric import Criterion, Rubric
from .toolkit import CheckFailed

__all__ = ["CheckFailed", "Criterion", "Rubric"]
