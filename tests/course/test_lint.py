"""The code stays tidy: no unused or undefined names, no syntax errors (ruff, configured in pyproject.toml)."""
from __future__ import annotations

import subprocess
import sys

from tests.paths import REPO


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "course_lib", "grader", "scripts",
                             "tests"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
