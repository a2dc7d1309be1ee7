"""``python -m course_grader {labs,grade,bench} ARGS``: the instructor's commands, run on the course
checkout in the current folder (the same as ``scripts/labs.py``, ``scripts/grade.py`` and
``scripts/bench_grading.py`` there)."""
import sys
from pathlib import Path

from .cli import bench_main, grade_main, labs_main

COMMANDS = {"labs": labs_main, "grade": grade_main, "bench": bench_main}

if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print(f"usage: python -m course_grader {{{','.join(COMMANDS)}}} [-h] ARGS  (from the course checkout's root)",
          file=sys.stderr)
    sys.exit(2)
sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:], root=Path.cwd(), prog=f"python -m course_grader {sys.argv[1]}"))
