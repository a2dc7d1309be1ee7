#!/usr/bin/env python
"""Instructor steps for the nbgrader labs in ``labs/`` (the nbgrader course directory).

    python scripts/labs.py generate [LAB ...]   regenerate labs/release/<LAB>/ from labs/source/<LAB>/
    python scripts/labs.py check [LAB ...]      exit 1 if a committed release is not a fresh generation
    python scripts/labs.py grade SUBMISSIONS --out DIR [--lab LAB ...]
                                                autograde SUBMISSIONS/<student>/<LAB>/*.ipynb, write
                                                DIR/grades.csv and DIR/course/feedback/ (HTML)
    python scripts/labs.py submissions LAB MISTAKES_DIR OUT
                                                write test submissions to OUT/<student>/<LAB>/: the
                                                solution, the untouched stub, and one per mistake file

Every step runs the real ``nbgrader`` command line in a scratch copy of the course directory, so
``labs/`` never gets a gradebook or grading outputs. Without LAB arguments, every lab in
``labs/source/`` is processed. Lab conventions: see ``labs/README.md``.

Grading here runs student code unsandboxed, in kernels on this machine: only grade trusted
submissions with it. Standard library + nbgrader only.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LABS = REPO / "labs"
COURSE_FILES = ("nbgrader_config.py", "source")  # what a scratch course directory needs from labs/


def lab_names(labs_dir: Path = LABS) -> list[str]:
    """The labs (assignment names) that have a source folder, sorted."""
    return sorted(p.name for p in (labs_dir / "source").iterdir() if p.is_dir())


def nbgrader(course_dir: Path, *args: str, timeout: float = 900) -> str:
    """Run ``nbgrader ARGS`` in ``course_dir``; return its output, raise with it on failure."""
    env = dict(os.environ)
    # nbgrader runs `alembic` and the kernels by name: find them next to this Python first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course_dir, env=env, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed ({result.returncode}):\n{result.stdout[-6000:]}")
    if re.search(r"\[\w+ \| ERROR\]", result.stdout):  # nbgrader logs some failures but still exits 0
        raise RuntimeError(f"`nbgrader {' '.join(args)}` reported errors:\n{result.stdout[-6000:]}")
    return result.stdout


def scratch_course(dest: Path, labs_dir: Path = LABS) -> Path:
    """Copy the course configuration and sources into ``dest`` (a fresh nbgrader course directory)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COURSE_FILES:
        source = labs_dir / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def generate_release(course_dir: Path, lab: str) -> Path:
    """``nbgrader generate_assignment LAB`` in ``course_dir`` (also records the lab in its gradebook)."""
    nbgrader(course_dir, "generate_assignment", lab, "--force")
    return course_dir / "release" / lab


def notebook_content(path: Path) -> dict:
    """A notebook's JSON for comparison. nbgrader's output has no volatile fields (its checksums
    depend on the source cells only), so nothing is dropped: any difference is a real one."""
    return json.loads(path.read_text(encoding="utf-8"))


def compare_releases(committed: Path, fresh: Path) -> list[str]:
    """Files that differ between a committed release folder and a freshly generated one."""
    def files(folder: Path) -> set[Path]:
        return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()

    differences = []
    for name in sorted(files(committed) | files(fresh)):
        a, b = committed / name, fresh / name
        if not (a.is_file() and b.is_file()):
            differences.append(f"{committed.name}/{name}: {'not committed' if not a.is_file() else 'not generated'}")
        elif name.suffix == ".ipynb" and notebook_content(a) != notebook_content(b):
            differences.append(f"{committed.name}/{name}: differs from a fresh generation")
        elif name.suffix != ".ipynb" and a.read_bytes() != b.read_bytes():
            differences.append(f"{committed.name}/{name}: differs from a fresh generation")
    return differences


