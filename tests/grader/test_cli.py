"""The instructor's command lines (:mod:`course_grader.cli`) and their front ends in ``scripts/``.

Fast tests pin the wiring: the front ends are a few lines that hand over their checkout, a folder
that is not a checkout and an unknown lab are usage errors, ``grade`` hides the checkout's private
folders and its output folder from student code and makes HTML feedback unless told not to, and
weakened isolation is said on stderr. The slow tests run the documented commands end to end as
subprocesses: ``scripts/labs.py`` check/generate on a copy of the checkout, ``submissions`` and
``scripts/grade.py`` (scores, text feedback, a rerun that grades nobody twice) and a small
``scripts/bench_grading.py``.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from course_grader import cells, cli
from course_grader.autograder import NotebookResult
from course_lib.lab_checks import attention as attention_checks
from tests.grader import CHECKOUT, copy_of_labs
from tests.labtools import lab_files
from tests.paths import FIXTURES, REPO

LAB, SOURCE, RELEASE = lab_files("attention")[:3]
POINTS = {c.grade_id: float(c.points) for c in attention_checks.RUBRIC}
FRONT_ENDS = {"labs.py": "labs_main", "grade.py": "grade_main", "bench_grading.py": "bench_main"}


# --- wiring -------------------------------------------------------------------------------------

@pytest.mark.parametrize("script, main", FRONT_ENDS.items())
def test_the_front_ends_are_thin_and_hand_over_their_checkout(script, main):
    text = (REPO / "scripts" / script).read_text(encoding="utf-8")
    code = [line for line in text.splitlines() if line.strip() and not line.startswith(("#", '"""', "``"))]
    assert f"from course_grader.cli import {main}" in text
    assert f"sys.exit({main}(root=Path(__file__).resolve().parents[1]))" in text
    assert len(code) <= 8, code


@pytest.mark.parametrize("main, argv", [(cli.labs_main, ["check"]), (cli.grade_main, ["subs", "--out", "out"]),
                                        (cli.bench_main, [])])
def test_a_folder_that_is_not_a_checkout_is_a_usage_error(tmp_path, capsys, main, argv):
    with pytest.raises(SystemExit) as stop:
        main(argv, root=tmp_path)
    assert stop.value.code == 2 and "is not a course checkout (no labs/nbgrader_config.py)" in capsys.readouterr().err


@pytest.mark.parametrize("main, argv", [(cli.labs_main, ["check", "99_nothing"]),
                                        (cli.labs_main, ["submissions", "99_nothing", "m", "o"]),
                                        (cli.grade_main, ["subs", "--out", "out", "--lab", "99_nothing"])])
def test_an_unknown_lab_is_a_usage_error_naming_the_labs(capsys, main, argv):
    with pytest.raises(SystemExit) as stop:
        main(argv, root=REPO)
    assert stop.value.code == 2 and "no lab '99_nothing'; the labs are 01_attention" in capsys.readouterr().err


