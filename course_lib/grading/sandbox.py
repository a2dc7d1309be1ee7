"""Run untrusted student code in a sandboxed process; call it from the trusted grader as plain arrays.

The grader never runs student code itself. A :class:`Sandbox` starts one *zygote* process that
imports torch and numpy once; for every graded part it forks a fresh child that

* gets its own network, PID, mount and IPC namespaces (when the kernel allows; otherwise a
  warning says what is missing), an empty private ``/tmp`` as working directory, and empty
  tmpfs mounts over the ``hidden_paths`` (the gradebook's folder, the hidden checks, ...);
* drops to an unprivileged uid of its own when the grader runs as root, with limits on CPU
  time, address space, written file size and number of processes, stdout/stderr to /dev/null;
* runs only the source it is sent (the student's cells for that part) and then serves calls.

:meth:`Part.function` returns a proxy callable for a student function. A call sends the
arguments as numpy arrays (``np.save`` framing, never pickle), the child calls the student's
function and sends the result back the same way; the parent accepts only exact
``torch.Tensor`` results (and Python numbers, ``None``, tuples and lists of them) with a numeric
dtype, loads them with ``allow_pickle=False`` and rebuilds plain tensors on the inputs' device.
Anything else (tensor subclasses, objects with a custom ``__eq__``, ...) raises
:class:`ForbiddenResult`; a crash, a timeout or a garbled message raises another
:class:`SandboxError`, so a check reports it as a failure of that part only.

Not covered: which code a part gets, and scores (see :mod:`course_lib.grading.autograder`);
running student code on a GPU (the child computes on the CPU, results move to the device).
Linux only. This file also runs as the zygote's ``__main__``, so it imports no course_lib code.
"""
from __future__ import annotations

import builtins
import ctypes
import io
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = [
    "ForbiddenResult", "Limits", "Part", "Sandbox", "SandboxCrashed",
    "SandboxError", "SandboxTimeout", "StudentException",
]

ALLOWED_DTYPES = {np.dtype(n) for n in
                  ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")}
MAX_ITEMS = 32  # arrays per message and items per tuple: honest results have a handful
UID_BASE = 61_000  # as root, part number n runs as uid/gid UID_BASE + n % 1000 (own RLIMIT_NPROC count)
CLONE = {"net": 0x40000000, "pid": 0x20000000, "mount": 0x00020000, "ipc": 0x08000000}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 60.0  # per part, enforced by the parent: it kills the part's processes
    cpu_seconds: int = 60
    memory_bytes: int = 4 << 30  # address space on top of what the zygote had mapped (torch)
    file_bytes: int = 1 << 20
    processes: int = 64  # RLIMIT_NPROC; threads count too
    message_bytes: int = 64 << 20  # largest reply the parent reads


class SandboxError(Exception):
    """The sandboxed code could not be run or called (reported as that part's failure)."""


class SandboxTimeout(SandboxError):
    pass


class SandboxCrashed(SandboxError):
    pass


class ForbiddenResult(SandboxError, TypeError):
    pass


class StudentException(Exception):
    """An exception the student's code raised whose type is not a Python built-in one."""


# --- framing: 8-byte length, JSON header, then np.save'd arrays (each length-prefixed) --------

def _send(sock: socket.socket, header: dict, arrays=()) -> None:
    blobs = []
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        blobs.append(buffer.getvalue())
    head = json.dumps(header).encode()
    body = b"".join([struct.pack("!II", len(head), len(blobs)), head]
                    + [struct.pack("!Q", len(b)) + b for b in blobs])
    sock.sendall(struct.pack("!Q", len(body)) + body)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buffer, view, got = bytearray(size), None, 0
    view = memoryview(buffer)
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("connection closed")
        got += n
    return bytes(buffer)


def _recv(sock: socket.socket, max_bytes: int) -> tuple[dict, list[np.ndarray]]:
    (size,) = struct.unpack("!Q", _recv_exact(sock, 8))
    if size > max_bytes:
        raise SandboxError(f"a message of {size} bytes exceeds the limit of {max_bytes}")
    body = _recv_exact(sock, size)
    head_size, count = struct.unpack_from("!II", body)
    if count > MAX_ITEMS or 8 + head_size > size:
        raise SandboxError("malformed message")
    header, offset, arrays = json.loads(body[8:8 + head_size]), 8 + head_size, []
    for _ in range(count):
        (length,) = struct.unpack_from("!Q", body, offset)
        array = np.load(io.BytesIO(body[offset + 8:offset + 8 + length]), allow_pickle=False)
        if array.dtype not in ALLOWED_DTYPES:
            raise ForbiddenResult(f"an array of dtype {array.dtype} is not accepted")
        arrays.append(array)
        offset += 8 + length
    if not isinstance(header, dict):
        raise SandboxError("malformed message")
    return header, arrays


# --- values <-> JSON specs + arrays ----------------------------------------------------------

def _encode(value, arrays: list, depth: int = 0) -> dict:
    """Describe ``value`` as JSON, appending tensors to ``arrays``; unsupported values become 'other'."""
    kind = type(value)
    if kind is torch.Tensor and len(arrays) < MAX_ITEMS:
        try:
            array = np.ascontiguousarray(value.detach().cpu().resolve_conj().numpy())
        except Exception:  # bfloat16, sparse, meta, ...: not a plain array
            return {"t": "other", "type": f"torch.Tensor of dtype {value.dtype}, layout {value.layout}"}
        if array.dtype not in ALLOWED_DTYPES:
            return {"t": "other", "type": f"torch.Tensor of dtype {value.dtype}"}
        arrays.append(array)
        return {"t": "tensor", "i": len(arrays) - 1}
    if value is None:
        return {"t": "none"}
    if kind in (bool, int, float):
        return {"t": kind.__name__, "v": value}
    if kind in (tuple, list) and depth < 3 and len(value) <= MAX_ITEMS:
        return {"t": kind.__name__, "items": [_encode(item, arrays, depth + 1) for item in value]}
    return {"t": "other", "type": f"{kind.__module__}.{kind.__qualname__}"}


def _safe_text(text, limit: int = 300) -> str:
    text = str(text)
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text[:limit]) + ("..." if len(text) > limit
                                                                                        else "")


