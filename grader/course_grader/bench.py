"""Benchmark of the sandboxed autograder: N synthetic honest submissions of a lab, graded in parallel.

The submissions are the lab's reference solution, its stub and every known mistake (as written
by :func:`course_grader.course.write_submissions`), repeated in turn until there are N students,
so the batch mixes full marks, zeros and single-cell mistakes like a real class. Everything
happens in a temporary folder; the checkout is only read. :func:`benchmark` measures

* per-part overhead: the cost of one sandboxed part on its own (fork from the zygote, namespaces,
  dropping privileges, loading an empty source, one call, killing it), median of many;
* set-up: a scratch nbgrader course and ``nbgrader generate_assignment`` (once per course);
* grading: :func:`~course_grader.autograder.grade_batch` over all N students with ``workers``
  (gradebook writes included), as submissions per minute; the scores are checked against what
  each kind of submission must get.

A benchmark, not a test: nothing here fails on timing. Not covered: the command line
(``scripts/bench_grading.py``, :mod:`~course_grader.cli`). Linux only, like the sandbox.
"""
from __future__ import annotations

import itertools
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from . import autograder, course
from .registry import lab as find_lab
from .sandbox import Limits, Sandbox

__all__ = ["benchmark", "part_overhead", "synthetic_class"]


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


def synthetic_class(lab: str, count: int, folder: Path, *, mistakes_dir: Path, labs_dir: Path) -> dict[str, Path]:
    """``count`` submissions in ``folder/class`` cycling through the solution, the stub and the known mistakes;
    each student is named ``student<number>_<kind>``."""
    templates = course.write_submissions(lab, mistakes_dir, folder / "templates", labs_dir)
    kinds = itertools.cycle(sorted(templates))
    students = {}
    for number in range(count):
        kind = next(kinds)
        path = folder / "class" / f"student{number:04d}_{kind}" / lab / templates[kind].name
        path.parent.mkdir(parents=True)
        shutil.copyfile(templates[kind], path)
        students[path.parents[1].name] = path
    return students


def benchmark(lab: str, count: int, workers: int, *, mistakes_dir: Path, labs_dir: Path,
              hidden_paths: Iterable[Path] = (), overhead_repeats: int = 60) -> tuple[list[tuple[str, str]], bool]:
    """Grade ``count`` synthetic submissions of ``lab``; the table's ``(measure, value)`` rows, and
    whether every submission was graded and each kind scored the same every time."""
    overhead = part_overhead(overhead_repeats)
    rubric = find_lab(lab).checks.RUBRIC
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        folder = Path(tmp)
        students = synthetic_class(lab, count, folder, mistakes_dir=mistakes_dir, labs_dir=labs_dir)
        start = time.perf_counter()
        course_dir = course.scratch_course(folder / "course", labs_dir)
        course.generate_release(course_dir, lab)
        setup = time.perf_counter() - start

        start = time.perf_counter()
        results = autograder.grade_batch(course_dir, lab, students, workers=workers, hidden_paths=hidden_paths)
        grading = time.perf_counter() - start

    # Each kind of submission must score the same every time (a wrong score is a broken benchmark).
    totals: dict[str, set[float]] = {}
    for student, result in results.items():
        totals.setdefault(student.split("_", 1)[1], set()).add(result.total)
    inconsistent = {kind: found for kind, found in totals.items() if len(found) != 1}
    maximum = sum(float(criterion.points) for criterion in rubric)
    parts = count * len(rubric)
    rows = [
        ("submissions", f"{count} ({len(rubric)} graded parts each, {parts} parts)"),
        ("workers", str(workers)),
        ("per-part overhead (empty part)", f"{overhead * 1000:.1f} ms"),
        ("set-up (course + generate_assignment)", f"{setup:.1f} s"),
        ("grading, all submissions", f"{grading:.1f} s"),
        ("throughput", f"{count / grading * 60:.0f} submissions/minute"),
        ("per part, all in", f"{grading / parts * 1000 * max(workers, 1):.0f} ms of a worker"),
        ("total (set-up + grading)", f"{setup + grading:.1f} s"),
        ("scores", "consistent per kind: " + ", ".join(f"{kind} {min(found):g}/{maximum:g}"
                                                       for kind, found in sorted(totals.items()))
         if not inconsistent else f"INCONSISTENT: {inconsistent}"),
    ]
    return rows, not inconsistent and len(results) == count
