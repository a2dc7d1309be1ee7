"""A notebook's cells as nbgrader sees them: their code, their nbgrader metadata, the functions they define.

Every question the grader asks of a cell goes through here, once: the autograder (which cells a
graded part runs), the feedback notebooks (which cells keep the release's source) and the
course's instructor steps (the solution cells of a lab). :func:`is_solution`, :func:`is_grade`
and :func:`is_locked` answer as ``nbgrader.utils`` does, but on the plain JSON of
:func:`load_notebook` and trusting nothing: a submission's cells may be anything, so a malformed
cell is one without text or metadata, never an exception::

    notebook = load_notebook(path)
    [grade_id(cell) for cell in notebook["cells"] if is_solution(cell)]   # ['causal_mask', ...]

Not covered: running cells (:mod:`~course_grader.sandbox`), writing notebooks
(:mod:`~course_grader.course`, :mod:`~course_grader.feedback`).
"""
from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "NotebookError", "defines_any", "functions_defined", "grade_id", "is_code", "is_grade", "is_locked",
    "is_solution", "load_notebook", "multiline_text", "nbgrader_metadata", "solution_cells", "source",
]


class NotebookError(Exception):
    """A notebook that cannot be read at all (missing, corrupt JSON, no list of cells)."""


def load_notebook(path: Path) -> dict:
    """A notebook's JSON, or :class:`NotebookError` saying why it cannot be read."""
    try:
        notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotebookError(f"no notebook at {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NotebookError(f"{Path(path).name} is not a valid notebook (corrupt JSON: {error})") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise NotebookError(f"{Path(path).name} is not a valid notebook (no list of cells)")
    return notebook


def multiline_text(value) -> str:
    """nbformat's multi-line string (a ``str`` or a list of them) as one ``str``; anything else is ``""``."""
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return "".join(value)
    return value if isinstance(value, str) else ""


def source(cell) -> str:
    """The cell's text (``""`` for a malformed cell)."""
    return multiline_text(cell.get("source")) if isinstance(cell, dict) else ""


def is_code(cell) -> bool:
    return isinstance(cell, dict) and cell.get("cell_type") == "code"


def nbgrader_metadata(cell) -> dict:
    """The cell's ``metadata.nbgrader`` (``{}`` when it has none or it is malformed)."""
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    value = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return value if isinstance(value, dict) else {}


def is_solution(cell) -> bool:
    """A cell the student writes (nbgrader's ``solution``)."""
    return bool(nbgrader_metadata(cell).get("solution"))


def is_grade(cell) -> bool:
    """A graded test cell (nbgrader's ``grade``)."""
    return bool(nbgrader_metadata(cell).get("grade"))


def is_locked(cell) -> bool:
    """A cell nbgrader restores from the source when grading: every grade cell that is not also a
    solution, and any other cell marked ``locked`` (``nbgrader.utils.is_locked``)."""
    if is_solution(cell):
        return False
    return is_grade(cell) or bool(nbgrader_metadata(cell).get("locked"))


def grade_id(cell) -> str | None:
    """The cell's nbgrader ``grade_id`` (``None`` when it has none)."""
    value = nbgrader_metadata(cell).get("grade_id")
    return value if isinstance(value, str) else None


def solution_cells(notebook: dict) -> dict[str, dict]:
    """``{grade_id: cell}`` of a notebook's solution cells, in notebook order."""
    return {grade_id(cell): cell for cell in notebook["cells"] if is_solution(cell) and grade_id(cell)}


def functions_defined(code: str) -> dict[str, str]:
    """``{name: source}`` of the top-level functions ``code`` defines (decorators not included).

    Raises :class:`SyntaxError` when ``code`` does not parse.
    """
    tree = ast.parse(code)
    return {node.name: ast.get_source_segment(code, node) for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def defines_any(code: str, names: Iterable[str]) -> bool:
    """Whether ``code`` defines any of ``names`` at the top level. Code that does not parse counts when
    it looks like it does (``def name(``), so that a broken cell reaches the sandbox and is reported there."""
    names = set(names)
    try:
        return bool(set(functions_defined(code)) & names)
    except SyntaxError:
        return any(f"def {name}(" in code for name in names)
