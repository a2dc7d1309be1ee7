"""What only lab 10's checks need: every diagnosis reachable, the partition graded by its properties, both
bucket orders accepted, a rank's exception and mismatched collectives reported as the student's failure, and
the notebook's closing (ungraded) block running the student's average on 2 real gloo processes.

The known mistakes of ``tests/fixtures/labs/distributed/`` cover one diagnosis each (``tests/labs/
test_structure.py`` runs them); the functions here reach the branches no fixture needs.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from course_lib.lab_checks import distributed as distributed_checks
from course_lib.lab_checks.distributed import REFERENCES, RUBRIC
from course_lib.lab_checks.distributed.zero import partition_cases, reference_partition_parameters
from course_lib.lab_checks.toolkit import CheckFailed
from tests.labs.support import kernel
from tests.labtools import lab_files

FILES = lab_files("distributed")


def _message(grade_id: str, function) -> str:
    with pytest.raises(CheckFailed) as failure:
        RUBRIC.run(grade_id, function)
    return str(failure.value)


# --- averaging ---------------------------------------------------------------------------------------------

def test_average_with_one_all_reduce_for_everything_is_named():
    def one_message(grads, group):
        flat = torch.cat([g.reshape(-1) for g in grads])
        group.all_reduce(flat)
        return [piece.view_as(g) / group.world_size for g, piece in zip(grads, flat.split([g.numel() for g in grads]))]

    assert "made 1 all_reduce calls for 4 gradients" in _message("test_average", one_message)


def test_a_rank_that_raises_or_collectives_that_differ_fail_the_cell_naming_the_rank():
    def fails_on_rank_two(grads, group):
        if group.rank == 2:
            raise IndexError("deliberate")
        return REFERENCES["average_gradients"](grads, group)

    assert "raised IndexError: on rank 2: deliberate" in _message("test_average", fails_on_rank_two)

    def broadcast_from_self(params, grads, momentum, group, lr, beta):
        new = [p.clone() for p in params]
        for parameter in new:
            group.broadcast(parameter, src=group.rank)
        return new, dict(momentum)

    message = _message("test_sharded_step", broadcast_from_self)
    assert "rank 0 called broadcast(numel 3, src 0) but rank 1 called broadcast(numel 3, src 1)" in message
    assert "every rank must make the same collectives" in message


def test_both_bucket_orders_pass_and_a_wrong_bucketing_is_named():
    RUBRIC.run("test_bucketed", REFERENCES["average_gradients_bucketed"])  # first to last

    def in_one_bucket(grads, group, bucket_bytes):
        flat = torch.cat([g.reshape(-1) for g in grads])
        group.all_reduce(flat)
        flat = flat / group.world_size
        return [piece.view_as(g) for g, piece in zip(grads, flat.split([g.numel() for g in grads]))]

    assert "all_reduce calls carry [27]" in _message("test_bucketed", in_one_bucket)


def test_bucket_results_of_the_wrong_form_are_named():
    assert "should return a list of lists of indices, got NoneType" in _message("test_buckets", lambda s, b: None)
    assert "not the indices 0 .. 4 in order" in _message("test_buckets", lambda s, b: [[i] for i in range(len(s))][::-1])


# --- the ring ----------------------------------------------------------------------------------------------

def test_ring_chunk_index_one_too_high_and_a_wrong_count_are_named():
    solution = kernel(FILES)["ring_all_reduce_steps"]
    code = FILES.mistakes_dir.joinpath("ring_chunk_off_by_one.py").read_text(encoding="utf-8")
    namespace = {"torch": torch}
    exec(code.replace("range(1, n)", "range(-1, n - 2)"), namespace)  # noqa: S102 (steps counted from −1)
    assert "off by one (one too high)" in _message("test_ring", namespace["ring_all_reduce_steps"])
    assert "returns 6 states, expected 2N − 1 = 5" in _message("test_ring", lambda v: solution(v) + [v])


# --- the partition -----------------------------------------------------------------------------------------

def test_the_partition_is_graded_by_its_properties():
    """Any dealing as balanced as the greedy rule's passes; unbalanced or unsorted ones fail, each named."""
    def reversed_ranks(sizes, world_size):  # the greedy shards dealt to the ranks in the other order
        return reference_partition_parameters(sizes, world_size)[::-1]

    RUBRIC.run("test_partition", reversed_ranks)

    def worse(sizes, world_size):  # one parameter moved onto the fullest rank's neighbour
        shards = reference_partition_parameters(sizes, world_size)
        if world_size > 1 and shards[1]:
            shards[0] = sorted(shards[0] + [shards[1].pop()])
        return shards

    assert "largest shard holds" in _message("test_partition", worse)
    descending = lambda sizes, world_size: [s[::-1] for s in reference_partition_parameters(sizes, world_size)]  # noqa: E731
    assert "is not in ascending order" in _message("test_partition", descending)
    twice = lambda sizes, world_size: [list(range(len(sizes)))] * world_size  # noqa: E731
    assert "belong to more than one rank" in _message("test_partition", twice)
    assert "should return 2 lists" in _message("test_partition", lambda sizes, world_size: [])


