"""Benchmark of the sandboxed grader, with its feedback, on a realistic class of N submissions of a lab.

The class cycles through the lab's reference solution, its untouched stub and every fixture, correct variant
or known mistake (``tests/fixtures/labs/<topic>/``, written by
:func:`course_grader.course.write_submissions`); spread over it, once each (:data:`RARE`), come two attacks
(``tests/fixtures/attacks/``, lab 01: results that claim to equal anything, ``sys.exit()`` at import), a
notebook whose first solution cell loops forever at import (it costs one time limit) and one whose last
solution cell's function loops on every call (one time limit per part that calls it). Everything happens in a
temporary folder; the checkout is only read. :func:`benchmark` measures

* per-part overhead: the cost of one sandboxed part on its own (fork from the zygote, namespaces,
  dropping privileges, loading an empty source, one call, killing it), median of many;
* set-up: a scratch nbgrader course and ``nbgrader generate_assignment`` (once per course);
* grading: :func:`~course_grader.autograder.grade_batch` over all N students with ``workers``
  (gradebook writes included): submissions per minute *without feedback*;
* feedback: :func:`~course_grader.feedback.write_feedback_notebooks` (each notebook run by
  nbgrader in the sandbox, then rendered): with grading, submissions per minute *with feedback*;
* the machine's load average before and after (the figures depend on what else runs).

The scores are checked: each kind must score the same every time (a wrong score is a broken
benchmark). A benchmark, not a test: nothing here fails on timing. Not covered: the command
line (``scripts/bench_grading.py``, :mod:`~course_grader.cli`). Linux only, like the sandbox.
"""
from __future__ import annotations

import ast
import itertools
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from . import autograder, cells, course, feedback
from .registry import lab as find_lab
from .sandbox import Limits, Sandbox

__all__ = ["BENCH_ATTACKS", "RARE", "benchmark", "part_overhead", "synthetic_class"]

BENCH_ATTACKS = ("always_equal", "sys_exit")  # attack fixtures of lab 01 that need no paths filled in
HANG = "\n\nwhile True:  # the student's own test, left running\n    pass\n"
HANG_IN_PART = "\n\n\ndef {name}(*args, **kwargs):  # a second try, left unfinished: loops on every call\n" \
               "    while True:\n        pass\n"
# Once each in a class (the rest cycles through the solution, the stub, the correct variants and the known
# mistakes): in a real class a hang or an attack is rare, and each hang costs a whole time limit.
RARE = ("attack_always_equal", "attack_sys_exit", "hang_at_import", "hang_in_part")


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


def _kinds(lab: str, folder: Path, *, mistakes_dir: Path, labs_dir: Path, attacks_dir: Path | None) -> dict[str, Path]:
    """One notebook per kind of submission (see the module's docstring)."""
    templates = course.write_submissions(lab, mistakes_dir, folder, labs_dir)
    release = templates["solution"]
    solutions = course.solution_code(Path(labs_dir) / "source" / lab / release.name)
    first, last = next(iter(solutions)), list(solutions)[-1]
    looping = next(iter(cells.functions_defined(solutions[last])))  # the last cell's function: the fewest parts
    extra = {"hang_at_import": {first: solutions[first] + HANG},
             "hang_in_part": {last: solutions[last] + HANG_IN_PART.format(name=looping)}}
    for name in BENCH_ATTACKS if attacks_dir is not None and find_lab(lab).topic == "attention" else ():
        attack = Path(attacks_dir) / f"{name}.py"
        target = next(ast.literal_eval(node.value) for node in ast.parse(attack.read_text(encoding="utf-8")).body
                      if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "TARGET")
        extra[f"attack_{name}"] = {target: attack.read_text(encoding="utf-8")}
    for kind, code in extra.items():
        path = folder / kind / lab / release.name
        path.parent.mkdir(parents=True)
        notebook = course.fill_solutions(Path(labs_dir) / "release" / lab / release.name, {**solutions, **code})
        path.write_text(json.dumps(notebook, ensure_ascii=False), encoding="utf-8")
        templates[kind] = path
    return templates


