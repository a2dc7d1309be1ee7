"""The grader's handle on one sandboxed child: its deadline, its messages, killing it; and a graded part's calls.

:class:`SandboxProcess` is any child the :class:`~course_grader.sandbox.Sandbox` forked: every
message back must arrive before the child's deadline (``Limits.wall_seconds`` from its start),
else the child is killed and :class:`~course_grader.protocol.SandboxTimeout` raised; a child that
dies is :class:`~course_grader.protocol.SandboxCrashed`. :class:`Part` is the child of one graded
part (:mod:`~course_grader.sandbox_part` is its other side):

* **loading**: the set-up and the student's cells run first; a failure to load is kept in
  :attr:`Part.load_error` and raised by every call. When the load stopped on a cell (it hung or
  the process died there), :attr:`Part.stuck_cell` says which, so the grader need not run it
  again for another part; ``sys.exit()`` or ``KeyboardInterrupt`` at import is
  :class:`~course_grader.protocol.StudentExit`, said as such;
* **calls** (:class:`SandboxedFunction`): the arguments go as plain arrays, the result comes back
  as plain values (:mod:`~course_grader.protocol`) and the arguments the function changed in place
  are copied back onto the caller's own (:func:`~course_grader.protocol.copy_into`), so code that
  edits its inputs is seen exactly as in nbgrader's kernel;
* **the reference policy** (:mod:`~course_grader.reference_policy`): :attr:`Part.violation` is the
  first violation any reply reported; :meth:`Part.policy_violation` asks the child once more.

Not covered: starting children and isolation (:mod:`~course_grader.sandbox`,
:mod:`~course_grader.sandbox_child`), scores (:mod:`~course_grader.autograder`).
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import time

import torch

from . import cells as notebook_cells
from .locks import GpuLock
from .protocol import (
    ForbiddenResult, SandboxCrashed, SandboxError, SandboxTimeout, StudentExit, copy_into, decode, encode,
    rebuild_exception, recv, safe_text, send,
)

__all__ = ["Part", "SandboxProcess", "SandboxedFunction"]

CRASHED = "the process running your code stopped (it exited, was killed or ran out of memory)"
EXITS = {"SystemExit": "calls sys.exit() (or exit())", "KeyboardInterrupt": "raises KeyboardInterrupt"}


class SandboxProcess:
    """A sandboxed child talking over ``sock``; closing it kills all its processes."""

    def __init__(self, sandbox, sock: socket.socket, pid: int, lock: GpuLock | None = None):
        self.limits, self._socket, self._pids = sandbox.limits, sock, [pid]
        self._deadline, self.closed, self._lock = time.monotonic() + self.limits.wall_seconds, False, lock
        self.timed_out = False
        hello, _ = self._receive()
        if type(hello.get("init_pid")) is int:
            self._pids.append(hello["init_pid"])
        sandbox.warnings.update(safe_text(w) for w in hello.get("warnings", [])[:10])

    def _send(self, header: dict, arrays=()) -> None:
        try:
            send(self._socket, header, arrays)
        except OSError:
            self.close()
            raise SandboxCrashed(CRASHED) from None

    def _receive(self):
        remaining = self._deadline - time.monotonic()
        try:
            if remaining <= 0 or self.closed:
                raise TimeoutError
            self._socket.settimeout(remaining)
            return recv(self._socket, self.limits.message_bytes)
        except TimeoutError:
            self.close()
            self.timed_out = True  # said here too: a check may turn the exception into its own message
            raise SandboxTimeout(f"your code took longer than {self.limits.wall_seconds:g} s in total "
                                 "(an endless loop or a sleep?)") from None
        except (EOFError, OSError):
            self.close()
            raise SandboxCrashed(CRASHED) from None
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


class Part(SandboxProcess):
    """A sandboxed process holding one part's student code; closing it kills all its processes."""

    def __init__(self, sandbox, sock: socket.socket, pid: int, names: list[str], cells: list[str], setup: str = "",
                 lock: GpuLock | None = None, helpers: list[str] = ()):
        self.names, self.cells, self.load_error, self.stuck_cell, self.violation = names, cells, None, None, None
        self.timed_out = False
        self.limits, self._socket, self._pids, self.closed, self._lock = sandbox.limits, sock, [pid], False, lock
        loading = None  # the student cell running now
        try:
            super().__init__(sandbox, sock, pid, lock)
            self._send({"op": "load", "setup": setup, "cells": cells, "names": names, "helpers": list(helpers),
                        "subjects": [self._cell_name(number) for number in range(len(cells))]})
            while True:
                reply = self._reply()
                if type(reply.get("loading")) is not int:
                    break
                loading = reply["loading"]
            if reply.get("error") in EXITS:
                self.load_error = StudentExit(
                    f"your notebook {EXITS[reply['error']]} at import, in {self._cell_name(loading)} "
                    f"({reply['error']}: {safe_text(reply.get('message'), 200)}): grading runs each of your cells "
                    "to its end, so nothing after that line is defined; remove it")
            elif "error" in reply:
                self.load_error = rebuild_exception(reply.get("error"), reply.get("message"))
        except (SandboxTimeout, SandboxCrashed) as error:
            if loading is None:
                self.load_error = error
            else:
                self.stuck_cell = loading
                self.load_error = type(error)(
                    f"{self._cell_name(loading)} did not finish loading within {self.limits.wall_seconds:g} s "
                    "(an endless loop or a sleep at the top level of the cell?)" if isinstance(error, SandboxTimeout)
                    else f"{CRASHED} while {self._cell_name(loading)} loaded")
        except SandboxError as error:
            self.load_error = error

    def _cell_name(self, index: int | None) -> str:
        """``"your cell defining causal_mask"`` for a student cell of this part."""
        try:
            defined = [n for n in notebook_cells.functions_defined(self.cells[index]) if n in self.names]
        except (SyntaxError, TypeError, IndexError, ValueError):
            defined = []
        return f"your cell defining {', '.join(defined)}" if defined else "one of your cells"

    def _reply(self) -> dict:
        """The next reply, noting the reference policy's verdict it carries."""
        reply, self._arrays = self._receive()
        if self.violation is None and reply.get("violation"):
            self.violation = safe_text(reply["violation"], 1000)
        return reply

    def policy_violation(self) -> str | None:
        """The first violation of the reference policy in this part, asking the child for a late one."""
        if self.violation is None and self.load_error is None and not self.closed:
            try:
                self._send({"op": "status"})
                self._reply()
            except SandboxError:
                pass
        return self.violation

    def function(self, name: str) -> SandboxedFunction:
        """A callable that runs the student's ``name`` in the sandbox."""
        return SandboxedFunction(self, name)

    def call(self, name: str, args: tuple, kwargs: dict, runner: str | None = None):
        if self.load_error is not None:
            raise self.load_error
        devices = [a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if not devices:
            from course_lib.runtime import get_device  # here: the device module needs nothing from the sandbox

            devices = [get_device()]
        arrays: list = []
        spec = {"args": encode(list(args), arrays), "kwargs": {k: encode(v, arrays) for k, v in kwargs.items()}}
        self._send({"op": "call", "name": name, **spec, **({"runner": runner} if runner else {})}, arrays)
        reply = self._reply()
        if "error" in reply:
            raise rebuild_exception(reply.get("error"), reply.get("message"))
        result = decode(reply.get("result"), self._arrays, devices[0])
        changed = reply.get("changed")
        if changed is not None:
            self._copy_back(name, changed, args, kwargs)
        return result

    def _copy_back(self, name: str, changed, args: tuple, kwargs: dict) -> None:
        """Mirror what the function did to its copies of the arguments onto the caller's ``args``/``kwargs``."""
        if not (type(changed) is dict and type(changed.get("kwargs")) is dict):
            raise SandboxError("malformed value in a message from the sandbox")
        try:
            new_args = decode(changed.get("args"), self._arrays, "cpu")
            new_kwargs = {k: decode(v, self._arrays, "cpu") for k, v in changed["kwargs"].items()}
        except ForbiddenResult as error:
            raise ForbiddenResult(f"{name} changed one of its arguments into something grading cannot read "
                                  f"back ({error})") from None
        copy_into(args, new_args)
        for key, value in new_kwargs.items():
            if key in kwargs:
                copy_into(kwargs[key], value)


class SandboxedFunction:
    """Stands in for a student's function in the trusted process: each call runs it in the part's
    sandbox. It has no module namespace (no ``__globals__``), so a check cannot put anything into it."""

    def __init__(self, part: Part, name: str):
        self._part, self.__name__ = part, name

    def __call__(self, *args, **kwargs):
        return self._part.call(self.__name__, args, kwargs)

    def run_with(self, runner: str, *args, **kwargs):
        """``runner(this function, *args, **kwargs)`` in the sandbox: one of the lab's trusted drivers
        (``RUNNERS`` of its checks' module), e.g. the distributed lab's run on N simulated ranks."""
        return self._part.call(self.__name__, args, kwargs, runner=runner)

    def __repr__(self) -> str:
        return f"<sandboxed {self.__name__}>"
