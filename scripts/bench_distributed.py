"""Measure data parallelism's costs on this machine and record them for the chapter and the README.

    COURSE_DATA_DIR=../shared/data python scripts/bench_distributed.py            # ≤ 5 minutes, writes the record
    COURSE_DATA_DIR=../shared/data python scripts/bench_distributed.py --quick    # small sizes, prints only

1. All-reduce time against tensor size: 2 gloo processes, float32 tensors of 1 KiB … 64 MiB, median of repeats,
   with the algorithm and bus bandwidths (:func:`course_lib.distributed.benchmark.time_all_reduce`).
2. ``scripts/train_gpt.py``'s loop (the shipped 1.1 M-parameter model, 8 windows of 256 tokens per process) for a
   fixed number of steps on 1 and on 2 processes: tokens per second of the whole job; the global batch is 8 and 16.

Writes ``course_lib/checkpoints/distributed_benchmark.json`` with the machine, its load average before and after,
and the command. Timings mean little on a loaded machine: run it on a quiet one.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from course_lib.distributed.benchmark import (
    ALL_REDUCE_SIZES, BENCHMARK_RECORD, machine_load, time_all_reduce, train_throughput,
)
from course_lib.runtime import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 KiB … 64 KiB and 3 steps; print, write nothing")
    parser.add_argument("--steps", type=int, default=30, help="training steps per throughput run")
    parser.add_argument("--repeats", type=int, default=20, help="timed all-reduces per size (a quarter ≥ 16 MiB)")
    parser.add_argument("--out", type=Path, default=BENCHMARK_RECORD)
    args = parser.parse_args()
    sizes = ALL_REDUCE_SIZES[:4] if args.quick else ALL_REDUCE_SIZES
    steps, repeats = (3, 3) if args.quick else (args.steps, args.repeats)
    started, load_before = time.perf_counter(), machine_load()
    print(f"load before: {load_before}", flush=True)

    rows = time_all_reduce(sizes, world_size=2, repeats=repeats)
    print(f"{'bytes':>10} {'median ms':>10} {'algbw GB/s':>11} {'busbw GB/s':>11}")
    for row in rows:
        print(f"{row['bytes']:>10,} {row['median_seconds'] * 1e3:>10.3f} {row['algbw_GBps']:>11.3f} "
              f"{row['busbw_GBps']:>11.3f}", flush=True)

    throughput = [train_throughput(world_size, steps=steps) for world_size in (1, 2)]
    for row in throughput:
        row["speedup"] = row["tokens_per_second"] / throughput[0]["tokens_per_second"]
        print(f"{row['world_size']} process(es), global batch {row['global_batch_size']}: "
              f"{row['tokens_per_second']:,.0f} tokens/s ({row['speedup']:.2f}×)", flush=True)

    record = dict(
        command="python scripts/bench_distributed.py" + (" --quick" if args.quick else ""),
        # other work already running (1-minute load ≥ half the cores before the start) spoils the timings
        provisional=load_before["load_1min"] >= load_before["cores"] / 2,
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine=dict(cpu=cpu_name(), python=platform.python_version(), torch=torch.__version__),
        load_before=load_before, load_after=machine_load(), seconds=round(time.perf_counter() - started, 1),
        all_reduce=dict(backend="gloo", world_size=2, dtype="float32", warmup=2, rows=rows),
        throughput=dict(model="small", steps=steps, batch_size_per_process=8, context=256, rows=throughput),
    )
    print(f"load after: {record['load_after']}; {record['seconds']} s in all")
    if not args.quick:
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
