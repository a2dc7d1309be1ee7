"""Execute course notebooks headless and report each one's time and peak memory (kernel and children).

    python scripts/run_notebooks.py [--json results.json] [--timeout S] [NOTEBOOK ...]   (default: every one, fast mode)
    python scripts/run_notebooks.py --full --memory-limit 2048 chapters/*.ipynb          # as on Binder: full mode, 2 GB

Chapters and lab sources (with solutions) must run without any error; a lab's student version may
fail only with its stubs' NotImplementedError. See :func:`course_lib.notebooks.run_notebook`.
"""
import sys
from pathlib import Path

from course_lib.notebooks import run_main

if __name__ == "__main__":
    sys.exit(run_main(root=Path(__file__).resolve().parents[1]))
