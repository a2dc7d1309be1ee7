"""The sandbox and the sandboxed autograder: no submission can cheat, break grading or touch others.

Fast tests pin one sandboxed part's isolation (unprivileged uid, own PID namespace, empty /tmp);
the wire protocol has its own tests (``test_protocol.py``).
The slow tests grade real notebooks of lab 01 in a scratch nbgrader course: honest submissions
score what plain nbgrader gives them, and every attack in ``tests/fixtures/attacks/`` (read with
``ast``, never run here) loses exactly its ``LOST`` cells, while the other students' gradebook
rows stay byte-identical and no sandboxed process is left behind.
"""
from __future__ import annotations

import ast
import fcntl
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest
import torch
from nbgrader.api import MissingEntry

from course_grader import autograder, cells, course, locks, sandbox
from course_grader.sandbox import Limits, Sandbox, SandboxCrashed, SandboxTimeout
from course_lib.lab_checks import attention as attention_checks
from tests.grader import CHECKOUT
from tests.labtools import lab_files, mistake_fails
from tests.paths import FIXTURES

LAB, SOURCE, RELEASE, MISTAKES_DIR = lab_files("attention")[:4]
ATTACKS = sorted((FIXTURES / "attacks").glob("*.py"))
POINTS = {c.grade_id: float(c.points) for c in attention_checks.RUBRIC}
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")
ROOT = os.geteuid() == 0
# Attacks only contained with root's isolation (own uids, namespaces, a gradebook folder closed to them).
# CI runs as root, so there they all run; a non-root run skips just these.
NEEDS_ROOT = {"gradebook_access", "hidden_tests_access", "kill_parent", "fork_bomb"}


def sandbox_processes() -> list[int]:
    """Pids of live processes running as one of the uids of the sandboxes this test process started (other
    grading runs on the machine have uids of their own, also when they reuse a slot this process gave back:
    :mod:`course_grader.locks`)."""
    return locks.processes_left_behind_here()


