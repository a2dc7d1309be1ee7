#!/usr/bin/env python
"""Benchmark the sandboxed autograder: N synthetic honest submissions of a lab, graded in parallel.

    python scripts/bench_grading.py                   # 200 submissions of 01_attention, 2 workers
    python scripts/bench_grading.py -n 40 --workers 1 # quicker

The submissions are the lab's reference solution, its stub and every known mistake in
``tests/fixtures/lab_<topic>/`` (as written by ``scripts/labs.py submissions``), repeated in turn
until there are N students, so the batch mixes full marks, zeros and single-cell mistakes like a
real class. Everything happens in a temporary folder; the repository is not touched.

Prints, in one table:

* per-part overhead: the cost of one sandboxed part on its own (fork from the zygote, namespaces,
  dropping privileges, loading an empty source, one call, killing it), median of many;
* set-up: a scratch nbgrader course and ``nbgrader generate_assignment`` (once per course);
* grading: ``autograder.grade_batch`` over all N students with ``--workers`` (gradebook writes
  included), as submissions per minute; the scores are checked against what each submission must get.

A benchmark, not a test: nothing here fails on timing. Linux only, like the sandbox.
"""
from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
import labs  # scripts/labs.py
from course_grader import autograder
from course_grader.registry import lab as find_lab
from course_grader.sandbox import Limits, Sandbox

MISTAKES = {"01_attention": REPO / "tests" / "fixtures" / "labs" / "attention"}


def part_overhead(repeats: int = 60) -> float:
    """Median seconds for one empty sandboxed part: fork, isolate, load, one call, kill."""
    with Sandbox(Limits(wall_seconds=30)) as sandbox:
        sandbox.run("", []).close()  # the zygote's start-up (importing torch) is paid once, not per part
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            with sandbox.run("def f():\n    return 1\n", ["f"]) as part:
                assert part.function("f")() == 1
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_class(lab: str, count: int, folder: Path) -> dict[str, Path]:
    """``count`` submissions cycling through the solution, the stub and the known mistakes."""
    templates = labs.write_submissions(lab, MISTAKES[lab], folder / "templates")
    kinds = itertools.cycle(sorted(templates))
    class_ = {}
    for number in range(count):
        kind = next(kinds)
        path = folder / "class" / f"student{number:04d}_{kind}" / lab / templates[kind].name
        path.parent.mkdir(parents=True)
        shutil.copyfile(templates[kind], path)
        class_[path.parent.parent.name] = path
    return class_


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--submissions", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lab", default="01_attention", choices=sorted(MISTAKES))
    args = parser.parse_args(argv)

    overhead = part_overhead()
    module = find_lab(args.lab).checks
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        folder = Path(tmp)
        class_ = synthetic_class(args.lab, args.submissions, folder)
        start = time.perf_counter()
        course = labs.scratch_course(folder / "course")
        labs.generate_release(course, args.lab)
        setup = time.perf_counter() - start

        start = time.perf_counter()
        results = autograder.grade_batch(course, args.lab, class_, workers=args.workers)
        grading = time.perf_counter() - start

        # Each kind of submission must score the same every time (a wrong score is a broken benchmark).
        totals: dict[str, set[float]] = {}
        for student, result in results.items():
            totals.setdefault(student.split("_", 1)[1], set()).add(result.total)
        inconsistent = {kind: t for kind, t in totals.items() if len(t) != 1}
        maximum = sum(float(c.points) for c in module.RUBRIC)

    parts = args.submissions * len(module.RUBRIC)
    rows = [
        ("submissions", f"{args.submissions} ({len(module.RUBRIC)} graded parts each, {parts} parts)"),
        ("workers", str(args.workers)),
        ("per-part overhead (empty part)", f"{overhead * 1000:.1f} ms"),
        ("set-up (course + generate_assignment)", f"{setup:.1f} s"),
        ("grading, all submissions", f"{grading:.1f} s"),
        ("throughput", f"{args.submissions / grading * 60:.0f} submissions/minute"),
        ("per part, all in", f"{grading / parts * 1000 * args.workers:.0f} ms of a worker"),
        ("total (set-up + grading)", f"{setup + grading:.1f} s"),
        ("scores", "consistent per kind: " + ", ".join(f"{k} {min(t):g}/{maximum:g}" for k, t in sorted(totals.items()))
         if not inconsistent else f"INCONSISTENT: {inconsistent}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 1 if inconsistent or len(results) != args.submissions else 0


if __name__ == "__main__":
    sys.exit(main())
