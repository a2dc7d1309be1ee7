#!/usr/bin/env python
"""Sandboxed autograding of the labs: safe for untrusted submissions (unlike `scripts/labs.py grade`).

    python scripts/grade.py SUBMISSIONS --out DIR [--lab LAB ...] [--workers 2] [--timeout 60]
                            [--no-feedback] [--output-bytes 65536]

SUBMISSIONS is laid out as <student>/<lab>/<notebook>.ipynb. The first run makes an nbgrader
course directory DIR/course (sources copied from labs/, `nbgrader generate_assignment` records the
grade cells in DIR/course/gradebook.db). Every graded part of every notebook then runs in a fresh
sandboxed process (see course_lib/grading/sandbox.py); the scores go to the gradebook, and

    DIR/grades.csv                       `nbgrader export` of the gradebook
    DIR/feedback/<student>/<lab>.txt     points per part and, for a failed part, the check's message
                                         and hint (never the hidden test's source)
    DIR/feedback/<student>/<lab>/<notebook>.html
                                         nbgrader's feedback notebook: the student's notebook as run
                                         by `nbgrader autograde` inside the sandbox (visible tests
                                         only, each cell's outputs capped at --output-bytes), the
                                         scores from the gradebook, each graded cell's verdict and hint

Students already graded in DIR are skipped: after an interruption, run the same command again.
Nothing here runs student code outside the sandbox. Linux only; as root, the sandbox also drops
to unprivileged uids and hides the gradebook, the hidden checks and the other submissions. When
isolation is weaker than that (not root, namespaces refused), a WARNING on stderr lists what is
missing. With CUDA, student code and the reference run on the GPU, one graded part at a time.

The feedback notebooks (course_lib/grading/feedback.py) cost one sandboxed nbgrader run per
student, several seconds each (a kernel start and the notebook's own cells); --no-feedback skips
them. They are made for the students graded in this run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import labs
from course_grader import autograder, feedback
from course_grader.registry import LABS
from course_grader.registry import lab as find_lab
from course_grader.sandbox import Limits


def submissions_of(folder: Path, lab: str, notebook: str) -> dict[str, Path]:
    """``{student: notebook path}`` for every ``folder/<student>/<lab>/`` (the file may be missing)."""
    return {d.parent.name: d / f"{notebook}.ipynb" for d in sorted(folder.glob(f"*/{lab}")) if d.is_dir()}


def write_feedback(out: Path, lab: str, module, student: str, result: autograder.NotebookResult,
                   note: str | None = None) -> Path:
    lines = [f"{lab}: {result.total:g} / {sum(m for _, m in result.scores.values()):g} points", ""]
    if result.error:
        lines += [f"Your notebook could not be graded: {result.error}", ""]
    elif note:
        lines += [f"Feedback notebook: {note}", ""]
    for criterion in module.RUBRIC:
        score, possible = result.scores[criterion.grade_id]
        lines.append(f"[{score:g}/{possible:g}] {criterion.description}")
        if criterion.grade_id in result.messages:
            lines += ["    " + line for line in result.messages[criterion.grade_id].splitlines()]
    path = out / "feedback" / student / f"{lab}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def private_paths(out: Path, warnings: set[str]) -> list[Path]:
    """``[out]`` (everyone's grades and feedback) to hide from student code, unless hiding it would
    also hide Python or the course's library, which the sandboxed code needs."""
    out = out.resolve()
    needed = [Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(__file__).resolve().parents[1] / "course_lib"]
    if any(path == out or out in path.parents for path in needed):
        warnings.add(f"{out} holds Python or course_lib, so it is not hidden from student code: "
                     "choose an --out folder of its own")
        return []
    return [out]


def print_warnings(warnings: set[str]) -> None:
    """Say loudly, on stderr, when the sandbox could not isolate student code fully."""
    if warnings:
        print("WARNING: the sandbox's isolation was weakened on this machine (run as root on Linux with "
              "namespaces for full isolation; do not grade untrusted submissions like this):", file=sys.stderr)
        for warning in sorted(warnings):
            print(f"  - {warning}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", type=Path, help="folder laid out as <student>/<lab>/<notebook>.ipynb")
    parser.add_argument("--out", type=Path, required=True, help="course directory, grades.csv and feedback go here")
    parser.add_argument("--lab", action="append", dest="labs", help="lab to grade (default: every lab submitted)")
    parser.add_argument("--workers", type=int, default=2, help="parallel grading processes (default: 2)")
    parser.add_argument("--timeout", type=float, default=Limits.wall_seconds,
                        help="seconds one graded part may take, in total (default: %(default)s)")
    parser.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=True,
                        help="also make nbgrader's feedback notebooks (HTML), sandboxed (default: on)")
    parser.add_argument("--output-bytes", type=int, default=feedback.DEFAULT_OUTPUT_BYTES,
                        help="bytes of outputs a cell keeps in the feedback notebook (default: %(default)s)")
    args = parser.parse_args(argv)

    modules, warnings = {lab.assignment: lab for lab in LABS}, set()
    labs_to_grade = args.labs or sorted({p.name for p in args.submissions.glob("*/*") if p.name in modules})
    course = args.out.resolve() / "course"
    fresh = not course.exists()
    if fresh:
        labs.scratch_course(course)
    for lab in labs_to_grade:
        if lab not in modules:
            parser.error(f"no lab {lab!r} in course_grader.registry (known: {', '.join(sorted(modules))})")
        if fresh:
            labs.generate_release(course, lab)
        module = modules[lab].checks
        submissions = submissions_of(args.submissions, lab, modules[lab].notebook)
        results = autograder.grade_batch(  # the output folder is hidden too: it holds everyone's grades
            course, lab, submissions, workers=args.workers, hidden_paths=private_paths(args.out, warnings),
            limits=Limits(wall_seconds=args.timeout, cpu_seconds=int(args.timeout) + 5), warnings=warnings)
        notes = {}
        if args.feedback and results:
            notes = feedback.write_feedback_notebooks(
                course, lab, module, results, submissions, args.out.resolve() / "feedback", workers=args.workers,
                hidden_paths=private_paths(args.out, warnings), max_output_bytes=args.output_bytes, warnings=warnings)
        for student, result in sorted(results.items()):
            write_feedback(args.out, lab, module, student, result, notes.get(student))
            lost = sorted(g for g, (s, m) in result.scores.items() if s < m)
            note = result.error or ("lost: " + ", ".join(lost) if lost else "")
            print(f"{lab}  {student:<30} {result.total:g}/{sum(m for _, m in result.scores.values()):g}  {note}")
    labs.nbgrader(course, "export", "--to", str((args.out / "grades.csv").resolve()))
    print(f"grades: {args.out / 'grades.csv'}, feedback: {args.out / 'feedback'}")
    print_warnings(warnings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