def release_differences(lab: str, labs_dir: Path = LABS) -> list[str]:
    """Files of ``labs_dir/release/LAB`` that differ from a fresh generation (empty: up to date)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate_release(scratch_course(Path(tmp), labs_dir), lab)
        return compare_releases(labs_dir / "release" / lab, fresh)


def generate(labs: list[str], labs_dir: Path = LABS) -> None:
    """Regenerate ``labs_dir/release/LAB`` for each lab, replacing what is there."""
    with tempfile.TemporaryDirectory() as tmp:
        course = scratch_course(Path(tmp), labs_dir)
        for lab in labs:
            fresh = generate_release(course, lab)
            target = labs_dir / "release" / lab
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(fresh, target)
            print(f"wrote {target.relative_to(labs_dir.parent)}")


def read_scores(course_dir: Path, lab: str) -> dict[str, dict[str, tuple[float, float]]]:
    """``{student: {grade_id: (score, max_score)}}`` for every notebook of ``lab`` in the gradebook."""
    from nbgrader.api import Gradebook  # imported here: `generate`/`check` need nbgrader only as a command

    scores: dict[str, dict[str, tuple[float, float]]] = {}
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        for submission in gradebook.assignment_submissions(lab):
            cells = scores.setdefault(submission.student.id, {})
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    cells[grade.cell.name] = (float(grade.score), float(grade.max_score))
    return scores


def grade(submissions: Path, out: Path, labs: list[str] | None = None, labs_dir: Path = LABS):
    """Autograde ``submissions/<student>/<lab>/*.ipynb`` in a course directory ``out/course``.

    Writes ``out/grades.csv`` (``nbgrader export``) and HTML feedback under
    ``out/course/feedback/``; returns :func:`read_scores` for each lab graded.
    """
    course = out / "course"
    if course.exists():
        shutil.rmtree(course)
    scratch_course(course, labs_dir)
    labs = labs or sorted({p.parent.name for p in submissions.glob("*/*/*.ipynb")})
    results = {}
    for lab in labs:
        generate_release(course, lab)  # records the lab's grade cells in the gradebook
        students = sorted(p.parent.parent.name for p in submissions.glob(f"*/{lab}/*.ipynb"))
        for student in dict.fromkeys(students):
            shutil.copytree(submissions / student / lab, course / "submitted" / student / lab)
        nbgrader(course, "autograde", lab, "--force")
        nbgrader(course, "generate_feedback", lab, "--force")
        results[lab] = read_scores(course, lab)
    nbgrader(course, "export", "--to", str((out / "grades.csv").resolve()))
    return results


# Test submissions: the reference solution, the stub, and known mistakes spliced into the release.

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def _solution_cells(notebook: dict) -> dict[str, dict]:
    return {cell["metadata"]["nbgrader"]["grade_id"]: cell for cell in notebook["cells"]
            if cell["metadata"].get("nbgrader", {}).get("solution")}


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def solution_code(source_notebook: Path) -> dict[str, str]:
    """``{grade_id: code}`` of the source's solution cells, as a student would write them (no markers)."""
    notebook = json.loads(source_notebook.read_text(encoding="utf-8"))
    return {grade_id: "\n".join(line for line in _source(cell).splitlines() if line.strip() not in SOLUTION_MARKERS)
            for grade_id, cell in _solution_cells(notebook).items()}


def mistake_code(mistake_file: Path, solutions: dict[str, str]) -> dict[str, str]:
    """Map each top-level function of a mistake file to the solution cell defining the same name.

    Returns ``{grade_id: function source}``; raises if a function matches no solution cell.
    """
    text = mistake_file.read_text(encoding="utf-8")
    defined_in = {node.name: grade_id for grade_id, code in solutions.items()
                  for node in ast.parse(code).body if isinstance(node, ast.FunctionDef)}
    replacements = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef):
            if node.name not in defined_in:
                raise ValueError(f"{mistake_file.name}: no solution cell defines {node.name}()")
            replacements[defined_in[node.name]] = ast.get_source_segment(text, node)
    return replacements


def fill_solutions(release_notebook: Path, code: dict[str, str]) -> dict:
    """The release notebook with the solution cells named in ``code`` replaced (a student's work)."""
    notebook = json.loads(release_notebook.read_text(encoding="utf-8"))
    cells = _solution_cells(notebook)
    for grade_id, text in code.items():
        cells[grade_id]["source"] = text
    return notebook


def write_submissions(lab: str, mistakes_dir: Path, out: Path, labs_dir: Path = LABS) -> dict[str, Path]:
    """Write ``out/<student>/<lab>/<notebook>.ipynb`` for students ``solution``, ``stub`` and one per
    ``mistakes_dir/*.py`` (named after the file): each is the release with solution cells filled in
    (a mistake file's functions replace their cells, the other cells get the reference solution)."""
    written = {}
    for release in sorted((labs_dir / "release" / lab).glob("*.ipynb")):
        solutions = solution_code(labs_dir / "source" / lab / release.name)
        students = {"solution": solutions, "stub": {}}
        for mistake in sorted(mistakes_dir.glob("*.py")):
            students[mistake.stem] = {**solutions, **mistake_code(mistake, solutions)}
        for student, code in students.items():
            path = out / student / lab / release.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(fill_solutions(release, code), indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
            written[student] = path
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("generate", "regenerate labs/release/ from labs/source/"),
                            ("check", "fail if labs/release/ is not up to date")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("labs", nargs="*", help="lab names (default: all)")
    command = commands.add_parser("grade", help="autograde a folder of submissions")
    command.add_argument("submissions", type=Path, help="folder laid out as <student>/<lab>/<notebook>.ipynb")
    command.add_argument("--out", type=Path, required=True,
                         help="where the course directory (OUT/course), grades.csv and feedback go")
    command.add_argument("--lab", action="append", dest="labs", help="lab to grade (default: all submitted)")
    command = commands.add_parser("submissions", help="write test submissions (solution, stub, known mistakes)")
    command.add_argument("lab")
    command.add_argument("mistakes", type=Path, help="folder of mistake files (e.g. tests/fixtures/lab_attention)")
    command.add_argument("out", type=Path)
    args = parser.parse_args(argv)

    if args.command == "generate":
        generate(args.labs or lab_names())
    elif args.command == "check":
        differences = [d for lab in (args.labs or lab_names()) for d in release_differences(lab)]
        for difference in differences:
            print(difference)
        if differences:
            print("labs/release/ is out of date: run `python scripts/labs.py generate`", file=sys.stderr)
            return 1
        print("labs/release/ is up to date")
    elif args.command == "submissions":
        for student, path in write_submissions(args.lab, args.mistakes, args.out).items():
            print(f"{student:<32} {path}")
    else:
        for lab, scores in grade(args.submissions, args.out, args.labs).items():
            for student, cells in sorted(scores.items()):
                got, possible = sum(s for s, _ in cells.values()), sum(m for _, m in cells.values())
                failed = sorted(name for name, (s, m) in cells.items() if s < m)
                print(f"{lab}  {student:<30} {got:g}/{possible:g}  {'lost: ' + ', '.join(failed) if failed else ''}")
        print(f"grades: {args.out / 'grades.csv'}, feedback: {args.out / 'course' / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
