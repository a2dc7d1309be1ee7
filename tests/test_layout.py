"""The library's layout rules, read from the code's own imports: topic packages in one order, no circle.

``course_lib/__init__.py`` states them: a topic package imports only the topic packages listed above it
(and the shared modules ``runtime``, ``data``, ``viz``, ``notebooks``, ``version``, which
import no topic); nothing inside the library imports the package root; no import circle between modules
(lazy imports inside functions count too); the students' library never imports the instructor's grader;
no file anywhere puts a folder on ``sys.path`` (scripts are thin front ends over package functions).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.paths import REPO

LIBRARY = REPO / "course_lib"
TOPICS = ["attention", "tokenization", "decoding", "seq2seq", "models", "reformer", "pretraining", "transfer", "long_range",
          "distributed", "lab_checks"]
SHARED = ["runtime", "data", "viz", "notebooks", "version"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every course_lib / course_grader module ``path`` imports, at the top or inside a function."""
    name, tree = _module_name(path), ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from . import masks` imports a module
    modules = {_module_name(p) for p in LIBRARY.rglob("*.py")}
    return {m for m in found if m in modules or m.startswith("course_grader")}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


GRAPH = {_module_name(p): _imports(p) for p in sorted(LIBRARY.rglob("*.py"))}


def test_every_package_is_a_known_topic_or_shared_module():
    assert {_unit(m) for m in GRAPH} - {"<root>"} == set(TOPICS) | set(SHARED)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _unit(m) != "<root>"))
def test_imports_go_down_the_topic_order_only(module):
    unit = _unit(module)
    for target in GRAPH[module]:
        assert not target.startswith("course_grader"), f"{module} imports the instructor's grader ({target})"
        other = _unit(target)
        assert other != "<root>", f"{module} imports the package root ({target}): import the topic package instead"
        if other == unit or other in SHARED:  # shared modules may use each other (test_no_import_circle)
            continue
        if unit in SHARED:
            pytest.fail(f"shared module {module} imports the topic {other} ({target})")
        assert TOPICS.index(other) < TOPICS.index(unit), (
            f"{module} imports {target}: {other} comes after {unit} in course_lib's topic order")


def test_no_import_circle():
    order, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if target not in GRAPH or target == module:
                continue
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"
        order.append(module)

    for module in GRAPH:
        if module not in state:
            visit(module, [module])


def test_no_file_puts_a_folder_on_sys_path():
    offenders = []
    for path in [*REPO.glob("course_lib/**/*.py"), *REPO.glob("grader/**/*.py"), *REPO.glob("scripts/*.py"),
                 *REPO.glob("tests/**/*.py")]:
        if path == Path(__file__):
            continue
        text = path.read_text(encoding="utf-8")
        if "sys.path.insert" in text or "sys.path.append" in text:
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def _course_code() -> list[tuple[str, str]]:
    """``(where, code)`` of every code cell of the chapters and labs, and every Python block of the READMEs."""
    import json
    import re

    found = []
    for path in [*REPO.glob("chapters/*.ipynb"), *REPO.glob("labs/*/*/*.ipynb")]:
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                found.append((str(path.relative_to(REPO)), "".join(cell["source"])))
    for path in [REPO / "README.md", REPO / "labs" / "README.md"]:
        found += [(str(path.relative_to(REPO)), block)
                  for block in re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)]
    return found


def _library_names(code: str) -> list[str]:
    """``course_lib...`` names ``code`` imports or reads: ``course_lib.attention.masks``, ``course_lib.generate``."""
    lines = [line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))]  # IPython magics
    tree = ast.parse("\n".join(lines))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_lib"):
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.startswith("course_lib")]
        elif isinstance(node, ast.Attribute):
            parts, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "course_lib":
                names.append(".".join(["course_lib", *reversed(parts)]))
    return names


def _resolves(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    target = importlib.import_module(parts[0])
    for depth in range(1, len(parts)):
        if hasattr(target, parts[depth]):
            target = getattr(target, parts[depth])
            continue
        try:
            target = importlib.import_module(".".join(parts[: depth + 1]))
        except ImportError:
            return False
    return True


def test_every_library_name_the_chapters_labs_and_readme_use_exists():
    missing = [f"{where}: {name}" for where, code in _course_code() for name in _library_names(code)
               if not _resolves(name)]
    assert missing == [], missing
