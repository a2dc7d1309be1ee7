"""Run untrusted student code in a sandboxed process; call it from the trusted grader as plain arrays.

The grader never runs student code itself. A :class:`Sandbox` starts one *zygote* process
(:mod:`~course_grader.sandbox_child`) that imports torch and numpy once; for every graded
part it forks a fresh child with its own network, PID, mount and IPC namespaces, an empty
private ``/tmp``, empty mounts over the ``hidden_paths`` (the gradebook's folder, the hidden
checks, ...), an unprivileged uid of its own when the grader runs as root, and limits on CPU
time, address space, written file size and number of processes. It runs only the source it is
sent (the student's cells for that part) and then serves calls.

:meth:`Part.function` returns a proxy callable for a student function. A call sends the
arguments as numpy arrays and gets the result back the same way
(:mod:`~course_grader.protocol`: never pickle); the parent accepts only exact
``torch.Tensor`` results (and Python numbers, ``None``, tuples and lists of them) with a numeric
dtype and rebuilds plain tensors on the inputs' device. Anything else raises
:class:`ForbiddenResult`; a crash, a timeout or a garbled message raises another
:class:`SandboxError`, so a check reports it as a failure of that part only.

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

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import sandbox_child
from .protocol import (
    ForbiddenResult, SandboxCrashed, SandboxError, SandboxTimeout, StudentException, decode, encode, rebuild_exception,
    recv, safe_text, send,
)

__all__ = [
    "UID_BASE", "CommandResult", "ForbiddenResult", "GpuLock", "Limits", "Part", "Sandbox", "SandboxCrashed",
    "SandboxedFunction",
    "SandboxError", "SandboxTimeout", "StudentException",
]

UID_BASE = 61_000  # as root, part number n runs as uid/gid UID_BASE + n % 1000 (own RLIMIT_NPROC count)


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


class Sandbox:
    """One zygote process; :meth:`run` starts a sandboxed part. Use as a context manager."""

    def __init__(self, limits: Limits = Limits(), hidden_paths=(), start_timeout: float = 120.0,
                 gpu_lock: Path | str | None = None, rubric: str | None = None):
        self.limits, self.gpu_lock = limits, gpu_lock
        config = {"limits": asdict(limits), "hidden": [str(p) for p in hidden_paths], "uid_base": UID_BASE,
                  "rubric": rubric}
        self._socket, theirs = socket.socketpair()
        self._zygote = subprocess.Popen(
            [sys.executable, "-I", "-m", sandbox_child.__name__, str(theirs.fileno()), json.dumps(config)],
            pass_fds=[theirs.fileno()], cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True)
        theirs.close()
        self._start_timeout, self.warnings, self._fork_lock = start_timeout, set(), threading.Lock()

    def run(self, source: str, names, device: str = "cpu", helpers=()) -> Part:
        """Fork a fresh sandboxed process that runs ``source`` and serves the functions ``names``.

        ``helpers`` names functions of the lab's ``RUBRIC.references`` (the module given as ``rubric``
        when the sandbox started) that the process defines around ``source``: the reference stands in
        for every function this part does not grade.

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
        return Part(self, ours, pid, list(names), source, lock, list(helpers))

    def command(self, argv: list[str], files: dict[str, bytes], fetch: list[str],
                env: dict[str, str] | None = None) -> CommandResult:
        """Run ``argv`` in a fresh sandboxed child whose working directory holds only ``files``
        (``{relative path: bytes}``); return its exit status, its output's tail and the files
        ``fetch`` names. The child and everything it started are killed before this returns.
        :class:`SandboxTimeout` after ``limits.wall_seconds``; ``env`` adds to a minimal environment.
        """
        names = list(files)
        arrays = [np.frombuffer(files[name], dtype=np.uint8) for name in names]
        sock, pid = self._fork(b"fork exec")
        with _Process(self, sock, pid) as process:
            process._send({"argv": [str(a) for a in argv], "env": dict(env or {}), "files": names,
                           "fetch": list(fetch)}, arrays)
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Process:
    """A sandboxed child talking over ``sock``; closing it kills all its processes."""

    def __init__(self, sandbox: Sandbox, sock: socket.socket, pid: int, lock: GpuLock | None = None):
        self.limits, self._socket, self._pids = sandbox.limits, sock, [pid]
        self._deadline, self.closed, self._lock = time.monotonic() + self.limits.wall_seconds, False, lock
        hello, _ = self._receive()
        if type(hello.get("init_pid")) is int:
            self._pids.append(hello["init_pid"])
        sandbox.warnings.update(safe_text(w) for w in hello.get("warnings", [])[:10])

    def _send(self, header: dict, arrays=()) -> None:
        try:
            send(self._socket, header, arrays)
        except OSError:
            self.close()
            raise SandboxCrashed("the process running your code stopped (it exited, was killed or ran out "
                                 "of memory)") from None

    def _receive(self):
        remaining = self._deadline - time.monotonic()
        try:
            if remaining <= 0 or self.closed:
                raise TimeoutError
            self._socket.settimeout(remaining)
            return recv(self._socket, self.limits.message_bytes)
        except TimeoutError:
            self.close()
            raise SandboxTimeout(f"your code took longer than {self.limits.wall_seconds:g} s in total "
                                 "(an endless loop or a sleep?)") from None
        except (EOFError, OSError):
            self.close()
            raise SandboxCrashed("the process running your code stopped (it exited, was killed or ran out "
                                 "of memory)") from None
        except (ValueError, struct.error, UnicodeDecodeError) as error:  # garbled framing or npy header
            self.close()
            raise SandboxError(f"garbled message from the sandbox: {safe_text(error, 200)}") from None
        except SandboxError:
            self.close()
            raise

    def close(self) -> None:
        """Kill the process group and its PID namespace (killing its init kills everything in it)."""
        if not self.closed:
            self.closed = True
            for pid in self._pids:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            self._socket.close()
        if self._lock is not None:  # the GPU is free once the part's processes are gone
            self._lock.release()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Part(_Process):
    """A sandboxed process holding one part's student code; closing it kills all its processes."""

    def __init__(self, sandbox: Sandbox, sock: socket.socket, pid: int, names: list[str], source: str,
                 lock: GpuLock | None = None, helpers: list[str] = ()):
        self.names, self.load_error = names, None
        self.limits, self._socket, self._pids, self.closed, self._lock = sandbox.limits, sock, [pid], False, lock
        try:
            super().__init__(sandbox, sock, pid, lock)
            self._send({"op": "load", "source": source, "names": names, "helpers": list(helpers)})
            reply, _ = self._receive()
            if "error" in reply:
                self.load_error = rebuild_exception(reply.get("error"), reply.get("message"))
        except SandboxError as error:
            self.load_error = error

    def function(self, name: str) -> SandboxedFunction:
        """A callable that runs the student's ``name`` in the sandbox."""
        return SandboxedFunction(self, name)

    def call(self, name: str, args: tuple, kwargs: dict):
        if self.load_error is not None:
            raise self.load_error
        devices = [a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        arrays: list = []
        spec = {"args": encode(list(args), arrays), "kwargs": {k: encode(v, arrays) for k, v in kwargs.items()}}
        self._send({"op": "call", "name": name, **spec}, arrays)
        reply, results = self._receive()
        if "error" in reply:
            raise rebuild_exception(reply.get("error"), reply.get("message"))
        if devices:
            return decode(reply.get("result"), results, devices[0])
        from course_lib.runtime import get_device  # here: the device module needs nothing from the sandbox

        return decode(reply.get("result"), results, get_device())


class SandboxedFunction:
    """Stands in for a student's function in the trusted process: each call runs it in the part's
    sandbox. It has no module namespace (no ``__globals__``), so a check cannot put anything into it."""

    def __init__(self, part: Part, name: str):
        self._part, self.__name__ = part, name

    def __call__(self, *args, **kwargs):
        return self._part.call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<sandboxed {self.__name__}>"
