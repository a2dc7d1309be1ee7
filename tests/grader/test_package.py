"""The grader as a distribution of its own (``grader/pyproject.toml``, package ``course_grader``).

It declares what it imports and runs (``./course setup`` installs it with ``pip install -e ./grader``,
never the students' Colab cell), pins nbgrader as ``constraints.txt`` does, and knows nothing of a
checkout's layout: it finds its own folder and the hidden checks by import, climbs no folder above
them and, like the front ends and these tests, never edits ``sys.path``.
"""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import course_grader
from tests.paths import REPO

PACKAGE = Path(course_grader.__file__).parent
RUNS = {"ipykernel"}  # not imported: the kernel `nbgrader autograde` starts for each notebook


def _requirement_names(requirements: list[str]) -> dict[str, str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower().replace("_", "-"): r for r in requirements}


def test_the_distribution_declares_every_library_it_imports_or_runs():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "grader" / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = _requirement_names(project["dependencies"])
    imported = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            imported |= {name.split(".")[0] for name in names}
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "course_grader"}
    distributions = {dist.lower() for module in third_party for dist in packages_distributions().get(module, [module])}
    assert distributions | RUNS == set(declared)
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line
                and not line.startswith("#"))
    assert declared["nbgrader"] == f"nbgrader=={pins['nbgrader']}"


def test_nothing_of_the_grader_inserts_into_sys_path_or_climbs_out_of_its_package():
    for path in [*PACKAGE.glob("*.py"), *(REPO / "scripts").glob("*.py"), *Path(__file__).parent.glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"sys\.path\.(insert|append)\(", text), path
    for path in PACKAGE.glob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "__file__" in line:  # a folder found by import: its own, or an imported module's
                assert "parents" not in line and ".parent.parent" not in line, (path.name, line)
