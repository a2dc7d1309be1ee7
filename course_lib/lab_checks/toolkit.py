"""Building blocks for the labs' hidden checks: run student code, compare, explain failures.

Every lab has a module ``course_lib.lab_checks.<lab>`` with one ``check_*`` function per graded
test cell. A check calls the student's function on seeded random inputs on
:func:`course_lib.get_device` (CUDA when present, else the CPU), compares with the
``course_lib`` reference, and raises :class:`CheckFailed` (an ``AssertionError``) whose message
says *what* is wrong and *why* it probably happened::

    scaled_dot_product_attention: the weights' rows do not sum to 1 (row sums ... on
    q (2, 3, 5, 8), k (2, 3, 7, 8), v (2, 3, 7, 4)).
    Hint: your weights sum to 1 down the query axis; softmax must run over the last (key) axis.

The lab module also declares its ``RUBRIC`` (:mod:`.rubric`): one criterion per grade cell (the
cell's ``grade_id``, its points, the check and which student functions it needs) and the reference
of every function, so a grader can run the checks without the notebook and the tests can hold the
notebook to the rubric.

Not covered: sandboxing (student code runs in this process), timeouts, notebook handling.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..runtime import get_device

__all__ = [
    "ATOL", "RTOL", "CheckFailed", "Trial",
    "fail", "trials", "call_student", "expect_tensor", "expect_close", "is_close", "describe_shapes",
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


def _hint_for_exception(error: BaseException) -> str | None:
    if isinstance(error, NotImplementedError):
        return "replace the `raise NotImplementedError()` line with your implementation."
    text = str(error)
    if "view size is not compatible" in text:
        return ".view() needs a contiguous tensor; after .transpose() use .reshape() or .contiguous().view()."
    if "Expected all tensors to be on the same device" in text:
        return "a tensor you create inside the function must go on the inputs' device (device=x.device)."
    return None


def call_student(function: Callable, *args, name: str | None = None, **kwargs):
    """Call a student's function and turn any exception into a :class:`CheckFailed`.

    Tensor arguments are cloned, so code that edits its inputs in place (``q /= ...``) cannot
    change the numbers the check compares against.
    """
    name = name or getattr(function, "__name__", "your function")
    args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    try:
        return function(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as error:  # the student's bug, reported as a failed check with the cause
        detail = f": {error}" if str(error) else ""
        fail(f"{name} raised {type(error).__name__}{detail}", _hint_for_exception(error))


def describe_shapes(**tensors: torch.Tensor | None) -> str:
    """``'q (2, 3, 8), k (2, 5, 8)'``: names the inputs in failure messages."""
    return ", ".join(f"{n} {tuple(t.shape)}" for n, t in tensors.items() if t is not None)


def expect_tensor(
    value,
    *,
    name: str,
    shape: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    context: str = "",
) -> torch.Tensor:
    """Check that ``value`` is a tensor with the given shape, dtype and device; return it."""
    where = f" (on {context})" if context else ""
    if not isinstance(value, torch.Tensor):
        fail(f"{name} should be a torch.Tensor but is {type(value).__name__}{where}",
             "did you forget a `return`?" if value is None else None)
    if shape is not None and tuple(value.shape) != tuple(shape):
        fail(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}{where}")
    if dtype is not None and value.dtype != dtype:
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

