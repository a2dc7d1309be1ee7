"""Shared by the lab tests: a lab's files, the instructor script, and loading fixture modules."""
from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def load_module(path: Path, name: str) -> ModuleType:
    """Import a file that is not on sys.path (a script, a mistake fixture) under ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


labs_script = load_module(REPO / "scripts" / "labs.py", "labs_script")


def lab_files(lab_module) -> tuple[str, Path, Path, Path, list[Path], dict[str, float]]:
    """``(assignment, source, release, mistakes_dir, mistakes, points)`` of a ``course_lib.grading`` lab."""
    lab = lab_module.ASSIGNMENT
    source = REPO / "labs" / "source" / lab / f"{lab_module.NOTEBOOK}.ipynb"
    release = REPO / "labs" / "release" / lab / f"{lab_module.NOTEBOOK}.ipynb"
    mistakes_dir = REPO / "tests" / "fixtures" / f"lab_{lab.split('_', 1)[1]}"
    points = {criterion.grade_id: criterion.points for criterion in lab_module.RUBRIC}
    return lab, source, release, mistakes_dir, sorted(mistakes_dir.glob("*.py")), points


def notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def mistake_fails(mistake: Path) -> dict[str, str]:
    """A mistake fixture's ``FAILS`` (grade id -> phrase of the expected message), read without running it."""
    tree = ast.parse(mistake.read_text(encoding="utf-8"))
    value = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "FAILS")
    return ast.literal_eval(value)
