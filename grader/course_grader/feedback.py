"""Feedback notebooks: nbgrader's own execution of a submission, in the sandbox, shown with the trusted scores.

Scores come from :mod:`~course_grader.autograder`; this module makes what the student reads.
For each graded notebook:

1. **Execute, sandboxed.** A throwaway nbgrader course is built once per lab from the *release*
   notebooks (:func:`throwaway_course`), so its gradebook and grade cells hold the visible tests
   only: the hidden tests never enter it. For each student, :meth:`Sandbox.command
   <course_grader.sandbox.Sandbox.command>` runs ``nbgrader autograde`` on a copy of that
   course plus the submission, in a child with no network but loopback, its own uid, limits and
   the real course, gradebook, hidden checks and other submissions out of sight
   (:func:`execute_submission`). Its executed notebook comes back as untrusted bytes.
2. **Rebuild, trusted.** :func:`feedback_notebook` keeps the student's cells and outputs, puts back
   the release's source of every test and locked cell, drops rich outputs (HTML, JavaScript) and
   caps each cell's outputs at ``max_output_bytes`` with a visible "[output truncated: N bytes not
   shown]" note, then appends to each graded cell the grader's verdict: its points and, for a
   failed check, the check's message and hint (never its source).
3. **Render, trusted.** :func:`write_feedback_notebooks` stores those notebooks as the course's
   ``autograded/`` notebooks and runs ``nbgrader generate_feedback`` (no execution; scores from the
   real gradebook, HTML sanitized), copying the HTML to ``OUT/<student>/<lab>/<notebook>.html``.

A submission that cannot be executed (a timeout, a crash) still gets a feedback notebook: its
cells without outputs, with the verdicts and a note saying why. Not covered: scores, the text
summary (:mod:`~course_grader.cli`).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import cells
from .autograder import paths_hidden_from_students
from .cells import multiline_text
from .course import run_nbgrader
from .protocol import safe_text
from .registry import lab as find_lab
from .sandbox import Limits, Sandbox, SandboxError

__all__ = [
    "DEFAULT_OUTPUT_BYTES", "FEEDBACK_LIMITS", "FeedbackError", "cap_outputs", "execute_submission",
    "feedback_notebook", "throwaway_course", "write_feedback_notebooks",
]

DEFAULT_OUTPUT_BYTES = 64 << 10  # per cell, outputs only
FEEDBACK_LIMITS = Limits(wall_seconds=180, cpu_seconds=180, file_bytes=256 << 20, processes=512,
                         message_bytes=256 << 20, scratch_bytes=512 << 20)
MAX_CELLS, MAX_SOURCE_BYTES = 1000, 256 << 10
SHOWN_DATA = ("text/plain", "image/png", "image/jpeg")  # rich HTML/JS outputs are dropped, not rendered
STUDENT = "student"  # the student's id inside the throwaway course
HIDDEN_MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
CELL_TIMEOUT = 60  # seconds per cell in the sandboxed nbgrader run


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
        f"c.Execute.timeout = {CELL_TIMEOUT}\n", encoding="utf-8")
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
    try:
        result = sandbox.command([sys.executable, "-P", "-m", "nbgrader", "autograde", course.lab, "--force"],
                                 files, [executed], env={"PATH": f"{python_bin}:/usr/bin:/bin",
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


# --- trusted rebuild ------------------------------------------------------------------------

def _cut(text: str, budget: int) -> tuple[str, int]:
    """``text`` cut to at most ``budget`` UTF-8 bytes; and how many bytes were cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= budget:
        return text, 0
    kept = data[:max(budget, 0)].decode("utf-8", "ignore")  # a character cut in two is dropped whole
    return kept, len(data) - len(kept.encode("utf-8"))


