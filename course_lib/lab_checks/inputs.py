"""A student's inputs: the copies a check hands over, and which of them the student's code changed in place.

:func:`~course_lib.lab_checks.toolkit.call_student` gives the student deep copies of the arguments
(:func:`clone_nested`: tensors inside dicts, lists and tuples too), so nothing the student does can
change the numbers the check compares against, and then fails the check when the student's code
modified one of those copies in place: the course's rule is that *a graded function must not modify
its inputs* (in a real model the caller's ``q`` or parameter dict would silently change).
:class:`InputRecord` remembers every input tensor, by the path Python would index it with
(``params['self_attn']['q_weight']``, ``cache[0][1]``), and finds the first one that changed.

Arguments are named after the function's own parameters or, when it has none to bind (the sandboxed
grader's stand-ins take ``*args``), after the lab's reference of the same name, which
:meth:`~course_lib.lab_checks.rubric.Rubric.run` makes known with :func:`reference_signatures`;
else ``argument 1``, ``argument 2``, ... Not covered: lists of ints (the tokenization lab's ids are
Python lists, copied with ``list(ids)`` by its checks), the sandbox (which mirrors in-place changes
back onto the tensors it was given, so the same detection works through it).
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch

__all__ = ["IN_PLACE_HINT", "InputRecord", "clone_nested", "reference_signatures"]

IN_PLACE_HINT = ("work on a copy: x = x / ... or x = x.clone(), never an in-place operation on an argument "
                 "(x /= ..., x[...] = ..., x.masked_fill_(...), x.zero_()): the caller still needs its tensors.")

_REFERENCES: contextvars.ContextVar[Mapping[str, Callable]] = contextvars.ContextVar("lab_references", default={})


@contextlib.contextmanager
def reference_signatures(references: Mapping[str, Callable]) -> Iterator[None]:
    """While the block runs, the arguments of a student function called ``name`` that has no named
    parameters are named after ``references[name]``'s."""
    token = _REFERENCES.set(references)
    try:
        yield
    finally:
        _REFERENCES.reset(token)


def clone_nested(value):
    """A copy of ``value`` with every tensor cloned, also inside dicts, lists and tuples (nested
    parameter dicts, a cache of ``(k, v)`` pairs); anything else is shared, not copied."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {key: clone_nested(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [clone_nested(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # a namedtuple takes fields
    return value


def _tensors_in(value, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors_in(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors_in(item, f"{path}[{index}]")


def _named_arguments(function: Callable, name: str, args: tuple, kwargs: dict) -> list[tuple[str, object]]:
    for candidate in (function, _REFERENCES.get().get(name)):
        try:
            signature = inspect.signature(candidate)
        except (TypeError, ValueError):  # None, or a callable without a signature
            continue
        if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
            continue  # a stand-in taking *args: its names say nothing
        try:
            return list(signature.bind_partial(*args, **kwargs).arguments.items())
        except TypeError:
            continue
    return [(f"argument {i + 1}", arg) for i, arg in enumerate(args)] + list(kwargs.items())


def _same(before: torch.Tensor, after: torch.Tensor) -> bool:
    if before.shape != after.shape or before.dtype != after.dtype:
        return False
    equal = before == after
    if before.is_floating_point() or before.is_complex():
        equal |= torch.isnan(before) & torch.isnan(after)
    return bool(equal.all())


class InputRecord:
    """Input tensors, each with a copy of its values taken now: ``named_values`` is ``(name, value)`` pairs,
    whose tensors (inside dicts, lists and tuples too) are named by their path. :meth:`of_call` names one
    call's arguments after the function's parameters."""

    def __init__(self, named_values: Iterable[tuple[str, object]]):
        self.inputs = [(path, tensor, tensor.detach().clone())
                       for argument, value in named_values for path, tensor in _tensors_in(value, argument)]

    @classmethod
    def of_call(cls, function: Callable, name: str, args: tuple, kwargs: dict) -> InputRecord:
        return cls(_named_arguments(function, name, args, kwargs))

    def first_modified(self) -> str | None:
        """The first input (as ``"q (shape (2, 3, 8))"``) whose shape, dtype or values changed, else None."""
        for path, tensor, before in self.inputs:
            if not _same(before, tensor.detach()):
                after = "" if tensor.shape == before.shape else f", now {tuple(tensor.shape)}"
                return f"{path} (shape {tuple(before.shape)}{after})"
        return None
