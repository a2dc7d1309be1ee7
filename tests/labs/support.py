"""Shared by the lab tests in ``tests/labs/``: a lab's notebook cells run as a student's kernel runs
them, its known mistakes spliced in as in a submission, its rubric run over a set of functions.

A *kernel* here is the namespace of a kernel that ran the source notebook's set-up cell and its
solution cells in notebook order (the cells nbgrader's kernel runs before a hidden test), so every
function sees the others by their notebook names, as :meth:`Rubric.run` expects. Not covered: the
files of a lab and the instructor script (:mod:`tests.labtools`), nbgrader itself
(``tests/grader/test_round_trips.py``).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from course_grader import cells
from course_lib.lab_checks.rubric import Rubric
from tests.labtools import LabFiles, nbgrader_course, notebook

# Ungraded cells a kernel here never runs: the Colab installer and the closing demo (it loads trained models).
SKIPPED_CELLS = ("colab-setup", "try-it")


cell_source, nbgrader = cells.source, cells.nbgrader_metadata  # the grader's predicates, read the same way


def grade_cells(path: Path) -> list[dict]:
    return [cell for cell in notebook(path)["cells"] if cells.is_grade(cell)]


def hidden_and_visible(cell: dict) -> tuple[str | None, str]:
    """A grade cell's hidden tests (``None`` unless the cell starts with them) and its visible test."""
    match = re.match(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS\n", cell_source(cell), re.DOTALL)
    return (match.group(1), cell_source(cell)[match.end():]) if match else (None, cell_source(cell))


def submission(files: LabFiles, mistake: Path | None = None) -> dict[str, str]:
    """``{grade_id: code}`` of the solution cells as a student hands them in: the reference solution,
    with a mistake file's functions replacing the cells that define them (as ``scripts/labs.py`` does)."""
    solutions = nbgrader_course.solution_code(files.source)
    return {**solutions, **(nbgrader_course.mistake_code(mistake, solutions) if mistake else {})}


def stubs(files: LabFiles) -> dict[str, str]:
    """``{grade_id: code}`` of the release's solution cells: the stubs students start from."""
    return nbgrader_course.solution_code(files.release)


def kernel(files: LabFiles, code: Mapping[str, str] | None = None, *, examples: bool = False,
           failing_examples_go_on: bool = False) -> dict:
    """The namespace after the source's set-up cell and solution cells (``code``: grade_id -> code, by
    default the reference solution) ran in notebook order; with ``examples``, also the other ungraded
    cells (the data some visible tests use), except :data:`SKIPPED_CELLS`. Grade cells never run.
    With ``failing_examples_go_on``, an example cell that raises (one that calls a stub) is passed over,
    as a student's kernel goes on after a cell's error; otherwise its error is raised."""
    code = submission(files) if code is None else code
    namespace: dict = {}
    for cell in notebook(files.source)["cells"]:
        metadata = nbgrader(cell)
        if cell["cell_type"] != "code" or metadata.get("grade") or cell.get("id") in SKIPPED_CELLS:
            continue
        example = False
        if metadata.get("grade_id") in code:
            text = code[metadata["grade_id"]]
        elif metadata.get("grade_id") == "setup" or examples:
            text, example = cell_source(cell), metadata.get("grade_id") != "setup"
        else:
            continue
        try:
            exec(compile(text, f"{files.source.name}:{cell.get('id')}", "exec"), namespace)  # noqa: S102 (the lab's cells)
        except Exception:
            if not (example and failing_examples_go_on):
                raise
    return namespace


def run_rubric(rubric: Rubric, functions: Mapping[str, Callable]) -> dict[str, str]:
    """Grade every cell of ``rubric`` with ``functions`` (name -> function, e.g. a kernel) as the hidden
    tests do (:meth:`Rubric.run`); return ``{grade_id: failure message}`` of the cells that fail."""
    failures = {}
    for criterion in rubric:
        try:
            rubric.run(criterion.grade_id, *(functions[name] for name in criterion.functions))
        except AssertionError as error:
            failures[criterion.grade_id] = str(error)
    return failures


def visible_failures(files: LabFiles, namespace: dict) -> set[str]:
    """Grade ids whose *visible* test (what follows the hidden tests) fails in a copy of ``namespace``."""
    failed = set()
    for cell in grade_cells(files.source):
        _, visible = hidden_and_visible(cell)
        try:
            exec(compile(visible, cell.get("id", "?"), "exec"), dict(namespace))  # noqa: S102
        except Exception:  # any error is the visible test failing, as it would in the notebook
            failed.add(nbgrader(cell)["grade_id"])
    return failed