def _decode(spec, arrays: list[np.ndarray], device, depth: int = 0):
    """Inverse of :func:`_encode`, trusting nothing: exact JSON types, indexes in range, depth bounded."""
    kind = spec.get("t") if isinstance(spec, dict) else None
    if kind == "tensor" and type(spec.get("i")) is int and 0 <= spec["i"] < len(arrays):
        return torch.from_numpy(np.array(arrays[spec["i"]], copy=True)).to(device)
    if kind == "none":
        return None
    if kind in ("bool", "int", "float") and type(spec.get("v")) is {"bool": bool, "int": int, "float": float}[kind]:
        return spec["v"]
    if kind in ("tuple", "list") and depth < 3 and isinstance(spec.get("items"), list) \
            and len(spec["items"]) <= MAX_ITEMS:
        items = [_decode(item, arrays, device, depth + 1) for item in spec["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "other":
        raise ForbiddenResult(f"returned a {_safe_text(spec.get('type'), 120)}; grading accepts only plain "
                              "torch.Tensor results (not subclasses or other objects), Python numbers, None, "
                              "and tuples or lists of them")
    raise SandboxError("malformed value in a message from the sandbox")


def _rebuild_exception(name, message) -> Exception:
    name, message = _safe_text(name, 60), _safe_text(message, 1000)
    cls = getattr(builtins, name, None) if name.isidentifier() else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    cls = type(name if name.isidentifier() else "StudentException", (StudentException,), {})
    return cls(message)


# --- the trusted side --------------------------------------------------------------------------

class Sandbox:
    """One zygote process; :meth:`run` starts a sandboxed part. Use as a context manager."""

    def __init__(self, limits: Limits = Limits(), hidden_paths=(), start_timeout: float = 120.0):
        self.limits = limits
        config = {"limits": asdict(limits), "hidden": [str(p) for p in hidden_paths], "uid_base": UID_BASE}
        self._socket, theirs = socket.socketpair()
        self._zygote = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), str(theirs.fileno()), json.dumps(config)],
            pass_fds=[theirs.fileno()], cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True)
        theirs.close()
        self._start_timeout, self.warnings = start_timeout, set()

    def run(self, source: str, names) -> Part:
        """Fork a fresh sandboxed process that runs ``source`` and serves the functions ``names``."""
        ours, theirs = socket.socketpair()
        try:
            self._socket.settimeout(self._start_timeout)
            socket.send_fds(self._socket, [b"fork"], [theirs.fileno()])
            line = b""
            while not line.endswith(b"\n"):
                chunk = self._socket.recv(64)
                if not chunk:
                    raise SandboxError("the sandbox's zygote process died")
                line += chunk
        finally:
            theirs.close()
        return Part(self, ours, int(line), list(names), source)

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


