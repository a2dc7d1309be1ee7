"""The distributed lab's ZeRO-1: dealing the parameters to the ranks, and one sharded SGD-with-momentum step.

``partition_parameters(sizes, world_size)`` is graded by properties, so any balancing at least as good as the
library's greedy rule (:func:`course_lib.distributed.zero.partition_parameters`: largest first, each to the
least-loaded rank) passes: every index exactly once, each shard ascending, the largest shard's element count no
more than the greedy rule's. Targeted inputs make round-robin dealing and contiguous equal counts badly
unbalanced (both named).

``sharded_sgd_step(params, grads, momentum, group, lr, beta)`` is graded with the reference
``partition_parameters`` (as ``RUBRIC.run`` always does for the other functions): rank ``r`` holds the momentum
of its own shard only, updates those parameters (``m = β·m + g; p = p − lr·m``), and every shard is broadcast
from its owner. Every rank must end with the parameters of one process taking the full step, and with its
shard's new momentum; on 2, 3 and 4 ranks, one of them owning nothing. Mistakes named: no broadcast (stale
parameters), broadcast from the wrong rank, the momentum updated after the parameter, inputs changed in place.

Not covered: Adam's two moments, weight decay, gradient sharding (ZeRO-2) and parameter sharding (ZeRO-3).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...distributed.zero import partition_parameters as library_partition_parameters
from ..toolkit import call_student, expect_tensor, fail, is_close, trials
from .ranks import call_on_ranks

__all__ = ["check_partition", "check_sharded_step", "reference_partition_parameters", "reference_sharded_sgd_step"]


def reference_partition_parameters(sizes, world_size):
    """The lab's ``partition_parameters``: the library's greedy dealing, as indices (each shard ascending)."""
    tensors = [torch.empty(int(size)) for size in sizes]
    position = {id(tensor): index for index, tensor in enumerate(tensors)}
    return [[position[id(tensor)] for tensor in shard] for shard in library_partition_parameters(tensors, world_size)]


def reference_sharded_sgd_step(params, grads, momentum, group, lr, beta):
    """The lab's ``sharded_sgd_step``: update this rank's shard (momentum first), broadcast each shard from its owner."""
    shards = reference_partition_parameters([p.numel() for p in params], group.world_size)
    new_params, new_momentum = [p.clone() for p in params], {}
    for i in shards[group.rank]:
        new_momentum[i] = beta * momentum[i] + grads[i]
        new_params[i] = params[i] - lr * new_momentum[i]
    for owner, shard in enumerate(shards):
        for i in shard:
            group.broadcast(new_params[i], src=owner)
    return new_params, new_momentum


# --- the partition -----------------------------------------------------------------------------------------

def _loads(shards, sizes) -> list[int]:
    return [sum(sizes[i] for i in shard) for shard in shards]


def _round_robin(sizes, world_size):
    return [list(range(rank, len(sizes), world_size)) for rank in range(world_size)]


def _contiguous(sizes, world_size):
    per = -(-len(sizes) // world_size)
    return [list(range(rank * per, min(len(sizes), (rank + 1) * per))) for rank in range(world_size)]


def partition_cases():
    """(sizes, world_size, context): the targeted unbalancing inputs first, then edges and random ones."""
    yield [1000, 10, 1000, 10, 1000, 10], 2, "sizes [1000, 10] * 3, 2 ranks (dealt in turn: loads 3000 and 30)"
    yield [10, 10, 10, 10, 500, 500, 500, 500], 4, "sizes [10] * 4 + [500] * 4, 4 ranks (in blocks of two: loads 20, 20, 1000, 1000)"
    yield [7, 3, 5], 5, "3 parameters for 5 ranks (two own nothing)"
    yield [4, 4, 4, 4], 2, "equal sizes [4, 4, 4, 4], 2 ranks"
    yield [9], 1, "one rank"
    for trial in trials(3, seed=7500):
        sizes = [trial.randint(1, 200) for _ in range(trial.randint(3, 10))]
        world_size = trial.randint(2, 4)
        yield sizes, world_size, f"sizes {sizes}, {world_size} ranks"


def check_partition(partition_parameters: Callable) -> None:
    """Every index once, shards ascending, the largest shard no larger than the greedy rule's."""
    for sizes, world_size, context in partition_cases():
        got = call_student(partition_parameters, list(sizes), world_size, name="partition_parameters")
        if not (isinstance(got, (list, tuple)) and len(got) == world_size
                and all(isinstance(shard, (list, tuple)) for shard in got)):
            fail(f"partition_parameters should return {world_size} lists of indices, one per rank, got "
                 f"{got!r:.80} (on {context})", "a rank that owns nothing gets an empty list.")
        try:
            shards = [[int(i) for i in shard] for shard in got]
        except (TypeError, ValueError):
            fail(f"partition_parameters' shards should hold parameter indices (ints) (on {context})")
        dealt = sorted(i for shard in shards for i in shard)
        if dealt != list(range(len(sizes))):
            lost = sorted(set(range(len(sizes))) - set(dealt))
            repeated = sorted({i for i in dealt if dealt.count(i) > 1})
            what = (f"parameter(s) {lost} belong to no rank" if lost else "") + ("; " if lost and repeated else "") + (
                f"parameter(s) {repeated} belong to more than one rank" if repeated else "")
            if not what:
                what = f"the indices {dealt} are not 0 .. {len(sizes) - 1}"
            fail(f"partition_parameters: {what} (on {context})",
                 "deal every parameter index to exactly one rank: each rank updates and broadcasts its own.")
        unsorted = next((rank for rank, shard in enumerate(shards) if shard != sorted(shard)), None)
        if unsorted is not None:
            fail(f"partition_parameters' shard of rank {unsorted}, {shards[unsorted]}, is not in ascending order "
                 f"(on {context})", "sort each shard: its parameters in the model's order.")
        greedy = max(_loads(reference_partition_parameters(sizes, world_size), sizes))
        largest = max(_loads(shards, sizes))
        if largest <= greedy:
            continue
        loads = _loads(shards, sizes)
        for mistake, problem in ((_round_robin, "deals the parameters in turn (round-robin by index)"),
                                 (_contiguous, "cuts the list into contiguous blocks of equal counts")):
            if shards == mistake(sizes, world_size):
                fail(f"partition_parameters {problem}: loads {loads} elements, while largest first to the "
                     f"least-loaded rank gives at most {greedy} (on {context})",
                     "balance the element counts, not the number of parameters: take the parameters largest "
                     "first and give each to the rank with the fewest elements so far.")
        fail(f"partition_parameters' largest shard holds {largest} elements (loads {loads}); the greedy rule's "
             f"holds {greedy} (on {context})",
             "largest first, each to the least-loaded rank: no rank should hold more than that.")


