"""Training on many processes: data parallelism from scratch beside torch's own, launched by torchrun.

* :mod:`.data_parallel` — gradients averaged across processes with ``torch.distributed`` collectives, one
  all-reduce per parameter and then bucketed; gradient accumulation; pinned to
  ``DistributedDataParallel`` and to one process trained on the combined batch.
* :mod:`.zero` — optimizer-state sharding (ZeRO stage 1) from scratch, pinned to torch's
  ``ZeroRedundancyOptimizer``; optimizer memory per rank.
* :mod:`.launch` — process-group set-up and tear-down from torchrun's environment (gloo on CPUs, nccl on
  GPUs), rank-0-only writing, spawning a few processes from a notebook, and clear errors when a rank fails.
* :mod:`.benchmark` — all-reduce time against tensor size, and training throughput for 1 and N processes.
* :mod:`.widgets` — the chapter's pictures (the ring all-reduce, memory per rank).

Built on :mod:`course_lib.models` (the course's GPT) and :mod:`course_lib.pretraining` (the learning-rate
schedule). Not covered: tensor and pipeline parallelism in code (the chapter explains them), mixed precision.
"""
