"""The reference policy: a lab's functions are the student's own work, checked inside the sandbox.

**The policy.** While a graded part runs (its cells load, its functions are called), the
student's code may not execute ``course_lib``'s code, which holds the course's own
implementation of every function a lab asks for, nor the grading modules
(``course_lib.lab_checks``, ``course_grader``), nor read their files (sources, compiled files,
folder listings, imports of modules not yet loaded). Two things are allowed, with everything they
call: the lab's locked set-up cell (the imports and helpers the lab gives), and the references
the sandbox defines for the lab's *other* functions (``RUBRIC.helpers``), which the student's
functions may call. A lab's *runners* (its checks module's ``RUNNERS``: the distributed lab's
``run_ranks_logged``, which calls a student's function once per simulated rank) are allowed too, with
everything their module defines (the simulated group whose methods the student's code calls). A part that breaks the policy scores 0, whatever its results, with a message
that names what was used::

    your scaled_dot_product_attention calls course_lib's own implementation
    (course_lib.attention.sdpa.scaled_dot_product_attention); this lab asks you to write it yourself

**How.** :class:`Guard` runs in the sandboxed child, around the loading of the part's cells and each
call of a student function. A profile hook (``sys.setprofile``) sees every Python call; a call into
a file under course_lib's or course_grader's installed folder (found at start-up, editable install
or site-packages alike) walks up the caller frames: the nearest frame that is the set-up's code or a
helper's entry decides "allowed", the nearest frame of the student's own cells (or none at all, e.g.
``f = reference``) decides "violation". An audit hook (``sys.addaudithook``, which cannot be
removed) refuses, in the student's context, opening or listing files under those folders, importing
their modules, reading a guarded function's ``__code__``, and replacing the profile hook; it also
refuses starting other programs and ``gc``'s object walks there. Threads the student starts get the
profile hook too, and processes it forks inherit it. One read is let through: ``linecache``
(``traceback``) reading the grader's own files for a formatted stack, which ``torch.manual_seed``
makes; they hold no answers. The first violation goes into memory shared with those processes and
travels with the next reply, so catching the exception, forking or threading does not hide it.

**Not covered.** The hooks live in the student's own process: code that deliberately disarms
them there (``ctypes``, rewriting the hooks' state through frames) is not stopped by this
policy; it is still contained by the sandbox and can only change its own score. Reusing
course_lib's *data* (constants, tables) is not code and is allowed. Which functions a part
grades and its score: :mod:`~course_grader.autograder`.
"""
from __future__ import annotations

import _thread
import inspect
import linecache
import mmap
import os
import struct
import sys
import threading

__all__ = ["Guard", "PolicyViolation"]

