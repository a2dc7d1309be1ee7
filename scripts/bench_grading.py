#!/usr/bin/env python
"""Throughput of the sandboxed grader on N synthetic submissions: ``python scripts/bench_grading.py --help``.
The work is :mod:`course_grader.bench`, run by :mod:`course_grader.cli`'s ``bench_main`` on this checkout."""
import sys
from pathlib import Path

from course_grader.cli import bench_main

if __name__ == "__main__":
    sys.exit(bench_main(root=Path(__file__).resolve().parents[1]))
