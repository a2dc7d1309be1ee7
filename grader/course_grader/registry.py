"""The labs, in course order: one explicit entry each, and the one spelling a lab goes by.

A lab is named after its topic, and every file of it follows that name: for ``Lab("decoding", 5)``
the nbgrader assignment is ``05_decoding`` (its number is the chapter it completes), the notebook
``labs/{source,release}/05_decoding/decoding.ipynb``, the hidden checks
:mod:`course_lib.lab_checks.decoding`, the known mistakes ``tests/fixtures/labs/decoding/`` and the
tests ``tests/labs/test_decoding.py``. Adding a lab means adding its entry here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

__all__ = ["LABS", "Lab", "lab"]


@dataclass(frozen=True)
class Lab:
    topic: str  # the lab's one spelling
    chapter: int  # the chapter it completes: the lab's number

    @property
    def assignment(self) -> str:
        """nbgrader's assignment name, the folder under ``labs/source`` and ``labs/release``."""
        return f"{self.chapter:02d}_{self.topic}"

    @property
    def notebook(self) -> str:
        """The notebook's file name without ``.ipynb``."""
        return self.topic

    @property
    def checks(self) -> ModuleType:
        """The lab's hidden checks, :mod:`course_lib.lab_checks.<topic>` (its ``RUBRIC``)."""
        return importlib.import_module(f"course_lib.lab_checks.{self.topic}")


LABS: tuple[Lab, ...] = (
    Lab("attention", 1),
    Lab("tokenization", 2),
    Lab("seq2seq", 4),  # chapters 3 (additive attention) and 4 (the decoder layer)
    Lab("decoding", 5),
    Lab("reformer", 6),
    Lab("pretraining", 7),
    Lab("transfer", 8),
    Lab("long_range", 9),
    Lab("distributed", 10),
)


def lab(assignment: str) -> Lab:
    """The lab whose assignment name (``"05_decoding"``) or topic (``"decoding"``) is given."""
    for entry in LABS:
        if assignment in (entry.assignment, entry.topic):
            return entry
    known = ", ".join(entry.assignment for entry in LABS)
    raise KeyError(f"no lab {assignment!r}; the labs are {known}")
