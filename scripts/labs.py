#!/usr/bin/env python
"""Instructor steps for the nbgrader labs (generate, check, grade trusted submissions, test submissions):
``python scripts/labs.py --help``. The work is :mod:`course_grader.cli`'s ``labs_main``, on this checkout."""
import sys
from pathlib import Path

from course_grader.cli import labs_main

if __name__ == "__main__":
    sys.exit(labs_main(root=Path(__file__).resolve().parents[1]))
