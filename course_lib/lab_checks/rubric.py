"""A lab's rubric: its graded cells in notebook order, and the reference of every function the lab asks for.

Each lab module ends with ``RUBRIC = Rubric(criteria, references)``. A :class:`Criterion` ties one
grade cell (``grade_id``) to its points and to the check that grades it; ``references`` maps every
function a student writes in the lab to the course's own implementation of it, with the lab's
signature. Both graders go through :meth:`Rubric.run`:

* **nbgrader** runs a lab's hidden test cell in the student's kernel, which holds one line,
  ``attention_checks.RUBRIC.run("test_sdpa_scaling", scaled_dot_product_attention)``;
* **the sandboxed grader** (``course_grader``) runs the student's cells in an isolated process and
  calls ``RUBRIC.run`` here on stand-ins for their functions.

**One mistake costs only its own cell.** While a part is graded, every *other* function of the lab
is the reference: :meth:`Rubric.run` puts the references into the student functions' module for the
duration of the check (nbgrader's case) and the sandbox defines them after the student's cells
(:meth:`Rubric.helpers` says which). So a wrong ``merge`` fails the ``merge`` cell only, not
``train``, which calls it. While a cell is graded the references also lend their parameter names to
messages about a stand-in's arguments (:func:`~.inputs.reference_signatures`). Not covered: the checks themselves (each lab module), running untrusted
code (``course_grader.sandbox``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from .inputs import reference_signatures

__all__ = ["Criterion", "Rubric", "references_in"]


@dataclass(frozen=True)
class Criterion:
    """One graded aspect of a lab: the notebook's grade cell ``grade_id`` is worth ``points``
    and passes when ``check(*student_functions)`` returns without raising."""

    grade_id: str
    points: float
    check: Callable[..., None]
    functions: tuple[str, ...]  # names of the student functions ``check`` takes, in order
    description: str


class Rubric:
    """The criteria of one lab, in notebook order, and ``references``: function name -> reference."""

    def __init__(self, criteria: Iterable[Criterion], references: Mapping[str, Callable]):
        self.criteria = tuple(criteria)
        self.references = dict(references)
        grade_ids = [criterion.grade_id for criterion in self.criteria]
        if len(set(grade_ids)) != len(grade_ids):
            raise ValueError(f"grade ids repeat in the rubric: {grade_ids}")
        missing = {name for criterion in self.criteria for name in criterion.functions} - set(self.references)
        if missing:
            raise ValueError(f"the rubric grades {sorted(missing)} but has no reference for them")

    def __iter__(self) -> Iterator[Criterion]:
        return iter(self.criteria)

    def __len__(self) -> int:
        return len(self.criteria)

    def __getitem__(self, grade_id: str) -> Criterion:
        for criterion in self.criteria:
            if criterion.grade_id == grade_id:
                return criterion
        raise KeyError(f"no graded cell {grade_id!r} in this lab; it has {[c.grade_id for c in self.criteria]}")

    @property
    def points(self) -> dict[str, float]:
        """``{grade_id: points}`` in notebook order."""
        return {criterion.grade_id: criterion.points for criterion in self.criteria}

    def helpers(self, grade_id: str) -> dict[str, Callable]:
        """The references that stand in for the lab's other functions while ``grade_id`` is graded."""
        graded = set(self[grade_id].functions)
        return {name: reference for name, reference in self.references.items() if name not in graded}

    def run(self, grade_id: str, *functions: Callable) -> None:
        """Grade the student's ``functions`` (in the criterion's order) for one cell; raise if they fail it."""
        criterion = self[grade_id]
        if len(functions) != len(criterion.functions):
            raise TypeError(f"{grade_id} grades {', '.join(criterion.functions)}: give {len(criterion.functions)} "
                            f"function(s), got {len(functions)}")
        with references_in(functions, self.helpers(grade_id)), reference_signatures(self.references):
            criterion.check(*functions)


@contextlib.contextmanager
def references_in(functions: Iterable[Callable], references: Mapping[str, Callable]):
    """While the block runs, ``references`` are the global names of each function's module (a notebook's
    namespace); afterwards every name is as before. Callables without a module namespace (the sandbox's
    stand-ins, built-ins) are left alone: the sandbox defines the references itself."""
    namespaces = {id(ns): ns for ns in (getattr(f, "__globals__", None) for f in functions) if ns is not None}
    missing = object()
    saved = {key: {name: ns.get(name, missing) for name in references} for key, ns in namespaces.items()}
    for namespace in namespaces.values():
        namespace.update(references)
    try:
        yield
    finally:
        for key, namespace in namespaces.items():
            for name, value in saved[key].items():
                if value is missing:
                    namespace.pop(name, None)
                else:
                    namespace[name] = value
