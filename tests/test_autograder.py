"""The sandboxed autograder's notebook handling and its instructor command, ``scripts/grade.py``.

Fast tests pin which code a graded part receives: the trusted set-up cell of the *source*
notebook and the student's solution cells that define the part's functions, nothing else (no
test cells, no other solutions). The slow test runs the command line end to end with two
workers: scores in ``grades.csv`` and the gradebook, feedback with hints but no hidden test
source, and a rerun that grades nobody twice.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib.grading import attention_lab, autograder

REPO = Path(__file__).resolve().parent.parent
LAB = attention_lab.ASSIGNMENT
SOURCE = REPO / "labs" / "source" / LAB / f"{attention_lab.NOTEBOOK}.ipynb"
RELEASE = REPO / "labs" / "release" / LAB / f"{attention_lab.NOTEBOOK}.ipynb"
POINTS = {c.grade_id: float(c.points) for c in attention_lab.RUBRIC}


def test_every_lab_module_with_a_rubric_is_found():
    assert autograder.lab_modules()[LAB] is attention_lab


def test_setup_comes_from_the_locked_cell_of_the_source_notebook():
    setup = autograder.setup_source(autograder.load_notebook(SOURCE))
    assert "import torch" in setup
    assert "attention_lab" not in setup and "def " not in setup  # no hidden tests, no solutions


def test_a_part_gets_only_the_solution_cells_defining_its_functions():
    notebook = autograder.load_notebook(RELEASE)
    code = autograder.part_source(notebook, ["causal_mask"])
    assert code.startswith("def causal_mask(size):") and "def split_heads" not in code
    assert "assert" not in code  # test cells are never sent
    notebook["cells"].append({"cell_type": "code", "metadata": {"nbgrader": {"solution": True}},
                              "source": "def causal_mask(size:\n    pass"})  # a later, broken redefinition
    assert autograder.part_source(notebook, ["causal_mask"]).endswith("def causal_mask(size:\n    pass")


@pytest.mark.parametrize("text, phrase", [('{"cells": [', "corrupt JSON"), ("[1, 2]", "no list of cells"),
                                          (None, "no notebook at")])
def test_unreadable_notebooks_raise_a_clear_submission_error(tmp_path, text, phrase):
    path = tmp_path / "nb.ipynb"
    if text is not None:
        path.write_text(text)
    with pytest.raises(autograder.SubmissionError, match=phrase):
        autograder.load_notebook(path)


@pytest.mark.slow
def test_grade_command_end_to_end_and_rerun(tmp_path):
    run = [sys.executable, str(REPO / "scripts" / "labs.py"), "submissions", LAB,
           str(Path(__file__).parent / "fixtures" / "lab_attention"), str(tmp_path / "subs")]
    subprocess.run(run, check=True, timeout=120, capture_output=True)
    for student in list((tmp_path / "subs").iterdir()):
        if student.name not in ("solution", "stub", "no_scaling"):
            subprocess.run(["rm", "-r", str(student)], check=True)
    (tmp_path / "subs" / "broken" / LAB).mkdir(parents=True)
    (tmp_path / "subs" / "broken" / LAB / RELEASE.name).write_text("not json")
    grade = [sys.executable, str(REPO / "scripts" / "grade.py"), str(tmp_path / "subs"), "--out", str(tmp_path / "out")]
    first = subprocess.run(grade, timeout=300, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "broken" in first.stdout and "not a valid notebook" in first.stdout
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}
    assert scores == {"solution": 12.0, "stub": 0.0, "no_scaling": 10.0, "broken": 0.0}
    feedback = (tmp_path / "out" / "feedback" / "no_scaling" / f"{LAB}.txt").read_text()
    assert "10 / 12 points" in feedback and "Hint: you forgot to divide the scores by √d" in feedback
    assert "attention_lab.check" not in feedback and "def check_" not in feedback

    second = subprocess.run(grade, timeout=300, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert LAB not in second.stdout.replace(str(tmp_path), "")  # nobody graded twice
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        assert {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)} == scores
    json.loads((tmp_path / "out" / "course" / "source" / LAB / RELEASE.name).read_text())  # course dir intact
