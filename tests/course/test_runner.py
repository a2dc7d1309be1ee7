"""The headless runner's memory limit and watch (course_lib.notebooks.memory): the peak of a kernel and all its
children, and a limit enforced as a container's is, by a cgroup where the machine allows one, else by the watch
(the Binder test runs the chapters under 2 GB with it)."""
from __future__ import annotations

import subprocess
import sys
import time

import nbformat
import pytest

from course_lib.notebooks import CgroupLimit, MemoryWatch, run_notebook

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# A parent that starts a child holding `MB` megabytes for a second (resident: the bytes are written).
HOLD = "import time; x = bytearray({mb} * 2**20); time.sleep(1.5)"
PARENT = "import subprocess, sys; print(subprocess.run([sys.executable, '-c', {child!r}]).returncode)"


def _tree(mb: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PARENT.format(child=HOLD.format(mb=mb))], stdout=subprocess.PIPE,
                            text=True)


def test_watch_sums_the_tree_and_finds_the_childs_memory():
    parent = _tree(300)
    watch = MemoryWatch(parent.pid).start()
    assert parent.wait(timeout=60) == 0 and parent.stdout.read().strip() == "0"
    watch.stop()
    assert watch.peak_mb > 300 and watch.peak_processes == 2 and not watch.killed


def test_watch_over_its_limit_kills_the_largest_process_like_an_oom_killer():
    parent = _tree(600)
    time.sleep(0.05)
    watch = MemoryWatch(parent.pid, limit_mb=400).start()
    assert parent.wait(timeout=60) == 0  # the parent lives on ...
    assert parent.stdout.read().strip() == "-9"  # ... and sees its child killed
    watch.stop()
    assert len(watch.killed) == 1 and "MB in all" in watch.killed[0]


def _notebook(tmp_path, mb: int):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PARENT.format(child=HOLD.format(mb=mb)))]
    nb.cells[0].id = "hold"
    path = tmp_path / "hold.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_run_notebook_reports_the_peak_of_kernel_and_children(tmp_path):
    result = run_notebook(_notebook(tmp_path, 400), tmp_path)
    assert result["error"] is None and result["killed"] == []
    assert result["peak_mb"] > 400 + result["kernel_peak_mb"] * 0.5  # the child's 400 MB on top of the kernel


def test_a_cgroup_limit_is_enforced_by_the_kernel_on_the_processes_started_inside():
    limit = CgroupLimit.create(300)
    if limit is None:  # no writable memory cgroup here: the runner falls back to the watch (tested above)
        pytest.skip(f"no memory cgroup can be made here (candidates: {CgroupLimit.candidates()})")
    try:
        parent = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(); " + PARENT.format(
            child=HOLD.format(mb=500))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        limit.enter(parent.pid)  # before it starts the child, which is born inside
        out, _ = parent.communicate("", timeout=60)
        assert parent.returncode == 0 and out.strip() == "-9"  # the 500 MB child was killed, the parent lives
        assert limit.oom_kills() == 1 and (limit.peak_mb() is None or limit.peak_mb() <= 300)
    finally:
        limit.close()
    assert not limit.path.exists()


@pytest.mark.slow
@pytest.mark.parametrize("use_cgroup", [True, False], ids=["cgroup-if-possible", "watch"])
def test_run_notebook_under_a_limit_fails_and_says_what_was_killed(tmp_path, use_cgroup, record_testsuite_property):
    result = run_notebook(_notebook(tmp_path, 900), tmp_path, memory_limit_mb=600, use_cgroup=use_cgroup)
    record_testsuite_property(f"memory_limit_by[use_cgroup={use_cgroup}]", result["limit_by"])
    print("memory limit enforced by:", result["limit_by"])
    expected = (CgroupLimit.create(600) or "MemoryWatch") if use_cgroup else "MemoryWatch"
    if isinstance(expected, CgroupLimit):
        expected.close()
        expected = expected.kind
    assert result["limit_by"] == expected
    assert result["error"].startswith(f"over the memory limit of 600 MB ({expected}), killed ")
    assert len(result["killed"]) == 1
    if expected == "MemoryWatch":
        assert "bytearray(900" in result["killed"][0]  # the child, not the kernel
    else:
        assert "by the kernel's out-of-memory killer" in result["killed"][0]
        assert result["cgroup_peak_mb"] <= 600
