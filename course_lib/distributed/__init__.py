"""Training on many processes: data parallelism from scratch beside torch's own, launched by torchrun.

* :mod:`.data_parallel` — gradients averaged across processes with ``torch.distributed`` collectives, one
  all-reduce per parameter and then bucketed; gradient accumulation; pinned to
  ``DistributedDataParallel`` and to one process trained on the combined batch.
* :mod:`.zero` — optimizer-state sharding (ZeRO stage 1) from scratch, pinned to torch's
  ``ZeroRedundancyOptimizer``; optimizer memory per rank.
* :mod:`.launch` — process-group set-up and tear-down from torchrun's environment (gloo on CPUs, nccl on
  GPUs), rank-0-only writing, spawning a few processes from a notebook, and clear errors when a rank fails.
* :mod:`.trainer` — the course GPT's training loop (``scripts/train_gpt.py``) on one process or under torchrun /
  ``accelerate launch``: torch's DDP, each rank a slice of one global batch, rank 0 alone writing, exact resuming.
* :mod:`.benchmark` — all-reduce time against tensor size, and training throughput for 1 and N processes.
* :mod:`.simulated` — ranks as threads of one process with ``all_reduce`` and ``broadcast`` (``run_ranks``), and
  the same interface over ``torch.distributed`` (``TorchGroup``): what lab 10 grades its collective functions on.
* :mod:`.widgets` — the chapter's pictures: the ring all-reduce step by step and its cost model, who holds what
  under data, tensor and pipeline parallelism (GPipe's schedule), memory per rank under ZeRO stages 1-3.
* :mod:`.workers` — the equality runs the tests launch (``torchrun -m course_lib.distributed.workers``) and
  the chapter can spawn: every way of training a tiny GPT against one process on the combined batch.

Built on :mod:`course_lib.models` (the course's GPT) and :mod:`course_lib.pretraining` (the learning-rate
schedule). Not covered: tensor and pipeline parallelism in code (the chapter explains them), mixed precision.
"""
from .data_parallel import (
    DataParallel, average_gradients, average_gradients_bucketed, broadcast_parameters, gradient_buckets,
)
from .launch import (
    RankFailedError, default_backend, get_rank, get_world_size, is_rank_zero, on_rank_zero, setup_process_group, spawn,
    teardown,
)
from .zero import ShardedOptimizer, optimizer_state_bytes, partition_parameters
from .trainer import TrainSettings, rank_windows, train
from .benchmark import recorded_benchmark, time_all_reduce, train_throughput

__all__ = [
    "setup_process_group", "teardown", "is_rank_zero", "on_rank_zero", "get_rank", "get_world_size", "default_backend",
    "spawn", "RankFailedError",
    "average_gradients", "average_gradients_bucketed", "gradient_buckets", "broadcast_parameters", "DataParallel",
    "ShardedOptimizer", "partition_parameters", "optimizer_state_bytes",
    "TrainSettings", "train", "rank_windows",
    "time_all_reduce", "train_throughput", "recorded_benchmark",
]
