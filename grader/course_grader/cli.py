"""The instructor's command lines: argument parsing, printing, and the checkout's folders.

Three commands, each a ``main(argv, *, root)`` that the thin front ends in ``scripts/`` call with
their own checkout (``python -m course_grader COMMAND`` runs them on the current folder):

=============================  ===============================================================
``scripts/labs.py``            :func:`labs_main`: generate / check the releases, plain nbgrader
                               grading of trusted submissions, test submissions
``scripts/grade.py``           :func:`grade_main`: sandboxed grading of real submissions, with
                               text and HTML feedback
``scripts/bench_grading.py``   :func:`bench_main`: the grader's throughput, with and without feedback
=============================  ===============================================================

:class:`Checkout` is the one place that knows where a checkout keeps its labs and tests; the
library modules take those folders as arguments. Not covered: the work itself
(:mod:`~course_grader.course`, :mod:`~course_grader.autograder`, :mod:`~course_grader.feedback`,
:mod:`~course_grader.bench`).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import autograder, bench, course, feedback
from .registry import LABS, Lab, lab as find_lab
from .sandbox import Limits

__all__ = ["Checkout", "bench_main", "grade_main", "labs_main", "print_warnings", "private_paths", "write_text_feedback"]

RAW = argparse.RawDescriptionHelpFormatter


@dataclass(frozen=True)
class Checkout:
    """The folders of the course checkout at ``root`` that the commands use."""

    root: Path

    @property
    def labs(self) -> Path:
        """The nbgrader course directory: ``nbgrader_config.py``, ``source/<lab>/``, ``release/<lab>/``."""
        return self.root / "labs"

    @property
    def private(self) -> tuple[Path, ...]:
        """What student code must never see: the lab sources (solutions, hidden tests) and the tests."""
        return self.labs, self.root / "tests"

    def mistakes(self, lab: Lab) -> Path:
        """The lab's known-mistake files."""
        return self.root / "tests" / "fixtures" / "labs" / lab.topic


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None, root: Path) -> tuple[argparse.Namespace, Checkout]:
    """The command's arguments and the checkout at ``root``; a usage error unless it is one."""
    args, checkout = parser.parse_args(argv), Checkout(Path(root))
    if not (checkout.labs / "nbgrader_config.py").is_file():
        parser.error(f"{checkout.root} is not a course checkout (no labs/nbgrader_config.py): run from its root")
    return args, checkout


def _assignments(parser: argparse.ArgumentParser, names: list[str] | None) -> list[str] | None:
    """The assignment names of the labs named (by assignment or topic), or a usage error; ``None`` for none."""
    try:
        return [find_lab(name).assignment for name in names] if names else None
    except KeyError as error:
        parser.error(error.args[0])


# --- scripts/labs.py ----------------------------------------------------------------------------

LABS_USAGE = """Instructor steps for the nbgrader labs in the checkout's labs/ (the nbgrader course directory).

    generate [LAB ...]      regenerate labs/release/<LAB>/ from labs/source/<LAB>/
    check [LAB ...]         exit 1 if a committed release is not a fresh generation
    grade SUBMISSIONS --out DIR [--lab LAB ...]
                            autograde SUBMISSIONS/<student>/<LAB>/*.ipynb, write
                            DIR/grades.csv and DIR/course/feedback/ (HTML)
    submissions LAB MISTAKES_DIR OUT
                            write test submissions to OUT/<student>/<LAB>/: the
                            solution, the untouched stub, and one per mistake file

Every step runs the real `nbgrader` command line in a scratch copy of the course directory, so
labs/ never gets a gradebook or grading outputs. Without LAB arguments, every registered lab
(course_grader.registry) is processed. Lab conventions: see labs/README.md.

Grading here runs student code unsandboxed, in kernels on this machine: only grade trusted
submissions with it (real ones: scripts/grade.py).
"""


