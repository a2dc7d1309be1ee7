#!/usr/bin/env python
"""Sandboxed grading of real lab submissions, with text and HTML feedback: ``python scripts/grade.py --help``.
The work is :mod:`course_grader.cli`'s ``grade_main``, on this checkout."""
import sys
from pathlib import Path

from course_grader.cli import grade_main

if __name__ == "__main__":
    sys.exit(grade_main(root=Path(__file__).resolve().parents[1]))
