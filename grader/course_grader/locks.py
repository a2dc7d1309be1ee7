"""What grading processes on one machine share, through ``flock``'ed files: the GPU and the sandbox's uids.

* :class:`GpuLock`: one holder at a time across processes (the sandbox runs one GPU part at a time).
* :func:`allocate_uids`: every :class:`~course_grader.sandbox.Sandbox` gets a range of
  :data:`UIDS_PER_SANDBOX` unprivileged uids of its own, held by a lock on its slot file for as long
  as the sandbox lives, so two sandboxes, of one grading run or of two runs side by side, never
  share a uid: a fork bomb's ``RLIMIT_NPROC`` (counted per uid) cannot starve anyone else's part,
  and each run can tell its own processes from the others'. A slot is skipped while any process
  still runs as one of its uids (a run killed without cleaning up). Slots are taken round-robin, so
  a range just given back is the last to be reused. :func:`uids_allocated_here` lists the ranges
  this process took, and :func:`processes_left_behind_here` the processes still running as them
  (the tests' check that no sandboxed process outlives its sandbox).

Not covered: running anything as those uids (:mod:`~course_grader.sandbox_child`).
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

__all__ = ["SLOTS", "UID_BASE", "UIDS_PER_SANDBOX", "GpuLock", "UidRange", "allocate_uids", "processes_of",
           "processes_left_behind_here", "uids_allocated_here"]

UID_BASE = 61_000  # the sandbox's uids: UID_BASE .. UID_BASE + SLOTS * UIDS_PER_SANDBOX - 1
UIDS_PER_SANDBOX = 100  # a sandbox's part number n runs as its first uid + n % UIDS_PER_SANDBOX
SLOTS = 64
_ALLOCATED: list[UidRange] = []  # every range this process took, released or not


class GpuLock:
    """An exclusive ``flock`` on a file: one holder at a time across processes (released if one dies)."""

    def __init__(self, path: Path | str):
        self.path, self._fd = Path(path), None

    def acquire(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


class UidRange:
    """A slot's uids, held until :meth:`release` (or this process's end)."""

    def __init__(self, slot: int, fd: int, slot_file: Path):
        self.slot, self._fd, self.slot_file = slot, fd, slot_file
        self.uids = range(UID_BASE + slot * UIDS_PER_SANDBOX, UID_BASE + (slot + 1) * UIDS_PER_SANDBOX)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def slot_folder() -> Path:
    """Where the slot files live: one folder per machine (``/run`` as root), per user otherwise."""
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        return Path("/run/course-grader-uids")
    return Path(tempfile.gettempdir()) / f"course-grader-uids-{os.geteuid()}"


def processes_of(uids: range) -> list[int]:
    """Pids of live (not zombie) processes whose real uid is in ``uids``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                lines = status.read().splitlines()
        except OSError:
            continue
        uid = next((int(line.split()[1]) for line in lines if line.startswith("Uid:")), -1)
        if uid in uids and not any(line.startswith("State:\tZ") for line in lines):
            found.append(int(entry.name))
    return found


def allocate_uids(folder: Path | None = None) -> UidRange:
    """The next free slot's uids, locked for the caller; :class:`RuntimeError` when all are taken."""
    folder = Path(folder or slot_folder())
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    counter = os.open(folder / "next", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(counter, fcntl.LOCK_EX)  # one allocation at a time on this machine
        start = int(os.pread(counter, 16, 0) or b"0") % SLOTS
        for step in range(SLOTS):
            slot = (start + step) % SLOTS
            slot_file = folder / f"slot-{slot:02d}"
            fd = os.open(slot_file, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            taken = UidRange(slot, fd, slot_file)
            if processes_of(taken.uids):  # left behind by a run that died: not safe to share
                taken.release()
                continue
            os.pwrite(counter, f"{slot + 1:<16}".encode(), 0)
            _ALLOCATED.append(taken)
            return taken
    finally:
        os.close(counter)
    raise RuntimeError(f"all {SLOTS} sandbox uid slots in {folder} are taken: too many sandboxes at once")


def uids_allocated_here() -> list[range]:
    """The uid ranges this process allocated so far (released or not)."""
    return [taken.uids for taken in _ALLOCATED]


def processes_left_behind_here() -> list[int]:
    """Pids of live processes running as a uid this process allocated, except in slots that another
    process holds now. Slots are reused round-robin by every grading process on the machine (test
    workers side by side included), so a range this process gave back long ago may be another
    sandbox's by now, and the processes in it are that sandbox's. They cannot be ours: a slot is only
    handed out once no process runs as its uids."""
    found: set[int] = set()
    for taken in _ALLOCATED:
        if taken._fd is None and _held_by_another(taken.slot_file):
            continue
        found.update(processes_of(taken.uids))
    return sorted(found)


def _held_by_another(slot_file: Path) -> bool:
    """Whether some open file description holds the slot's lock (called only for slots this process let go)."""
    try:
        fd = os.open(slot_file, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False  # closing the descriptor below drops the lock at once
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