class Part:
    """A sandboxed process holding one part's student code; closing it kills all its processes."""

    def __init__(self, sandbox: Sandbox, sock: socket.socket, pid: int, names: list[str], source: str):
        self.limits, self._socket, self._pids, self.names = sandbox.limits, sock, [pid], names
        self._deadline, self.load_error, self.closed = time.monotonic() + self.limits.wall_seconds, None, False
        try:
            hello, _ = self._receive()
            if type(hello.get("init_pid")) is int:
                self._pids.append(hello["init_pid"])
            sandbox.warnings.update(_safe_text(w) for w in hello.get("warnings", [])[:10])
            self._send({"op": "load", "source": source, "names": names})
            reply, _ = self._receive()
            if "error" in reply:
                self.load_error = _rebuild_exception(reply.get("error"), reply.get("message"))
        except SandboxError as error:
            self.load_error = error

    def function(self, name: str):
        """A callable that runs the student's ``name`` in the sandbox."""
        def proxy(*args, **kwargs):
            return self.call(name, args, kwargs)
        proxy.__name__ = proxy.__qualname__ = name
        return proxy

    def call(self, name: str, args: tuple, kwargs: dict):
        if self.load_error is not None:
            raise self.load_error
        devices = [a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        arrays: list = []
        spec = {"args": _encode(list(args), arrays), "kwargs": {k: _encode(v, arrays) for k, v in kwargs.items()}}
        self._send({"op": "call", "name": name, **spec}, arrays)
        reply, results = self._receive()
        if "error" in reply:
            raise _rebuild_exception(reply.get("error"), reply.get("message"))
        if devices:
            return _decode(reply.get("result"), results, devices[0])
        from ..device import get_device  # here, not at the top: the zygote runs this file without course_lib

        return _decode(reply.get("result"), results, get_device())

    def _send(self, header: dict, arrays=()) -> None:
        try:
            _send(self._socket, header, arrays)
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
            return _recv(self._socket, self.limits.message_bytes)
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
            raise SandboxError(f"garbled message from the sandbox: {_safe_text(error, 200)}") from None
        except SandboxError:
            self.close()
            raise

    def close(self) -> None:
        """Kill the part's process group and its PID namespace (killing its init kills everything in it)."""
        if not self.closed:
            self.closed = True
            for pid in self._pids:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            self._socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- the untrusted side: zygote and children (this file run as a script) -----------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _isolate(config: dict) -> tuple[list[str], list[str]]:
    """In a fresh child (still root, single-threaded): new namespaces and mounts that hide paths."""
    done = [name for name, flag in CLONE.items() if _libc.unshare(flag) == 0]
    warnings = [f"no {name} namespace (unshare failed): the sandbox is weaker" for name in CLONE if name not in done]
    if "mount" in done and _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0:
        for path in [*config["hidden"], "/tmp", "/dev/shm"]:
            scratch = path in ("/tmp", "/dev/shm")  # writable and empty; hidden paths empty and read-only
            if os.path.isdir(path):
                flags = MS_NOSUID | MS_NODEV | (0 if scratch else MS_RDONLY)
                ok = _libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags,
                                 b"size=16m,mode=1777" if scratch else b"size=4k,mode=755") == 0
            else:
                ok = not os.path.exists(path) or _libc.mount(b"/dev/null", path.encode(), None, MS_BIND, None) == 0
            if not ok:
                warnings.append(f"could not hide {path}")
        warnings += _expose_python()
    elif config["hidden"]:
        warnings.append("no mount namespace: hidden paths are protected by file permissions only")
    return done, warnings


