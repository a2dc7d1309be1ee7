"""Building blocks for the labs' hidden checks: run student code, compare, explain failures.

Every lab has a module ``course_lib.lab_checks.<topic>`` whose ``RUBRIC`` names one check per graded
test cell. A check calls the student's function on seeded random inputs (:func:`trials`) on
:func:`course_lib.get_device` (CUDA when present, else the CPU), compares with the ``course_lib``
reference, and raises :class:`CheckFailed` (an ``AssertionError``) whose message says *what* is
wrong and *why* it probably happened::

    the weights' rows do not sum to 1, their columns do (on q (2, 3, 5, 8), k (2, 3, 7, 8), v (2, 3, 7, 4))
    Hint: your weights sum to 1 down the query axis; softmax must run over the last (key) axis: ...

What every lab needs, here once:

* calling student code: :func:`call_student` (inputs deep-copied, and left as they were: a function
  that modifies its input tensors in place fails, :mod:`.inputs`; exceptions turned into failures with
  a hint on their likely cause, :mod:`.hints`), :func:`call_for_tensor` (the same, for a function that
  returns one tensor);
* checking what it returned: :func:`expect_results` (a tuple of so many results),
  :func:`expect_tensor` (shape, dtype, device), :func:`expect_close` (values, with the largest
  difference and where it is);
* recognising a classic mistake: :func:`diagnose` fails with the first known mistake whose result
  equals the student's (:func:`is_close` by default; :func:`close_to_any` where a mistake can take
  several forms), with the hint that fixes it.

Not covered: the rubric and which functions a cell grades (:mod:`.rubric`), sandboxing (student
code runs in this process), timeouts, notebook handling.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..runtime import get_device
from .hints import hint_for_exception
from .inputs import IN_PLACE_HINT, InputRecord, clone_nested

__all__ = [
    "ATOL", "RTOL", "CheckFailed", "Trial",
    "fail", "trials", "clone_nested", "call_student", "call_for_tensor", "expect_results", "expect_tensor",
    "expect_close", "is_close", "close_to_any", "diagnose", "describe_shapes",
]

ATOL = 1e-5  # fp32 results of the same maths computed in a different order differ by ~1e-7
RTOL = 1e-4


class CheckFailed(AssertionError):
    """A lab check found a mistake; ``problem`` says what, ``hint`` suggests why."""

    def __init__(self, problem: str, hint: str | None = None):
        self.problem, self.hint = problem, hint
        super().__init__(problem if hint is None else f"{problem}\nHint: {hint}")


def fail(problem: str, hint: str | None = None) -> None:
    """Raise :class:`CheckFailed`; the one way checks report a mistake, so messages look alike."""
    raise CheckFailed(problem, hint)


@dataclass(frozen=True)
class Trial:
    """One randomized trial: a seeded CPU generator (same numbers on every device) and the device."""

    index: int
    generator: torch.Generator
    device: torch.device

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard-normal fp32 tensor drawn on the CPU, then moved to the trial's device."""
        return torch.randn(*shape, generator=self.generator).to(self.device)

    def randint(self, low: int, high: int) -> int:
        """A Python int in ``[low, high]`` (both ends included)."""
        return int(torch.randint(low, high + 1, (), generator=self.generator))

    def rand_bool(self, *shape: int, p: float = 0.5) -> torch.Tensor:
        """Boolean tensor, each entry True with probability ``p``."""
        return (torch.rand(*shape, generator=self.generator) < p).to(self.device)


def trials(count: int = 5, seed: int = 0, device: torch.device | str | None = None) -> Iterator[Trial]:
    """``count`` reproducible trials; trial ``i`` is seeded with ``seed + i``."""
    device = get_device(device)
    for index in range(count):
        yield Trial(index, torch.Generator().manual_seed(seed + index), device)


