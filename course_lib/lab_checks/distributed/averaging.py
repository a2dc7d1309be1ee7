"""The distributed lab's gradient averaging: per tensor, the buckets, and per bucket.

Students write ``average_gradients(grads, group)`` (each gradient's mean over the ranks, one ``all_reduce``
per tensor, new tensors), ``gradient_buckets(sizes, bucket_bytes)`` (the library's rule,
:func:`course_lib.distributed.data_parallel.gradient_buckets`, in indices and bytes) and
``average_gradients_bucketed(grads, group, bucket_bytes)`` (one ``all_reduce`` per bucket, the pieces back in
their shapes). The averages are compared on every rank with one process's mean of all ranks' gradients; the
collectives are counted from each rank's log. The buckets may be filled first-to-last or last-to-first (DDP's
order, the library's): the averages are the same, so both pass.

Classic mistakes named: the sum without dividing, dividing by world_size − 1 or by the number of tensors, an
input modified in place; a bucket over the limit (added before checking), an empty bucket before a large
tensor, ``<`` for ``≤`` (sizes summing exactly to the limit); pieces returned flat, one all-reduce per tensor
in the bucketed version, no division.

Not covered: mixed dtypes in one bucket (all fp32 here), overlapping communication with the backward pass.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...distributed.data_parallel import gradient_buckets as library_gradient_buckets
from ..toolkit import call_student, diagnose, expect_tensor, fail, is_close, trials
from .ranks import call_on_ranks, count

__all__ = ["check_average", "check_buckets", "check_bucketed", "reference_average_gradients",
           "reference_average_gradients_bucketed", "reference_gradient_buckets"]


def reference_average_gradients(grads, group):
    """The lab's ``average_gradients``: one all-reduce (SUM) per tensor, then divide by the world size."""
    averaged = []
    for grad in grads:
        total = grad.clone()
        group.all_reduce(total)
        averaged.append(total / group.world_size)
    return averaged


def reference_gradient_buckets(sizes, bucket_bytes):
    """The lab's ``gradient_buckets``: :func:`course_lib.distributed.data_parallel.gradient_buckets` on tensors
    of ``sizes`` bytes, as indices."""
    tensors = [torch.empty(int(size), dtype=torch.uint8) for size in sizes]
    position = {id(tensor): index for index, tensor in enumerate(tensors)}
    buckets = library_gradient_buckets(tensors, bucket_bytes / 2**20)  # 2**20: exact, the limit is bucket_bytes
    return [[position[id(tensor)] for tensor in bucket] for bucket in buckets]


def reference_average_gradients_bucketed(grads, group, bucket_bytes):
    """The lab's ``average_gradients_bucketed``: each bucket flattened, one all-reduce, divided, split back."""
    sizes = [grad.numel() * grad.element_size() for grad in grads]
    averaged = [None] * len(grads)
    for bucket in reference_gradient_buckets(sizes, bucket_bytes):
        flat = torch.cat([grads[i].reshape(-1) for i in bucket])
        group.all_reduce(flat)
        flat = flat / group.world_size
        for i, piece in zip(bucket, flat.split([grads[i].numel() for i in bucket])):
            averaged[i] = piece.view_as(grads[i])
    return averaged


# --- inputs ------------------------------------------------------------------------------------------------

def _gradients(trial, world_size: int, shapes) -> list[list[torch.Tensor]]:
    return [[trial.randn(*shape) for shape in shapes] for _ in range(world_size)]


def average_cases():
    """(per-rank gradients, context): 3 ranks and 4 tensors first (the usual wrong divisors all differ)."""
    for world_size, shapes, seed in ((3, [(2, 3), (4,), (3, 1), (5,)], 7100), (2, [(3,), (2, 2)], 7110),
                                     (4, [(6,), (2, 3, 1)], 7120), (1, [(2,), (3,)], 7130)):
        trial = next(trials(1, seed=seed))
        yield _gradients(trial, world_size, shapes), f"{world_size} ranks, gradients {shapes}"