def _expose_python() -> list[str]:
    """Let the unprivileged uid import the rest of the standard library when Python is installed under
    a closed folder (e.g. pyenv in /root, mode 700): an empty tmpfs replaces that folder and only the
    Python installation is bound back into it. Runs as root in the child's own mount namespace."""
    closed = []
    for entry in {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)}:
        parts = entry.strip("/").split("/")
        for depth in range(1, len(parts)):
            ancestor = "/" + "/".join(parts[:depth])
            if not os.stat(ancestor).st_mode & 0o001:
                closed.append((ancestor, "/".join(parts[:depth + 1])))
                break
    warnings = []
    for ancestor, inside in closed:
        keep = os.open("/" + inside, os.O_PATH)  # reachable after the tmpfs covers the ancestor
        ok = _libc.mount(b"tmpfs", ancestor.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=4k,mode=711") == 0
        if ok:
            os.makedirs("/" + inside, exist_ok=True)
            ok = _libc.mount(f"/proc/self/fd/{keep}".encode(), ("/" + inside).encode(), None,
                             MS_BIND | MS_REC, None) == 0
        os.close(keep)
        if not ok:
            warnings.append(f"could not expose /{inside} to the sandbox: student imports may fail")
    return warnings


def _drop_privileges(config: dict, number: int, isolation: list[str]) -> str:
    limits = config["limits"]
    if "pid" in isolation and "mount" in isolation:  # a /proc that shows only this namespace
        _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    workdir = "/tmp" if "mount" in isolation else __import__("tempfile").mkdtemp(prefix="sandbox-")
    with open("/proc/self/status") as status:
        vm_size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    for rlimit, value in ((resource.RLIMIT_CPU, limits["cpu_seconds"]), (resource.RLIMIT_CORE, 0),
                          (resource.RLIMIT_AS, vm_size + limits["memory_bytes"]),
                          (resource.RLIMIT_FSIZE, limits["file_bytes"]), (resource.RLIMIT_NPROC, limits["processes"])):
        resource.setrlimit(rlimit, (value, value))
    if os.geteuid() == 0:
        uid = config["uid_base"] + number % 1000
        os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(HOME=workdir, PATH="/usr/bin:/bin")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    return workdir


def _serve(sock: socket.socket, max_bytes: int) -> None:
    """Run the part's source, then answer calls until the parent hangs up."""
    header, _ = _recv(sock, max_bytes)
    namespace = {"__name__": "__student__", "__builtins__": builtins}
    try:
        exec(compile(header["source"], "<student code>", "exec"), namespace)
        missing = [n for n in header["names"] if not callable(namespace.get(n))]
        if missing:
            raise NameError(f"your notebook does not define {', '.join(missing)}")
        _send(sock, {"ok": True})
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: report, keep serving
        _send(sock, {"error": type(error).__name__, "message": _safe_text(error, 1000)})
    while True:
        header, arrays = _recv(sock, max_bytes)
        try:
            args = _decode(header["args"], arrays, "cpu")
            kwargs = {k: _decode(v, arrays, "cpu") for k, v in header["kwargs"].items()}
            result = namespace[header["name"]](*args, **kwargs)
            out: list = []
            spec = _encode(result, out)
            _send(sock, {"result": spec}, out)
        except BaseException as error:
            try:
                message = str(error)
            except BaseException:
                message = "(the exception's message could not be shown)"
            _send(sock, {"error": type(error).__name__, "message": _safe_text(message, 1000)})


def _child(fd: int, config: dict, number: int) -> None:
    os.setsid()  # its own process group, killed as a whole by the parent
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    isolation, warnings = _isolate(config)
    sock = socket.socket(fileno=fd)
    init = os.fork()  # first process in the new PID namespace: when it dies, everything in it dies
    if init == 0:
        try:
            _drop_privileges(config, number, isolation)
            _serve(sock, config["limits"]["message_bytes"])
        finally:
            os._exit(0)
    _send(sock, {"init_pid": init, "isolation": isolation, "warnings": warnings})
    sock.close()
    os.waitpid(init, 0)
    os._exit(0)


def _zygote(fd: int, config: dict) -> None:
    torch.set_num_threads(1)  # one core per part; two parts run side by side
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of killed parts come here, and are reaped
    control = socket.socket(fileno=fd)
    number = 0
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 16, 1)
        except OSError:
            return
        if not message or not fds:
            return
        number += 1
        pid = os.fork()
        if pid == 0:
            try:
                control.close()
                _child(fds[0], config, number)
            finally:
                os._exit(70)
        os.close(fds[0])
        control.sendall(f"{pid}\n".encode())


if __name__ == "__main__":
    _zygote(int(sys.argv[1]), json.loads(sys.argv[2]))
