"""Memory of a notebook's kernel and its child processes: measured, and held under a limit.

* :class:`MemoryWatch` samples the resident memory of a process and all its descendants on a thread,
  keeps the peak, and can enforce a limit itself, as an out-of-memory killer would.
* :class:`CgroupLimit` puts a process (and every process it starts later) into a new cgroup with a
  memory limit, so the kernel enforces it exactly as a container's limit (Binder's 2 GB) is enforced:
  cgroup v2 ``memory.max`` where this process's cgroup hands the memory controller down, else a
  cgroup v1 ``memory.limit_in_bytes`` where the v1 memory controller is mounted and writable (root).

:func:`course_lib.notebooks.run_notebook` uses a cgroup when it can and the watch's limit otherwise,
and always the watch for the peak. Linux only. Not covered: GPU memory, and swap (the v1 limit also
caps memory plus swap where the kernel accounts it; a v2 cgroup gets ``memory.swap.max`` 0).
"""
from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from pathlib import Path

__all__ = ["CgroupLimit", "MemoryWatch"]


class MemoryWatch:
    """The resident memory of a process and all its descendants, sampled on a thread, with an optional limit.

    Every ``interval`` seconds it sums ``VmRSS`` over the process tree (threads' children included)
    and keeps the peak. With ``limit_mb`` it acts like a cgroup's out-of-memory killer: when the sum
    goes over, it kills the tree's largest process and records it in ``killed``. Resident sizes count
    shared library pages once per process, so the sum is an upper bound on what a container would
    charge; a spike shorter than ``interval`` can slip between two samples (the kernel's own
    ``VmHWM`` is read at the end, so its peak never does). Linux only.

    Why not ``RLIMIT_AS`` where no cgroup can be made (:class:`CgroupLimit`): the address space of a
    process that imports torch is about 0.8 GB larger than its resident memory, so a per-process
    address-space limit would fail where Binder would not, and it would not limit the processes' sum.
    """

    def __init__(self, pid: int, limit_mb: float | None = None, interval: float = 0.02):
        self.pid, self.limit_mb, self.interval = pid, limit_mb, interval
        self.peak_mb, self.peak_processes, self.root_peak_mb, self.virtual_peak_mb = 0.0, 0, 0.0, 0.0
        self.killed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def tree(pid: int) -> list[int]:
        """``pid`` and every live descendant, read from ``/proc/PID/task/TID/children``."""
        found, queue = [], [pid]
        while queue:
            current = queue.pop()
            found.append(current)
            try:
                for task in os.listdir(f"/proc/{current}/task"):
                    with open(f"/proc/{current}/task/{task}/children") as file:
                        queue += [int(child) for child in file.read().split()]
            except OSError:  # it exited meanwhile
                pass
        return found

    @staticmethod
    def status_mb(pid: int) -> dict[str, float]:
        """``VmRSS``, ``VmHWM`` and ``VmPeak`` of ``pid`` in MB (empty once it has exited)."""
        try:
            with open(f"/proc/{pid}/status") as file:
                return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in file
                        if line.startswith(("VmRSS:", "VmHWM:", "VmPeak:"))}
        except OSError:
            return {}

    def sample(self) -> float:
        status = {pid: self.status_mb(pid) for pid in self.tree(self.pid)}
        sizes = {pid: values.get("VmRSS", 0.0) for pid, values in status.items()}
        total = sum(sizes.values())
        if total > self.peak_mb:
            self.peak_mb, self.peak_processes = total, sum(1 for size in sizes.values() if size)
        self.root_peak_mb = max(self.root_peak_mb, status.get(self.pid, {}).get("VmHWM", 0.0))
        self.virtual_peak_mb = max([self.virtual_peak_mb] + [v.get("VmPeak", 0.0) for v in status.values()])
        if self.limit_mb is not None and total > self.limit_mb:
            largest = max(sizes, key=sizes.get)
            try:
                with open(f"/proc/{largest}/cmdline", "rb") as file:
                    command = file.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
                os.kill(largest, signal.SIGKILL)
                self.killed.append(f"pid {largest} ({sizes[largest]:.0f} MB, {command}) at {total:.0f} MB in all")
            except OSError:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> "MemoryWatch":
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.root_peak_mb)


