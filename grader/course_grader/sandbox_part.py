"""The sandboxed child's side of a graded part: load the part's cells, then answer calls.

:mod:`~course_grader.sandbox_child` forks one child per part and, once the child is isolated and
unprivileged, hands it to :func:`serve`, which

* loads the part: the lab's set-up cell (compiled as ``<lab set-up>``), the references of the
  lab's other functions (``RUBRIC.helpers``), then the student's cells one by one (compiled as
  ``<student code>``), telling the parent which cell runs (``{"loading": i}``) so that a cell
  that hangs or crashes at import is known by the grader;
* answers each call of a student function (or of one of the lab's trusted runners on it, e.g. the
  distributed lab's run on N simulated ranks, ``SandboxedFunction.run_with``) with its result and, when the function changed its
  arguments in place (``x.mul_(2)``, ``ids.append(...)``), with the arguments as it left them,
  which the parent copies back onto the caller's own values (:func:`~course_grader.protocol.copy_into`);
* watches both under the reference policy (:class:`~course_grader.reference_policy.Guard`): every
  reply carries the first violation, if any; ``{"op": "status"}`` asks for it alone.

Not covered: isolation and limits (:mod:`~course_grader.sandbox_child`), the parent's side
(:mod:`~course_grader.sandbox`). Linux only.
"""
from __future__ import annotations

import builtins
import functools
import socket
import sys

import torch

from .protocol import decode, encode, recv, safe_text, same_value, send
from .reference_policy import Guard

__all__ = ["GPU_MEMORY_FRACTION", "SETUP_FILENAME", "STUDENT_FILENAME", "serve"]

GPU_MEMORY_FRACTION = 0.5  # of the GPU's memory, for one part's tensors (one GPU part runs at a time)
SETUP_FILENAME, STUDENT_FILENAME = "<lab set-up>", "<student code>"


def _start_device(device: str) -> None:
    """CUDA for this child only, with its memory capped; before the student's code can interfere."""
    if device == "cuda":
        torch.cuda.init()
        torch.cuda.set_per_process_memory_fraction(GPU_MEMORY_FRACTION)


def _forget_grader_modules() -> None:
    """Drop the grader's modules from ``sys.modules``: student code cannot ``import`` them back (their
    folder is hidden) nor look them up there; the functions already loaded keep working."""
    for name in [m for m in sys.modules if m == "course_grader" or m.startswith("course_grader.")]:
        del sys.modules[name]


def _error(error: BaseException, **extra) -> dict:
    try:
        message = str(error)
    except BaseException:
        message = "(the exception's message could not be shown)"
    return {"error": type(error).__name__, "message": safe_text(message, 1000), **extra}


def _load(sock: socket.socket, header: dict, guard: Guard, references: dict, device: str) -> dict:
    """Run the set-up, the helpers and the student's cells; the namespace the part's functions live in."""
    namespace = {"__name__": "__student__", "__builtins__": builtins}
    _start_device(device)
    unknown = [name for name in header.get("helpers", []) if name not in references]
    if unknown:
        raise LookupError(f"the sandbox holds no reference for {', '.join(map(str, unknown))}")
    helpers = {name: references[name] for name in header.get("helpers", [])}
    guard.allow_helpers(helpers)
    setup = guard.compile(header.get("setup", ""), SETUP_FILENAME, allowed=True)
    cells = [guard.compile(cell, STUDENT_FILENAME, allowed=False) for cell in header["cells"]]
    exec(setup, namespace)
    namespace.update(helpers)  # before: code at the top of a cell may call them
    subjects = header.get("subjects") or []  # the parent's names for the cells: "your cell defining f"
    for number, code in enumerate(cells):
        send(sock, {"loading": number})
        guard.watch(str(subjects[number]) if number < len(subjects) else "one of your cells", loading=True)
        try:
            exec(code, namespace)
        finally:
            guard.unwatch()
    namespace.update(helpers)  # after: the part grades its own functions only, every other one is the reference
    missing = [n for n in header["names"] if not callable(namespace.get(n))]
    if missing:
        raise NameError(f"your notebook does not define {', '.join(missing)}")
    return namespace


def _call(header: dict, arrays: list, namespace: dict, guard: Guard, device: str,
          runners: dict) -> tuple[dict, list]:
    """One call: the reply and its arrays (the result, then the arguments if the function changed them).
    With ``"runner"`` in the header, the call is ``runner(student_function, *args)``: a lab's trusted driver
    (e.g. the distributed lab's ``run_ranks``, which calls the function once per simulated rank)."""
    args = decode(header["args"], arrays, device)
    kwargs = {k: decode(v, arrays, device) for k, v in header["kwargs"].items()}
    function = namespace[header["name"]]
    if header.get("runner") is not None:
        runner = runners.get(header["runner"])
        if runner is None:
            raise LookupError(f"the sandbox holds no runner {safe_text(str(header['runner']), 100)}")
        function = functools.partial(runner, function)
    guard.watch(f"your {header['name']}")
    try:
        result = function(*args, **kwargs)
    finally:
        guard.unwatch()
    out: list = []
    reply = {"result": encode(result, out)}  # copies tensors to the CPU
    after: list = []
    left = {"args": encode(list(args), after), "kwargs": {k: encode(v, after) for k, v in kwargs.items()}}
    if not same_value(left, after, {"args": header["args"], "kwargs": header["kwargs"]}, arrays):
        reply["changed"] = {"args": encode(list(args), out), "kwargs": {k: encode(v, out) for k, v in kwargs.items()}}
    return reply, out


def serve(sock: socket.socket, max_bytes: int, device: str, references: dict, roots: dict[str, str],
          runners: dict | None = None) -> None:
    """Load the part, then answer calls until the parent hangs up. Errors are replies, never the end:
    SystemExit and KeyboardInterrupt too. ``runners``: the lab's trusted drivers (their modules' code is
    allowed by the reference policy, like the set-up's)."""
    runners = runners or {}
    guard = Guard(roots)
    guard.install()
    guard.allow_modules_of(runners)
    _forget_grader_modules()
    header, _ = recv(sock, max_bytes)
    namespace, out = {}, []
    try:
        namespace, reply = _load(sock, header, guard, references, device), {"ok": True}
    except BaseException as error:
        reply = _error(error)
    while True:
        violation = guard.violation()
        send(sock, {**reply, "violation": violation} if violation else reply, out)
        header, arrays = recv(sock, max_bytes)
        try:
            reply, out = ({}, []) if header.get("op") == "status" else _call(header, arrays, namespace, guard, device,
                                                                                            runners)
        except BaseException as error:
            reply, out = _error(error), []