def cap_outputs(outputs, max_bytes: int = DEFAULT_OUTPUT_BYTES) -> list[dict]:
    """Clean copies of a code cell's ``outputs``: only text and PNG/JPEG images, at most ``max_bytes``
    of them in all, then a note saying how many bytes were not shown. Anything malformed is dropped.

    >>> capped = cap_outputs([{"output_type": "stream", "name": "stdout", "text": "x" * 100}], 10)
    >>> capped[0]["text"], capped[1]["text"]
    ('xxxxxxxxxx', '[output truncated: 90 bytes not shown]\\n')
    """
    kept, budget, hidden = [], max_bytes, 0
    for output in outputs[:10_000] if isinstance(outputs, list) else []:
        kind = output.get("output_type") if isinstance(output, dict) else None
        if kind == "stream":
            text, cut = _cut(multiline_text(output.get("text")), budget)
            if text:
                kept.append({"output_type": "stream", "name": "stderr" if output.get("name") == "stderr"
                             else "stdout", "text": text})
            budget, hidden = budget - len(text.encode()), hidden + cut
        elif kind == "error":
            lines = output.get("traceback")
            trace = "\n".join(line for line in lines if isinstance(line, str)) if isinstance(lines, list) else ""
            summary = f"{multiline_text(output.get('ename'))}: {multiline_text(output.get('evalue'))}"
            text, cut = _cut(trace or summary, budget)
            kept.append({"output_type": "error", "ename": safe_text(multiline_text(output.get("ename")), 100),
                         "evalue": _cut(multiline_text(output.get("evalue")), 1000)[0], "traceback": text.split("\n")})
            budget, hidden = budget - len(text.encode()), hidden + cut
        elif kind in ("execute_result", "display_data") and isinstance(output.get("data"), dict):
            data = {}
            for mime in SHOWN_DATA:
                value = multiline_text(output["data"].get(mime))
                size = len(value.encode())
                if value and mime != "text/plain" and size <= budget:
                    data[mime], budget = value, budget - size
                elif value and mime == "text/plain":
                    data[mime], cut = _cut(value, budget)
                    budget, hidden = budget - len(data[mime].encode()), hidden + cut
                elif value:
                    hidden += size
            hidden += sum(len(json.dumps(v)) for k, v in output["data"].items() if k not in SHOWN_DATA)
            if data:
                count = output.get("execution_count")
                kept.append({"output_type": kind, "data": data, "metadata": {}}
                            | ({"execution_count": count if type(count) is int else None}
                               if kind == "execute_result" else {}))
    if hidden:
        kept.append({"output_type": "stream", "name": "stderr", "text": f"[output truncated: {hidden} bytes not shown]\n"})
    return kept


def _verdict(grade_id: str, result, description: str) -> dict:
    """The trusted grader's result for one graded cell, as an output of that cell."""
    score, points = result.scores[grade_id]
    if grade_id not in result.messages and score >= points:
        return {"output_type": "stream", "name": "stdout",
                "text": f"Hidden tests passed: {score:g} / {points:g} points ({description}).\n"}
    lines = [f"Hidden tests failed: {score:g} / {points:g} points ({description}).",
             *result.messages.get(grade_id, "").splitlines()]
    return {"output_type": "error", "ename": "HiddenTestsFailed", "evalue": lines[0], "traceback": lines}