def call_student(function: Callable, *args, name: str | None = None, **kwargs):
    """Call a student's function on copies of its inputs and return the result; fail the check if it raised
    (with a hint on the likely cause, :func:`~.hints.hint_for_exception`) or if it modified one of its
    input tensors in place (:class:`~.inputs.InputRecord`: a graded function must not modify its inputs).
    """
    name = name or getattr(function, "__name__", "your function")
    args, kwargs = clone_nested(args), clone_nested(kwargs)
    record = InputRecord.of_call(function, name, args, kwargs)
    try:
        result = function(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as error:  # the student's bug, reported as a failed check with the cause
        detail = f": {error}" if str(error) else ""
        fail(f"{name} raised {type(error).__name__}{detail}", hint_for_exception(error))
    modified = record.first_modified()
    if modified:
        fail(f"{name} modified its input {modified} in place; a graded function must leave its inputs as they were",
             IN_PLACE_HINT)
    return result


def call_for_tensor(function: Callable, *args, name: str, shape: Sequence[int] | None = None,
                    label: str | None = None, context: str = "", **kwargs) -> torch.Tensor:
    """:func:`call_student`, then :func:`expect_tensor` on the result, called ``label`` in messages
    (by default ``"<name>'s result"``)."""
    result = call_student(function, *args, name=name, **kwargs)
    return expect_tensor(result, name=label or f"{name}'s result", shape=shape, context=context)


def expect_results(value, names: Sequence[str], *, function: str, context: str = "",
                   tensors: bool = False) -> tuple:
    """Check that ``function`` returned one result per name, as a tuple (or list), each a tensor if
    ``tensors``; return them as a tuple. Messages call the results by the lab's names for them:
    ``scaled_dot_product_attention should return a pair (output, weights), got NoneType``.
    """
    if not (isinstance(value, (tuple, list)) and len(value) == len(names)):
        got = f"{len(value)} values" if isinstance(value, (tuple, list)) else type(value).__name__
        expected = ("a pair " if len(names) == 2 else "") + f"({', '.join(names)})"
        where = f" (on {context})" if context else ""
        fail(f"{function} should return {expected}, got {got}{where}",
             f"end the function with `return {', '.join(names)}`.")
    if tensors:
        for name, item in zip(names, value):
            expect_tensor(item, name=name, context=context)
    return tuple(value)


def describe_shapes(**tensors: torch.Tensor | None) -> str:
    """``'q (2, 3, 8), k (2, 5, 8)'``: names the inputs in failure messages."""
    return ", ".join(f"{n} {tuple(t.shape)}" for n, t in tensors.items() if t is not None)


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def expect_tensor(
    value,
    *,
    name: str,
    shape: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    context: str = "",
) -> torch.Tensor:
    """Check that ``value`` is a tensor with the given shape, dtype and device; return it. Where an integer
    dtype is asked for, any integer dtype will do (int32 indices hold the same values as int64 ones); any
    layout too (a transposed, non-contiguous tensor is as good as a contiguous one)."""
    where = f" (on {context})" if context else ""
    if not isinstance(value, torch.Tensor):
        fail(f"{name} should be a torch.Tensor but is {type(value).__name__}{where}",
             "did you forget a `return`?" if value is None else None)
    if shape is not None and tuple(value.shape) != tuple(shape):
        fail(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}{where}")
    if dtype is not None and value.dtype != dtype and not (_is_integer(value.dtype) and _is_integer(dtype)):
        fail(f"{name} has dtype {value.dtype}, expected {dtype}{where}")
    if device is not None and value.device.type != device.type:
        fail(f"{name} is on {value.device}, expected {device}{where}",
             "create new tensors on the inputs' device (device=x.device).")
    return value


def is_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> bool:
    """Same shape and all entries within tolerance (NaN never matches); devices may differ."""
    if tuple(actual.shape) != tuple(expected.shape):
        return False
    return bool(torch.allclose(actual.detach().cpu().float(), expected.detach().cpu().float(), atol=atol, rtol=rtol))


def close_to_any(actual: torch.Tensor, candidates: Iterable[torch.Tensor]) -> bool:
    """:func:`is_close` to at least one of ``candidates`` (the forms one mistake can take), for :func:`diagnose`."""
    return any(is_close(actual, candidate) for candidate in candidates)


def expect_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    name: str,
    context: str = "",
    hint: str | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> None:
    """Fail with the largest difference and where it is unless ``actual`` matches ``expected``."""
    where = f" (on {context})" if context else ""
    if tuple(actual.shape) != tuple(expected.shape):
        fail(f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}{where}", hint)
    if is_close(actual, expected, atol, rtol):
        return
    actual, expected = actual.detach().cpu().float(), expected.detach().cpu().float()
    if torch.isnan(actual).any():
        fail(f"{name} contains NaN{where}", hint or "NaN often comes from a softmax over a row of only -inf.")
    difference = (actual - expected).abs()
    worst = tuple(int(i) for i in torch.unravel_index(difference.argmax(), difference.shape))
    fail(
        f"{name} differs from the reference{where}: largest difference {difference.max().item():.3g} "
        f"at index {worst} (got {actual[worst].item():.6g}, expected {expected[worst].item():.6g})",
        hint,
    )



def diagnose(got, diagnoses: Iterable[tuple[object, str, str | None]], *, context: str = "",
             matches: Callable[[object, object], bool] = is_close) -> None:
    """Fail with the first diagnosis whose expected value matches the student's result ``got``.

    Each diagnosis is ``(expected, problem, hint)``: what a known mistake returns (or a function of no
    arguments that computes it, called only if no earlier diagnosis matched), what that mistake is,
    and how to fix it. ``matches(got, expected)`` compares (:func:`is_close` unless told otherwise);
    the message is ``problem``, followed by `` (on context)`` when a context is given. Returns when
    no diagnosis matches: the caller then reports the general failure.
    """
    for expected, problem, hint in diagnoses:
        if matches(got, expected() if callable(expected) else expected):
            fail(f"{problem} (on {context})" if context else problem, hint)