def _mean(per_rank: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [torch.stack([rank[i] for rank in per_rank]).mean(dim=0) for i in range(len(per_rank[0]))]


def _results(results, rank: int, expected: list[torch.Tensor], name: str, context: str) -> list[torch.Tensor]:
    got = results[rank]
    if not isinstance(got, (list, tuple)) or len(got) != len(expected):
        described = f"{len(got)} items" if isinstance(got, (list, tuple)) else type(got).__name__
        fail(f"{name} on rank {rank} returned {described}, expected a list of {len(expected)} tensors (on {context})",
             "return one averaged tensor per gradient, in the gradients' order.")
    for index, (tensor, reference) in enumerate(zip(got, expected)):
        expect_tensor(tensor, name=f"{name}'s tensor {index} on rank {rank}", context=context)
        if tensor.numel() == reference.numel() and tuple(tensor.shape) != tuple(reference.shape):
            fail(f"{name}'s tensor {index} on rank {rank} has shape {tuple(tensor.shape)}, expected "
                 f"{tuple(reference.shape)}: the numbers are there but the shape is lost (on {context})",
                 "give each piece of the flat bucket its gradient's shape back: piece.view_as(grad) (or "
                 ".reshape(grad.shape)).")
        expect_tensor(tensor, name=f"{name}'s tensor {index} on rank {rank}", shape=reference.shape, context=context)
    return list(got)


def _all_close(got: list[torch.Tensor], expected: list[torch.Tensor]) -> bool:
    return all(is_close(a, b) for a, b in zip(got, expected))


def _averaging_mistakes(got, per_rank, world_size: int, name: str, context: str) -> None:
    sums = [mean * world_size for mean in _mean(per_rank)]
    diagnose(got, [
        (sums, f"{name} returns the SUM over the ranks: all_reduce adds, it does not average",
         "divide what all_reduce leaves by group.world_size: the mean of N gradients is their sum / N."),
        (lambda: [s / (world_size - 1) for s in sums] if world_size > 1 else None,
         f"{name} divides the sum by world_size − 1",
         "every rank, this one included, contributes one gradient: divide by group.world_size."),
        (lambda: [s / len(sums) for s in sums], f"{name} divides the sum by the number of tensors",
         "the mean is over the ranks, not over the gradients of one rank: divide by group.world_size."),
    ], context=context, matches=lambda a, b: b is not None and _all_close(a, b))


def check_average(average_gradients: Callable) -> None:
    """Each rank gets every gradient's mean over the ranks, from one all-reduce per tensor."""
    for per_rank, context in average_cases():
        world_size, expected = len(per_rank), _mean(per_rank)
        results, logs = call_on_ranks(average_gradients, [(grads,) for grads in per_rank], name="average_gradients",
                                      arg_names=["grads"], group_at=1, context=context)
        for rank in range(world_size):
            got = _results(results, rank, expected, "average_gradients", context)
            if _all_close(got, expected):
                continue
            _averaging_mistakes(got, per_rank, world_size, "average_gradients", context)
            wrong = next(i for i, (a, b) in enumerate(zip(got, expected)) if not is_close(a, b))
            fail(f"average_gradients' tensor {wrong} on rank {rank} is not the mean over the ranks (on {context})",
                 "clone each gradient, all_reduce the copy (a SUM over the ranks), divide by group.world_size.")
        reduces = [count(log, "all_reduce") for log in logs]
        if reduces[0] != len(expected):
            fail(f"average_gradients made {reduces[0]} all_reduce calls for {len(expected)} gradients (on {context})",
                 "one all_reduce per gradient tensor here (the bucketed version comes later).")


# --- buckets -----------------------------------------------------------------------------------------------

def bucket_cases():
    """(sizes, bucket_bytes, context): targeted first, then random."""
    yield [400, 400, 200, 800, 100], 1000, "sizes [400, 400, 200, 800, 100] bytes, limit 1000 (the first three fill it exactly)"
    yield [300, 2000, 100, 100], 1000, "sizes [300, 2000, 100, 100], limit 1000 (2000 alone)"
    yield [5000, 10, 10], 1000, "sizes [5000, 10, 10], limit 1000 (the first tensor is over the limit)"
    yield [250, 250, 250, 250, 250], 500, "sizes [250] * 5, limit 500 (pairs fill it exactly)"
    yield [], 100, "no tensors"
    for trial in trials(4, seed=7200):
        sizes = [4 * trial.randint(1, 300) for _ in range(trial.randint(1, 9))]
        limit = 4 * trial.randint(50, 400)
        yield sizes, limit, f"sizes {sizes}, limit {limit}"


def _strict(sizes, bucket_bytes):
    """``<`` for ``≤``: a bucket closes when it would reach the limit exactly."""
    buckets, current, total = [], [], 0
    for index, size in enumerate(sizes):
        if current and total + size >= bucket_bytes:
            buckets.append(current)
            current, total = [], 0
        current.append(index)
        total += size
    return buckets + [current] if current else buckets


def _as_buckets(value, sizes, context: str) -> list[list[int]]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(bucket, (list, tuple)) for bucket in value):
        fail(f"gradient_buckets should return a list of lists of indices, got {type(value).__name__} (on {context})",
             "did you forget a `return`?" if value is None else None)
    try:
        return [[int(index) for index in bucket] for bucket in value]
    except (TypeError, ValueError):
        fail(f"gradient_buckets' buckets should hold tensor indices (ints) (on {context})",
             "put each tensor's index i into its bucket, not its size.")


