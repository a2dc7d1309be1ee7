"""Binder: a fresh virtual environment built from binder/ runs every course notebook.

The chapters run as Binder users run them: in full mode, under Binder's memory, within their budget
(:data:`BUDGET_SECONDS` and :data:`BUDGET_MB` each, the kernel and its child processes together). The limit
is real: the kernel enforces it in a cgroup where this machine allows one (v2 ``memory.max``, else v1
``memory.limit_in_bytes``), else the runner kills the largest process above it, as Binder's container would;
the test records which (``memory_limit_by``, printed and in the JUnit report's test suite properties). The labs run in fast mode. The book build
(tests/course/test_book.py) executes the chapters in fast mode.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from course_lib.notebooks import course_notebooks

pytestmark = pytest.mark.slow

BUDGET_SECONDS = 180  # per chapter, full mode, on a 2-core CPU
BUDGET_MB = 2048  # Binder's memory: peak resident memory of the kernel and all its children


def test_binder_environment_runs_every_notebook(repo_root, tmp_path, record_testsuite_property):
    venv = tmp_path / "binder-venv"
    python = venv / "bin" / "python"
    # pip fails over at once from an unreachable extra index (the PyTorch CPU index offline)
    env = {**os.environ, "PIP_RETRIES": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "COURSE_FAST": "1",
           "COURSE_CACHE_DIR": str(tmp_path / "cache"), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)

    def run(*command, **kwargs):
        result = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True, **kwargs)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    start = time.perf_counter()
    run(sys.executable, "-m", "venv", str(venv))
    # repo2docker runs `pip install -r binder/requirements.txt` from the repository root, then postBuild;
    # its base image brings Jupyter, whose kernel and executor we add here.
    run(str(python), "-m", "pip", "install", "--quiet", "-r", "binder/requirements.txt", timeout=1500)
    run(str(python), "-m", "pip", "install", "--quiet", "ipykernel", "nbclient", "nbformat", timeout=600)
    run("bash", "binder/postBuild", timeout=300)
    installed = time.perf_counter() - start

    sanity = run(str(python), "-c", "import course_lib, torch, sys; print(course_lib.__file__, torch.__version__, sys.prefix)")
    assert str(venv) in sanity.stdout and "+cpu" in sanity.stdout, sanity.stdout

    print(f"binder venv installed in {installed:.0f} s")
    notebooks = [str(p.relative_to(repo_root)) for p in course_notebooks(repo_root)]
    chapters = [name for name in notebooks if name.startswith("chapters/")]
    labs = [name for name in notebooks if name not in chapters]
    results = {}
    for name, options, paths in [("chapters", ["--full", "--memory-limit", str(BUDGET_MB)], chapters),
                                     ("labs", [], labs)]:
        results_file = tmp_path / f"{name}.json"
        result = subprocess.run(
            [str(python), "scripts/run_notebooks.py", *options, "--json", str(results_file), *paths],
            cwd=repo_root, env=env, capture_output=True, text=True, timeout=1500,
        )
        print(result.stdout)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        results[name] = json.loads(results_file.read_text())
    assert len(results["chapters"]) == len(chapters) >= 6 and len(results["labs"]) == len(labs) >= 3
    limits = {chapter["limit_by"] for chapter in results["chapters"]}
    record_testsuite_property("memory_limit_by", ", ".join(sorted(limits)))
    print("memory limit enforced by:", ", ".join(sorted(limits)))
    for chapter in results["chapters"]:
        print(f"{chapter['notebook']}: {chapter['seconds']:.0f} s, peak {chapter['peak_mb']} MB "
              f"(cgroup's charge: {chapter['cgroup_peak_mb']} MB)")
    assert all(r["error"] is None for r in results["chapters"] + results["labs"])
    assert limits <= {"cgroup v2 memory.max", "cgroup v1 memory.limit_in_bytes", "MemoryWatch"}
    for chapter in results["chapters"]:
        assert chapter["mode"] == "full" and chapter["peak_mb"] <= BUDGET_MB, chapter
        assert chapter["seconds"] <= BUDGET_SECONDS, f"{chapter['notebook']} is over its time budget: {chapter}"
