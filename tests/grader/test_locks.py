"""Machine-wide resources of grading (:mod:`course_grader.locks`): each sandbox's own uids, runs side by side.

Fast tests pin the uid slots: two sandboxes never share a uid range, a slot whose uids still run a
process is skipped, slots are reused round-robin, and a slot reused by another process does not make
its processes look like ones this process left behind. The slow test runs two sandboxed grading runs
at once on the same machine (one of them holding a fork bomb at its process limit for its whole
time limit): both grade every student right, and no process of one ever runs under a uid of the other.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from course_grader import course, locks
from tests.labtools import lab_files
from tests.paths import FIXTURES, REPO

LAB = lab_files("attention").assignment
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")


@pytest.fixture(autouse=True)
def _forget_allocations_in_scratch_folders(monkeypatch):
    """Ranges taken here in a scratch folder share their uids with the machine's real slots: they must
    not stay on this test process's list, or its left-over check would look at other workers' sandboxes."""
    monkeypatch.setattr(locks, "_ALLOCATED", [])


def test_two_sandboxes_get_disjoint_uid_ranges_and_a_released_one_is_reused_last(tmp_path):
    first, second = locks.allocate_uids(tmp_path), locks.allocate_uids(tmp_path)
    try:
        assert first.slot != second.slot and not set(first.uids) & set(second.uids)
        assert len(first.uids) == locks.UIDS_PER_SANDBOX and first.uids.start >= locks.UID_BASE
        first.release()
        third = locks.allocate_uids(tmp_path)
        assert third.slot not in (first.slot, second.slot)  # round-robin: the slot just freed waits its turn
        third.release()
    finally:
        first.release()
        second.release()


@pytest.mark.skipif(os.geteuid() != 0, reason="running a process as another uid needs root")
def test_a_slot_whose_uids_still_run_a_process_is_skipped(tmp_path):
    (tmp_path / "next").write_text("0")
    left_over = locks.UID_BASE + 5  # slot 0's sixth uid, as if a killed run had left a process behind
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(left_over)
            os.setuid(left_over)
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while pid not in locks.processes_of(range(left_over, left_over + 1)) and time.monotonic() < deadline:
            time.sleep(0.02)
        taken = locks.allocate_uids(tmp_path)
        assert taken.slot != 0 and left_over not in taken.uids  # (another slot may be busy with a live sandbox)
        taken.release()
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def _run_as(uid: int, hold_slot_in=None) -> int:
    """A child process running as ``uid`` until killed; with ``hold_slot_in``, it first takes that folder's
    next slot and keeps it, like a sandbox of another grading process."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if hold_slot_in is not None:
                locks.allocate_uids(hold_slot_in)
            os.setgid(uid)
            os.setuid(uid)
            os.write(ready_write, b"1")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"1"
    os.close(ready_read)
    return pid


@pytest.mark.skipif(os.geteuid() != 0, reason="running a process as another uid needs root")
def test_processes_in_a_slot_given_back_count_as_left_behind_until_another_process_takes_the_slot(tmp_path):
    (tmp_path / "next").write_text("0")
    mine = locks.allocate_uids(tmp_path)
    assert mine.slot == 0 and locks.uids_allocated_here() == [mine.uids]
    mine.release()
    straggler = _run_as(mine.uids.start + 7)  # as if a part of this process's sandbox outlived it
    try:
        assert locks.processes_left_behind_here() == [straggler]
    finally:
        os.kill(straggler, 9)
        os.waitpid(straggler, 0)
    assert locks.processes_left_behind_here() == []
    # Another grading process (another test worker) gets slot 0 when the round-robin comes back to it.
    (tmp_path / "next").write_text("0")
    other = _run_as(mine.uids.start + 3, hold_slot_in=tmp_path)
    try:
        assert other in locks.processes_of(mine.uids)  # its uids are the ones this process had...
        assert locks.processes_left_behind_here() == []  # ...but it is not this process's left-over
    finally:
        os.kill(other, 9)
        os.waitpid(other, 0)


@pytest.mark.slow
def test_two_grading_runs_at_once_neither_interfere_nor_share_a_uid(tmp_path):
    files = lab_files("attention")
    solutions = course.solution_code(files.source)
    kinds = {"solution": {}, "stub": None, "no_scaling": course.mistake_code(files.mistakes_dir / "no_scaling.py", solutions),
             "fork_bomb": {"merge_heads": (FIXTURES / "attacks" / "fork_bomb.py").read_text()}}
    lost = {"solution": set(), "stub": set(files.points), "no_scaling": {"test_sdpa_scaling"},
            "fork_bomb": {"test_merge_heads"}}
    classes = {"a": ["solution", "stub", "no_scaling", "fork_bomb"], "b": ["solution", "stub", "no_scaling"]}
    for name, members in classes.items():
        for kind in members:
            notebook = course.fill_solutions(files.release, {} if kinds[kind] is None else {**solutions, **kinds[kind]})
            path = tmp_path / f"class_{name}" / f"{name}_{kind}" / LAB / files.release.name
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(notebook))
    runs = {name: subprocess.Popen([sys.executable, str(REPO / "scripts" / "grade.py"), str(tmp_path / f"class_{name}"),
                                    "--out", str(tmp_path / f"out_{name}"), "--no-feedback", "--timeout", "20",
                                    "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in classes}
    seen: dict[str, set[int]] = {name: set() for name in runs}
    watcher = threading.Thread(target=_watch_uids, args=(runs, seen))
    watcher.start()
    outputs = {name: run.communicate(timeout=900) for name, run in runs.items()}
    watcher.join()
    for name, members in classes.items():
        assert runs[name].returncode == 0, outputs[name][1][-3000:]
        with open(tmp_path / f"out_{name}" / "grades.csv", newline="") as file:
            scores = {row["student_id"].split("_", 1)[1]: float(row["score"]) for row in csv.DictReader(file)}
        total = sum(files.points.values())
        assert scores == {kind: total - sum(files.points[g] for g in lost[kind]) for kind in members}, (name, scores)
    assert seen["a"] and seen["b"] and not seen["a"] & seen["b"], seen


def _watch_uids(runs: dict[str, subprocess.Popen], seen: dict[str, set[int]]) -> None:
    """Until the runs end, note the uid of every sandboxed process under each run's process tree."""
    sandbox_uids = range(locks.UID_BASE, locks.UID_BASE + locks.SLOTS * locks.UIDS_PER_SANDBOX)
    roots = {run.pid: name for name, run in runs.items()}
    while any(run.poll() is None for run in runs.values()):
        parents = _parents()
        for pid in locks.processes_of(sandbox_uids):
            ancestor = pid
            while ancestor > 1 and ancestor not in roots:
                ancestor = parents.get(ancestor, 0)
            try:
                uid = os.stat(f"/proc/{pid}").st_uid
            except OSError:
                continue
            if ancestor in roots:
                seen[roots[ancestor]].add(uid)
        time.sleep(0.05)


def _parents() -> dict[int, int]:
    """pid -> parent pid, for every process."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    parents[int(entry.name)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return parents
