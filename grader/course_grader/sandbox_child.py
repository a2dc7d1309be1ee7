"""The untrusted side of the sandbox: the zygote process and the child it forks for every graded part.

:class:`~course_grader.sandbox.Sandbox` starts this module (``python -I -m course_grader.sandbox_child``),
the *zygote*: it imports torch and numpy once (and the lab's references, when it has a rubric),
then forks one child per part on request. A child

* unshares network, PID, mount and IPC namespaces (each one the kernel refuses becomes a
  warning), mounts an empty writable tmpfs over ``/tmp`` and ``/dev/shm``, binds back what
  Python needs from under them (the Python installation and the course_lib package, when a clone
  and its venv live under ``/tmp``), then mounts an empty read-only tmpfs over every hidden path
  (last, so nothing bound back uncovers one), and forks the first process of its PID namespace;
* that process mounts a /proc showing only its namespace, sets limits on CPU time, address
  space, written file size and processes, drops to uid/gid ``uid_base + n % uid_count`` when root
  (the sandbox's own range: :mod:`~course_grader.locks`), sets no-new-privileges and
  death-on-parent-exit, sends stdout/stderr to /dev/null, and serves the part
  (:mod:`~course_grader.sandbox_part`, under the reference policy of
  :mod:`~course_grader.reference_policy`).

A *command* child (``fork exec``) is isolated the same way but with its loopback interface up
(a Jupyter kernel talks to its client over 127.0.0.1): it writes the files it is sent into its
private ``/tmp``, runs one command there (e.g. ``nbgrader autograde``, warm: the zygote imported it,
the ``preload`` modules) and sends back the files asked for, as bytes
(:mod:`~course_grader.sandbox_command`). Used for the feedback notebooks (:mod:`~course_grader.feedback`).

A part asked for on ``cuda`` initialises CUDA itself, in the child, after dropping privileges:
the zygote never touches CUDA (a process forked after CUDA is initialised cannot use it), so
every GPU child starts with a fresh CUDA context. Its address-space limit is lifted (CUDA
reserves far more virtual memory than it uses) and its GPU memory is capped instead. The parent
runs one GPU part at a time. Unverified on real GPU hardware so far.

Not covered: the parent's side, deadlines and killing parts (:mod:`~course_grader.sandbox`).
Linux only.
"""
from __future__ import annotations

import ctypes
import fcntl
import importlib
import importlib.util
import os
import resource
import signal
import socket
import struct
import sys

import torch

from . import sandbox_command, sandbox_part
from .protocol import send

__all__ = ["CLONE", "main"]

CLONE = {"net": 0x40000000, "pid": 0x20000000, "mount": 0x00020000, "ipc": 0x08000000}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40

_libc = ctypes.CDLL(None, use_errno=True)
REFERENCES: dict = {}  # the zygote's lab's RUBRIC.references (name -> the course's implementation)
RUNNERS: dict = {}  # the lab's RUNNERS, if it has any (name -> runner(function, *args): e.g. run it on N ranks)


def _loopback_up() -> bool:
    """Bring up ``lo`` in this (new, empty) network namespace: 127.0.0.1 and nothing else."""
    request = struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)  # struct ifreq
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            fcntl.ioctl(probe.fileno(), SIOCSIFFLAGS, request)
        return True
    except OSError:
        return False


def _isolate(config: dict, loopback: bool = False) -> tuple[list[str], list[str]]:
    """In a fresh child (still root, single-threaded): new namespaces and mounts that hide paths."""
    done = [name for name, flag in CLONE.items() if _libc.unshare(flag) == 0]
    warnings = [f"no {name} namespace (unshare failed): the sandbox is weaker" for name in CLONE if name not in done]
    if loopback and "net" in done and not _loopback_up():
        warnings.append("could not bring up the loopback interface: kernels cannot start")
    scratch_size = f"size={config['limits'].get('scratch_bytes', 16 << 20)},mode=1777".encode()
    if "mount" in done and _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0:
        # Python and the course's library may live under /tmp (a clone there, its venv, a .pth file's folders on
        # sys.path): bind them back. Not the working directory ('' on sys.path), which may hold what is graded.
        imports = [p for p in sys.path if p and os.path.isabs(p) and os.path.realpath(p) != os.getcwd()]
        needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, *imports, *config.get("needed", ()))}
        covered = [d for d in needed if any(d.startswith(s + "/") for s in ("/tmp", "/dev/shm")) and os.path.isdir(d)]
        handles = {d: os.open(d, os.O_PATH) for d in covered}
        for path in ("/tmp", "/dev/shm"):  # writable and empty
            if _libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, scratch_size) != 0:
                warnings.append(f"could not hide {path}")
        for directory, handle in handles.items():
            os.makedirs(directory, exist_ok=True)
            if _libc.mount(f"/proc/self/fd/{handle}".encode(), directory.encode(), None, MS_BIND | MS_REC, None):
                warnings.append(f"could not expose {directory} to the sandbox: student imports may fail")
            os.close(handle)
        warnings += _expose_python()
        for path in config["hidden"]:  # last, on the view the child keeps: nothing bound back uncovers them
            if os.path.isdir(path):
                ok = _libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY,
                                 b"size=4k,mode=755") == 0
            else:
                ok = not os.path.exists(path) or _libc.mount(b"/dev/null", path.encode(), None, MS_BIND, None) == 0
            if not ok:
                warnings.append(f"could not hide {path}")
    elif config["hidden"]:
        warnings.append("no mount namespace: hidden paths are protected by file permissions only")
    if os.geteuid() != 0:
        warnings.append("not running as root: student code runs as the grader's own user")
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


