"""Shared by the lab and grader tests: a lab's files, the nbgrader course steps, and loading fixture modules."""
from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from course_grader import course as nbgrader_course  # noqa: F401 (the instructor steps behind scripts/labs.py, for the tests)
from course_grader.registry import lab as find_lab
from tests.paths import FIXTURES, REPO


def load_module(path: Path, name: str) -> ModuleType:
    """Import a file that is not a package module (a script, a mistake fixture) under ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class LabFiles(NamedTuple):
    assignment: str  # e.g. "05_decoding"
    source: Path  # labs/source/<assignment>/<notebook>.ipynb
    release: Path  # labs/release/<assignment>/<notebook>.ipynb
    mistakes_dir: Path  # tests/fixtures/labs/<topic>/
    mistakes: list[Path]  # the known-mistake files in it
    points: dict[str, float]  # grade_id -> points, from the lab's RUBRIC


def lab_files(topic: str) -> LabFiles:
    """The files of the lab named ``topic`` (or its assignment name) in the registry."""
    lab = find_lab(topic)
    source = REPO / "labs" / "source" / lab.assignment / f"{lab.notebook}.ipynb"
    release = REPO / "labs" / "release" / lab.assignment / f"{lab.notebook}.ipynb"
    mistakes_dir = FIXTURES / "labs" / lab.topic
    points = {criterion.grade_id: criterion.points for criterion in lab.checks.RUBRIC}
    return LabFiles(lab.assignment, source, release, mistakes_dir, sorted(mistakes_dir.glob("*.py")), points)


def notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def mistake_fails(mistake: Path) -> dict[str, str]:
    """A mistake fixture's ``FAILS`` (grade id -> phrase of the expected message), read without running it."""
    tree = ast.parse(mistake.read_text(encoding="utf-8"))
    value = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "FAILS")
    return ast.literal_eval(value)
