"""The labs' nbgrader course: scratch copies of it, its releases, its gradebook and test submissions.

``labs_dir`` is the course directory of the checkout (``nbgrader_config.py``, ``source/<lab>/``,
``release/<lab>/``); every function that needs it takes it as an argument. Nothing here writes a
gradebook or grading outputs into ``labs_dir``: the nbgrader commands run in a scratch copy
(:func:`scratch_course`), and only :func:`generate` replaces ``labs_dir/release/<lab>``.

* :func:`nbgrader` / :func:`run_nbgrader`: the real ``nbgrader`` command line, in a course directory.
* :func:`generate`, :func:`release_differences`, :func:`compare_releases`: the committed student
  versions and whether they equal a fresh ``nbgrader generate_assignment``.
* :func:`grade`: plain, **unsandboxed** ``nbgrader autograde`` and feedback, for trusted submissions
  only (real ones go through :mod:`~course_grader.autograder`); :func:`read_scores` reads a gradebook.
* :func:`solution_code`, :func:`mistake_code`, :func:`fill_solutions`, :func:`write_submissions`:
  test submissions (the solution, the stub, one per known mistake) made from the release.
* :func:`submitted_labs`, :func:`submissions_of`: a submissions folder laid out as
  ``<student>/<lab>/<notebook>.ipynb``.

Not covered: the command line (:mod:`~course_grader.cli`), sandboxed grading.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import cells
from .registry import LABS

__all__ = [
    "compare_releases", "fill_solutions", "generate", "generate_release", "grade", "mistake_code", "nbgrader",
    "read_scores", "release_differences", "run_nbgrader", "scratch_course", "solution_code", "submissions_of",
    "submitted_labs", "write_submissions",
]

COURSE_FILES = ("nbgrader_config.py", "source")  # what a scratch course directory needs from labs_dir
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


# --- the nbgrader command line ----------------------------------------------------------------

def run_nbgrader(course_dir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``nbgrader ARGS`` in ``course_dir`` with this Python, output captured; the caller judges the result."""
    # nbgrader runs `alembic` and the kernels by name: find them next to this Python first.
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], check=False, cwd=course_dir, env=env,
                          timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def nbgrader(course_dir: Path, *args: str, timeout: float = 900) -> str:
    """Run ``nbgrader ARGS`` in ``course_dir``; return its output, raise with it on failure."""
    result = run_nbgrader(course_dir, *args, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed ({result.returncode}):\n{result.stdout[-6000:]}")
    if re.search(r"\[\w+ \| ERROR\]", result.stdout):  # nbgrader logs some failures but still exits 0
        raise RuntimeError(f"`nbgrader {' '.join(args)}` reported errors:\n{result.stdout[-6000:]}")
    return result.stdout


def scratch_course(dest: Path, labs_dir: Path) -> Path:
    """Copy the course configuration and sources of ``labs_dir`` into ``dest`` (a fresh course directory)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COURSE_FILES:
        source = Path(labs_dir) / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def generate_release(course_dir: Path, lab: str) -> Path:
    """``nbgrader generate_assignment LAB`` in ``course_dir`` (also records the lab in its gradebook)."""
    nbgrader(course_dir, "generate_assignment", lab, "--force")
    return course_dir / "release" / lab


# --- the committed releases -------------------------------------------------------------------

def compare_releases(committed: Path, fresh: Path) -> list[str]:
    """Files that differ between a committed release folder and a freshly generated one.

    Notebooks are compared as JSON: nbgrader's output has no volatile fields (its checksums
    depend on the source cells only), so nothing is dropped and any difference is a real one.
    JupyterLab's ``.ipynb_checkpoints`` folders (written when a notebook is opened there) are not
    part of a release and are ignored.
    """
    def files(folder: Path) -> set[Path]:
        if not folder.is_dir():
            return set()
        return {p.relative_to(folder) for p in folder.rglob("*")
                if p.is_file() and ".ipynb_checkpoints" not in p.relative_to(folder).parts}

    differences = []
    for name in sorted(files(committed) | files(fresh)):
        a, b = committed / name, fresh / name
        if not (a.is_file() and b.is_file()):
            differences.append(f"{committed.name}/{name}: {'not committed' if not a.is_file() else 'not generated'}")
        elif name.suffix == ".ipynb" and cells.load_notebook(a) != cells.load_notebook(b):
            differences.append(f"{committed.name}/{name}: differs from a fresh generation")
        elif name.suffix != ".ipynb" and a.read_bytes() != b.read_bytes():
            differences.append(f"{committed.name}/{name}: differs from a fresh generation")
    return differences


def release_differences(lab: str, labs_dir: Path) -> list[str]:
    """Files of ``labs_dir/release/LAB`` that differ from a fresh generation (empty: up to date)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate_release(scratch_course(Path(tmp), labs_dir), lab)
        return compare_releases(Path(labs_dir) / "release" / lab, fresh)


def generate(labs: list[str], labs_dir: Path) -> list[Path]:
    """Regenerate ``labs_dir/release/LAB`` for each lab, replacing what is there; the folders written."""
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        course_dir = scratch_course(Path(tmp), labs_dir)
        for lab in labs:
            fresh = generate_release(course_dir, lab)
            target = Path(labs_dir) / "release" / lab
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(fresh, target)
            written.append(target)
    return written


