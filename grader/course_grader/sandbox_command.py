"""The sandboxed child's side of a command: files in, one program run, files out; warm Python programs.

:mod:`~course_grader.sandbox_child` forks a *command* child (``fork exec``) and, once it is
isolated and unprivileged, hands it to :func:`run_command`: the files sent are written into the
child's private working directory, the command runs there, and the files asked for go back as
bytes. The command is either

* ``argv``: a program, run with :mod:`subprocess` (any command, a fresh process);
* ``module`` and ``argv``: a Python module run as ``python -m module argv`` but *in this child*,
  which the zygote forked with that module already imported (``Sandbox(preload=...)``): for
  ``nbgrader autograde`` that saves starting Python and importing nbgrader for every student.
  Its Jupyter kernel is warm too: before the module runs, :class:`WarmKernel` forks a process
  that waits, with torch, ipykernel and the course's library already imported, and becomes the
  kernel when jupyter_client launches ``python -m ipykernel_launcher`` (any other kernel command,
  or a second kernel, starts the usual way). It is the same ipykernel with the same arguments,
  environment and working directory, in its own session, like a launched kernel; it closes the
  child's socket to the grader first, so the student's code never holds it.

Everything here runs as the sandbox's uid; the parent trusts nothing of the reply. Not covered:
isolation (:mod:`~course_grader.sandbox_child`), the feedback notebooks (:mod:`~course_grader.feedback`).
"""
from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import traceback

import numpy as np

from .protocol import recv, send

__all__ = ["LOG_CHARS", "WarmKernel", "run_command"]

LOG_CHARS = 4000  # of a command's output, sent back to explain a failure
KERNEL_LAUNCHER = ["-m", "ipykernel_launcher"]


class WarmKernel:
    """A process forked now that becomes the first ``ipykernel_launcher`` kernel jupyter_client launches;
    to jupyter_client it looks like the ``Popen`` of that kernel."""

    stdin = stdout = stderr = None

    def __init__(self, close: list[int]):
        reader, self._writer = os.pipe()
        self.pid, self.returncode, self.used = os.fork(), None, False
        if self.pid == 0:
            try:
                os.close(self._writer)
                for fd in close:
                    os.close(fd)
                with os.fdopen(reader, "rb") as pipe:
                    request = pipe.read()
                if request:
                    _become_kernel(json.loads(request))
            finally:
                os._exit(0)
        os.close(reader)

    def launch(self, original, cmd: list[str], **kwargs):
        """jupyter_client's ``launch_kernel``: hand the kernel's command to the waiting process."""
        if self.used or list(cmd[1:3]) != KERNEL_LAUNCHER:
            return original(cmd, **kwargs)
        self.used = True
        request = {"argv": [str(a) for a in cmd[3:]], "env": dict(kwargs.get("env") or os.environ),
                   "cwd": str(kwargs.get("cwd") or os.getcwd())}
        with os.fdopen(self._writer, "wb") as pipe:
            pipe.write(json.dumps(request).encode())
        return self

    def close(self) -> None:
        """No kernel was asked for: the waiting process ends."""
        if not self.used:
            os.close(self._writer)
            self.used = True

    # --- what jupyter_client asks of a Popen ---------------------------------------------------

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("kernel", timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _become_kernel(request: dict) -> None:
    """What ``python -m ipykernel_launcher ARGS`` does, in this warm process; ends it when the kernel stops."""
    os.setsid()  # like jupyter_client's start_new_session: interrupts reach the kernel's process group
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.argv = ["ipykernel_launcher", *request["argv"]]
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.launch_instance(argv=request["argv"])
    os._exit(0)  # at once: the kernel has said goodbye, nothing after it is worth waiting for


def _run_module(module: str, argv: list[str], sock: socket.socket) -> int:
    """``python -m module argv`` in this process (its output already goes to the log); the exit status."""
    kernel = None
    if "jupyter_client.provisioning.local_provisioner" in sys.modules and "ipykernel.kernelapp" in sys.modules:
        provisioner = sys.modules["jupyter_client.provisioning.local_provisioner"]
        kernel, original = WarmKernel(close=[sock.fileno()]), provisioner.launch_kernel
        provisioner.launch_kernel = lambda cmd, **kwargs: kernel.launch(original, cmd, **kwargs)
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        if kernel is not None:
            kernel.close()


def run_command(sock: socket.socket, max_bytes: int, workdir: str) -> None:
    """Write the files sent, run the command in ``workdir``, send back the files asked for."""
    header, blobs = recv(sock, max_bytes)
    for name, blob in zip(header["files"], blobs):
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(blob.tobytes())
    log_path = os.path.join(workdir, ".command.log")
    with open(log_path, "wb") as log:
        if header.get("module"):
            os.environ.update(header["env"])
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            returncode = _run_module(str(header["module"]), [str(a) for a in header["argv"]], sock)
            sys.stdout.flush()
            sys.stderr.flush()
        else:
            try:
                returncode = subprocess.run(header["argv"], check=False, cwd=workdir,
                                            env={**os.environ, **header["env"]}, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log).returncode
            except OSError as error:
                returncode, _ = 127, log.write(str(error).encode())
    with open(log_path, "rb") as log:
        log.seek(max(0, os.path.getsize(log_path) - LOG_CHARS))
        tail = log.read().decode("utf-8", "replace")
    fetched, arrays, room = [], [], max_bytes - (1 << 20)
    for name in header["fetch"]:
        try:
            fd = os.open(os.path.join(workdir, name), os.O_RDONLY | os.O_NOFOLLOW)
            with open(fd, "rb") as file:
                data = file.read(room + 1)
        except OSError:
            continue
        if len(data) <= room:
            room -= len(data)
            fetched.append(name)
            arrays.append(np.frombuffer(data, dtype=np.uint8))
    send(sock, {"returncode": returncode, "log": tail, "fetched": fetched}, arrays)
