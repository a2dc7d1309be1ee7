"""The course's own notebooks: the header every one of them starts with, and running them headless.

* :func:`course_notebooks` lists what a reader or student opens: the chapters and the labs (source
  and student version) of a course checkout.
* :func:`header_cells`: an "Open in Colab" badge pointing at the notebook's own path in the
  repository at the course's release tag (a lab's source points at its student version, which is what
  students open) and a set-up cell that, on Colab only, installs ``course_lib`` from that same tag with
  the course's pins (``constraints.txt`` of the tag) and only the extras that notebook needs
  (:data:`EXTRAS`). Both are made from :data:`REPOSITORY` and :data:`~course_lib.version.RELEASE_TAG`,
  so they cannot drift; they come right after the notebook's title cell, so every page opens with
  its title. :func:`update_headers` rewrites or checks them.
* :func:`run_notebook` executes one notebook with nbclient and reports its time: chapters and lab
  sources must run without any error; a lab's student version may fail only with the stubs'
  ``NotImplementedError`` and the test failures that follow from it.

Front ends: ``scripts/notebook_header.py`` and ``scripts/run_notebooks.py``. Needs ``nbformat`` and
``nbclient`` (imported when called), so it also runs in a Binder-like environment. Not covered: the
book build (``./course book``) and the labs' nbgrader steps (``course_grader``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .version import RELEASE_TAG

__all__ = [
    "BRANCH", "EXTRAS", "REPOSITORY", "colab_url", "course_notebooks", "header_cells", "header_main",
    "install_command", "repository_path", "run_main", "run_notebook", "setup_source", "update_headers",
    "with_header",
]

REPOSITORY = "transformers-from-scratch/course"  # GitHub owner/name: Colab badges, Binder, book links
BRANCH = "main"  # what the book's repository links and Binder follow; Colab follows RELEASE_TAG
BADGE_ID = "colab-badge"
SETUP_ID = "colab-setup"
STUB_ERRORS = {"NotImplementedError", "AssertionError"}  # allowed in a lab's student version

# The extras of course-lib (pyproject.toml) each notebook needs on Colab beyond the core (torch, numpy,
# matplotlib, ipywidgets, tqdm, regex): what it imports itself and what the library functions it calls
# import (tests/course/test_notebooks.py checks both). Not listed: the core is enough (every lab).
EXTRAS = {
    "chapters/01_attention.ipynb": ("views",),  # bertviz: the attention views
    "chapters/02_tokenization.ipynb": ("datasets", "tokenizers"),  # HF datasets and tokenizers, GPT-2's files
    "chapters/03_rnn_attention.ipynb": ("bleu", "datasets"),  # sacrebleu; Multi30k as a datasets.Dataset
    "chapters/04_transformer.ipynb": ("datasets", "views"),
}


def install_command(repository_path: str) -> list[str]:
    """The ``pip install`` arguments of a notebook's Colab set-up: the release tag's library, pins and extras."""
    extras = EXTRAS.get(repository_path, ())
    package = f"course-lib[{','.join(extras)}]" if extras else "course-lib"
    return ["pip", "install", "--quiet",
            "-c", f"https://raw.githubusercontent.com/{REPOSITORY}/{RELEASE_TAG}/constraints.txt",
            f"{package} @ git+https://github.com/{REPOSITORY}@{RELEASE_TAG}"]


def setup_source(repository_path: str) -> str:
    """The set-up cell of the notebook at ``repository_path``: installs on Colab, does nothing anywhere else."""
    _, install, quiet, constrain, constraints, package = install_command(repository_path)
    return f'''\
# Set-up: on Google Colab this installs the course's library as of this notebook's release
# ({RELEASE_TAG}), with the course's pinned versions; anywhere else it does nothing.
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "{install}", "{quiet}",
                    "{constrain}", "{constraints}",
                    "{package}"], check=True)'''


def course_notebooks(root: Path) -> list[Path]:
    """Every notebook a reader or student opens in the checkout ``root``: chapters and labs (source and release)."""
    root = Path(root)
    found = [*root.glob("chapters/*.ipynb"), *root.glob("labs/source/*/*.ipynb"), *root.glob("labs/release/*/*.ipynb")]
    return sorted(p for p in found if ".ipynb_checkpoints" not in p.parts)


def repository_path(notebook: Path, root: Path) -> str:
    """The path a notebook's badge points at: its own, or for a lab's source its student version."""
    relative = Path(notebook).resolve().relative_to(Path(root).resolve())
    if relative.parts[:2] == ("labs", "source"):
        relative = Path("labs", "release", *relative.parts[2:])
    return relative.as_posix()


def colab_url(notebook: Path, root: Path) -> str:
    """The notebook on Colab, as of the release tag (the revision its set-up cell installs)."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{RELEASE_TAG}/{repository_path(notebook, root)}"