def feedback_notebook(executed: dict | None, submitted: dict, release: dict, result, rubric,
                      max_output_bytes: int = DEFAULT_OUTPUT_BYTES, note: str | None = None) -> dict:
    """The notebook nbgrader renders as feedback, rebuilt here from trusted parts.

    ``executed``: nbgrader's executed notebook from the sandbox (``None`` if there is none: the
    cells of ``submitted`` are shown without outputs). Cells keep their order; a cell whose grade
    id is in ``release`` gets the release's nbgrader metadata and, unless it is a solution cell,
    the release's source; later duplicates of a grade id lose it. Graded cells the student deleted
    come back at the end. ``result``'s verdicts are appended to the graded cells; ``note`` (why
    the notebook was not run) opens the notebook.
    """
    trusted = {g: c for c in release["cells"] if (g := cells.grade_id(c))}
    descriptions = {c.grade_id: c.description for c in rubric}
    shown, seen = [], set()
    if note:
        shown.append({"cell_type": "markdown", "metadata": {}, "source": f"**Note from the grader:** {note}"})
    source_cells = (executed or submitted).get("cells")
    for cell in (source_cells if isinstance(source_cells, list) else [])[:MAX_CELLS]:
        kind = cell.get("cell_type") if isinstance(cell, dict) else None
        if kind not in ("code", "markdown"):
            continue
        grade_id = cells.grade_id(cell)
        if grade_id in trusted and grade_id not in seen:
            seen.add(grade_id)
            model = trusted[grade_id]
            kind, metadata = model["cell_type"], {"nbgrader": dict(cells.nbgrader_metadata(model))}
            text = cells.source(cell if cells.is_solution(model) else model)
        else:
            metadata, text = {}, cells.source(cell)
        text, cut = _cut(text, MAX_SOURCE_BYTES)
        new = {"cell_type": kind, "metadata": metadata, "source": text + (f"\n# [{cut} more bytes not shown]" if cut else "")}
        if kind == "code":
            new["outputs"] = cap_outputs(cell.get("outputs"), max_output_bytes) if executed is not None else []
            count = cell.get("execution_count") if executed is not None else None
            new["execution_count"] = count if type(count) is int else None
        shown.append(new)
    for grade_id, model in trusted.items():  # deleted graded cells: shown with their verdict
        if grade_id not in seen and grade_id in descriptions:
            metadata = {"nbgrader": dict(cells.nbgrader_metadata(model))}
            shown.append({"cell_type": model["cell_type"], "metadata": metadata, "source": cells.source(model),
                          "outputs": [], "execution_count": None})
    for cell in shown:
        grade_id = cells.grade_id(cell)
        if grade_id in descriptions and cell["cell_type"] == "code":
            cell["outputs"].append(_verdict(grade_id, result, descriptions[grade_id]))
    for number, cell in enumerate(shown):
        cell["id"] = f"cell-{number}"
    return {"cells": shown, "metadata": {k: release["metadata"][k] for k in ("kernelspec", "language_info")
                                         if k in release.get("metadata", {})},
            "nbformat": 4, "nbformat_minor": 5}


# --- the batch ------------------------------------------------------------------------------

def write_feedback_notebooks(course_dir: Path, lab: str, module, results: dict, submissions: dict[str, Path],
                             out: Path, *, workers: int = 2, hidden_paths=(), limits: Limits = FEEDBACK_LIMITS,
                             max_output_bytes: int = DEFAULT_OUTPUT_BYTES,
                             warnings: set[str] | None = None) -> dict[str, str]:
    """Feedback HTML for every student in ``results`` (graded scores of ``lab``), in ``out/<student>/<lab>/``.

    ``course_dir`` is the real course (its gradebook holds the scores; ``release/<lab>`` the
    student version). Returns ``{student: note}`` for students whose feedback notebook is
    missing or was made without running their notebook (corrupt submissions, timeouts, ...).
    """
    course_dir, notebook = Path(course_dir).resolve(), find_lab(lab).notebook
    hidden = paths_hidden_from_students(course_dir, out, *hidden_paths, submissions=submissions.values())
    notes: dict[str, str] = {}
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
                executed = execute_submission(sandbox, course, notebook, raw)
            except FeedbackError as error:
                note = notes[student] = f"your notebook was not run for this feedback ({error}); the scores stand."
            made = feedback_notebook(executed, submitted, release, result, module.RUBRIC, max_output_bytes, note)
            target = course_dir / "autograded" / student / lab / f"{notebook}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(made, ensure_ascii=False), encoding="utf-8")

        students = sorted(results)
        with Sandbox(limits, hidden) as sandbox, ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(lambda s: one(sandbox, s), students))
            if warnings is not None:
                warnings.update(sandbox.warnings)
    rendered = run_nbgrader(course_dir, "generate_feedback", lab, "--force", "--HTMLExporter.sanitize_html=True")
    for student in students:
        html = course_dir / "feedback" / student / lab / f"{notebook}.html"
        if html.is_file():
            target = Path(out) / student / lab / html.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(html, target)
        elif student not in notes or not notes[student].startswith("no feedback"):
            notes[student] = "no feedback notebook: nbgrader could not render it" + (
                f" ({rendered.stdout[-300:]})" if rendered.returncode else "")
    return notes
