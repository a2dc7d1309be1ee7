"""Feedback notebooks: nbgrader's execution of a submission, sandboxed, never showing the hidden tests.

Fast tests pin the trusted rebuild (:func:`feedback.feedback_notebook`, :func:`feedback.cap_outputs`):
outputs capped in bytes with a visible note, rich HTML/JS outputs dropped, test cells shown as
released whatever the student did to them, each graded cell ending with the grader's verdict and
hint. The slow test makes real feedback for lab 01 in a scratch course: a failing submission's
HTML has the hint and no hidden test, an attack (a 50 MB print, writes to both gradebooks, reads
of the hidden checks) is capped and changes no gradebook row, a corrupt notebook is that
student's error only, and no sandboxed process is left. With course_lib installed under the system's
temporary folder (as sources outside the venv, or in its site-packages), the feedback kernel still
imports it: the lab's demo cell runs.
"""
from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course_grader import autograder, cells, course, feedback
from course_grader.autograder import NotebookResult
from course_grader.sandbox import Limits
from course_lib.lab_checks import attention as attention_checks
from tests.grader import CHECKOUT
from tests.labtools import lab_files
from tests.paths import FIXTURES

LAB, SOURCE, RELEASE = lab_files("attention")[:3]
NOTEBOOK = SOURCE.stem
POINTS = {c.grade_id: float(c.points) for c in attention_checks.RUBRIC}
HINT = "Hint: you forgot to divide the scores by √d"
# What the hidden tests look like: none of it may reach a student's feedback.
HIDDEN_SOURCE = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "attention_checks.check_", "def check_", "from course_lib.lab_checks")
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")


def _stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


# --- capping outputs ------------------------------------------------------------------------

def test_a_huge_print_is_cut_to_the_cap_with_a_note_of_what_was_cut():
    capped = feedback.cap_outputs([_stream("x" * 50_000_000), _stream("after", "stderr")], 1000)
    assert capped[0]["text"] == "x" * 1000
    assert capped[-1] == _stream("[output truncated: 49999005 bytes not shown]\n", "stderr")
    assert len(json.dumps(capped)) < 1200


def test_the_cap_counts_bytes_not_characters_and_never_splits_a_character():
    capped = feedback.cap_outputs([_stream("é" * 10)], 5)  # 2 bytes each
    assert capped[0]["text"] == "éé" and "16 bytes" in capped[-1]["text"]


def test_rich_outputs_are_dropped_and_malformed_ones_ignored():
    outputs = [{"output_type": "display_data", "data": {"text/html": "<script>alert(1)</script>",
                                                        "text/plain": "<IPython.display>"}, "metadata": {}},
               {"output_type": "display_data", "data": {"application/javascript": "alert(1)"}},
               {"output_type": "stream", "name": "stdout", "text": 42}, "not a dict", {"output_type": "eval"}]
    capped = feedback.cap_outputs(outputs)
    assert capped[0]["data"] == {"text/plain": "<IPython.display>"}
    assert "script" not in json.dumps(capped[:-1]) and capped[-1]["text"].startswith("[output truncated:")
    assert len(capped) == 2