def labs_main(argv: list[str] | None = None, *, root: Path, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=LABS_USAGE, formatter_class=RAW)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("generate", "regenerate labs/release/ from labs/source/"),
                            ("check", "fail if labs/release/ is not up to date")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("labs", nargs="*", help="lab names (default: all)")
    command = commands.add_parser("grade", help="autograde a folder of trusted submissions (unsandboxed)")
    command.add_argument("submissions", type=Path, help="folder laid out as <student>/<lab>/<notebook>.ipynb")
    command.add_argument("--out", type=Path, required=True,
                         help="where the course directory (OUT/course), grades.csv and feedback go")
    command.add_argument("--lab", action="append", dest="labs", help="lab to grade (default: all submitted)")
    command = commands.add_parser("submissions", help="write test submissions (solution, stub, known mistakes)")
    command.add_argument("lab")
    command.add_argument("mistakes", type=Path, help="folder of mistake files (e.g. tests/fixtures/labs/attention)")
    command.add_argument("out", type=Path)
    args, checkout = _parse(parser, argv, root)
    chosen = _assignments(parser, getattr(args, "labs", None))  # `submissions` names one lab of its own
    labs = chosen or [lab.assignment for lab in LABS]

    if args.command == "generate":
        for target in course.generate(labs, checkout.labs):
            print(f"wrote {target.relative_to(checkout.root)}")
    elif args.command == "check":
        differences = [d for lab in labs for d in course.release_differences(lab, checkout.labs)]
        for difference in differences:
            print(difference)
        if differences:
            print("labs/release/ is out of date: run `python scripts/labs.py generate`", file=sys.stderr)
            return 1
        print("labs/release/ is up to date")
    elif args.command == "submissions":
        lab = _assignments(parser, [args.lab])[0]
        for student, path in course.write_submissions(lab, args.mistakes, args.out, checkout.labs).items():
            print(f"{student:<32} {path}")
    else:
        for lab, scores in course.grade(args.submissions, args.out, chosen, labs_dir=checkout.labs).items():
            for student, graded in sorted(scores.items()):
                got, possible = sum(s for s, _ in graded.values()), sum(m for _, m in graded.values())
                failed = sorted(name for name, (s, m) in graded.items() if s < m)
                print(f"{lab}  {student:<30} {got:g}/{possible:g}  {'lost: ' + ', '.join(failed) if failed else ''}")
        print(f"grades: {args.out / 'grades.csv'}, feedback: {args.out / 'course' / 'feedback'}")
    return 0


# --- scripts/grade.py ---------------------------------------------------------------------------

GRADE_USAGE = """Sandboxed autograding of the labs: safe for untrusted submissions (unlike `labs.py grade`).

SUBMISSIONS is laid out as <student>/<lab>/<notebook>.ipynb. The first run makes an nbgrader
course directory DIR/course (sources copied from the checkout's labs/, `nbgrader generate_assignment`
records the grade cells in DIR/course/gradebook.db). Every graded part of every notebook then runs in
a fresh sandboxed process (course_grader.sandbox); the scores go to the gradebook, and

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
to unprivileged uids and hides the gradebook, the hidden checks, the checkout's labs/ and tests/
and the other submissions. When isolation is weaker than that (not root, namespaces refused), a
WARNING on stderr lists what is missing. With CUDA, student code and the reference run on the GPU,
one graded part at a time. The feedback notebooks (course_grader.feedback) cost one sandboxed
nbgrader run per student, several seconds each; --no-feedback skips them. They are made for the
students graded in this run.
"""


def write_text_feedback(out: Path, lab: str, rubric, student: str, result: autograder.NotebookResult,
                        note: str | None = None) -> Path:
    """``out/feedback/<student>/<lab>.txt``: the points per part and each failed check's message and hint."""
    lines = [f"{lab}: {result.total:g} / {sum(m for _, m in result.scores.values()):g} points", ""]
    if result.error:
        lines += [f"Your notebook could not be graded: {result.error}", ""]
    elif note:
        lines += [f"Feedback notebook: {note}", ""]
    for criterion in rubric:
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
    library = Path(importlib.util.find_spec("course_lib").origin).resolve().parent
    needed = [Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), library]
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