def test_python_m_course_grader_names_its_commands():
    done = subprocess.run([sys.executable, "-m", "course_grader"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "python -m course_grader {labs,grade,bench}" in done.stderr


def test_the_command_warns_on_stderr_only_when_isolation_is_weakened(capsys):
    cli.print_warnings(set())
    assert capsys.readouterr().err == ""
    cli.print_warnings({"no net namespace (unshare failed): the sandbox is weaker"})
    err = capsys.readouterr().err
    assert err.startswith("WARNING: the sandbox's isolation was weakened") and "no net namespace" in err


def test_an_output_folder_holding_python_is_not_hidden_and_says_so(tmp_path):
    warnings: set[str] = set()
    assert cli.private_paths(tmp_path / "out", warnings) == [(tmp_path / "out").resolve()] and not warnings
    assert cli.private_paths(Path(sys.prefix), warnings) == []
    assert any("holds Python or course_lib" in warning for warning in warnings)


@pytest.mark.parametrize("flags, runs", [([], True), (["--no-feedback"], False)])
def test_the_command_makes_feedback_unless_told_not_to_and_hides_its_output_folder(tmp_path, monkeypatch, flags, runs):
    calls = {}
    graded = {"ada": NotebookResult({g: (p, p) for g, p in POINTS.items()})}
    monkeypatch.setattr(cli.course, "scratch_course", lambda course_dir, labs_dir: course_dir.mkdir(parents=True))
    monkeypatch.setattr(cli.course, "generate_release", lambda course_dir, lab: None)
    monkeypatch.setattr(cli.course, "nbgrader", lambda *args: "")
    monkeypatch.setattr(cli.autograder, "grade_batch",
                        lambda *args, **kwargs: calls.setdefault("grade", kwargs) and graded)
    monkeypatch.setattr(cli.feedback, "write_feedback_notebooks",
                        lambda *args, **kwargs: calls.setdefault("feedback", (args, kwargs)) and {"ada": "a note"})
    (tmp_path / "subs" / "ada" / LAB).mkdir(parents=True)
    out = tmp_path / "out"
    assert cli.grade_main([str(tmp_path / "subs"), "--out", str(out), "--output-bytes", "100", *flags], root=REPO) == 0
    private = [*CHECKOUT.private, out.resolve()]  # the lab sources, the tests and everyone's grades
    assert calls["grade"]["hidden_paths"] == private
    assert ("feedback" in calls) == runs
    text = (out / "feedback" / "ada" / f"{LAB}.txt").read_text()
    if runs:
        args, kwargs = calls["feedback"]
        assert args[1] == LAB and args[3] == graded and args[5] == out.resolve() / "feedback"
        assert kwargs["max_output_bytes"] == 100 and kwargs["hidden_paths"] == private
        assert "Feedback notebook: a note" in text
    else:
        assert "Feedback notebook" not in text


# --- the documented commands, end to end ----------------------------------------------------------

def _run(*argv, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, argv)], cwd=cwd, timeout=timeout, capture_output=True, text=True)


@pytest.mark.slow
def test_labs_check_and_generate_end_to_end_on_a_copy_of_the_checkout(tmp_path):
    """A checkout whose release was edited by hand: ``check`` fails naming the file, ``generate`` mends it."""
    copy_of_labs(tmp_path / "labs")
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "labs.py", tmp_path / "scripts" / "labs.py")  # its checkout is the copy
    release = tmp_path / "labs" / "release" / LAB / RELEASE.name
    notebook = cells.load_notebook(release)
    notebook["cells"][0]["source"] = "edited by hand"
    release.write_text(json.dumps(notebook))
    stale = _run(tmp_path / "scripts" / "labs.py", "check", LAB)
    assert stale.returncode == 1, stale.stderr[-3000:]
    assert f"{LAB}/{RELEASE.name}: differs from a fresh generation" in stale.stdout
    assert "labs/release/ is out of date" in stale.stderr
    written = _run(tmp_path / "scripts" / "labs.py", "generate", LAB)
    assert written.returncode == 0 and f"wrote labs/release/{LAB}" in written.stdout, written.stderr[-3000:]
    assert cells.load_notebook(release) == cells.load_notebook(RELEASE)
    again = _run("-m", "course_grader", "labs", "check", LAB, cwd=tmp_path)  # the other front end, same command
    assert again.returncode == 0 and "labs/release/ is up to date" in again.stdout, again.stderr[-3000:]


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


@pytest.mark.slow
def test_bench_command_grades_a_small_class_consistently():
    kinds = 2 + len(lab_files("attention").mistakes)  # the solution, the stub, the known mistakes
    # ... two of them twice, and the four rare kinds once each (two attacks, two hangs): a 5 s limit keeps it quick
    done = _run(REPO / "scripts" / "bench_grading.py", "-n", str(kinds + 2 + 4), "--workers", "1", "--timeout", "5")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "without feedback" in done.stdout and "with feedback" in done.stdout and "load average" in done.stdout
    assert "no_scaling 10/12" in done.stdout and "solution 12/12" in done.stdout and "stub 0/12" in done.stdout
    assert "hang_at_import 4/12" in done.stdout and "hang_in_part 11/12" in done.stdout
    assert "attack_sys_exit 4/12" in done.stdout and "attack_always_equal 4/12" in done.stdout
    assert "(2 not run)" in done.stdout  # the two hangs are not run again for their feedback
