"""What a notebook needs installed: the third-party packages its code and the library code it calls import.

Read statically with ``ast``: the notebook's imports (anywhere in its code cells); for each ``course_lib``
name it imports, the imports at the top of the modules on the way and, for a function or class, the imports
inside it (the library imports heavy packages lazily, inside the functions that use them), following the
library names those refer to. Then :func:`distributions` turns module names into the installed
distributions that provide them, and :func:`installed_by` lists what a ``pip install`` of some
requirements brings in this environment (their dependencies included).
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.paths import REPO


def _source_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


class _Reader:
    def __init__(self):
        self.third_party: set[str] = set()
        self.seen: set[tuple[str, str | None]] = set()
        self.attributes: set[str] = set()  # every ``x.name`` in the code read so far
        self.methods: list[tuple] = []  # methods not read yet: read once something calls them by name

    def imports(self, nodes, module: str = "", path: Path | None = None) -> dict[str, tuple[str, str | None]]:
        """Record the third-party imports among ``nodes``; return the library names bound: ``{name: (module, attr)}``."""
        bound = {}
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "course_lib":
                        self.name(alias.name, None)
                    else:
                        self.third_party.add(alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, path, node) if path else (node.module or "")
                if base.split(".")[0] != "course_lib":
                    self.third_party.add(base.split(".")[0])
                    continue
                for alias in node.names:
                    bound[alias.asname or alias.name] = (base, alias.name)
        return bound

    def module(self, module: str) -> tuple[Path | None, ast.Module | None, dict]:
        """Read ``module`` and its top-level imports (what importing it needs); its bound library names."""
        path = _source_file(module)
        if path is None:
            return None, None, {}
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        top += [n for block in tree.body if isinstance(block, (ast.If, ast.Try)) for n in ast.walk(block)
                if isinstance(n, (ast.Import, ast.ImportFrom))]
        bound = self.imports(top, module, path)
        if (module, None) not in self.seen:
            self.seen.add((module, None))
            for parent in range(1, len(module.split("."))):  # importing a.b.c runs a and a.b first
                self.name(".".join(module.split(".")[:parent]), None)
            for base, attr in bound.values():
                self.name(base, None) if _source_file(f"{base}.{attr}") is None else self.name(f"{base}.{attr}", None)
        return path, tree, bound

    def name(self, module: str, attr: str | None) -> None:
        """Follow ``from module import attr`` (``attr`` None: ``import module``)."""
        if attr is not None and _source_file(f"{module}.{attr}") is not None:
            module, attr = f"{module}.{attr}", None
        if (module, attr) in self.seen:
            return
        path, tree, bound = self.module(module)
        self.seen.add((module, attr))
        if tree is None or attr is None:
            return
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == attr:
                self.body(node, module, path, bound, tree)
                return
            targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if attr in targets:
                self.body(node, module, path, bound, tree)
                return
        if attr in bound:  # re-exported from another module
            self.name(*bound[attr])

    def body(self, node, module: str, path: Path, bound: dict, tree: ast.Module) -> None:
        """A function, class or assignment: its own imports, and the library names it refers to.

        A class's methods count once some code read calls them (``obj.method``), or always for the ones
        Python or PyTorch call (``__init__``, ``forward``, ...).
        """
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.methods.append((item, module, path, bound, tree))
                else:
                    self.body(item, module, path, bound, tree)
            self.read_called_methods()
            return
        self.attributes |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
        inner = self.imports([n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))], module, path)
        local = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        for used in {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}:
            if used in inner:
                self.name(*inner[used])
            elif used in bound:
                self.name(*bound[used])
            elif used in local:
                self.name(module, used)
        self.read_called_methods()

    def read_called_methods(self) -> None:
        while called := [m for m in self.methods if m[0].name in self.attributes or m[0].name.startswith("__")
                         or m[0].name == "forward"]:
            self.methods = [m for m in self.methods if not any(m is c for c in called)]
            for method in called:
                self.body(*method)


def notebook_imports(notebook: Path, skip_cells: set[str] = frozenset()) -> set[str]:
    """Top-level names of the third-party modules ``notebook`` needs (standard library left out)."""
    code = []
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "code" and cell.get("id") not in skip_cells:
            lines = "".join(cell["source"]).splitlines()
            code.append("\n".join(line for line in lines if not line.lstrip().startswith(("%", "!"))))
    reader, tree = _Reader(), ast.parse("\n".join(code))
    reader.attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for base, attr in reader.imports([n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]).values():
        reader.name(base, attr)
    reader.read_called_methods()
    return {name for name in reader.third_party if name and name not in sys.stdlib_module_names} - {"__future__"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(modules: set[str]) -> set[str]:
    """The installed distributions (normalised names) that provide these top-level modules."""
    provided = importlib.metadata.packages_distributions()
    missing = sorted(m for m in modules if m not in provided)
    assert not missing, f"no installed distribution provides {missing}"
    return {_normal(dist) for m in modules for dist in provided[m]}


def _requires(name: str) -> list[str]:
    """A distribution's requirements: course-lib's from this checkout's pyproject.toml, others as installed."""
    if _normal(name) != "course-lib":
        return importlib.metadata.requires(name) or []
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["dependencies"] + [f"{r} ; extra == '{extra}'"
                                      for extra, rs in project["optional-dependencies"].items() for r in rs]


def installed_by(requirements: list[str]) -> set[str]:
    """Every distribution ``pip install REQUIREMENTS`` brings in (normalised names), read from this environment."""
    found, todo = set(), [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = _normal(requirement.name)
        extras = {(name, extra) for extra in requirement.extras} | {(name, "")}
        if extras <= found:
            continue
        found |= extras
        for text in _requires(requirement.name):
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({**default_environment(), "extra": extra})
                                            for _, extra in extras):
                todo.append(needed)
    return {name for name, _ in found}
