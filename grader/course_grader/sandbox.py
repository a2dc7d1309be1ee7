"""Run untrusted student code in a sandboxed process; call it from the trusted grader as plain arrays.

The grader never runs student code itself. A :class:`Sandbox` starts one *zygote* process
(:mod:`~course_grader.sandbox_child`) that imports torch and numpy once; for every graded
part it forks a fresh child with its own network, PID, mount and IPC namespaces, an empty
private ``/tmp``, empty mounts over the ``hidden_paths`` (the gradebook's folder, the hidden
checks, ...), an unprivileged uid when the grader runs as root, and limits on CPU time, address
space, written file size and number of processes. Each sandbox has a range of uids of its own
(:mod:`~course_grader.locks`), so sandboxes of one grading run or of two runs side by side never
share a uid nor its process limit. A part runs only what it is sent (the lab's set-up cell and the
student's cells for that part, :mod:`~course_grader.sandbox_part`) and then serves calls.

:meth:`Part.function` returns a proxy callable for a student function
(:mod:`~course_grader.sandbox_process`). A call sends the arguments as numpy arrays and gets the
result back the same way (:mod:`~course_grader.protocol`: never pickle); the parent rebuilds
plain tensors on the inputs' device and plain Python values, and copies what the function did to
its arguments in place back onto the caller's. What could lie (tensor subclasses, other objects)
raises :class:`ForbiddenResult`; a crash, a timeout or a garbled message raises another
:class:`SandboxError`, so a check reports it as a failure of that part only. The part's code is
watched by the reference policy (:mod:`~course_grader.reference_policy`): :meth:`Part.policy_violation`.

GPU: ``run(..., device="cuda")`` makes the child compute on the GPU (it starts its own CUDA
context; see :mod:`~course_grader.sandbox_child`). With ``gpu_lock`` set to a file, such
parts hold an exclusive lock on it from start to close, so sandboxes in several grading
processes run one GPU part at a time. Isolation that the kernel or the grader's user cannot
give (no namespaces, not root) is listed in :attr:`Sandbox.warnings` for the caller to show.

:meth:`Sandbox.command` runs a whole program instead (``nbgrader autograde`` for the feedback
notebooks) in a child isolated the same way, with its loopback interface up: the files it is
sent are its only working directory, and the files it leaves there come back as untrusted bytes
(:class:`CommandResult`). The parent kills everything the command started when it returns.

Not covered: which code a part gets, and scores (see :mod:`course_grader.autograder`).
Linux only.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import sandbox_child
from .locks import UID_BASE, GpuLock, allocate_uids
from .protocol import (
    ForbiddenResult, SandboxCrashed, SandboxError, SandboxTimeout, StudentException, StudentExit, safe_text,
)
from .sandbox_process import Part, SandboxedFunction, SandboxProcess

__all__ = [
    "UID_BASE", "CommandResult", "ForbiddenResult", "GpuLock", "Limits", "Part", "Sandbox", "SandboxCrashed",
    "SandboxedFunction", "SandboxError", "SandboxTimeout", "StudentException", "StudentExit",
]


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 60.0  # per part, enforced by the parent: it kills the part's processes
    cpu_seconds: int = 60
    memory_bytes: int = 4 << 30  # address space on top of what the zygote had mapped (torch); not on GPU parts
    file_bytes: int = 1 << 20
    processes: int = 64  # RLIMIT_NPROC; threads count too
    message_bytes: int = 64 << 20  # largest reply the parent reads
    scratch_bytes: int = 16 << 20  # size of the private /tmp (and /dev/shm), in memory


@dataclass(frozen=True)
class CommandResult:
    """What :meth:`Sandbox.command` brings back; all of it written by untrusted code."""
    returncode: int
    log: str  # the last characters of the command's stdout and stderr
    files: dict[str, bytes]  # the requested files that existed (and fitted in a reply)


class Sandbox:
    """One zygote process; :meth:`run` starts a sandboxed part. Use as a context manager."""

    def __init__(self, limits: Limits = Limits(), hidden_paths=(), start_timeout: float = 120.0,
                 gpu_lock: Path | str | None = None, rubric: str | None = None, preload=()):
        """``rubric``: the module of the lab's checks, whose references the parts' helpers come from;
        ``preload``: modules the zygote imports once, for :meth:`command`'s warm ``module`` runs."""
        self.limits, self.gpu_lock = limits, gpu_lock
        self._uids = allocate_uids()  # this sandbox's own uids, for as long as it lives
        self.uids = self._uids.uids
        config = {"limits": asdict(limits), "hidden": [str(p) for p in hidden_paths], "uid_base": self.uids.start,
                  "uid_count": len(self.uids), "rubric": rubric, "preload": list(preload)}
        self._socket, theirs = socket.socketpair()
        self._zygote = subprocess.Popen(
            [sys.executable, "-I", "-m", sandbox_child.__name__, str(theirs.fileno()), json.dumps(config)],
            pass_fds=[theirs.fileno()], cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True)
        theirs.close()
        self._start_timeout, self.warnings, self._fork_lock = start_timeout, set(), threading.Lock()

    def run(self, cells: str | list[str], names, device: str = "cpu", helpers=(), setup: str = "") -> Part:
        """Fork a fresh sandboxed process that runs ``setup`` then the student's ``cells`` (one source or
        a list of cells, run in turn) and serves the functions ``names``.

        ``setup`` is the lab's trusted set-up cell: the reference policy allows whatever it uses
        (:mod:`~course_grader.reference_policy`). ``helpers`` names functions of the lab's
        ``RUBRIC.references`` (the module given as ``rubric`` when the sandbox started) that the
        process defines around the cells: the reference stands in for every function this part does
        not grade.

        ``device="cuda"``: the student's functions get their inputs on the GPU; with ``gpu_lock``
        this waits until no other GPU part holds the lock, and holds it until the part is closed.
        """
        if device not in ("cpu", "cuda"):
            raise ValueError(f"a sandboxed part runs on 'cpu' or 'cuda', not {device!r}")
        lock = GpuLock(self.gpu_lock) if device == "cuda" and self.gpu_lock is not None else None
        if lock is not None:
            lock.acquire()
        try:
            ours, pid = self._fork(b"fork cuda" if device == "cuda" else b"fork")
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        cells = [cells] if isinstance(cells, str) else list(cells)
        return Part(self, ours, pid, list(names), cells, setup, lock, list(helpers))

    def command(self, argv: list[str], files: dict[str, bytes], fetch: list[str],
                env: dict[str, str] | None = None, module: str | None = None) -> CommandResult:
        """Run ``argv`` in a fresh sandboxed child whose working directory holds only ``files``
        (``{relative path: bytes}``); return its exit status, its output's tail and the files
        ``fetch`` names. The child and everything it started are killed before this returns.
        :class:`SandboxTimeout` after ``limits.wall_seconds``; ``env`` adds to a minimal environment.
        With ``module``, the child runs ``python -m module argv`` itself, warm (best with ``module``
        among the sandbox's ``preload``; :mod:`~course_grader.sandbox_command`).
        """
        names = list(files)
        arrays = [np.frombuffer(files[name], dtype=np.uint8) for name in names]
        sock, pid = self._fork(b"fork exec")
        with SandboxProcess(self, sock, pid) as process:
            process._send({"argv": [str(a) for a in argv], "env": dict(env or {}), "files": names,
                           "fetch": list(fetch), "module": module}, arrays)
            reply, blobs = process._receive()
        fetched = reply.get("fetched") if type(reply.get("fetched")) is list else []
        if type(reply.get("returncode")) is not int or len(fetched) != len(blobs):
            raise SandboxError("malformed reply from a sandboxed command")
        return CommandResult(reply["returncode"], safe_text(reply.get("log", ""), 4000),
                             {str(name): blob.tobytes() for name, blob in zip(fetched, blobs)
                              if blob.dtype == np.uint8 and blob.ndim == 1})

    def _fork(self, request: bytes) -> tuple[socket.socket, int]:
        """Ask the zygote for a child; return our end of its socket and its pid."""
        ours, theirs = socket.socketpair()
        try:
            with self._fork_lock:  # one request at a time on the zygote's socket (threads may share a sandbox)
                self._socket.settimeout(self._start_timeout)
                socket.send_fds(self._socket, [request], [theirs.fileno()])
                line = b""
                while not line.endswith(b"\n"):
                    chunk = self._socket.recv(64)
                    if not chunk:
                        raise SandboxError("the sandbox's zygote process died")
                    line += chunk
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours, int(line)

    def close(self) -> None:
        self._socket.close()  # the zygote exits when its socket closes
        try:
            self._zygote.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._zygote.pid, signal.SIGKILL)
            self._zygote.wait()
        self._uids.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