def synthetic_class(lab: str, count: int, folder: Path, *, mistakes_dir: Path, labs_dir: Path,
                    attacks_dir: Path | None = None) -> dict[str, Path]:
    """``count`` submissions in ``folder/class`` cycling through the kinds; each student is named
    ``student<number>_<kind>``."""
    templates = _kinds(lab, folder / "templates", mistakes_dir=mistakes_dir, labs_dir=labs_dir, attacks_dir=attacks_dir)
    rare = [kind for kind in RARE if kind in templates]
    kinds = itertools.cycle(sorted(set(templates) - set(rare)))
    placed = {count * (i + 1) // (len(rare) + 1): kind for i, kind in enumerate(rare)}  # spread over the class
    students = {}
    for number in range(count):
        kind = placed.get(number) or next(kinds)
        path = folder / "class" / f"student{number:04d}_{kind}" / lab / templates[kind].name
        path.parent.mkdir(parents=True)
        shutil.copyfile(templates[kind], path)
        students[path.parents[1].name] = path
    return students


def benchmark(lab: str, count: int, workers: int, *, mistakes_dir: Path, labs_dir: Path,
              attacks_dir: Path | None = None, hidden_paths: Iterable[Path] = (), overhead_repeats: int = 60,
              with_feedback: bool = True, timeout: float = Limits.wall_seconds) -> tuple[list[tuple[str, str]], bool]:
    """Grade ``count`` submissions of ``lab`` (and make their feedback); the table's ``(measure, value)``
    rows, and whether every submission was graded and each kind scored the same every time."""
    load_before = os.getloadavg()
    overhead = part_overhead(overhead_repeats)
    module = find_lab(lab).checks
    limits = Limits(wall_seconds=timeout, cpu_seconds=int(timeout) + 5)
    timings: dict[str, float] = {}
    rendered = 0
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        folder = Path(tmp)
        students = synthetic_class(lab, count, folder, mistakes_dir=mistakes_dir, labs_dir=labs_dir,
                                   attacks_dir=attacks_dir)
        start = time.perf_counter()
        course_dir = course.scratch_course(folder / "course", labs_dir)
        course.generate_release(course_dir, lab)
        setup = time.perf_counter() - start

        start = time.perf_counter()
        results = autograder.grade_batch(course_dir, lab, students, workers=workers, hidden_paths=hidden_paths,
                                         limits=limits)
        grading = time.perf_counter() - start
        notes: dict[str, str] = {}
        if with_feedback:
            notes = feedback.write_feedback_notebooks(course_dir, lab, module, results, students, folder / "feedback",
                                                      workers=workers, hidden_paths=hidden_paths, timings=timings)
            rendered = sum(1 for s in students if (folder / "feedback" / s / lab).is_dir())
    load_after = os.getloadavg()

    # Each kind of submission must score the same every time (a wrong score is a broken benchmark).
    totals: dict[str, set[float]] = {}
    for student, result in results.items():
        totals.setdefault(student.split("_", 1)[1], set()).add(result.total)
    inconsistent = {kind: found for kind, found in totals.items() if len(found) != 1}
    maximum = sum(float(criterion.points) for criterion in module.RUBRIC)
    parts = count * len(module.RUBRIC)
    kinds = sorted(totals)
    rows = [
        ("submissions", f"{count} ({len(kinds)} kinds in turn, {len(module.RUBRIC)} graded parts each, {parts} parts)"),
        ("workers, time limit", f"{workers}, {timeout:g} s per part"),
        ("machine", f"{os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"),
        ("per-part overhead (empty part)", f"{overhead * 1000:.1f} ms"),
        ("set-up (course + generate_assignment)", f"{setup:.1f} s"),
        ("grading, all submissions", f"{grading:.1f} s"),
        ("throughput without feedback", f"{count / grading * 60:.1f} submissions/minute"),
    ]
    if with_feedback:
        total = grading + timings["execute"] + timings["render"]
        rows += [
            ("feedback: notebooks run (sandboxed, warm)", f"{timings['execute']:.1f} s "
                                                           f"({sum('not run' in n for n in notes.values())} not run)"),
            ("feedback: HTML rendered", f"{timings['render']:.1f} s ({rendered} pages)"),
            ("throughput with feedback", f"{count / total * 60:.1f} submissions/minute"),
            ("total with feedback (grading + feedback)", f"{total:.1f} s"),
        ]
    rows.append(("scores", "consistent per kind: " + ", ".join(f"{kind} {min(found):g}/{maximum:g}"
                                                              for kind, found in sorted(totals.items()))
                 if not inconsistent else f"INCONSISTENT: {inconsistent}"))
    complete = len(results) == count and (not with_feedback or rendered == count)
    return rows, not inconsistent and complete