def _drop_privileges(config: dict, number: int, isolation: list[str], device: str) -> str:
    limits = config["limits"]
    if "pid" in isolation and "mount" in isolation:  # a /proc that shows only this namespace
        _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    workdir = "/tmp" if "mount" in isolation else __import__("tempfile").mkdtemp(prefix="sandbox-")
    with open("/proc/self/status") as status:
        vm_size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    address_space = resource.RLIM_INFINITY if device == "cuda" else vm_size + limits["memory_bytes"]
    for rlimit, value in ((resource.RLIMIT_CPU, limits["cpu_seconds"]), (resource.RLIMIT_CORE, 0),
                          (resource.RLIMIT_AS, address_space),
                          (resource.RLIMIT_FSIZE, limits["file_bytes"]), (resource.RLIMIT_NPROC, limits["processes"])):
        resource.setrlimit(rlimit, (value, value))
    if os.geteuid() == 0:
        uid = config["uid_base"] + number % config["uid_count"]
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


def _child(fd: int, config: dict, number: int, device: str) -> None:
    os.setsid()  # its own process group, killed as a whole by the parent
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    isolation, warnings = _isolate(config, loopback=device == "exec")
    sock = socket.socket(fileno=fd)
    init = os.fork()  # first process in the new PID namespace: when it dies, everything in it dies
    if init == 0:
        try:
            workdir = _drop_privileges(config, number, isolation, device)
            if device == "exec":
                sandbox_command.run_command(sock, config["limits"]["message_bytes"], workdir)
            else:
                sandbox_part.serve(sock, config["limits"]["message_bytes"], device, REFERENCES, config["guarded"],
                                   RUNNERS)
        finally:
            os._exit(0)
    send(sock, {"init_pid": init, "isolation": isolation, "warnings": warnings})
    sock.close()
    os.waitpid(init, 0)
    os._exit(0)


def _load_references(module_name: str) -> None:
    """Import the lab's rubric once, here, before any student code exists, and keep only its references:
    the checks' modules leave ``sys.modules`` (their folder is hidden in every child), so ``import
    course_lib.lab_checks...`` fails in the sandbox as it did before anything was loaded. (The reference
    functions, which the course's library also holds, stay reachable through their own attributes.)"""
    module = importlib.import_module(module_name)
    REFERENCES.update(module.RUBRIC.references)
    RUNNERS.update(getattr(module, "RUNNERS", {}))  # trusted drivers a check may run a student function under
    package = module_name.rsplit(".", 1)[0]  # course_lib.lab_checks
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]
    parent, _, leaf = package.rpartition(".")
    if parent in sys.modules:
        sys.modules[parent].__dict__.pop(leaf, None)


def _course_folders() -> dict[str, str]:
    """``{folder: label}`` of the installed course_lib and course_grader packages (editable or not), found
    without importing course_lib: the reference policy guards them, the /tmp cover must not hide course_lib."""
    spec = importlib.util.find_spec("course_lib")
    folders = {os.path.dirname(os.path.realpath(__file__)): "course_grader"}
    if spec is not None and spec.origin:
        folders[os.path.dirname(os.path.realpath(spec.origin))] = "course_lib"
    return folders


def main(fd: int, config: dict) -> None:
    """The zygote's loop: each request (``fork``, ``fork cuda`` or ``fork exec``, plus a socket) forks one child."""
    torch.set_num_threads(1)  # one core per part; two parts run side by side
    for module in config.get("preload", ()):  # e.g. nbgrader and ipykernel, for warm commands
        importlib.import_module(module)
    config["guarded"] = _course_folders()
    config["needed"] = [folder for folder, label in config["guarded"].items() if label == "course_lib"]
    if config.get("rubric"):
        _load_references(config["rubric"])
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
        device = {b"fork cuda": "cuda", b"fork exec": "exec"}.get(message, "cpu")
        pid = os.fork()
        if pid == 0:
            try:
                control.close()
                _child(fds[0], config, number, device)
            finally:
                os._exit(70)
        os.close(fds[0])
        control.sendall(f"{pid}\n".encode())


if __name__ == "__main__":
    import json

    main(int(sys.argv[1]), json.loads(sys.argv[2]))