def header_cells(notebook: Path, root: Path) -> list:
    import nbformat

    badge = nbformat.v4.new_markdown_cell(
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook, root)})"
    )
    setup = nbformat.v4.new_code_cell(setup_source(repository_path(notebook, root)))
    badge.id, setup.id = BADGE_ID, SETUP_ID
    setup.metadata["tags"] = ["colab-setup"]
    return [badge, setup]


def _is_title(cell) -> bool:
    return cell.cell_type == "markdown" and cell.source.lstrip().startswith("# ")


def with_header(notebook: Path, nb, root: Path) -> bool:
    """Put the header right after the title cell of ``nb`` (replacing an old one); True if anything changed.

    A notebook that does not start with a title (a markdown cell opening with ``# ``) gets it first.
    """
    body = [c for c in nb.cells if c.get("id") not in (BADGE_ID, SETUP_ID)]
    at = 1 if body and _is_title(body[0]) else 0
    cells = body[:at] + header_cells(notebook, root) + body[at:]

    def key(cell):
        return cell.cell_type, cell.source, cell.get("id"), cell.get("metadata", {}).get("tags")

    if [key(c) for c in nb.cells] == [key(c) for c in cells]:
        return False
    nb.cells = cells
    return True


def update_headers(root: Path, notebooks: list[Path] | None = None, *, check: bool = False) -> list[Path]:
    """Rewrite stale headers in place (or, with ``check``, only find them); return the stale notebooks."""
    import nbformat

    stale = []
    for path in notebooks or course_notebooks(root):
        nb = nbformat.read(path, as_version=4)
        if with_header(path, nb, root):
            stale.append(path)
            if not check:
                nbformat.write(nb, path)
    return stale


def run_notebook(path: Path, root: Path, timeout: int = 600) -> dict:
    """Execute ``path`` headless; ``{"notebook", "seconds", "error"}`` (``error`` None when it ran as it must)."""
    import nbformat
    from nbclient import NotebookClient

    path, root = Path(path).resolve(), Path(root).resolve()
    student_version = path.is_relative_to(root) and "release" in path.relative_to(root).parts
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=student_version,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as exc:  # nbclient raises CellExecutionError with the traceback
        error = f"{type(exc).__name__}: {str(exc)[-2000:]}"
    seconds = time.perf_counter() - start
    unexpected = []
    if student_version and error is None:
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error" and out.get("ename") not in STUB_ERRORS:
                    unexpected.append(f"{out['ename']}: {out.get('evalue', '')[:300]}")
    if unexpected:
        error = "unexpected errors in the student version: " + "; ".join(unexpected)
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    return {"notebook": str(shown), "seconds": round(seconds, 1), "error": error}


def header_main(argv: list[str] | None = None, *, root: Path) -> int:
    """``notebook_header.py [--check] [NOTEBOOK ...]``: rewrite (or check) the headers of the course's notebooks."""
    parser = argparse.ArgumentParser(description="Give every course notebook its Colab badge and set-up cell.")
    parser.add_argument("--check", action="store_true", help="only report notebooks whose header is stale")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    stale = update_headers(root, args.notebooks or None, check=args.check)
    verb = "stale header" if args.check else "updated"
    for path in stale:
        print(f"{verb}: {path.relative_to(root) if path.is_absolute() else path}")
    return 1 if (args.check and stale) else 0


def run_main(argv: list[str] | None = None, *, root: Path) -> int:
    """``run_notebooks.py [--json FILE] [--timeout S] [NOTEBOOK ...]``: execute notebooks headless, fast mode."""
    parser = argparse.ArgumentParser(description="Execute course notebooks headless and report each one's time.")
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    os.environ.setdefault("COURSE_FAST", "1")
    results = []
    for path in [p.resolve() for p in args.notebooks] or course_notebooks(root):
        result = run_notebook(path, root, args.timeout)
        results.append(result)
        status = "ok" if result["error"] is None else "FAILED"
        print(f"{status:6} {result['seconds']:7.1f} s  {result['notebook']}", flush=True)
        if result["error"]:
            print(result["error"], file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["error"] is None for r in results) else 1
