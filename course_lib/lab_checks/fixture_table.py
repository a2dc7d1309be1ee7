"""What a lab's rubric makes of a set of submissions, graded in this process: a table for the instructor.

Each submission is a *kernel*: the namespace a student's kernel holds after the lab's set-up and
solution cells ran (:func:`kernel` builds one from code). :func:`grade_kernel` runs every criterion
of the rubric on it, as the hidden test cells do (:meth:`.Rubric.run`, every other function the
reference), and :func:`markdown_table` lays out, per submission, its kind (known mistake or correct
variant), its score, and for each failed cell the first line of the hint the student is shown.
``scripts/fixture_table.py`` feeds it the known-mistake fixtures of ``tests/fixtures/labs/``.

Not covered: reading notebooks and fixture files (``course_grader.course``), the sandbox (untrusted
code goes through ``course_grader``, never through here: this runs the code in-process).
"""
from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .rubric import Rubric

__all__ = ["CellResult", "Graded", "declared_fails", "grade_kernel", "kernel", "markdown_table", "shown_hint"]


@dataclass(frozen=True)
class CellResult:
    grade_id: str
    points: float
    passed: bool
    message: str  # the failure message the student sees ("" when passed)


@dataclass(frozen=True)
class Graded:
    """One submission graded: its name, its kind (``"mistake"``, ``"correct variant"``, ...), its cells."""

    name: str
    kind: str
    cells: tuple[CellResult, ...]
    expected: frozenset[str] | None = None  # the cells it should fail (a fixture's FAILS), when known

    @property
    def score(self) -> float:
        return sum(cell.points for cell in self.cells if cell.passed)

    @property
    def total(self) -> float:
        return sum(cell.points for cell in self.cells)

    @property
    def failed(self) -> tuple[CellResult, ...]:
        return tuple(cell for cell in self.cells if not cell.passed)

    @property
    def as_expected(self) -> bool | None:
        """Whether exactly the expected cells failed (``None`` when nothing is expected)."""
        return None if self.expected is None else {cell.grade_id for cell in self.failed} == self.expected


def kernel(codes: Iterable[str]) -> dict:
    """The namespace after ``codes`` (the set-up cell, then the solution cells) ran in order, one module-like
    namespace as in a notebook kernel, so each function sees the others by name."""
    namespace: dict = {"__name__": "__main__"}
    for code in codes:
        exec(compile(code, "<lab cell>", "exec"), namespace)  # noqa: S102 (the lab's own cells and fixtures)
    return namespace


def declared_fails(fixture_source: str) -> frozenset[str]:
    """The cells a fixture file says it fails: the keys of its ``FAILS = {grade_id: phrase}``, read without running it."""
    for node in ast.parse(fixture_source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FAILS" for t in node.targets):
            return frozenset(ast.literal_eval(node.value))
    raise ValueError("the fixture has no FAILS = {grade_id: phrase} (a correct variant has FAILS = {})")


def grade_kernel(rubric: Rubric, namespace: Mapping[str, object]) -> tuple[CellResult, ...]:
    """Every criterion of ``rubric`` run on the functions of ``namespace``, as its hidden test cell runs it."""
    results = []
    for criterion in rubric:
        missing = [name for name in criterion.functions if name not in namespace]
        if missing:
            results.append(CellResult(criterion.grade_id, criterion.points, False,
                                      f"NameError: the kernel defines no {', '.join(missing)}"))
            continue
        try:
            rubric.run(criterion.grade_id, *(namespace[name] for name in criterion.functions))
        except AssertionError as failure:  # CheckFailed: what nbgrader shows
            results.append(CellResult(criterion.grade_id, criterion.points, False, str(failure)))
        except Exception as error:  # a check that lets an error through: shown raw, so the table says so
            results.append(CellResult(criterion.grade_id, criterion.points, False,
                                      f"{type(error).__name__} (not a check's message): {error}"))
        else:
            results.append(CellResult(criterion.grade_id, criterion.points, True, ""))
    return tuple(results)


def shown_hint(message: str) -> str:
    """The first line of the hint a failure message shows (``Hint: ...``), else its first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    hint = next((line for line in lines if line.startswith("Hint:")), None)
    return hint if hint is not None else (lines[0] if lines else "")


def _cell_text(text: str, limit: int = 220) -> str:
    text = text.replace("|", "\\|")  # a pipe would split the Markdown cell
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown_table(title: str, graded: Iterable[Graded]) -> str:
    """A Markdown section: per submission, one row per distinct hint its failed cells show (one row for a full score)."""
    rows = ["| fixture | kind | score | as expected | failed cell | first line of the hint shown |",
            "|---|---|---|---|---|---|"]
    for entry in graded:
        score = f"{entry.score:g}/{entry.total:g}"
        expected = {None: "", True: "yes", False: "**no**"}[entry.as_expected]
        by_hint: dict[str, list[str]] = {}  # cells that show the same hint share a row
        for cell in entry.failed:
            by_hint.setdefault(shown_hint(cell.message), []).append(cell.grade_id)
        for hint, cells in by_hint.items() or (("—", ["—"]),):
            rows.append(f"| `{entry.name}` | {entry.kind} | {score} | {expected} | {', '.join(cells)} | "
                        f"{_cell_text(hint)} |")
    return f"## {title}\n\n" + "\n".join(rows) + "\n"
