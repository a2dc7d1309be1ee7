"""What an exception raised by a student's code probably means.

Not covered: calling the student's code (:func:`~course_lib.lab_checks.toolkit.call_student`).
"""
from __future__ import annotations

__all__ = ["hint_for_exception"]


def hint_for_exception(error: BaseException) -> str | None:
    """A hint on the likely cause of ``error``, raised by a student's code; None when none applies."""
    if isinstance(error, NotImplementedError):
        return "replace the `raise NotImplementedError()` line with your implementation."
    text = str(error)
    if "view size is not compatible" in text:
        return ".view() needs a contiguous tensor; after .transpose() use .reshape() or .contiguous().view()."
    if "Expected all tensors to be on the same device" in text:
        return "a tensor you create inside the function must go on the inputs' device (device=x.device)."
    return None
