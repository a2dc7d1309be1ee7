"""The sandboxed autograder's notebook handling and its instructor command, ``scripts/grade.py``.

Fast tests pin which code a graded part receives: the trusted set-up cell of the *source*
notebook and the student's solution cells that define the part's functions, nothing else (no
test cells, no other solutions). The slow test runs the command line end to end with two
workers: scores in ``grades.csv`` and the gradebook, text feedback with hints but no hidden test
source, and a rerun that grades nobody twice. The HTML feedback: ``test_feedback.py``.
"""
from __future__ import annotations

import ast
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from course_grader import autograder, cells
from course_grader.registry import LABS
from course_grader.registry import lab as find_lab
from course_grader.sandbox import Limits, Sandbox
from course_lib.lab_checks import attention as attention_checks
from tests.labtools import lab_files, labs_script, load_module
from tests.paths import FIXTURES, REPO

LAB, SOURCE, RELEASE = lab_files("attention")[:3]
POINTS = {c.grade_id: float(c.points) for c in attention_checks.RUBRIC}


def test_the_registry_finds_each_lab_by_assignment_or_topic():
    assert find_lab(LAB).checks is attention_checks and find_lab("attention").assignment == LAB


def test_setup_comes_from_the_locked_cell_of_the_source_notebook():
    setup = autograder.setup_source(cells.load_notebook(SOURCE))
    assert "import torch" in setup
    assert "attention_checks" not in setup and "def " not in setup  # no hidden tests, no solutions


def test_a_part_gets_only_the_solution_cells_defining_its_functions():
    notebook = cells.load_notebook(RELEASE)
    code = autograder.part_source(notebook, ["causal_mask"])
    assert code.startswith("def causal_mask(size):") and "def split_heads" not in code
    assert "assert" not in code  # test cells are never sent
    notebook["cells"].append({"cell_type": "code", "metadata": {"nbgrader": {"solution": True}},
                              "source": "def causal_mask(size:\n    pass"})  # a later, broken redefinition
    assert autograder.part_source(notebook, ["causal_mask"]).endswith("def causal_mask(size:\n    pass")


def test_a_part_runs_set_up_then_the_students_cells_only():
    source, notebook = cells.load_notebook(SOURCE), cells.load_notebook(RELEASE)
    notebook["cells"].append({"cell_type": "code", "metadata": {"nbgrader": {"solution": True}},
                              "source": "def causal_mask(size):\n    return 'mine'"})
    code = autograder.criterion_source(source, notebook, ["causal_mask"])
    assert code.index("import torch") < code.index("return 'mine'")
    assert "def split_heads" not in code  # the other functions come from the rubric's references, in the sandbox
    assert code.count("def causal_mask") == 2  # the release stub and the student's: never the reference's
    assert "BEGIN HIDDEN TESTS" not in code and "attention_checks" not in code


def test_a_sandboxed_part_gets_the_references_of_the_other_functions_around_the_students_code():
    import torch

    code = ("import torch\nfirst = merge_heads(torch.ones(1, 1, 2, 2)).shape  # a cell may call one at the top\n"
            "def split_heads(x, num_heads):\n    return merge_heads(x)\n"
            "def merge_heads(x):\n    return 'mine'\n")
    helpers = attention_checks.RUBRIC.helpers("test_split_heads")
    assert set(helpers) == {"scaled_dot_product_attention", "causal_mask", "merge_heads"}
    with Sandbox(Limits(wall_seconds=30), rubric=attention_checks.__name__) as box:
        with box.run(code, ["split_heads"], helpers=helpers) as part:  # merge_heads is the reference's
            assert tuple(part.function("split_heads")(torch.ones(1, 1, 2, 2), 1).shape) == (1, 2, 2)
        with box.run(code.replace("first = ", "# "), ["split_heads"]) as part:  # without helpers: the student's own
            assert part.function("split_heads")(torch.ones(1, 1, 2, 2), 1) == "mine"
        with box.run(code, ["split_heads"], helpers=["no_such_function"]) as part:
            with pytest.raises(LookupError, match="no reference for no_such_function"):
                part.function("split_heads")(torch.ones(1), 1)


