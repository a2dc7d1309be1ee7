#!/usr/bin/env python
"""Per lab, what the hidden checks make of each known-mistake fixture and correct variant
(``tests/fixtures/labs/<topic>/``): kind, score, whether exactly its ``FAILS`` failed, and the first line
of the hint shown for each failed cell. Graded in this process with the lab checks (not the sandbox):
``python scripts/fixture_table.py [LAB ...] > table.md``. The work is :mod:`course_lib.lab_checks.fixture_table`;
the notebooks' cells and the fixtures are read as ``scripts/labs.py submissions`` reads them."""
import argparse
import sys
from pathlib import Path

from course_grader import course
from course_grader.autograder import setup_source
from course_grader.cells import load_notebook
from course_grader.registry import LABS, lab as find_lab
from course_lib.lab_checks.fixture_table import Graded, declared_fails, grade_kernel, kernel, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def lab_table(topic: str) -> str:
    lab = find_lab(topic)
    source = ROOT / "labs" / "source" / lab.assignment / f"{lab.notebook}.ipynb"
    release = ROOT / "labs" / "release" / lab.assignment / f"{lab.notebook}.ipynb"
    setup, solutions = setup_source(load_notebook(source)), course.solution_code(source)
    rubric = lab.checks.RUBRIC

    def graded(name, kind, code, expected=None):
        return Graded(name, kind, grade_kernel(rubric, kernel([setup, *code.values()])), expected)

    rows = [graded("solution", "reference solution", solutions, frozenset()),
            graded("stub", "release stub", course.solution_code(release), frozenset(rubric.points))]
    for fixture in sorted((ROOT / "tests" / "fixtures" / "labs" / lab.topic).glob("*.py")):
        kind = "correct variant" if fixture.stem.startswith("correct_") else "mistake"
        code = {**solutions, **course.mistake_code(fixture, solutions)}
        rows.append(graded(fixture.stem, kind, code, declared_fails(fixture.read_text(encoding="utf-8"))))
    return markdown_table(f"{lab.assignment} ({sum(rubric.points.values()):g} points)", rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labs", nargs="*", help="topics or assignment names (default: every lab)")
    args = parser.parse_args(argv)
    print("\n".join(lab_table(topic) for topic in (args.labs or [lab.topic for lab in LABS])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
