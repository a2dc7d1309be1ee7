"""The fixture table (:mod:`course_lib.lab_checks.fixture_table`, ``scripts/fixture_table.py``): it grades as
the structure tests do, reads a fixture's ``FAILS`` without running it, shows the first line of the hint
a student sees, and marks a submission whose failed cells differ from what it declares.
Whether the fixtures themselves fail what they should: ``test_structure.py``.
"""
from __future__ import annotations

import contextlib
import io

import pytest

from course_grader.autograder import setup_source
from course_grader.cells import load_notebook
from course_lib.lab_checks import attention as attention_checks
from course_lib.lab_checks.fixture_table import (
    CellResult, Graded, declared_fails, grade_kernel, kernel as table_kernel, markdown_table, shown_hint,
)
from course_lib.lab_checks.rubric import Criterion, Rubric
from course_lib.lab_checks.toolkit import fail
from tests.labs.support import kernel, run_rubric, submission
from tests.labtools import lab_files, load_module
from tests.paths import REPO

ATTENTION = lab_files("attention")


@pytest.mark.parametrize("stem", [None, "mask_after_softmax", "swapped_return", "correct_explicit_softmax"])
def test_grading_a_kernel_gives_the_structure_tests_messages(stem):
    """The table's grading and kernel give what ``tests/labs/support`` gives (the path the structure tests pin)."""
    code = submission(ATTENTION, None if stem is None else ATTENTION.mistakes_dir / f"{stem}.py")
    expected = run_rubric(attention_checks.RUBRIC, kernel(ATTENTION, code))
    namespace = table_kernel([setup_source(load_notebook(ATTENTION.source)), *code.values()])
    results = grade_kernel(attention_checks.RUBRIC, namespace)
    assert {cell.grade_id: cell.message for cell in results if not cell.passed} == expected
    assert [cell.grade_id for cell in results] == list(attention_checks.RUBRIC.points)


def _rubric(check) -> Rubric:
    return Rubric([Criterion("test_f", 2, check, ("f",), "f"), Criterion("test_g", 1, lambda g: None, ("g",), "g")],
                  {"f": lambda: None, "g": lambda: None})


def test_a_check_that_lets_an_error_through_and_a_missing_function_are_shown_as_such():
    def leaky(f):
        raise KeyError("oops")

    results = grade_kernel(_rubric(leaky), {"f": lambda: None})
    assert [(cell.grade_id, cell.passed) for cell in results] == [("test_f", False), ("test_g", False)]
    assert results[0].message.startswith("KeyError (not a check's message)")
    assert results[1].message == "NameError: the kernel defines no g"


def test_shown_hint_is_the_first_hint_line_else_the_first_line():
    assert shown_hint("f is wrong: got 3\nHint: add one.\nHint: a second") == "Hint: add one."
    assert shown_hint("\n  f raised KeyError  \nmore") == "f raised KeyError"
    assert shown_hint("") == ""


def test_declared_fails_reads_the_keys_without_running_the_file():
    assert declared_fails('raise SystemExit\nFAILS = {"test_a": "x", "test_b": "y"}\n') == {"test_a", "test_b"}
    assert declared_fails("FAILS = {}") == frozenset()
    with pytest.raises(ValueError, match="no FAILS"):
        declared_fails("def f():\n    pass\n")


def test_the_table_groups_cells_by_hint_and_marks_a_submission_that_fails_other_cells():
    def wrong(f):
        fail("f | g differ", "use x | y")

    cells = grade_kernel(_rubric(wrong), {"f": lambda: None, "g": lambda: None})
    table = markdown_table("lab", [Graded("as_declared", "mistake", cells, frozenset({"test_f"})),
                                   Graded("declared_more", "mistake", cells, frozenset({"test_f", "test_g"})),
                                   Graded("full", "correct variant", (CellResult("test_g", 1, True, ""),))])
    rows = table.splitlines()
    assert "| `as_declared` | mistake | 1/3 | yes | test_f | Hint: use x \\| y |" in rows
    assert "| `declared_more` | mistake | 1/3 | **no** | test_f | Hint: use x \\| y |" in rows
    assert "| `full` | correct variant | 1/1 |  | — | — |" in rows


def test_the_script_lists_every_fixture_of_a_lab_as_expected():
    script = load_module(REPO / "scripts" / "fixture_table.py", "fixture_table_script")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert script.main(["attention"]) == 0
    rows = [line for line in printed.getvalue().splitlines() if line.startswith("| `")]
    named = {row.split("`")[1] for row in rows}
    assert named == {"solution", "stub", *(path.stem for path in ATTENTION.mistakes)}
    assert all(" | yes | " in row for row in rows), [row for row in rows if " | yes | " not in row]
    assert all(" | 12/12 | " in row for row in rows if "correct variant" in row or "`solution`" in row)
