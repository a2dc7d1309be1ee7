"""course_lib.distributed.simulated: ranks as threads with the collectives of torch.distributed, and TorchGroup.

Lab 10's reference averaging and ZeRO step (the library's bucket and partition rules, against a group), run through
run_ranks, equal one process's averages and step, bit-equal on every rank; a broken program (a rank that raises,
collectives that differ in op, size, source or number, a rank that never arrives) ends with an error naming the
rank, never a hang; and one real run of 2 gloo processes (forked: no re-import of torch) gives what run_ranks gives.
"""
from __future__ import annotations

import time

import pytest
import torch

from course_lib.distributed.launch import setup_process_group, spawn
from course_lib.distributed.simulated import CollectiveMismatch, SimulatedGroup, TorchGroup, run_ranks, run_ranks_logged
from course_lib.distributed.zero import partition_parameters
# The group-based averaging and ZeRO step are lab 10's references (the library's bucket and partition rules):
# pinned here to one process and to real gloo processes, so the lab grades against functions that are.
from course_lib.lab_checks.distributed.averaging import (
    reference_average_gradients as average_gradients,
    reference_average_gradients_bucketed as average_gradients_bucketed,
)
from course_lib.lab_checks.distributed.zero import reference_sharded_sgd_step as sharded_sgd_step


def _per_rank_gradients(world_size: int, seed: int = 0) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(3, 2, generator=generator), torch.randn(5, generator=generator),
             torch.randn(1, generator=generator)]
            for _ in range(world_size)]


def _means(per_rank):
    return [torch.stack([grads[i] for grads in per_rank]).mean(dim=0) for i in range(len(per_rank[0]))]


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_the_group_averages_equal_one_process_and_are_bit_equal_on_every_rank(world_size):
    per_rank = _per_rank_gradients(world_size)
    expected = _means(per_rank)
    for function, extra in ((average_gradients, ()), (average_gradients_bucketed, (32,))):
        results = run_ranks(function, world_size, [(grads, *extra) for grads in per_rank], group_at=1)
        for averaged in results:
            assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(averaged, expected))
            assert all(torch.equal(a, b) for a, b in zip(averaged, results[0]))  # the same bits everywhere


def test_each_rank_logs_its_collectives_and_the_bucketed_version_sends_fewer():
    per_rank = _per_rank_gradients(2)
    logs = [log for _, log in run_ranks_logged(average_gradients, 2, [(g,) for g in per_rank], group_at=1)]
    assert logs[0] == logs[1] == [("all_reduce", 6, None), ("all_reduce", 5, None), ("all_reduce", 1, None)]
    bucketed = run_ranks_logged(average_gradients_bucketed, 2, [(g, 1000) for g in per_rank], group_at=1)
    assert bucketed[0][1] == [("all_reduce", 12, None)]  # 48 bytes: one bucket


def test_broadcast_copies_the_source_and_the_sharded_step_equals_the_full_step():
    def broadcast_rank_value(group):
        tensor = torch.full((2,), float(group.rank))
        group.broadcast(tensor, src=2)
        return tensor

    assert all(torch.equal(t, torch.full((2,), 2.0)) for t in run_ranks(broadcast_rank_value, 3))
    generator = torch.Generator().manual_seed(1)
    params = [torch.randn(4, generator=generator), torch.randn(2, 3, generator=generator),
              torch.randn(1, generator=generator)]
    grads = [torch.randn_like(p) for p in params]
    momentum = [torch.randn_like(p) for p in params]
    full = [p - 0.1 * (0.9 * m + g) for p, g, m in zip(params, grads, momentum)]
    for world_size in (1, 2, 4):  # 4 ranks, 3 parameters: one rank owns nothing
        index = {id(p): i for i, p in enumerate(params)}
        shards = [[index[id(p)] for p in shard] for shard in partition_parameters(params, world_size)]
        per_rank = [(params, grads, {i: momentum[i] for i in shards[r]}, 0.1, 0.9) for r in range(world_size)]
        for new_params, new_momentum in run_ranks(sharded_sgd_step, world_size, per_rank, group_at=3):
            assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(new_params, full))


def test_a_rank_that_raises_ends_the_run_naming_it():
    def fails_on_rank_one(group):
        if group.rank == 1:
            raise ValueError("deliberate")
        group.all_reduce(torch.zeros(2))

    start = time.monotonic()
    with pytest.raises(ValueError, match="on rank 1: deliberate"):
        run_ranks(fails_on_rank_one, 3, timeout=20)
    assert time.monotonic() - start < 5  # the others stop waiting at once, not after the timeout


@pytest.mark.parametrize(("variant", "message"), [
    ("op", r"rank 0 called all_reduce\(numel 2\) but rank 1 called broadcast\(numel 2, src 0\)"),
    ("size", r"rank 0 called all_reduce\(numel 2\) but rank 1 called all_reduce\(numel 3\)"),
    ("src", r"rank 0 called broadcast\(numel 2, src 0\) but rank 1 called broadcast\(numel 2, src 1\)"),
    ("count", r"collective #2: rank 0 called all_reduce\(numel 2\) but rank 1 called no more collectives"),
])
def test_ranks_whose_collectives_differ_end_with_the_mismatch(variant, message):
    def mismatched(group):
        if variant == "op":
            group.all_reduce(torch.zeros(2)) if group.rank == 0 else group.broadcast(torch.zeros(2), 0)
        elif variant == "size":
            group.all_reduce(torch.zeros(2 + group.rank))
        elif variant == "src":
            group.broadcast(torch.zeros(2), src=group.rank)
        else:
            for _ in range(2 - group.rank):
                group.all_reduce(torch.zeros(2))

    start = time.monotonic()
    with pytest.raises(CollectiveMismatch, match=message):
        run_ranks(mismatched, 2, timeout=20)
    assert time.monotonic() - start < 5


def test_a_rank_that_never_arrives_is_a_timeout_not_a_hang():
    def slow_rank(group):
        if group.rank == 1:
            time.sleep(1.5)
        group.all_reduce(torch.zeros(1))

    start = time.monotonic()
    with pytest.raises(TimeoutError, match="waited more than 0.5 s"):
        run_ranks(slow_rank, 2, timeout=0.5)
    assert time.monotonic() - start < 8


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="world_size"):
        run_ranks(lambda group: None, 0)
    with pytest.raises(ValueError, match="2 entries for 3 ranks"):
        run_ranks(lambda group, x: None, 3, [(1,), (2,)])
    with pytest.raises(ValueError, match="src 4"):
        run_ranks(lambda group: group.broadcast(torch.zeros(1), 4), 2)
    assert repr(run_ranks(lambda group: group, 1)[0]) == "SimulatedGroup(rank=0, world_size=1)"
    assert isinstance(run_ranks(lambda group: group, 1)[0], SimulatedGroup)


def _average_on_gloo(per_rank):
    rank, _, _ = setup_process_group("gloo")
    group = TorchGroup()
    return average_gradients(per_rank[rank], group), group.log


def test_torch_group_on_two_gloo_processes_gives_what_run_ranks_gives():
    per_rank = _per_rank_gradients(2, seed=5)
    simulated = run_ranks_logged(average_gradients, 2, [(g,) for g in per_rank], group_at=1)
    real = spawn(_average_on_gloo, 2, per_rank, timeout=60, start_method="fork")  # forked: no re-import of torch
    for (averaged, log), (expected, expected_log) in zip(real, simulated):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(averaged, expected))
        assert [tuple(call) for call in log] == expected_log
