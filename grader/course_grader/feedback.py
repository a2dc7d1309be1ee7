"""Feedback notebooks: nbgrader's own execution of a submission, in the sandbox, shown with the trusted scores.

Scores come from :mod:`~course_grader.autograder`; this module makes what the student reads.
For each graded notebook:

1. **Execute, sandboxed.** A throwaway nbgrader course is built once per lab from the *release*
   notebooks (:func:`throwaway_course`), so its gradebook and grade cells hold the visible tests
   only: the hidden tests never enter it. For each student, :meth:`Sandbox.command
   <course_grader.sandbox.Sandbox.command>` runs ``nbgrader autograde`` on a copy of that
   course plus the submission, in a child with no network but loopback, its own uid, limits and
   the real course, gradebook, hidden checks and other submissions out of sight
   (:func:`execute_submission`). Its executed notebook comes back as untrusted bytes. The run is
   warm: the sandbox's zygote imported nbgrader, ipykernel, torch and course_lib once
   (:data:`WARM_MODULES`), so the child runs nbgrader without starting Python and its kernel is a
   process forked ready (:mod:`~course_grader.sandbox_command`): a few seconds less per student.
2. **Rebuild, trusted.** :func:`~course_grader.feedback_rebuild.feedback_notebook` keeps the
   student's cells and outputs (capped), puts back the release's test and locked cells and appends
   each graded cell's verdict and hint (:mod:`~course_grader.feedback_rebuild`).
3. **Render, trusted.** :func:`write_feedback_notebooks` stores those notebooks as the course's
   ``autograded/`` notebooks and runs ``nbgrader generate_feedback`` for this run's students, one
   process per worker (no execution; scores from the real gradebook, HTML sanitized), copying the
   HTML to ``OUT/<student>/<lab>/<notebook>.html``.

A submission that cannot be executed (a timeout, a crash) still gets a feedback notebook: its
cells without outputs, with the verdicts and a note saying why. One whose cell hung or crashed
while grading loaded it (``NotebookResult.stopped``), or one whose graded call ran past its time
limit (``NotebookResult.hung``), is not run again: it would only hang again, a time limit per cell.
Not covered: scores, the text summary (:mod:`~course_grader.cli`).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import cells
from .autograder import paths_hidden_from_students
from .course import run_nbgrader
from .feedback_rebuild import DEFAULT_OUTPUT_BYTES, cap_outputs, feedback_notebook
from .protocol import safe_text
from .registry import lab as find_lab
from .sandbox import Limits, Sandbox, SandboxError

__all__ = [
    "DEFAULT_OUTPUT_BYTES", "FEEDBACK_LIMITS", "FeedbackError", "cap_outputs", "execute_submission",
    "feedback_notebook", "throwaway_course", "write_feedback_notebooks",
]

FEEDBACK_LIMITS = Limits(wall_seconds=180, cpu_seconds=180, file_bytes=256 << 20, processes=512,
                         message_bytes=256 << 20, scratch_bytes=512 << 20)
STUDENT = "student"  # the student's id inside the throwaway course
HIDDEN_MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
CELL_TIMEOUT = 60  # seconds per cell in the sandboxed nbgrader run
# Imported once by the feedback sandbox's zygote, so that each student's `nbgrader autograde` and its
# kernel start warm (course_grader.sandbox_command); course_lib for the labs' ungraded demo cells.
WARM_MODULES = ("nbgrader.apps.nbgraderapp", "jupyter_client.provisioning.local_provisioner", "ipykernel.kernelapp",
                "course_lib")


class FeedbackError(Exception):
    """The feedback notebook of one student could not be made (the others are unaffected)."""


@dataclass
class _Course:
    lab: str
    notebooks: dict[str, dict]  # notebook name -> release notebook
    files: dict[str, bytes]  # relative path -> content of the throwaway course


def throwaway_course(release_dir: Path, lab: str, work: Path) -> _Course:
    """A course whose *source* is the release of ``lab``: its gradebook holds no hidden test.

    Made once per lab (``nbgrader generate_assignment``, no student code); raises if a hidden
    test marker is anywhere in it, so a release that leaks one is never executed for feedback.
    """
    course = work / "throwaway"
    source = course / "source" / lab
    shutil.copytree(release_dir, source)
    (course / "nbgrader_config.py").write_text(
        'c = get_config()  # noqa: F821\nc.CourseDirectory.course_id = "feedback"\n'
        'c.CourseDirectory.db_url = "sqlite:///gradebook.db"\n'
        f"c.Execute.timeout = {CELL_TIMEOUT}\n"
        # The outputs are in when the last cell is done: kill the kernel then, rather than wait for it to exit.
        'c.Execute.shutdown_kernel = "immediate"\n', encoding="utf-8")
    done = run_nbgrader(course, "generate_assignment", lab, "--force")  # trusted: no student code runs
    if done.returncode != 0:
        raise RuntimeError(f"could not build the feedback course for {lab}:\n{done.stdout[-3000:]}")
    files = {"nbgrader_config.py": (course / "nbgrader_config.py").read_bytes(),
             "gradebook.db": (course / "gradebook.db").read_bytes()}
    files |= {f"source/{lab}/{p.relative_to(source)}": p.read_bytes() for p in sorted(source.rglob("*"))
              if p.is_file() and ".ipynb_checkpoints" not in p.parts}
    for name, content in files.items():
        if any(marker.encode() in content for marker in HIDDEN_MARKERS):
            raise RuntimeError(f"{name} of the feedback course for {lab} holds hidden tests: refusing to use it")
    notebooks = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(release_dir.glob("*.ipynb"))}
    return _Course(lab, notebooks, files)


def execute_submission(sandbox: Sandbox, course: _Course, notebook: str, submission: bytes) -> dict:
    """``nbgrader autograde`` of one submission in the sandbox; the executed notebook (untrusted JSON).

    Raises :class:`FeedbackError` when nbgrader produced no readable notebook.
    """
    if len(submission) > 64 << 20:
        raise FeedbackError("the notebook is larger than 64 MiB")
    executed = f"autograded/{STUDENT}/{course.lab}/{notebook}.ipynb"
    files = {**course.files, f"submitted/{STUDENT}/{course.lab}/{notebook}.ipynb": submission}
    python_bin = str(Path(sys.executable).parent)
    try:  # `python -m nbgrader autograde`, run warm by the sandboxed child (see WARM_MODULES)
        result = sandbox.command(["autograde", course.lab, "--force"], files, [executed], module="nbgrader",
                                 env={"PATH": f"{python_bin}:/usr/bin:/bin",
                                      "CUDA_VISIBLE_DEVICES": ""})  # feedback runs on the CPU
    except SandboxError as error:
        raise FeedbackError(f"running the notebook stopped: {error}") from None
    if executed not in result.files:
        reason = next((line for line in reversed(result.log.splitlines()) if "ERROR" in line or "Error" in line),
                      f"nbgrader exited with status {result.returncode}")
        raise FeedbackError(f"the notebook could not be run: {safe_text(reason, 300)}")
    try:
        notebook_json = json.loads(result.files[executed].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise FeedbackError("the executed notebook came back unreadable") from None
    if not isinstance(notebook_json, dict) or not isinstance(notebook_json.get("cells"), list):
        raise FeedbackError("the executed notebook came back unreadable")
    return notebook_json


# --- the batch ------------------------------------------------------------------------------

def write_feedback_notebooks(course_dir: Path, lab: str, module, results: dict, submissions: dict[str, Path],
                             out: Path, *, workers: int = 2, hidden_paths=(), limits: Limits = FEEDBACK_LIMITS,
                             max_output_bytes: int = DEFAULT_OUTPUT_BYTES, warnings: set[str] | None = None,
                             timings: dict[str, float] | None = None) -> dict[str, str]:
    """Feedback HTML for every student in ``results`` (graded scores of ``lab``), in ``out/<student>/<lab>/``.

    ``course_dir`` is the real course (its gradebook holds the scores; ``release/<lab>`` the
    student version). Returns ``{student: note}`` for students whose feedback notebook is
    missing or was made without running their notebook (corrupt submissions, timeouts, ...).
    ``timings``, when given, gets the seconds spent executing (``"execute"``, the sandbox's start
    included) and rendering (``"render"``).
    """
    course_dir, notebook = Path(course_dir).resolve(), find_lab(lab).notebook
    hidden = paths_hidden_from_students(course_dir, out, *hidden_paths, submissions=submissions.values())
    notes: dict[str, str] = {}
    timings = timings if timings is not None else {}
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        course = throwaway_course(course_dir / "release" / lab, lab, Path(work))
        release = course.notebooks[notebook]

        def one(sandbox: Sandbox, student: str) -> None:
            result = results[student]
            if result.error:
                notes[student] = f"no feedback notebook: {result.error}"
                return
            try:
                submitted = cells.load_notebook(submissions[student])
                raw = Path(submissions[student]).read_bytes()
            except (cells.NotebookError, OSError) as error:
                notes[student] = f"no feedback notebook: {error}"
                return
            executed, note = None, None
            try:
                if result.stopped or result.hung:  # it hung or crashed when graded: running it again would too
                    raise FeedbackError(result.stopped or result.hung)
                executed = execute_submission(sandbox, course, notebook, raw)
            except FeedbackError as error:
                note = notes[student] = f"your notebook was not run for this feedback ({error}); the scores stand."
            made = feedback_notebook(executed, submitted, release, result, module.RUBRIC, max_output_bytes, note)
            target = course_dir / "autograded" / student / lab / f"{notebook}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(made, ensure_ascii=False), encoding="utf-8")

        students = sorted(results)
        with Sandbox(limits, hidden, preload=WARM_MODULES) as sandbox, ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(lambda s: one(sandbox, s), students))
            if warnings is not None:
                warnings.update(sandbox.warnings)
    timings["execute"], start = time.monotonic() - start, time.monotonic()
    failures = _render(course_dir, lab, [s for s in students if (course_dir / "autograded" / s / lab).is_dir()],
                       workers)
    timings["render"] = time.monotonic() - start
    for student in students:
        html = course_dir / "feedback" / student / lab / f"{notebook}.html"
        if html.is_file():
            target = Path(out) / student / lab / html.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(html, target)
        elif student not in notes or not notes[student].startswith("no feedback"):
            notes[student] = "no feedback notebook: nbgrader could not render it" + (
                f" ({failures[-300:]})" if failures else "")
    return notes


def _render(course_dir: Path, lab: str, students: list[str], workers: int) -> str:
    """``nbgrader generate_feedback`` of ``students`` only (not every student the course ever graded), split
    over ``workers`` processes; the output of those that failed."""
    everyone = {p.name for p in (course_dir / "autograded").iterdir() if p.is_dir()} if students else set()
    groups = [students[i::max(1, workers)] for i in range(max(1, workers))]

    def render(group: list[str]):
        others = ",".join(sorted(everyone - set(group)))
        return run_nbgrader(course_dir, "generate_feedback", lab, "--force", "--HTMLExporter.sanitize_html=True",
                            *([f"--CourseDirectory.student_id_exclude={others}"] if others else []))

    with ThreadPoolExecutor(len(groups)) as pool:
        done = list(pool.map(render, [group for group in groups if group]))
    return "".join(d.stdout for d in done if d.returncode)
