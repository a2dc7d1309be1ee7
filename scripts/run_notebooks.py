"""Execute course notebooks headless and report each one's time.

    python scripts/run_notebooks.py [--json results.json] [NOTEBOOK ...]   (default: every course notebook)

Chapters and lab sources (with solutions) must run without any error. A lab's student version
is run too, but there the only errors allowed are the stubs' ``NotImplementedError`` and the
test cells' failures that follow from them: anything else (an import error, a typo in a cell
we ship) fails. Needs only nbformat and nbclient, so it also runs in a fresh Binder-like venv.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

from notebook_header import ROOT, course_notebooks  # this script's folder is on sys.path

STUB_ERRORS = {"NotImplementedError", "AssertionError"}


def run(path: pathlib.Path, timeout: int = 600) -> dict:
    student_version = "release" in path.relative_to(ROOT).parts if path.is_relative_to(ROOT) else False
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", allow_errors=student_version,
        resources={"metadata": {"path": str(path.parent)}},
    )
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
    return {"notebook": str(path.relative_to(ROOT)), "seconds": round(seconds, 1), "error": error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path)
    parser.add_argument("--json", type=pathlib.Path, help="write the results here")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    os.environ.setdefault("COURSE_FAST", "1")
    results = []
    for path in [p.resolve() for p in args.notebooks] or course_notebooks():
        result = run(path, args.timeout)
        results.append(result)
        status = "ok" if result["error"] is None else "FAILED"
        print(f"{status:6} {result['seconds']:7.1f} s  {result['notebook']}", flush=True)
        if result["error"]:
            print(result["error"], file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["error"] is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