# --- plain nbgrader grading (trusted submissions only) ---------------------------------------

def submitted_labs(submissions: Path) -> list[str]:
    """The registered labs (assignment names, course order) with a ``<student>/<lab>/`` folder in ``submissions``."""
    present = {p.name for p in Path(submissions).glob("*/*") if p.is_dir()}
    return [lab.assignment for lab in LABS if lab.assignment in present]


def submissions_of(submissions: Path, lab: str, notebook: str) -> dict[str, Path]:
    """``{student: notebook path}`` for every ``submissions/<student>/<lab>/`` (the file may be missing)."""
    return {d.parent.name: d / f"{notebook}.ipynb" for d in sorted(Path(submissions).glob(f"*/{lab}")) if d.is_dir()}


def read_scores(course_dir: Path, lab: str) -> dict[str, dict[str, tuple[float, float]]]:
    """``{student: {grade_id: (score, max_score)}}`` for every notebook of ``lab`` in the gradebook."""
    from nbgrader.api import Gradebook  # imported here: the other steps need nbgrader only as a command

    scores: dict[str, dict[str, tuple[float, float]]] = {}
    with Gradebook(f"sqlite:///{Path(course_dir) / 'gradebook.db'}") as gradebook:
        for submission in gradebook.assignment_submissions(lab):
            graded = scores.setdefault(submission.student.id, {})
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    graded[grade.cell.name] = (float(grade.score), float(grade.max_score))
    return scores


def grade(submissions: Path, out: Path, labs: list[str] | None = None, *, labs_dir: Path):
    """Autograde ``submissions/<student>/<lab>/*.ipynb`` with plain nbgrader in a course directory ``out/course``.

    Runs student code unsandboxed, in kernels on this machine. Writes ``out/grades.csv``
    (``nbgrader export``) and HTML feedback under ``out/course/feedback/``; returns
    :func:`read_scores` for each lab graded (default: every lab submitted).
    """
    course_dir = Path(out) / "course"
    if course_dir.exists():
        shutil.rmtree(course_dir)
    scratch_course(course_dir, labs_dir)
    results = {}
    for lab in labs or submitted_labs(submissions):
        generate_release(course_dir, lab)  # records the lab's grade cells in the gradebook
        students = sorted(p.parent.parent.name for p in Path(submissions).glob(f"*/{lab}/*.ipynb"))
        for student in dict.fromkeys(students):
            shutil.copytree(Path(submissions) / student / lab, course_dir / "submitted" / student / lab)
        nbgrader(course_dir, "autograde", lab, "--force")
        nbgrader(course_dir, "generate_feedback", lab, "--force")
        results[lab] = read_scores(course_dir, lab)
    nbgrader(course_dir, "export", "--to", str((Path(out) / "grades.csv").resolve()))
    return results


# --- test submissions: the reference solution, the stub, known mistakes spliced into the release

def solution_code(source_notebook: Path) -> dict[str, str]:
    """``{grade_id: code}`` of the source's solution cells, as a student would write them (no markers)."""
    notebook = cells.load_notebook(source_notebook)
    return {grade_id: "\n".join(line for line in cells.source(cell).splitlines()
                                if line.strip() not in SOLUTION_MARKERS)
            for grade_id, cell in cells.solution_cells(notebook).items()}


def mistake_code(mistake_file: Path, solutions: dict[str, str]) -> dict[str, str]:
    """Map each top-level function of a mistake file to the solution cell defining the same name.

    Returns ``{grade_id: function source}``; raises if a function matches no solution cell.
    """
    defined_in = {name: grade_id for grade_id, code in solutions.items() for name in cells.functions_defined(code)}
    replacements = {}
    for name, code in cells.functions_defined(Path(mistake_file).read_text(encoding="utf-8")).items():
        if name not in defined_in:
            raise ValueError(f"{Path(mistake_file).name}: no solution cell defines {name}()")
        replacements[defined_in[name]] = code
    return replacements


def fill_solutions(release_notebook: Path, code: dict[str, str]) -> dict:
    """The release notebook with the solution cells named in ``code`` replaced (a student's work)."""
    notebook = cells.load_notebook(release_notebook)
    solutions = cells.solution_cells(notebook)
    for grade_id, text in code.items():
        solutions[grade_id]["source"] = text
    return notebook


def write_submissions(lab: str, mistakes_dir: Path, out: Path, labs_dir: Path) -> dict[str, Path]:
    """Write ``out/<student>/<lab>/<notebook>.ipynb`` for students ``solution``, ``stub`` and one per
    ``mistakes_dir/*.py`` (named after the file): each is the release with solution cells filled in
    (a mistake file's functions replace their cells, the other cells get the reference solution)."""
    written = {}
    for release in sorted((Path(labs_dir) / "release" / lab).glob("*.ipynb")):
        solutions = solution_code(Path(labs_dir) / "source" / lab / release.name)
        students = {"solution": solutions, "stub": {}}
        for mistake in sorted(Path(mistakes_dir).glob("*.py")):
            students[mistake.stem] = {**solutions, **mistake_code(mistake, solutions)}
        for student, code in students.items():
            path = Path(out) / student / lab / release.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(fill_solutions(release, code), indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
            written[student] = path
    return written
