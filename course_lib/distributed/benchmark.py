"""Measured costs of data parallelism on this machine: all-reduce time against tensor size, and training throughput.

* :func:`time_all_reduce` — ``world_size`` spawned CPU processes (gloo) all-reduce float32 tensors of each size; a
  repeat's time is the slowest rank's (barrier, all-reduce, max over ranks), and a size's figure is the median of
  its repeats. Two bandwidths derive from it, as NCCL's own benchmarks define them:
  *algorithm bandwidth* ``bytes / seconds`` and *bus bandwidth* ``algbw × 2(n − 1)/n``, the bytes each process
  actually sends and receives in a ring all-reduce, comparable across process counts.
* :func:`train_throughput` — :func:`course_lib.distributed.trainer.train` (what ``scripts/train_gpt.py`` runs) for
  a fixed number of steps on ``world_size`` spawned processes; tokens per second of the whole job (every rank's
  tokens), the same batch per process, so the global batch grows with the processes. The time is the loop's,
  first step included (DDP builds its buckets there), tokenizer and evaluation excluded.
* :func:`recorded_benchmark` — the record ``scripts/bench_distributed.py`` wrote
  (``course_lib/checkpoints/distributed_benchmark.json``), for the chapter.

Timed figures only mean something on a quiet machine: the record carries the load average before and after.
Not covered: nccl timings (no GPU was lent where this was written), multi-node links, overlap of communication with
the backward pass (DDP does it; the figures here time the collective alone).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..runtime import CHECKPOINT_DIR
from .launch import setup_process_group, spawn, teardown
from .trainer import TrainSettings, train

__all__ = ["BENCHMARK_RECORD", "ALL_REDUCE_SIZES", "bus_bandwidth", "all_reduce_rows", "time_all_reduce", "train_throughput",
           "recorded_benchmark", "machine_load"]

BENCHMARK_RECORD = CHECKPOINT_DIR / "distributed_benchmark.json"  # scripts/bench_distributed.py
ALL_REDUCE_SIZES = [2 ** k for k in range(10, 27, 2)]  # 1 KiB, 4 KiB, … 64 MiB


def bus_bandwidth(size_bytes: int, seconds: float, world_size: int) -> tuple[float, float]:
    """``(algorithm, bus)`` bandwidth in GB/s of an all-reduce of ``size_bytes`` that took ``seconds``.
    A ring all-reduce sends and receives ``2(n − 1)/n`` times the tensor per process: the bus figure scales by it."""
    if seconds <= 0 or world_size < 1:
        raise ValueError(f"need seconds > 0 and world_size ≥ 1, got {seconds}, {world_size}")
    algorithm = size_bytes / seconds / 1e9
    return algorithm, algorithm * 2 * (world_size - 1) / world_size


def _repeats_for(size_bytes: int, repeats: int) -> int:
    return max(3, repeats // 4) if size_bytes >= 2 ** 24 else repeats  # big tensors vary less and cost more


def all_reduce_rows(sizes: list[int], repeats: int = 20, warmup: int = 2) -> list[dict]:
    """In an open process group, on every rank: for each size, warm-up all-reduces, then timed ones; a repeat's time
    is the slowest rank's. First checks that the all-reduce sums (a wrong collective would time nothing useful)."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    check = torch.full((4,), float(rank + 1), device=device)
    dist.all_reduce(check)  # a sum, so every rank holds 1 + 2 + … + world_size
    if not torch.all(check == world_size * (world_size + 1) / 2):
        raise RuntimeError(f"rank {rank}: all_reduce gave {check.tolist()}, not the sum of 1 … {world_size}")
    rows = []
    for size in sizes:
        tensor = torch.ones(size // 4, dtype=torch.float32, device=device)  # (size / 4,) float32 = size bytes
        for _ in range(warmup):
            dist.all_reduce(tensor)
        count = _repeats_for(size, repeats)
        times = torch.zeros(count, dtype=torch.float64)
        for index in range(count):
            dist.barrier()  # everyone starts together: the time is the collective's, not a late arrival's
            start = time.perf_counter()
            dist.all_reduce(tensor)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # nccl returns before the GPU is done
            times[index] = time.perf_counter() - start
        times = times.to(device)
        dist.all_reduce(times, op=dist.ReduceOp.MAX)  # a repeat lasts as long as its slowest rank
        median = statistics.median(times.tolist())
        algorithm, bus = bus_bandwidth(size, median, world_size)
        rows.append(dict(bytes=size, repeats=count, median_seconds=median, algbw_GBps=algorithm, busbw_GBps=bus))
    return rows


def _all_reduce_rank(sizes: list[int], repeats: int, warmup: int) -> list[dict]:
    setup_process_group("gloo")
    try:
        return all_reduce_rows(sizes, repeats, warmup)
    finally:
        teardown()


def time_all_reduce(sizes: list[int] = ALL_REDUCE_SIZES, world_size: int = 2, repeats: int = 20,
                    warmup: int = 2, timeout: float = 240.0) -> list[dict]:
    """Median all-reduce time per size (bytes, multiples of 4) on ``world_size`` gloo processes: a row per size."""
    if world_size < 2:
        raise ValueError(f"an all-reduce needs at least 2 processes, got world_size={world_size}")
    if not sizes or any(size < 4 or size % 4 for size in sizes):
        raise ValueError(f"sizes must be positive multiples of 4 bytes (float32), got {sizes}")
    return spawn(_all_reduce_rank, world_size, list(sizes), repeats, warmup, timeout=timeout)[0]


def _train_rank(settings: TrainSettings) -> dict | None:
    return train(settings)


def train_throughput(world_size: int, steps: int = 30, batch_size: int = 8, model: str = "small",
                     timeout: float = 240.0) -> dict:
    """Train for ``steps`` on ``world_size`` spawned processes (``batch_size`` windows each); rank 0's record:
    ``tokens`` (all ranks), ``training_seconds``, ``tokens_per_second``, ``global_batch_size``."""
    settings = TrainSettings(steps=steps, batch_size=batch_size, model=model, dry_run=True, sample_tokens=0,
                             eval_every=float("inf"), final_eval_windows=1)  # time the training, not evaluation
    record = spawn(_train_rank, world_size, settings, timeout=timeout)[0]
    keep = ("world_size", "steps", "batch_size", "global_batch_size", "tokens", "training_seconds",
            "tokens_per_second", "model")
    return {key: record[key] for key in keep}


def machine_load() -> dict:
    """The 1-, 5- and 15-minute load averages and the core count: the context of every timed figure."""
    one, five, fifteen = os.getloadavg()
    return dict(load_1min=round(one, 2), load_5min=round(five, 2), load_15min=round(fifteen, 2),
                cores=os.cpu_count())


def recorded_benchmark(path=BENCHMARK_RECORD) -> dict:
    """The measured record, a dict: ``all_reduce`` (``backend``, ``world_size``, ``rows`` of ``bytes``, ``repeats``,
    ``median_seconds``, ``algbw_GBps``, ``busbw_GBps``), ``throughput`` (``model``, ``steps``,
    ``batch_size_per_process``, ``context``, ``rows`` of ``world_size``, ``global_batch_size``, ``tokens``,
    ``training_seconds``, ``tokens_per_second``, ``speedup``), ``machine``, ``load_before``, ``load_after``,
    ``date``, ``command``, ``provisional`` (True: the machine was loaded before the start, 1-minute load ≥ half the cores)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python scripts/bench_distributed.py` to measure it")
    return json.loads(path.read_text(encoding="utf-8"))