def _fails(mistake: Path) -> set[str]:
    tree = ast.parse(mistake.read_text(encoding="utf-8"))
    return set(ast.literal_eval(next(n.value for n in tree.body
                                     if isinstance(n, ast.Assign) and n.targets[0].id == "FAILS")))


@pytest.mark.slow
@pytest.mark.parametrize("lab", [lab.assignment for lab in LABS])
def test_the_sandboxed_grader_serves_every_lab_through_its_rubric(lab, tmp_path):
    """Each lab's solution scores full marks and each known mistake loses exactly its cells."""
    module, files = find_lab(lab).checks, lab_files(lab)
    mistakes = files.mistakes_dir
    source = cells.load_notebook(files.source)
    students = labs_script.write_submissions(lab, mistakes, tmp_path)
    with Sandbox(Limits(wall_seconds=30), autograder.default_hidden_paths(), rubric=module.__name__) as box:
        results = {s: autograder.grade_notebook(box, module, path, source) for s, path in students.items()}
    points = {c.grade_id: float(c.points) for c in module.RUBRIC}
    assert results["solution"].scores == {g: (p, p) for g, p in points.items()}, results["solution"].messages
    assert results["stub"].total == 0
    for mistake in mistakes.glob("*.py"):
        lost = {g for g, (score, _) in results[mistake.stem].scores.items() if score == 0}
        assert lost == _fails(mistake), (mistake.stem, results[mistake.stem].messages)


def test_the_command_warns_on_stderr_only_when_isolation_is_weakened(capsys):
    grade_script = load_module(REPO / "scripts" / "grade.py", "grade_script")

    grade_script.print_warnings(set())
    assert capsys.readouterr().err == ""
    grade_script.print_warnings({"no net namespace (unshare failed): the sandbox is weaker"})
    err = capsys.readouterr().err
    assert err.startswith("WARNING: the sandbox's isolation was weakened") and "no net namespace" in err


@pytest.mark.slow
def test_grade_command_end_to_end_and_rerun(tmp_path):
    run = [sys.executable, str(REPO / "scripts" / "labs.py"), "submissions", LAB,
           str(FIXTURES / "labs" / "attention"), str(tmp_path / "subs")]
    subprocess.run(run, check=True, timeout=120, capture_output=True)
    for student in list((tmp_path / "subs").iterdir()):
        if student.name not in ("solution", "stub", "no_scaling"):
            subprocess.run(["rm", "-r", str(student)], check=True)
    (tmp_path / "subs" / "broken" / LAB).mkdir(parents=True)
    (tmp_path / "subs" / "broken" / LAB / RELEASE.name).write_text("not json")
    grade = [sys.executable, str(REPO / "scripts" / "grade.py"), str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
             "--no-feedback"]  # the HTML feedback has its own slow tests (test_feedback.py)
    first = subprocess.run(grade, timeout=300, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "broken" in first.stdout and "not a valid notebook" in first.stdout
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}
    assert scores == {"solution": 12.0, "stub": 0.0, "no_scaling": 10.0, "broken": 0.0}
    feedback = (tmp_path / "out" / "feedback" / "no_scaling" / f"{LAB}.txt").read_text()
    assert "10 / 12 points" in feedback and "Hint: you forgot to divide the scores by √d" in feedback
    assert "attention_checks.check" not in feedback and "def check_" not in feedback
    assert not (tmp_path / "out" / "feedback" / "no_scaling" / LAB).exists()  # --no-feedback: no HTML

    second = subprocess.run(grade, timeout=300, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert LAB not in second.stdout.replace(str(tmp_path), "")  # nobody graded twice
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        assert {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)} == scores
    json.loads((tmp_path / "out" / "course" / "source" / LAB / RELEASE.name).read_text())  # course dir intact