def test_small_outputs_and_errors_pass_unchanged():
    error = {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": ["line 1", "ValueError: bad"]}
    assert feedback.cap_outputs([_stream("hi\n"), error]) == [_stream("hi\n"), error]


# --- the trusted rebuild ----------------------------------------------------------------------

def _release() -> dict:
    return json.loads(RELEASE.read_text(encoding="utf-8"))


def _result(failed: dict[str, str]) -> NotebookResult:
    return NotebookResult({g: (0.0 if g in failed else p, p) for g, p in POINTS.items()}, dict(failed))


def _cell(notebook: dict, grade_id: str) -> dict:
    return next(c for c in notebook["cells"] if cells.grade_id(c) == grade_id)


def test_test_cells_show_the_release_source_and_end_with_the_verdict():
    executed = _release()
    tampered = _cell(executed, "test_sdpa_scaling")
    tampered["source"] = "print('my own test')"
    tampered["outputs"] = [_stream("my own test\n")]
    executed["cells"].append(json.loads(json.dumps(tampered)))  # a duplicated test cell
    executed["cells"] = [c for c in executed["cells"] if cells.grade_id(c) != "test_causal_mask"]  # deleted
    message = f"the weights equal softmax(QKᵀ)\n{HINT} (d = q.shape[-1])"
    made = feedback.feedback_notebook(executed, executed, _release(), _result({"test_sdpa_scaling": message}),
                                      attention_checks.RUBRIC)
    nbformat.validate(nbformat.from_dict(made))
    scaling = _cell(made, "test_sdpa_scaling")
    assert scaling["source"] == cells.source(_cell(_release(), "test_sdpa_scaling"))
    assert scaling["outputs"][0] == _stream("my own test\n")  # what nbgrader's run printed stays
    assert scaling["outputs"][-1]["ename"] == "HiddenTestsFailed" and HINT in "\n".join(scaling["outputs"][-1]["traceback"])
    assert "0 / 2 points" in scaling["outputs"][-1]["traceback"][0]
    assert sum(cells.grade_id(c) == "test_sdpa_scaling" for c in made["cells"]) == 1  # duplicate lost its id
    assert made["cells"][-1]["source"].startswith("expected = torch.tensor")  # the deleted test cell is back
    assert "Hidden tests passed: 1 / 1 points" in made["cells"][-1]["outputs"][-1]["text"]
    assert not any(marker in json.dumps(made) for marker in HIDDEN_SOURCE)


def test_the_students_solution_cells_and_own_cells_are_kept():
    executed = _release()
    _cell(executed, "causal_mask")["source"] = "def causal_mask(size):\n    return 'mine'"
    executed["cells"].append({"cell_type": "code", "metadata": {"nbgrader": {"grade": True, "grade_id": "fake",
                                                                             "points": 100}},
                              "source": "print(1)", "outputs": [_stream("1\n")], "execution_count": 3})
    made = feedback.feedback_notebook(executed, executed, _release(), _result({}), attention_checks.RUBRIC)
    assert "return 'mine'" in _cell(made, "causal_mask")["source"]
    own = made["cells"][-1]
    assert own["metadata"] == {} and own["outputs"] == [_stream("1\n")] and own["execution_count"] == 3


def test_a_notebook_that_was_not_run_shows_why_and_no_outputs_it_claims():
    submitted = _release()
    _cell(submitted, "test_sdpa_mask")["outputs"] = [_stream("Hidden tests passed: 2 / 2 points (faked)\n")]
    made = feedback.feedback_notebook(None, submitted, _release(), _result({"test_sdpa_mask": "wrong"}),
                                      attention_checks.RUBRIC, note="it took too long")
    assert made["cells"][0]["source"] == "**Note from the grader:** it took too long"
    assert "faked" not in json.dumps(made)
    assert _cell(made, "test_sdpa_mask")["outputs"][-1]["traceback"][1] == "wrong"


# --- real feedback for lab 01, sandboxed ------------------------------------------------------------

ATTACK = '''import os, sqlite3, sys
import torch

for path in ("{GRADEBOOK}", "/tmp/gradebook.db", "../../../gradebook.db"):  # the real one, and its own copy
    try:
        with sqlite3.connect(path) as db:
            db.execute("UPDATE grade SET auto_score = 99")
    except Exception as error:
        print("gradebook:", type(error).__name__)
for path in ("{CHECKS}", "{SOURCE_NOTEBOOK}"):
    try:
        print(open(path).read())
    except OSError as error:
        print("hidden file:", type(error).__name__)
try:
    import course_lib.lab_checks.attention as checks
    print(open(checks.__file__).read())
except Exception as error:
    print("checks module:", type(error).__name__)
print("x" * 50_000_000)  # a 50 MB print, after the lines above (the cap keeps the start)


def causal_mask(size):
    return torch.ones(size, size, dtype=torch.bool).tril()
'''


def _rows(database: Path) -> dict:
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {(table, str(row[0])): row for table in tables for row in db.execute(f"SELECT * FROM {table}")}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Lab 01 graded for a failing student, an attacker and a corrupt notebook; then their feedback."""
    root = tmp_path_factory.mktemp("feedback")
    course_dir = course.scratch_course(root / "course", CHECKOUT.labs)
    course.generate_release(course_dir, LAB)
    solutions = course.solution_code(SOURCE)
    mistake = course.mistake_code(FIXTURES / "labs" / "attention" / "no_scaling.py", solutions)
    attack = ATTACK
    for name, value in {"GRADEBOOK": course_dir / "gradebook.db", "CHECKS": Path(attention_checks.__file__),
                        "SOURCE_NOTEBOOK": course_dir / "source" / LAB / SOURCE.name}.items():
        attack = attack.replace("{" + name + "}", str(value))
    submissions = {}
    for student, notebook in (("no_scaling", course.fill_solutions(RELEASE, {**solutions, **mistake})),
                              ("attacker", course.fill_solutions(RELEASE, {**solutions, "causal_mask": attack})),
                              ("corrupt", '{"cells": [')):
        path = root / "subs" / student / LAB / RELEASE.name
        path.parent.mkdir(parents=True)
        path.write_text(notebook if isinstance(notebook, str) else json.dumps(notebook), encoding="utf-8")
        submissions[student] = path
    results = autograder.grade_batch(course_dir, LAB, submissions, workers=0, progress=False,
                                     limits=Limits(wall_seconds=20), hidden_paths=CHECKOUT.private)
    before = _rows(course_dir / "gradebook.db")
    start = time.monotonic()
    notes = feedback.write_feedback_notebooks(course_dir, LAB, attention_checks, results, submissions, root / "out",
                                              workers=2, max_output_bytes=64 << 10, hidden_paths=CHECKOUT.private)
    elapsed = time.monotonic() - start
    html = {s: (root / "out" / s / LAB / f"{NOTEBOOK}.html") for s in submissions}
    return {"course": course_dir, "results": results, "notes": notes, "before": before, "html": html,
            "elapsed": elapsed}


@pytest.mark.slow
def test_a_failing_submission_gets_the_hint_and_none_of_the_hidden_tests(made):
    assert made["results"]["no_scaling"].scores["test_sdpa_scaling"] == (0.0, 2.0)
    page = made["html"]["no_scaling"].read_text(encoding="utf-8")
    assert HINT in page and "Hidden tests failed: 0 / 2 points" in page
    assert "did you divide the scores by √d?" in page  # the visible test ran, in nbgrader's kernel
    assert not any(marker in page for marker in HIDDEN_SOURCE)
    assert "no_scaling" not in made["notes"]


@pytest.mark.slow
def test_an_attack_is_capped_and_changes_no_gradebook(made):
    page = made["html"]["attacker"].read_text(encoding="utf-8")
    assert "[output truncated: 4" in page and len(page) < 2_000_000  # of the 50 MB print
    assert "gradebook: OperationalError" in page  # the real gradebook is not there to write
    assert "hidden file: FileNotFoundError" in page and "checks module: " in page
    assert not any(marker in page for marker in HIDDEN_SOURCE)
    # Reading the lab's checks is a use of course_lib's implementation (the reference policy): that
    # cell's part scores 0 with the policy's message; every other part keeps its points.
    attacker = made["results"]["attacker"]
    assert {g for g, (score, points) in attacker.scores.items() if score < points} == {"test_causal_mask"}
    assert "this lab asks you to write it yourself" in attacker.messages["test_causal_mask"]
    assert _rows(made["course"] / "gradebook.db") == made["before"]  # every row, every student: scores unchanged


@pytest.mark.slow
def test_a_corrupt_notebook_is_an_error_for_that_student_only(made):
    assert "corrupt JSON" in made["notes"]["corrupt"] and not made["html"]["corrupt"].exists()
    assert set(made["notes"]) == {"corrupt"}
    assert made["html"]["no_scaling"].is_file() and made["html"]["attacker"].is_file()


@pytest.mark.slow
def test_no_sandboxed_process_is_left_and_the_cost_is_reported(made):
    from tests.grader.test_sandbox import wait_for_no_sandbox_processes

    assert wait_for_no_sandbox_processes() == []
    print(f"feedback for 2 executed submissions (2 workers): {made['elapsed']:.1f} s")


@pytest.mark.slow
def test_a_run_past_its_deadline_is_killed_and_reported_for_that_student():
    from course_grader.sandbox import Sandbox
    from tests.grader.test_sandbox import wait_for_no_sandbox_processes

    course = feedback._Course(LAB, {}, {"nbgrader_config.py": b"c = get_config()\n"})
    with Sandbox(Limits(wall_seconds=3), autograder.paths_hidden_from_students(*CHECKOUT.private)) as box:
        box.command(["/bin/true"], {}, [])  # the zygote's start-up is not part of the deadline
        start = time.monotonic()
        with pytest.raises(feedback.FeedbackError, match="running the notebook stopped: .*longer than 3 s"):
            feedback.execute_submission(box, course, NOTEBOOK, b'{"cells": []}')  # nbgrader cannot even start
        assert time.monotonic() - start < 10
    assert wait_for_no_sandbox_processes() == []


# --- the course installed in the system's temporary folder --------------------------------------------

GRADE_WITH_FEEDBACK = r"""
import json, sys
from pathlib import Path
import course_lib
from course_grader import autograder, course, feedback
from course_grader.registry import lab
request = json.load(sys.stdin)
root, name = Path(request["root"]), request["lab"]
course_dir = course.scratch_course(root / "course", Path(request["labs"]))
course.generate_release(course_dir, name)
submissions = {"student": Path(request["submission"])}
hidden = [Path(p) for p in request["hidden"]]
results = autograder.grade_batch(course_dir, name, submissions, workers=0, progress=False, hidden_paths=hidden)
notes = feedback.write_feedback_notebooks(course_dir, name, lab(name).checks, results, submissions, root / "out",
                                          workers=1, hidden_paths=hidden)
print(json.dumps({"course_lib": course_lib.__file__, "notes": notes, "total": results["student"].total}))
"""


def _sources_install(root: Path) -> Path:
    """Like an editable install: course_lib and course_grader's sources in ``root/src``, outside the venv's
    prefix, found through a ``.pth`` file; the course's environment provides the rest. Returns its Python."""
    import shutil
    import subprocess
    import sysconfig

    from tests.paths import REPO

    ignore = shutil.ignore_patterns("__pycache__", "*.pt")
    shutil.copytree(REPO / "course_lib", root / "src" / "course_lib", ignore=ignore)
    shutil.copytree(REPO / "grader" / "course_grader", root / "src" / "course_grader", ignore=ignore)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "course-sources.pth").write_text(f"{root / 'src'}\n{sysconfig.get_paths()['purelib']}\n")
    return python