def test_the_targeted_partition_cases_make_the_naive_dealings_badly_unbalanced():
    (sizes, ranks, _), (blocks, block_ranks, _) = list(partition_cases())[:2]
    loads = lambda shards, sizes: max(sum(sizes[i] for i in s) for s in shards)  # noqa: E731
    round_robin = [list(range(r, len(sizes), ranks)) for r in range(ranks)]
    assert loads(round_robin, sizes) >= 1.5 * loads(reference_partition_parameters(sizes, ranks), sizes)
    contiguous = [list(range(r * 2, r * 2 + 2)) for r in range(block_ranks)]
    assert loads(contiguous, blocks) >= 1.5 * loads(reference_partition_parameters(blocks, block_ranks), blocks)


# --- the sharded step --------------------------------------------------------------------------------------

def test_sharded_step_momentum_and_wrong_updates_are_named():
    def all_momentum(params, grads, momentum, group, lr, beta):
        new_params, _ = REFERENCES["sharded_sgd_step"](params, grads, momentum, group, lr, beta)
        return new_params, {i: torch.zeros_like(p) for i, p in enumerate(params)}

    assert "this rank owns" in _message("test_sharded_step", all_momentum)

    def double_step(params, grads, momentum, group, lr, beta):
        new_params, new_momentum = REFERENCES["sharded_sgd_step"](params, grads, momentum, group, 2 * lr, beta)
        return new_params, new_momentum

    assert "differs from one SGD-momentum step" in _message("test_sharded_step", double_step)

    def stale_momentum(params, grads, momentum, group, lr, beta):
        new_params, _ = REFERENCES["sharded_sgd_step"](params, grads, momentum, group, lr, beta)
        return new_params, {i: m.clone() for i, m in momentum.items()}

    assert "is not beta·m + g" in _message("test_sharded_step", stale_momentum)


def test_the_sandbox_runs_the_ranks_with_the_labs_runner():
    assert distributed_checks.RUNNERS == {"ranks": distributed_checks.run_ranks_logged}


# --- the notebook's closing block --------------------------------------------------------------------------

def test_the_closing_block_runs_the_students_average_on_two_gloo_processes(capsys):
    """It is a markdown code block (grading never starts processes); copied into a cell, it runs as written."""
    cells = json.loads(FILES.source.read_text(encoding="utf-8"))["cells"]
    text = "".join(cells[-1]["source"])
    assert cells[-1]["cell_type"] == "markdown" and "not graded" in text
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    namespace = kernel(FILES)
    exec(compile(block, "closing block", "exec"), namespace)  # noqa: S102 (the notebook's own code)
    assert capsys.readouterr().out.split() == ["True", "True"] * 2
