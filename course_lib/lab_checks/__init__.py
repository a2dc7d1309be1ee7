"""The labs' hidden checks: one module or package per lab, each a ``RUBRIC`` of graded checks, on :mod:`.toolkit`.

* :mod:`.toolkit`: run student code on seeded random inputs, compare with the ``course_lib``
  reference, fail with a message that says what is wrong and hints why (:class:`CheckFailed`),
  name a classic mistake (:func:`~.toolkit.diagnose`); with :mod:`.inputs` (the student's copies of
  the inputs, which it must not modify) and :mod:`.hints` (what an exception in student code
  probably means); :mod:`.rubric`: a lab's graded cells and references; :mod:`.fixture_table`: what
  a rubric makes of a set of submissions, graded in-process (``scripts/fixture_table.py``).
* One per lab, named after its topic, numbered by its chapter: :mod:`.attention` (lab 01),
  :mod:`.tokenization` (lab 02), :mod:`.seq2seq` (lab 04), :mod:`.decoding` (lab 05), :mod:`.reformer`
  (lab 06), :mod:`.pretraining` (lab 07), :mod:`.transfer` (lab 08), :mod:`.long_range` (lab 09), :mod:`.distributed` (lab 10). Each exposes the lab's ``RUBRIC`` and ``REFERENCES``. One rule for
  size: a lab whose checks fit one short module is that module; the others (all nine today) are a package whose
  ``__init__`` holds the rubric and whose modules are the lab's parts (e.g. :mod:`.decoding.sampling`,
  :mod:`.decoding.beam_search`), with ``references.py`` where the references and inputs are many.

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