def check_buckets(gradient_buckets: Callable) -> None:
    """The library's rule: consecutive, at most bucket_bytes each, a tensor over the limit alone."""
    for sizes, limit, context in bucket_cases():
        got = _as_buckets(call_student(gradient_buckets, list(sizes), limit, name="gradient_buckets"), sizes, context)
        expected = reference_gradient_buckets(sizes, limit)
        if got == expected:
            continue
        if any(not bucket for bucket in got):
            fail(f"gradient_buckets returns an empty bucket: {got} (on {context})",
                 "close the current bucket only when it holds something: a tensor larger than the limit starts "
                 "its own bucket, it does not leave an empty one before it.")
        if [i for bucket in got for i in bucket] != list(range(len(sizes))):
            fail(f"gradient_buckets' buckets {got} are not the indices 0 .. {len(sizes) - 1} in order, each once "
                 f"(on {context})", "buckets are consecutive runs of the tensors, in their order.")
        over = [bucket for bucket in got if len(bucket) > 1 and sum(sizes[i] for i in bucket) > limit]
        if over:
            fail(f"gradient_buckets' bucket {over[0]} holds {sum(sizes[i] for i in over[0])} bytes, over the limit "
                 f"{limit} (on {context})",
                 "check whether the next tensor fits BEFORE adding it: if total + size > bucket_bytes, close the "
                 "current bucket first.")
        diagnose(got, [
            (_strict(sizes, limit), "gradient_buckets closes a bucket that would hold exactly bucket_bytes: < "
             "where the rule says ≤",
             "a bucket may be full to the byte: keep adding while total + size <= bucket_bytes."),
        ], context=context, matches=lambda a, b: a == b)
        fail(f"gradient_buckets returns {got}, expected {expected} (on {context})",
             "fill each bucket with the next tensors while they fit (total ≤ bucket_bytes), then start a new one; "
             "a tensor larger than the limit goes alone.")


# --- bucketed averaging ------------------------------------------------------------------------------------

def bucketed_cases():
    """(per-rank gradients, bucket_bytes, context): fp32, so a tensor of n numbers is 4n bytes."""
    for world_size, shapes, limit, seed in ((3, [(2, 3), (4,), (3, 2), (10,), (1,)], 64, 7300),
                                            (2, [(2, 2), (3,), (40,), (2,), (1, 3)], 48, 7310),
                                            (2, [(3,), (2,)], 1000, 7320), (4, [(5,), (1, 2)], 8, 7330)):
        trial = next(trials(1, seed=seed))
        yield (_gradients(trial, world_size, shapes), limit,
               f"{world_size} ranks, fp32 gradients {shapes}, bucket_bytes {limit}")


def check_bucketed(average_gradients_bucketed: Callable) -> None:
    """Means equal to the per-tensor ones, shapes kept, one all-reduce per bucket (either filling order)."""
    name = "average_gradients_bucketed"
    for per_rank, limit, context in bucketed_cases():
        world_size, expected = len(per_rank), _mean(per_rank)
        results, logs = call_on_ranks(average_gradients_bucketed, [(grads, limit) for grads in per_rank], name=name,
                                      arg_names=["grads", "bucket_bytes"], group_at=1, context=context)
        for rank in range(world_size):
            got = _results(results, rank, expected, name, context)
            if _all_close(got, expected):
                continue
            _averaging_mistakes(got, per_rank, world_size, name, context)
            fail(f"{name}'s tensors on rank {rank} are not the means over the ranks (on {context})",
                 "flatten each bucket with torch.cat, all_reduce it, divide by group.world_size, then split it "
                 "back (flat.split(numels)) into the gradients' shapes, in the gradients' order.")
        sizes = [grad.numel() * grad.element_size() for grad in per_rank[0]]
        allowed = []
        for order in (list(range(len(sizes))), list(range(len(sizes)))[::-1]):
            buckets = reference_gradient_buckets([sizes[i] for i in order], limit)
            allowed.append(sorted(sum(per_rank[0][order[i]].numel() for i in bucket) for bucket in buckets))
        reduces = sorted(call[1] for call in logs[0] if call[0] == "all_reduce")
        if reduces in allowed:
            continue
        if len(reduces) == len(sizes) and max(len(a) for a in allowed) < len(sizes):
            fail(f"{name} made {len(reduces)} all_reduce calls, one per tensor; its {len(allowed[0])} buckets need "
                 f"{len(allowed[0])} (on {context})",
                 "the point of buckets is fewer, larger messages: torch.cat the bucket's gradients (flattened) and "
                 "all_reduce that one tensor.")
        fail(f"{name}'s all_reduce calls carry {reduces} numbers; the buckets of gradient_buckets(sizes in bytes, "
             f"bucket_bytes) carry {allowed[0]} (on {context})",
             "one all_reduce per bucket of gradient_buckets([g.numel() * g.element_size() for g in grads], "
             "bucket_bytes), each on the bucket's gradients flattened into one tensor.")