# --- the sharded step --------------------------------------------------------------------------------------

def sharded_cases():
    """(params, grads by rank, world_size, lr, beta, context)."""
    for world_size, shapes, seed in ((2, [(3,), (2, 2), (5,), (1,)], 7600), (3, [(4,), (2,), (3, 2), (1,), (2,)], 7610),
                                     (4, [(2, 2), (3,), (1,)], 7620), (4, [(6,), (2,), (3,), (1,)], 7630)):
        trial = next(trials(1, seed=seed))
        params = [trial.randn(*shape) for shape in shapes]
        grads = [trial.randn(*shape) for shape in shapes]  # already averaged: the same on every rank
        momentum = [trial.randn(*shape) for shape in shapes]
        owners = reference_partition_parameters([p.numel() for p in params], world_size)
        idle = [rank for rank, shard in enumerate(owners) if not shard]
        note = f" (rank {idle[0]} owns nothing)" if idle else ""
        yield params, grads, momentum, world_size, 0.1, 0.9, f"{world_size} ranks, parameters {shapes}{note}"


def check_sharded_step(sharded_sgd_step: Callable) -> None:
    """Every rank ends with the full SGD-momentum step's parameters and its own shard's momentum."""
    name = "sharded_sgd_step"
    for params, grads, momentum, world_size, lr, beta, context in sharded_cases():
        shards = reference_partition_parameters([p.numel() for p in params], world_size)
        owner = {i: rank for rank, shard in enumerate(shards) for i in shard}
        per_rank = [(params, grads, {i: momentum[i] for i in shards[rank]}, lr, beta) for rank in range(world_size)]
        results, logs = call_on_ranks(sharded_sgd_step, per_rank, name=name,
                                      arg_names=["params", "grads", "momentum", "lr", "beta"], group_at=3,
                                      context=context)
        new_momentum = [beta * m + g for m, g in zip(momentum, grads)]
        expected = [p - lr * m for p, m in zip(params, new_momentum)]
        late = [p - lr * m for p, m in zip(params, momentum)]  # the momentum updated after the parameter
        for rank in range(world_size):
            result = results[rank]
            if not (isinstance(result, (list, tuple)) and len(result) == 2):
                fail(f"{name} on rank {rank} should return a pair (params, momentum) (on {context})",
                     "end with `return new_params, new_momentum`.")
            if not (isinstance(result[0], (list, tuple)) and len(result[0]) == len(params)):
                fail(f"{name} on rank {rank} returns {type(result[0]).__name__} for the parameters, expected a list "
                     f"of {len(params)} tensors (on {context})")
        for i, want in enumerate(expected):
            for rank in sorted(range(world_size), key=lambda r: r != owner[i]):  # the owner first
                tensor = results[rank][0][i]
                expect_tensor(tensor, name=f"{name}'s parameter {i} on rank {rank}", shape=want.shape, context=context)
                if is_close(tensor, want):
                    continue
                if is_close(tensor, late[i]):
                    fail(f"{name}'s parameter {i} on rank {rank} moved by lr·(old momentum): the momentum is updated "
                         f"after the parameter (on {context})",
                         "first m = beta·m + g, then p = p − lr·m with the NEW momentum (torch.optim.SGD's order).")
                if is_close(tensor, params[i]):
                    if owner[i] == rank:
                        fail(f"{name}: rank {rank} owns parameter {i} but ends with its old value: a broadcast from "
                             f"another rank overwrote its update (on {context})",
                             "broadcast each parameter from the rank that owns it: src = its owner in "
                             "partition_parameters(...), the same src on every rank.")
                    fail(f"{name}: rank {rank} still has the old value of parameter {i}, owned by rank {owner[i]}: "
                         f"the new values never reached it (on {context})",
                         "after updating its shard, every shard must be broadcast from its owner "
                         "(group.broadcast(p, src=owner)); every rank takes part in every broadcast.")
                fail(f"{name}'s parameter {i} on rank {rank} differs from one SGD-momentum step (on {context})",
                     "m = beta·m + g; p = p − lr·m, for the parameters of this rank's shard; then broadcast.")
        for rank in range(world_size):
            got_momentum = results[rank][1]
            if not isinstance(got_momentum, dict) or sorted(got_momentum) != shards[rank]:
                keys = sorted(got_momentum) if isinstance(got_momentum, dict) else type(got_momentum).__name__
                fail(f"{name}'s momentum on rank {rank} has keys {keys}; this rank owns {shards[rank]} (on {context})",
                     "return a dict holding the new momentum of this rank's own parameters only: that is what "
                     "ZeRO-1 saves.")
            for i in shards[rank]:
                expect_tensor(got_momentum[i], name=f"{name}'s momentum {i} on rank {rank}", shape=params[i].shape,
                              context=context)
                if not is_close(got_momentum[i], new_momentum[i]):
                    fail(f"{name}'s new momentum of parameter {i} on rank {rank} is not beta·m + g (on {context})",
                         "m = beta·m + g with the momentum this rank was given.")