@pytest.mark.slow
@pytest.mark.parametrize("install", ["sources", "site-packages"])
def test_feedback_runs_the_demo_cells_when_the_course_is_installed_in_the_temporary_folder(install):
    """The sandbox gives each run an empty /tmp; a course_lib installed under it, as sources outside the venv
    (like an editable install) or in the venv's site-packages, must still import in the feedback notebook's
    kernel (its ungraded demo cell uses course_lib.MultiHeadAttention)."""
    import os
    import subprocess
    import tempfile

    from tests.grader.test_reference_policy import make_site_install

    with tempfile.TemporaryDirectory(prefix="course-in-tmp-", dir=tempfile.gettempdir()) as work:
        root = Path(work)
        python = make_site_install(root / "site") if install == "site-packages" else _sources_install(root / "site")
        submission = root / "subs" / "student" / LAB / RELEASE.name
        submission.parent.mkdir(parents=True)
        submission.write_text(json.dumps(course.fill_solutions(RELEASE, course.solution_code(SOURCE))))
        request = {"root": str(root), "lab": LAB, "labs": str(CHECKOUT.labs), "submission": str(submission),
                   "hidden": [str(p) for p in CHECKOUT.private]}
        jupyter = str(Path(sys.prefix) / "share" / "jupyter")  # nbconvert's templates, borrowed like the packages
        path = f"{python.parent}:{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"  # alembic
        done = subprocess.run([str(python), "-P", "-c", GRADE_WITH_FEEDBACK], input=json.dumps(request),
                              capture_output=True, text=True, timeout=900, cwd=root,
                              env={**os.environ, "PATH": path, "JUPYTER_PATH": jupyter})
        assert done.returncode == 0, done.stderr[-3000:]
        reply = json.loads(done.stdout.strip().splitlines()[-1])
        html = root / "out" / "student" / LAB / f"{NOTEBOOK}.html"
        assert html.is_file(), reply["notes"]
        page = html.read_text(encoding="utf-8")
    assert reply["course_lib"].startswith(f"{root}/site/{'venv' if install == 'site-packages' else 'src'}/")
    assert reply["course_lib"].startswith(tempfile.gettempdir() + "/")
    assert reply["notes"] == {} and reply["total"] == sum(POINTS.values())
    assert "ModuleNotFoundError" not in page and "No module named" not in page
    assert "same as course_lib.MultiHeadAttention: True" in page  # the demo cell ran, with course_lib
