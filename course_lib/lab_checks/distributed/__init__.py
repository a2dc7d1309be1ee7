"""Hidden checks of lab 10, distributed training: gradient averaging (per tensor, in buckets), the ring
all-reduce step by step, ZeRO-1's partition and one sharded optimizer step.

``RUBRIC`` lists the graded cells of ``labs/source/10_distributed/distributed.ipynb`` with their points and
checks, ``REFERENCES`` the course's version of every function the lab asks for, in the lab's signatures: the
library's rules where it has them in that form (:func:`course_lib.distributed.data_parallel.gradient_buckets`,
:func:`course_lib.distributed.zero.partition_parameters`, :func:`course_lib.distributed.widgets.ring_all_reduce`),
and short group-based versions of what the library does with ``torch.distributed`` directly. The checks live
in three parts: :mod:`.averaging`, :mod:`.ring` and :mod:`.zero`; :mod:`.ranks` runs a student's function on
simulated ranks.

The lab's collective functions take a *group* (:mod:`course_lib.distributed.simulated`), so grading runs in
one process: the ranks are threads. ``RUNNERS`` names the runner the sandboxed grader uses to run a student's
function on those ranks inside its sandbox; everything a check exchanges with student code is tensors, lists,
dicts, tuples, ints and strings. Not covered: real processes (the notebook's last, ungraded cell runs one),
timings, other collectives than all-reduce and broadcast.
"""
from __future__ import annotations

from ...distributed.simulated import run_ranks_logged
from ..rubric import Criterion, Rubric
from .averaging import (
    check_average, check_bucketed, check_buckets, reference_average_gradients, reference_average_gradients_bucketed,
    reference_gradient_buckets,
)
from .ranks import RUNNER
from .ring import check_ring, reference_ring_all_reduce_steps
from .zero import check_partition, check_sharded_step, reference_partition_parameters, reference_sharded_sgd_step

__all__ = ["REFERENCES", "RUBRIC", "RUNNERS"]

# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "average_gradients": reference_average_gradients,
    "gradient_buckets": reference_gradient_buckets,
    "average_gradients_bucketed": reference_average_gradients_bucketed,
    "ring_all_reduce_steps": reference_ring_all_reduce_steps,
    "partition_parameters": reference_partition_parameters,
    "sharded_sgd_step": reference_sharded_sgd_step,
}

# The sandboxed grader runs a student's collective function on simulated ranks with this (course_grader.sandbox_part).
RUNNERS = {RUNNER: run_ranks_logged}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_average", 2, check_average, ("average_gradients",),
              "each gradient's mean over the ranks: one all-reduce (a sum) per tensor, divided by the world size"),
    Criterion("test_buckets", 2, check_buckets, ("gradient_buckets",),
              "consecutive buckets of at most bucket_bytes, a larger tensor alone, no empty bucket"),
    Criterion("test_bucketed", 2, check_bucketed, ("average_gradients_bucketed",),
              "one all-reduce per bucket, the same means as per tensor, each in its own shape"),
    Criterion("test_ring", 3, check_ring, ("ring_all_reduce_steps",),
              "the 2N − 1 states of the ring all-reduce: reduce-scatter adds, all-gather copies"),
    Criterion("test_partition", 2, check_partition, ("partition_parameters",),
              "every parameter to one rank, shards ascending, no shard larger than the greedy rule's"),
    Criterion("test_sharded_step", 3, check_sharded_step, ("sharded_sgd_step",),
              "each rank steps its own shard (momentum first), every shard broadcast from its owner"),
))