REFUSED_TO_STUDENTS = {"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                       "gc.get_objects", "gc.get_referrers", "gc.get_referents"}
WATCHED_EVENTS = {"open", "os.listdir", "os.scandir", "import", "object.__getattr__", "sys.setprofile",
                  *REFUSED_TO_STUDENTS}
THIS_FILE = os.path.realpath(__file__)
POLICY = "this lab asks you to write it yourself"


class PolicyViolation(PermissionError):
    """Raised into student code for a refused operation (the part already scores 0 for it)."""


def _code_objects(code) -> list:
    """``code`` and every code object nested in it (functions, classes, comprehensions)."""
    found = [code]
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            found += _code_objects(const)
    return found


def _functions_defined_in(module) -> list:
    """The functions ``module`` itself defines, its classes' methods included (static and class methods too)."""
    found = []
    for value in vars(module).values():
        for member in vars(value).values() if isinstance(value, type) else (value,):
            member = getattr(member, "__func__", member)  # staticmethod, classmethod
            if inspect.isfunction(member) and member.__module__ == module.__name__:
                found.append(member)
    return found


class Guard:
    """The policy for one sandboxed child: which frames are allowed, the hooks, the shared record."""

    def __init__(self, roots: dict[str, str]):
        """``roots``: ``{folder: what it holds}`` for the guarded folders (course_lib, course_grader)."""
        self.roots = {os.path.realpath(folder) + os.sep: label for folder, label in roots.items()}
        self._files: dict[str, str | None] = {}  # co_filename -> label
        self._keep: list = []  # the code objects below stay alive, so their ids stay theirs
        self._own: set[int] = set()  # ids of this guard's code that may set the profile hook
        self.allowed: set[int] = set()  # ids of the set-up's code and the helpers' entry code
        self.student: set[int] = set()  # ids of the code compiled from the student's cells
        self.entry = None  # the frame that calls into student code: walks stop there
        self.subject, self.loading, self.active, self._busy = "your code", False, False, False
        self._record = mmap.mmap(-1, 4096)  # anonymous and shared: forked processes write here too
        self._start_thread = _thread.start_new_thread

    # --- what is whose -------------------------------------------------------------------------

    def _mark(self, codes, ids: set[int]) -> None:
        """Put the code objects' ids into ``ids`` (allowed or student), keeping the objects alive so their ids stay theirs."""
        for code in codes:
            ids.add(id(code))
            self._keep.append(code)

    def compile(self, source: str, filename: str, *, allowed: bool):
        """Compile one cell; its code is the set-up's (``allowed``) or the student's."""
        code = compile(source, filename, "exec")
        self._mark(_code_objects(code), self.allowed if allowed else self.student)
        return code

    def allow_helpers(self, helpers: dict) -> None:
        """The references standing in for the lab's other functions: calls made inside them are allowed."""
        for helper in helpers.values():
            code = getattr(getattr(helper, "func", helper), "__code__", None)  # a function or a partial of one
            if code is not None:
                self._mark([code], self.allowed)

    def allow_modules_of(self, runners: dict) -> None:
        """A lab's runners (trusted drivers that call a student's function, e.g. once per simulated rank) and
        everything their modules define, methods included: the objects they hand the student's code (a
        simulated process group) are called from student frames and from the runners' own threads."""
        for runner in runners.values():
            module = sys.modules.get(getattr(runner, "__module__", None) or "")
            if module is not None:
                for function in _functions_defined_in(module):
                    self._mark(_code_objects(function.__code__), self.allowed)

    def label(self, filename: str) -> str | None:
        """What a code object's file belongs to (``None``: neither course_lib nor the grader)."""
        if filename not in self._files:
            real = os.path.realpath(filename) if filename and not filename.startswith("<") else ""
            self._files[filename] = None if real == THIS_FILE else next(  # the guard itself runs inside the hooks
                (label for root, label in self.roots.items() if real.startswith(root)), None)
        return self._files[filename]

    def _student_context(self, frame) -> bool:
        """Whether ``frame`` runs on behalf of the student: its nearest frame that is the set-up's or a
        helper's says no; its nearest student frame, or no such frame up to the entry, says yes."""
        while frame is not None and frame is not self.entry:
            code_id = id(frame.f_code)
            if code_id in self.allowed:
                return False
            if code_id in self.student:
                return True
            frame = frame.f_back
        return True

    # --- the record, shared with forked processes ----------------------------------------------

    def violation(self) -> str | None:
        """The first violation recorded in this child or any process it forked."""
        (size,) = struct.unpack_from("!H", self._record, 0)
        return self._record[2:2 + size].decode("utf-8", "replace") if size else None

    def _report(self, what: str) -> None:
        if self.violation() is None:
            text = f"{self.subject} {what}{' at import' if self.loading else ''}; {POLICY}".encode()[:4000]
            self._record[2:2 + len(text)] = text
            struct.pack_into("!H", self._record, 0, len(text))

    # --- the hooks ----------------------------------------------------------------------------

    def install(self) -> None:
        """Add the audit hook and start watching threads; once per child, before any student code."""
        own = [code for method in (Guard.watch, Guard.unwatch, Guard._start_watched_thread)
               for code in _code_objects(method.__code__)]  # read before the hook audits __code__
        self._own.update(map(id, own))
        self._keep += own
        sys.addaudithook(self._on_audit)
        _thread.start_new_thread = threading._start_new_thread = self._start_watched_thread

    def watch(self, subject: str, loading: bool = False) -> None:
        """From now on student code runs: ``subject`` names it in messages (``"your causal_mask"``,
        ``"your cell defining causal_mask"`` with ``loading``)."""
        self.subject, self.loading, self.entry = subject, loading, sys._getframe(1)
        sys.setprofile(self._on_call)
        self.active = True

    def unwatch(self) -> None:
        self.active = False
        sys.setprofile(None)

    def _on_call(self, frame, event, arg):
        if event != "call" or not self.active:
            return
        self._busy = True  # f_code and f_back are audited: our own reads are not the student's
        try:
            label = self.label(frame.f_code.co_filename)
            if label is not None and self._student_context(frame):
                name = f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_qualname}"
                self._report(_what_it_uses(label, name, "calls"))  # recorded, not raised: catching it cannot hide it
        finally:
            self._busy = False

    def _on_audit(self, event: str, args: tuple) -> None:
        if not self.active or event not in WATCHED_EVENTS or self._busy:
            return
        if event == "object.__getattr__" and args[1] != "__code__":  # f_code, tb_frame, ...: read by the hooks too
            return
        self._busy = True  # the hooks' own frame reads are audited: do not watch them
        try:
            self._check_event(event, args, sys._getframe(1))
        finally:
            self._busy = False

    def _check_event(self, event: str, args: tuple, caller) -> None:
        if event == "sys.setprofile":
            if id(caller.f_code) in self._own:
                return
            self._report("turns off the grader's watch on course_lib (sys.setprofile)")
            raise PolicyViolation("grading does not allow sys.setprofile")
        if not self._student_context(caller):
            return
        if event in REFUSED_TO_STUDENTS:
            raise PolicyViolation(f"grading does not allow {event} in a lab's functions")
        label, name, verb = self._guarded_target(event, args)
        if label == "course_grader" and event == "open" and _from_line_cache(caller):
            return  # a formatted stack's lines (torch.manual_seed formats one): the grader's files hold no answers
        if label is not None:
            self._report(_what_it_uses(label, name, verb))
            raise PolicyViolation(f"{name}: {POLICY}")

    def _guarded_target(self, event: str, args: tuple) -> tuple[str | None, str, str]:
        """(label, name, verb) of a guarded file, module or function the event touches; label ``None`` if none."""
        if event == "import":
            module = str(args[0])
            top = module.partition(".")[0]
            label = {"course_lib": "lab_checks" if module.startswith("course_lib.lab_checks") else "course_lib",
                     "course_grader": "course_grader"}.get(top)
            return label, module, "imports"
        if event == "object.__getattr__":
            target, attribute = args
            module = getattr(target, "__module__", None) if attribute == "__code__" else None
            top = module.partition(".")[0] if isinstance(module, str) else ""
            if top in ("course_lib", "course_grader"):
                label = "lab_checks" if module.startswith("course_lib.lab_checks") else top
                return label, f"{module}.{getattr(target, '__qualname__', '?')}", "reads the code of"
            return None, "", ""
        path = args[0] if args else None
        if path is None or isinstance(path, int):
            path = "." if path is None else None
        if path is None:
            return None, "", ""
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return None, "", ""
        for root, label in self.roots.items():
            if real.startswith(root) or real + os.sep == root:
                shown = os.path.normpath(os.path.join(label, os.path.relpath(real, root)))  # course_lib/attention/masks.py
                if shown.startswith("course_lib/lab_checks"):
                    label = "lab_checks"
                return label, shown, "reads the files of" if event == "open" else "lists the folder of"
        return None, "", ""

    def _start_watched_thread(self, function, args, kwargs=None):
        """``_thread.start_new_thread`` whose thread runs under the profile hook, like the one that started it."""
        def run(*inner, **named):
            if self.active:
                sys.setprofile(self._on_call)
            return function(*inner, **named)
        return self._start_thread(run, args, kwargs or {})


def _from_line_cache(frame, depth: int = 3) -> bool:
    """Whether ``linecache`` (what ``traceback`` reads source lines with) opens the file, a few frames up."""
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code.co_filename == linecache.__file__:
            return True
        frame = frame.f_back
    return False


def _what_it_uses(label: str, name: str, verb: str) -> str:
    """What the student's code used: ``calls course_lib's own implementation (course_lib.x.f)``."""
    what = {"course_lib": "course_lib's own implementation", "lab_checks": "the lab's hidden checks",
            "course_grader": "the grader's own code"}[label]
    return f"{verb} {what} ({name})"
