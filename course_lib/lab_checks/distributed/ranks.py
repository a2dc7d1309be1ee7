"""Running a student's collective function on N simulated ranks, for the distributed lab's checks.

:func:`call_on_ranks` runs ``function(group, *args_of_rank)`` on every rank of a
:func:`course_lib.distributed.simulated.run_ranks` world and returns each rank's result and log of
collectives. The student's function gets copies of the inputs, and a rank that changes one of them in place
fails the check (``rank 1's grads[2]``). In nbgrader's kernel the ranks are threads of this process; under the
sandboxed grader the function is a stand-in (``run_with``), and the same runner (the lab's ``RUNNERS``) runs
the ranks inside the sandbox, where the student's code lives. Everything exchanged is tensors, lists, dicts,
tuples, ints and strings, so both graders see the same thing.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from ...distributed.simulated import run_ranks_logged
from ..hints import hint_for_exception
from ..inputs import IN_PLACE_HINT, InputRecord, clone_nested
from ..toolkit import CheckFailed, fail

__all__ = ["RUNNER", "call_on_ranks", "count"]

RUNNER = "ranks"  # the name the lab's RUNNERS give run_ranks_logged (the sandbox runs it by this name)


def _driver(function: Callable, group_at: int) -> Callable:
    stand_in = getattr(function, "run_with", None)  # the sandboxed grader's proxy for the student's function
    if stand_in is not None:
        return lambda world_size, per_rank_args: stand_in(RUNNER, world_size, per_rank_args, group_at=group_at)
    return lambda world_size, per_rank_args: run_ranks_logged(function, world_size, per_rank_args, group_at=group_at)


def call_on_ranks(function: Callable, per_rank_args: Sequence[Sequence], *, name: str, arg_names: Sequence[str],
                  group_at: int, context: str) -> tuple[list, list[list[tuple]]]:
    """``function(*args[:group_at], group, *args[group_at:])`` with ``args = per_rank_args[r]`` on
    ``len(per_rank_args)`` simulated ranks: (results, logs) by rank."""
    world_size = len(per_rank_args)
    copies = clone_nested([list(args) for args in per_rank_args])
    record = InputRecord((f"rank {rank}'s {argument}", value)
                         for rank, args in enumerate(copies) for argument, value in zip(arg_names, args))
    try:
        outputs = _driver(function, group_at)(world_size, copies)
    except CheckFailed:
        raise
    except Exception as error:  # a rank raised, the ranks' collectives differ, or one never returned
        detail = f": {error}" if str(error) else ""
        fail(f"{name} raised {type(error).__name__}{detail} (on {context})",
             hint_for_exception(error) or ("every rank must make the same collectives, in the same order, on "
                                           "tensors of the same size (a rank that owns nothing still takes part)."
                                           if "collective" in str(error) else None))
    modified = record.first_modified()
    if modified:
        fail(f"{name} modified its input {modified} in place (on {context}); a graded function must leave its "
             f"inputs as they were", IN_PLACE_HINT)
    if not (isinstance(outputs, (list, tuple)) and len(outputs) == world_size):
        fail(f"running {name} on {world_size} ranks gave no result per rank (on {context})")
    results = [output[0] for output in outputs]
    logs = [[tuple(call) for call in output[1]] for output in outputs]
    return results, logs


def count(log: list[tuple], op: str) -> int:
    """How many collectives ``op`` (``"all_reduce"``, ``"broadcast"``) a rank's log holds."""
    return sum(1 for call in log if call[0] == op)