def wait_for_no_sandbox_processes(timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := sandbox_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# --- one sandbox, real processes ----------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_sandbox():
    with Sandbox(Limits(wall_seconds=10, processes=16)) as box:
        yield box
    assert wait_for_no_sandbox_processes() == []


PROBE = """
import os, torch
def probe():
    return os.getuid(), os.getpid(), len(os.listdir("/tmp")), len(os.listdir("/proc/1/fd")) >= 0
def double(x, factor=2):
    return x * factor, x.sum()
"""


def test_a_part_runs_isolated_and_answers_with_plain_tensors(shared_sandbox):
    with shared_sandbox.run(PROBE, ["probe", "double"]) as part:
        uid, pid, tmp_entries, _ = part.function("probe")()
        out, total = part.function("double")(torch.arange(4.0), factor=3)
    assert type(out) is torch.Tensor and out.tolist() == [0.0, 3.0, 6.0, 9.0] and total.item() == 6.0
    if ROOT:
        assert uid in shared_sandbox.uids  # the sandbox's own range, no other sandbox's
    if not shared_sandbox.warnings:  # namespaces available: its own PID namespace and an empty /tmp
        # /tmp is empty but for the path to Python itself when it lives there (a venv in a clone under /tmp)
        python_in_tmp = {os.path.realpath(p).split("/")[2] for p in (sys.prefix, sys.base_prefix)
                         if os.path.realpath(p).startswith("/tmp/")}
        assert pid == 1 and tmp_entries == len(python_in_tmp)


def test_a_part_that_loops_is_killed_at_its_deadline():
    with Sandbox(Limits(wall_seconds=1.5)) as box:
        box.run("", []).close()  # the zygote's start-up is not part of the deadline
        start = time.monotonic()
        with box.run("def spin():\n    while True:\n        pass\n", ["spin"]) as part:
            with pytest.raises(SandboxTimeout, match="longer than 1.5 s"):
                part.function("spin")()
        assert time.monotonic() - start < 5
    assert wait_for_no_sandbox_processes() == []


def test_weakened_isolation_is_reported_as_a_warning(shared_sandbox):
    with shared_sandbox.run("", []):
        pass
    not_root = any("not running as root" in w for w in shared_sandbox.warnings)
    assert not_root == (not ROOT)


def _locked(path: Path) -> bool:
    """Whether another open file description holds the flock on ``path``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_gpu_parts_hold_the_gpu_lock_from_start_to_close(tmp_path):
    """The scheduling of GPU parts, checked on the CPU: a ``cuda`` part holds the lock shared by all
    grading processes until it is closed; CPU parts never take it. (Without CUDA the part's load fails,
    as it should, and is reported as that part's error.)"""
    lock = tmp_path / "gpu.lock"
    with Sandbox(Limits(wall_seconds=20), gpu_lock=lock) as box:
        with box.run("def f():\n    return 1\n", ["f"]) as part:
            assert not _locked(lock) and part.function("f")() == 1
        with box.run("def f():\n    return 1\n", ["f"], device="cuda") as part:
            assert _locked(lock)
            if not torch.cuda.is_available():
                with pytest.raises((AssertionError, RuntimeError), match="CUDA|NVIDIA"):
                    part.function("f")()
        assert not _locked(lock)
        with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
            box.run("", [], device="tpu")
        with box.run("def f():\n    return 2\n", ["f"]) as part:  # still serving after a failed GPU part
            assert part.function("f")() == 2
    assert wait_for_no_sandbox_processes() == []


def test_the_gpu_lock_admits_one_holder_at_a_time(tmp_path):
    first, second = sandbox.GpuLock(tmp_path / "gpu.lock"), sandbox.GpuLock(tmp_path / "gpu.lock")
    first.acquire()
    assert _locked(tmp_path / "gpu.lock")
    waiter = __import__("threading").Thread(target=second.acquire)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # blocked while the first holds it
    first.release()
    waiter.join(5)
    assert not waiter.is_alive()
    second.release()
    assert not _locked(tmp_path / "gpu.lock")


def test_load_errors_and_crashes_are_reported_per_part(shared_sandbox):
    with shared_sandbox.run("def f(:\n", ["f"]) as part, pytest.raises(SyntaxError):
        part.function("f")()
    with shared_sandbox.run("x = 1\n", ["f"]) as part:
        with pytest.raises(NameError, match="does not define f"):
            part.function("f")()
    with shared_sandbox.run("import os\ndef f():\n    os._exit(3)\n", ["f"]) as part:
        with pytest.raises(SandboxCrashed):
            part.function("f")()
    with shared_sandbox.run("def f():\n    return 1\n", ["f"]) as part:  # the sandbox still works
        assert part.function("f")() == 1


# --- grading real notebooks ----------------------------------------------------------------------

def _attack_notebook(attack: Path, paths: dict[str, str]) -> dict:
    """The release notebook with the reference solutions and the attack's cell (never run here)."""
    text = attack.read_text(encoding="utf-8")
    for name, value in paths.items():
        text = text.replace("{" + name + "}", value)
    target = next(ast.literal_eval(node.value) for node in ast.parse(text).body
                  if isinstance(node, ast.Assign) and node.targets[0].id == "TARGET")
    return course.fill_solutions(RELEASE, {**course.solution_code(SOURCE), target: text})


def _lost(attack: Path) -> set[str]:
    tree = ast.parse(attack.read_text(encoding="utf-8"))
    return set(next(ast.literal_eval(node.value) for node in tree.body
                    if isinstance(node, ast.Assign) and node.targets[0].id == "LOST"))


def _rows(database: Path) -> dict[tuple[str, str], tuple]:
    """Every row of every gradebook table, keyed by (table, primary key)."""
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {(table, str(row[0])): row for table in tables for row in db.execute(f"SELECT * FROM {table}")}


def _write(path: Path, notebook: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(notebook if isinstance(notebook, str) else json.dumps(notebook), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    """A scratch nbgrader course with lab 01 generated, honest students graded first."""
    root = tmp_path_factory.mktemp("sandboxed_grading")
    course_dir = course.scratch_course(root / "course", CHECKOUT.labs)
    course.generate_release(course_dir, LAB)
    honest = course.write_submissions(LAB, MISTAKES_DIR, root / "honest", CHECKOUT.labs)
    results = autograder.grade_batch(course_dir, LAB, honest, workers=0, progress=False,
                                     limits=Limits(wall_seconds=20), hidden_paths=CHECKOUT.private)
    return {"root": root, "course": course_dir, "honest": honest, "results": results}


@pytest.mark.slow
def test_honest_submissions_score_as_under_plain_nbgrader(graded_course):
    results = graded_course["results"]
    assert results["solution"].scores == {g: (p, p) for g, p in POINTS.items()}
    assert results["stub"].total == 0
    for mistake in MISTAKES_DIR.glob("*.py"):
        fails = set(mistake_fails(mistake))
        lost = {g for g, (score, _) in results[mistake.stem].scores.items() if score == 0}
        assert lost == fails, mistake.stem
        for grade_id in fails:
            assert "\nHint: " in results[mistake.stem].messages[grade_id]
    assert course.read_scores(graded_course["course"], LAB)["solution"] == {g: (p, p) for g, p in POINTS.items()}


@pytest.mark.slow
def test_every_attack_is_contained(graded_course):
    root, course_dir = graded_course["root"], graded_course["course"]
    before = _rows(course_dir / "gradebook.db")
    paths = {"GRADEBOOK": str(course_dir / "gradebook.db"), "SOURCE_NOTEBOOK": str(SOURCE),
             "CHECKS": str(Path(attention_checks.__file__)), "OTHER_SUBMISSION": str(graded_course["honest"]["solution"])}
    attacks = {a.stem: _write(root / "attacks" / a.stem / LAB / RELEASE.name, _attack_notebook(a, paths))
               for a in ATTACKS if ROOT or a.stem not in NEEDS_ROOT}
    # A shipped torch.py / numpy.py next to a correct notebook must change nothing.
    shipped = _write(root / "attacks" / "shipped_torch" / LAB / RELEASE.name,
                     course.fill_solutions(RELEASE, course.solution_code(SOURCE)))
    for module in ("torch", "numpy"):
        (shipped.parent / f"{module}.py").write_text("raise SystemExit('shadowed')\n")
    attacks["shipped_torch"] = shipped
    # Test cells deleted or retyped: the hidden checks do not come from the student's notebook.
    edited = course.fill_solutions(RELEASE, course.solution_code(SOURCE))
    edited["cells"] = [c for c in edited["cells"] if cells.grade_id(c) != "test_sdpa_scaling"]
    for cell in edited["cells"]:
        if cells.is_grade(cell):
            cell["cell_type"], cell["source"] = "markdown", "assert True  # tests removed"
    attacks["edited_tests"] = _write(root / "attacks" / "edited_tests" / LAB / RELEASE.name, edited)
    attacks["corrupt_json"] = _write(root / "attacks" / "corrupt_json" / LAB / RELEASE.name, '{"cells": [')

    start = time.monotonic()
    results = autograder.grade_batch(course_dir, LAB, attacks, workers=0, progress=False, hidden_paths=CHECKOUT.private,
                                     limits=Limits(wall_seconds=4, cpu_seconds=10, processes=24))
    elapsed = time.monotonic() - start

    expected = {a.stem: _lost(a) for a in ATTACKS if a.stem in attacks} | {"shipped_torch": set(), "edited_tests": set(),
                                                      "corrupt_json": set(POINTS)}
    lost = {student: {g for g, (score, _) in r.scores.items() if score == 0} for student, r in results.items()}
    assert lost == expected
    assert "corrupt JSON" in results["corrupt_json"].error
    assert all(message.startswith("your notebook calls sys.exit() (or exit()) at import, in your cell defining "
                                  "scaled_dot_product_attention") for message in results["sys_exit"].messages.values())
    assert all(r.error is None for s, r in results.items() if s != "corrupt_json")
    after = _rows(course_dir / "gradebook.db")
    assert {key: after.get(key) for key in before} == before  # nobody else's rows changed
    assert wait_for_no_sandbox_processes() == []
    assert elapsed < 120


@pytest.mark.slow
def test_a_rerun_skips_graded_students_and_an_interrupted_write_is_redone(graded_course, monkeypatch):
    course_dir, honest = graded_course["course"], graded_course["honest"]
    before = _rows(course_dir / "gradebook.db")
    private = CHECKOUT.private
    assert autograder.grade_batch(course_dir, LAB, honest, workers=0, progress=False, hidden_paths=private) == {}
    assert _rows(course_dir / "gradebook.db") == before

    late = {"late": _write(graded_course["root"] / "late" / "late" / LAB / RELEASE.name,
                           course.fill_solutions(RELEASE, course.solution_code(SOURCE)))}
    real_record = autograder.record

    def crash_after_first_score(gradebook, lab, notebook, student, result):
        result = autograder.NotebookResult(dict(list(result.scores.items())[:1]) | {"no_such_cell": (1, 1)})
        real_record(gradebook, lab, notebook, student, result)

    monkeypatch.setattr(autograder, "record", crash_after_first_score)
    with pytest.raises(MissingEntry):  # the write fails halfway and is rolled back
        autograder.grade_batch(course_dir, LAB, late, workers=0, progress=False, hidden_paths=private)
    monkeypatch.setattr(autograder, "record", real_record)
    assert course.read_scores(course_dir, LAB).get("late", {}) in ({}, {g: (0.0, p) for g, p in POINTS.items()})
    again = autograder.grade_batch(course_dir, LAB, {**honest, **late}, workers=0, progress=False, hidden_paths=private)
    assert set(again) == {"late"} and again["late"].total == sum(POINTS.values())
    after = _rows(course_dir / "gradebook.db")
    assert {key: after.get(key) for key in before} == before