def grade_main(argv: list[str] | None = None, *, root: Path, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=GRADE_USAGE, formatter_class=RAW)
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
    args, checkout = _parse(parser, argv, root)
    chosen = _assignments(parser, args.labs)

    warnings: set[str] = set()
    out = args.out.resolve()
    hidden = [*checkout.private, *private_paths(out, warnings)]  # the output folder holds everyone's grades
    course_dir = out / "course"
    fresh = not course_dir.exists()
    if fresh:
        course.scratch_course(course_dir, checkout.labs)
    for lab in chosen or course.submitted_labs(args.submissions):
        entry = find_lab(lab)
        if fresh:
            course.generate_release(course_dir, lab)
        submissions = course.submissions_of(args.submissions, lab, entry.notebook)
        results = autograder.grade_batch(
            course_dir, lab, submissions, workers=args.workers, hidden_paths=hidden,
            limits=Limits(wall_seconds=args.timeout, cpu_seconds=int(args.timeout) + 5), warnings=warnings)
        notes = {}
        if args.feedback and results:
            notes = feedback.write_feedback_notebooks(
                course_dir, lab, entry.checks, results, submissions, out / "feedback", workers=args.workers,
                hidden_paths=hidden, max_output_bytes=args.output_bytes, warnings=warnings)
        for student, result in sorted(results.items()):
            write_text_feedback(args.out, lab, entry.checks.RUBRIC, student, result, notes.get(student))
            lost = sorted(g for g, (s, m) in result.scores.items() if s < m)
            note = result.error or ("lost: " + ", ".join(lost) if lost else "")
            print(f"{lab}  {student:<30} {result.total:g}/{sum(m for _, m in result.scores.values()):g}  {note}")
    course.nbgrader(course_dir, "export", "--to", str(out / "grades.csv"))
    print(f"grades: {args.out / 'grades.csv'}, feedback: {args.out / 'feedback'}")
    print_warnings(warnings)
    return 0


# --- scripts/bench_grading.py -------------------------------------------------------------------

BENCH_USAGE = """Benchmark the sandboxed autograder and its feedback on N realistic submissions of a lab.

    (no options)            200 submissions of 01_attention, 2 workers, with feedback
    -n 40 --workers 1       quicker
    --no-feedback           grading only
    --json FILE             also record the figures, command, date and load in FILE

The submissions cycle through the lab's solution, its stub, its known mistakes in the checkout's
tests/fixtures/labs/<topic>/, two attacks of tests/fixtures/attacks/ (lab 01) and a notebook that
loops forever at import; the table shows the per-part overhead, the set-up, the throughput without
and with feedback, the machine's load, and whether every kind of submission scored the same every
time (course_grader.bench). Exits 1 when the scores are inconsistent or a submission was missed;
never on timing.
"""


def bench_main(argv: list[str] | None = None, *, root: Path, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=BENCH_USAGE, formatter_class=RAW)
    parser.add_argument("-n", "--submissions", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lab", default="01_attention", choices=[lab.assignment for lab in LABS])
    parser.add_argument("--timeout", type=float, default=Limits.wall_seconds,
                        help="seconds one graded part may take, as for grade.py (default: %(default)s)")
    parser.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=True,
                        help="also make the feedback notebooks, as grade.py does (default: on)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write the figures to FILE with the command, the date and the load")
    args, checkout = _parse(parser, argv, root)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows, consistent = bench.benchmark(args.lab, args.submissions, args.workers, labs_dir=checkout.labs,
                                       mistakes_dir=checkout.mistakes(find_lab(args.lab)),
                                       attacks_dir=checkout.root / "tests" / "fixtures" / "attacks",
                                       hidden_paths=checkout.private, with_feedback=args.feedback,
                                       timeout=args.timeout)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        record = {"command": " ".join([prog or "bench_grading.py", *(sys.argv[1:] if argv is None else argv)]),
                  "started": started, "ended": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "consistent": consistent, "figures": dict(rows)}
        args.json.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0 if consistent else 1
