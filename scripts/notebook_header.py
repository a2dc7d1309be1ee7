"""Give every course notebook the same first two cells: an "Open in Colab" badge and a set-up cell.

    python scripts/notebook_header.py          # rewrite the headers in place
    python scripts/notebook_header.py --check  # exit 1 if any notebook's header is missing or stale

See :mod:`course_lib.notebooks` (tests run ``--check``).
"""
import sys
from pathlib import Path

from course_lib.notebooks import header_main

if __name__ == "__main__":
    sys.exit(header_main(root=Path(__file__).resolve().parents[1]))
