"""The distributed lab's ring all-reduce, state by state.

Students write ``ring_all_reduce_steps(vectors (N, L)) -> list of 2N − 1 tensors (N, L)``: the start, the
N − 1 reduce-scatter steps and the N − 1 all-gather steps, exactly as
:func:`course_lib.distributed.widgets.ring_all_reduce` (the chapter's picture) defines them: chunks cut as
:func:`torch.tensor_split` cuts, at reduce-scatter step ``s`` device ``d`` sends chunk ``(d − s) mod N`` to
``d + 1``, which adds it; at all-gather step ``s`` device ``d`` sends chunk ``(d + 1 − s) mod N`` to ``d + 1``,
which keeps it. Every state is compared, on N = 3 with L divisible first, then N = 4, L = 10 (where
``torch.chunk`` cuts differently), then random sizes and N = 2.

Classic mistakes named: the all-gather adding instead of copying, a chunk index off by one, only the
reduce-scatter, ``torch.chunk`` for ``tensor_split``, the final sum without the steps. (Sending the messages
of a step one after another, each from the partly updated state, changes nothing in a ring: a device never
receives the chunk it sends in the same step, so that way of writing it is correct, and a correct variant
shows it.)

Not covered: the messages themselves (who sends what is checked through the states), the cost model.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...distributed.widgets import ring_all_reduce
from ..toolkit import call_student, diagnose, expect_tensor, fail, is_close, trials

__all__ = ["check_ring", "reference_ring_all_reduce_steps", "ring_cases"]


def reference_ring_all_reduce_steps(vectors):
    """The lab's ``ring_all_reduce_steps``: the values of :func:`course_lib.distributed.widgets.ring_all_reduce`."""
    return [state.values for state in ring_all_reduce(vectors)]


def _variant(vectors, *, gather_adds=False, shift=0, cut=torch.tensor_split, phases=("rs", "ag")):
    """A ring with one known mistake: the all-gather adding, the chunk index shifted in both phases, another cut,
    or fewer phases."""
    n, length = vectors.shape
    pieces = cut(torch.arange(length), n)
    if len(pieces) != n:
        return None
    spans = [slice(int(p[0]), int(p[-1]) + 1) if len(p) else slice(0, 0) for p in pieces]
    values, states = vectors.clone(), [vectors.clone()]
    for phase in phases:
        for s in range(n - 1):
            base = -s if phase == "rs" else 1 - s
            sent = [(d, (d + 1) % n, (d + base + shift) % n) for d in range(n)]
            numbers = [values[d, spans[c]].clone() for d, _, c in sent]
            for (_, receiver, c), chunk in zip(sent, numbers):
                if phase == "rs" or gather_adds:
                    values[receiver, spans[c]] += chunk
                else:
                    values[receiver, spans[c]] = chunk
            states.append(values.clone())
    return states


def ring_cases():
    """(vectors, context): N = 3, L = 6 first (every mistake shows), the targeted uneven cut, random, N = 2."""
    trial = next(trials(1, seed=7400))
    yield trial.randn(3, 6), "N = 3 devices, L = 6"
    yield trial.randn(4, 10), "N = 4, L = 10 (not divisible: tensor_split cuts 3, 3, 2, 2)"
    for trial in trials(2, seed=7410):
        n = trial.randint(3, 5)
        length = n * trial.randint(1, 2) + trial.randint(0, n - 1)
        yield trial.randn(n, length), f"N = {n}, L = {length}"
    trial = next(trials(1, seed=7420))
    yield trial.randn(2, 5), "N = 2, L = 5"


def _same_states(got, expected) -> bool:
    return expected is not None and len(got) == len(expected) and all(is_close(a, b) for a, b in zip(got, expected))


def check_ring(ring_all_reduce_steps: Callable) -> None:
    """Every one of the 2N − 1 states equals the chapter's ring all-reduce's."""
    for vectors, context in ring_cases():
        n, length = vectors.shape
        result = call_student(ring_all_reduce_steps, vectors, name="ring_all_reduce_steps")
        if not isinstance(result, (list, tuple)):
            fail(f"ring_all_reduce_steps should return a list of states, got {type(result).__name__} (on {context})",
                 "did you forget a `return`?" if result is None else "append values.clone() after every step.")
        got = [expect_tensor(state, name=f"ring_all_reduce_steps' state {i}", shape=(n, length), context=context)
               for i, state in enumerate(result)]
        expected = reference_ring_all_reduce_steps(vectors)
        if _same_states(got, expected):
            continue
        final = vectors.sum(dim=0).expand(n, length)
        diagnose(got, [
            (lambda: _variant(vectors, phases=("rs",)), "ring_all_reduce_steps stops after the reduce-scatter: "
             f"{n} states instead of {2 * n - 1}",
             "after N − 1 reduce-scatter steps each device holds ONE finished chunk; N − 1 all-gather steps then "
             "pass the finished chunks round the ring (copying them) so every device has all of them."),
            (lambda: _variant(vectors, gather_adds=True), "ring_all_reduce_steps adds in the all-gather phase",
             "in the all-gather the chunks are already the full sums: the receiver keeps (copies) the chunk it "
             "gets, values[d + 1, chunk] = sent, instead of adding it."),
            (lambda: _variant(vectors, cut=torch.chunk), "ring_all_reduce_steps cuts the vectors with torch.chunk",
             "torch.chunk makes chunks of ceil(L / N) (and may make fewer than N); the ring cuts as "
             "torch.tensor_split(…, N) does: sizes differ by at most one, the larger ones first."),
            (lambda: _variant(vectors, shift=1), "ring_all_reduce_steps' chunk index is off by one (one too high)",
             "at reduce-scatter step s device d sends chunk (d − s) mod N; at all-gather step s, chunk "
             "(d + 1 − s) mod N: both with s counted from 0 in each phase."),
            (lambda: _variant(vectors, shift=-1), "ring_all_reduce_steps' chunk index is off by one (one too low)",
             "at reduce-scatter step s device d sends chunk (d − s) mod N; at all-gather step s, chunk "
             "(d + 1 − s) mod N: both with s counted from 0 in each phase."),
        ], context=context, matches=_same_states)
        if got and is_close(got[-1], final) and len(got) < 2 * n - 1:
            fail(f"ring_all_reduce_steps returns {len(got)} state(s) ending in the final sum, without the steps "
                 f"(on {context})",
                 f"the point is the way there: the start, then a copy of the values after each of the 2(N − 1) "
                 f"steps: {2 * n - 1} states for N = {n}.")
        if len(got) != 2 * n - 1:
            fail(f"ring_all_reduce_steps returns {len(got)} states, expected 2N − 1 = {2 * n - 1} (on {context})",
                 "the start, then one state after each reduce-scatter step and each all-gather step.")
        wrong = next(i for i, (a, b) in enumerate(zip(got, expected)) if not is_close(a, b))
        fail(f"ring_all_reduce_steps' state {wrong} differs from the ring's (on {context})",
             "all messages of a step leave at once: compute each from the state before the step (clone the chunks "
             "first), then add them (reduce-scatter) or copy them (all-gather).")
