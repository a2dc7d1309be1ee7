"""course_lib.reformer.memory: a fresh process per measurement, a clear result when one runs out of memory,
and the recorded full-size run the chapter quotes."""
from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from course_lib.notebooks import MemoryWatch
from course_lib.reformer import memory
from course_lib.reformer.memory import describe, measure, recorded_benchmark
from tests.paths import REPO

SMALL = {"kind": "attention", "mode": "lsh", "seq_len": 256}


def test_a_measurement_reports_its_peak_above_a_baseline():
    result = measure(SMALL)
    assert set(result) >= {"peak_mb", "baseline_mb", "seconds", "wall_seconds", "parameters"}
    assert 0 < result["peak_mb"] < 200 and result["baseline_mb"] > 50  # torch alone is well over 50 MB
    assert result["wall_seconds"] >= result["seconds"] > 0


@pytest.mark.slow
def test_a_child_out_of_memory_gives_a_result_not_an_exception():
    """Importing torch maps about 0.8 GB; global attention at 8,192 tokens then needs another 0.9 GB."""
    result = measure({"kind": "attention", "mode": "global", "seq_len": 8192}, memory_limit_mb=1300)
    assert result["out_of_memory"] is True and result["error"].startswith("over the memory limit"), result
    assert describe(result) == "over memory limit"


def _kill_during(job: dict, victim) -> dict:
    """Measure ``job`` on a thread and SIGKILL ``victim(server_pid)`` once it exists: what a container's
    out-of-memory killer does to the largest process (Binder's 2 GB)."""
    measure(SMALL)  # the server is up
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(measure, job)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pid = victim(memory._server.pid)
            if pid:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        return future.result(timeout=120)


def _child_of(pid: int) -> int | None:
    children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    return int(children[0]) if children else None


@pytest.mark.slow
def test_a_child_killed_by_a_memory_limit_is_out_of_memory():
    result = _kill_during({"kind": "attention", "mode": "global", "seq_len": 8192}, _child_of)
    assert result["out_of_memory"] is True and "killed (SIGKILL)" in result["error"], result
    assert measure(SMALL)["peak_mb"] > 0  # the server goes on
    result = _kill_during({"kind": "attention", "mode": "global", "seq_len": 8192}, lambda server: server)
    assert result == {"error": "over the memory limit: the measuring server was killed", "out_of_memory": True}
    assert measure(SMALL)["peak_mb"] > 0  # a new server


@pytest.mark.slow
def test_a_measurement_over_a_real_cgroup_limit_is_a_result_and_the_next_one_runs():
    """The kernel's own out-of-memory killer, as under Binder's 2 GB: the measuring server goes into a cgroup
    whose limit leaves its children about 500 MB; global attention at 8,192 tokens needs about 950 MB more."""
    from course_lib.notebooks import CgroupLimit

    measure(SMALL)  # the server is up
    limit = CgroupLimit.create(500 + MemoryWatch.status_mb(memory._server.pid)["VmRSS"])
    if limit is None:
        pytest.skip(f"no memory cgroup can be made here (candidates: {CgroupLimit.candidates()})")
    try:
        limit.enter(memory._server.pid)
        result = measure({"kind": "attention", "mode": "global", "seq_len": 8192})
        assert result["out_of_memory"] is True and result["error"].startswith("over the memory limit"), result
        assert describe(result) == "over memory limit" and limit.oom_kills() == 1
        assert measure(SMALL)["peak_mb"] > 0  # the next measurement, in the same server, runs
    finally:
        memory._server.stdin.close()  # the server leaves when its input ends; the cgroup can then go
        memory._server.wait(timeout=30)
        memory._server = None
        limit.close()


def test_failures_are_results_and_describe_says_what_they_are():
    assert measure({"kind": "nonsense", "seq_len": 8}) == {"error": "ValueError: nonsense"}
    assert describe({"error": "ValueError: nonsense"}) == "failed" and describe(None) == "not run"
    assert describe({"peak_mb": 12.4, "seconds": 1.25}) == "12" and describe({"seconds": 1.25}, "seconds", ".1f") == "1.2"


def test_the_recorded_run_has_what_the_chapter_quotes():
    run = recorded_benchmark()
    assert run == json.loads((REPO / "course_lib" / "checkpoints" / memory.RECORDED).read_text())
    assert run["command"].startswith("python scripts/bench_reformer.py") and run["load_average_before"]
    rows = {row["seq_len"]: row for row in run["attention"]}
    assert {4096, 16384, 65536} <= set(rows) and rows[65536]["global"] is None  # too big to try: "not run"
    big = rows[16384]["global"]
    assert rows[16384]["lsh"]["peak_mb"] < 0.1 * big["peak_mb"]  # the point of the chapter, recorded
    chapter = (REPO / "chapters" / "06_efficient_attention.ipynb").read_text(encoding="utf-8")
    assert f"takes about {big['peak_mb'] / 1024:.1f} GB by itself" in chapter  # the prose quotes the record
    for part in ("feed_forward", "reversible"):
        assert all(describe(value) not in ("failed", "over memory limit")
                   for row in run[part]["rows"] for value in row.values() if isinstance(value, dict))