class CgroupLimit:
    """A memory limit the kernel enforces on a process and every process it starts: a new cgroup.

    :meth:`create` makes the cgroup under this process's own one: version 2 when its
    ``cgroup.subtree_control`` lists ``memory``, else version 1 when the v1 memory hierarchy is mounted
    and writable; it returns None where neither works (no permission, no controller). The kernel then
    charges every page the processes touch (page cache included, which it reclaims before it gives
    up) and, when it cannot keep them under the limit, its out-of-memory killer kills the largest.
    Memory a process held before :meth:`enter` stays charged where it was, so :meth:`enter` lowers
    the limit by that process's resident size: the sum stays the budget.
    """

    _names = itertools.count()

    def __init__(self, path: Path, version: int, limit_mb: float):
        self.path, self.version, self.limit_mb = path, version, limit_mb
        self.kind = "cgroup v2 memory.max" if version == 2 else "cgroup v1 memory.limit_in_bytes"
        self._limit_file = "memory.max" if version == 2 else "memory.limit_in_bytes"

    @staticmethod
    def candidates() -> list[tuple[int, Path]]:
        """``(version, this process's cgroup folder)`` for each hierarchy with a memory controller, v2 first."""
        own = {}  # controllers -> this process's cgroup path ("" for v2)
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            own[controllers] = path
        found = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields, _, tail = line.partition(" - ")
            mount_root, mount_point = fields.split()[3:5]
            fstype, _, options = tail.split()[:3]
            if fstype == "cgroup2" and "" in own:
                folder = Path(mount_point) / os.path.relpath(own[""], mount_root)
                control = folder / "cgroup.subtree_control"
                if control.exists() and "memory" in control.read_text().split():
                    found.append((2, folder))
            elif fstype == "cgroup" and "memory" in options.split(","):
                path = next((p for c, p in own.items() if "memory" in c.split(",")), None)
                if path is not None:
                    found.append((1, Path(mount_point) / os.path.relpath(path, mount_root)))
        return sorted((version, folder) for version, folder in found if folder.is_dir())[::-1]

    @classmethod
    def create(cls, limit_mb: float, name: str = "course-notebook") -> CgroupLimit | None:
        """A new, empty cgroup limited to ``limit_mb``, or None where this machine or user cannot make one."""
        for version, parent in cls.candidates():
            path = parent / f"{name}-{os.getpid()}-{next(cls._names)}"
            limit = cls(path, version, limit_mb)
            try:
                path.mkdir()
                limit._write_limit(limit_mb)
                return limit
            except OSError:
                limit.close()
        return None

    def _write_limit(self, limit_mb: float) -> None:
        size = str(int(limit_mb * 2**20))
        (self.path / self._limit_file).write_text(size)
        # swap must not be a way around the limit (Binder has none)
        swap = self.path / ("memory.swap.max" if self.version == 2 else "memory.memsw.limit_in_bytes")
        if swap.exists():
            try:
                swap.write_text("0" if self.version == 2 else size)
            except OSError:
                pass

    def enter(self, pid: int) -> None:
        """Move ``pid`` (all its threads) into the cgroup; the processes it starts from now on are born in it."""
        self._write_limit(self.limit_mb - MemoryWatch.status_mb(pid).get("VmRSS", 0.0))
        (self.path / "cgroup.procs").write_text(str(pid))

    def _counter(self, file: str, key: str) -> int:
        for line in (self.path / file).read_text().splitlines():
            if line.split()[0] == key:
                return int(line.split()[1])
        return 0

    def oom_kills(self) -> int:
        """How many of its processes the kernel's out-of-memory killer has killed."""
        return self._counter("memory.events" if self.version == 2 else "memory.oom_control", "oom_kill")

    def peak_mb(self) -> float | None:
        """The cgroup's peak charge (page cache included), or None where the kernel does not keep one."""
        file = self.path / ("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")
        return int(file.read_text()) / 2**20 if file.exists() else None

    def close(self, wait: float = 10.0) -> None:
        """Remove the cgroup, killing any process still in it after ``wait`` seconds (one the notebook left)."""
        deadline = time.monotonic() + wait
        while self.path.exists():
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # busy: processes still in it
                if time.monotonic() > deadline + wait:
                    raise
                if time.monotonic() > deadline:
                    for pid in (self.path / "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                time.sleep(0.05)
