"""course_lib.distributed.benchmark: the recorded all-reduce and throughput tables, and a live all-reduce timing.

Pinned: the record (course_lib/checkpoints/distributed_benchmark.json) has every size from 1 KiB to 64 MiB and
1 and 2 processes, its derived columns recompute from its measured ones (bandwidths from bytes and median time,
tokens per second from tokens and seconds, tokens from steps × global batch × context, speed-ups), and it states
the machine's load; the bus-bandwidth formula on known cases. The live 2-process gloo timing (which first checks
that the all-reduce sums) runs in tests/distributed/test_train_gpt.py's spawn job, to share its start-up.
"""
from __future__ import annotations

import pytest

from course_lib.distributed.benchmark import (
    ALL_REDUCE_SIZES, BENCHMARK_RECORD, bus_bandwidth, recorded_benchmark, time_all_reduce,
)


def test_bus_bandwidth_scales_by_the_ring_factor():
    assert bus_bandwidth(2_000_000_000, 2.0, 2) == (1.0, 1.0)  # n = 2: each process sends and receives the tensor
    assert bus_bandwidth(1_000_000_000, 1.0, 4) == (1.0, 1.5)  # 2(n − 1)/n = 1.5
    assert bus_bandwidth(8_000_000_000, 1.0, 8)[1] == pytest.approx(8 * 1.75)
    with pytest.raises(ValueError, match="seconds > 0"):
        bus_bandwidth(1024, 0.0, 2)


def test_the_record_covers_every_size_and_both_process_counts_and_states_its_load():
    record = recorded_benchmark()
    assert record["all_reduce"]["backend"] == "gloo" and record["all_reduce"]["world_size"] == 2
    assert [row["bytes"] for row in record["all_reduce"]["rows"]] == ALL_REDUCE_SIZES
    assert ALL_REDUCE_SIZES[0] == 2 ** 10 and ALL_REDUCE_SIZES[-1] == 2 ** 26  # 1 KiB … 64 MiB
    assert [row["world_size"] for row in record["throughput"]["rows"]] == [1, 2]
    for key in ("load_before", "load_after"):
        assert set(record[key]) >= {"load_1min", "load_5min", "load_15min", "cores"}
    assert record["command"].startswith("python scripts/bench_distributed.py")
    assert record["machine"]["torch"].startswith("2.")


def test_the_record_derived_columns_recompute():
    record = recorded_benchmark()
    world = record["all_reduce"]["world_size"]
    for row in record["all_reduce"]["rows"]:
        assert row["median_seconds"] > 0 and row["repeats"] >= 3
        algorithm, bus = bus_bandwidth(row["bytes"], row["median_seconds"], world)
        assert row["algbw_GBps"] == pytest.approx(algorithm, rel=1e-9)
        assert row["busbw_GBps"] == pytest.approx(bus, rel=1e-9)
    throughput = record["throughput"]
    rows = throughput["rows"]
    for row in rows:
        assert row["batch_size"] == throughput["batch_size_per_process"]  # the same batch per process
        assert row["global_batch_size"] == row["world_size"] * row["batch_size"]
        assert row["tokens"] == row["steps"] * row["global_batch_size"] * throughput["context"]
        assert row["tokens_per_second"] == pytest.approx(row["tokens"] / row["training_seconds"], rel=1e-3)
        assert row["speedup"] == pytest.approx(row["tokens_per_second"] / rows[0]["tokens_per_second"], rel=1e-9)


def test_a_missing_record_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/bench_distributed.py"):
        recorded_benchmark(tmp_path / "none.json")
    assert BENCHMARK_RECORD.name == "distributed_benchmark.json"


def test_time_all_reduce_refuses_what_it_cannot_time():
    # The live 2-process timing shares the spawn job of tests/distributed/test_train_gpt.py (one start-up).
    with pytest.raises(ValueError, match="at least 2 processes"):
        time_all_reduce([1024], world_size=1)
    with pytest.raises(ValueError, match="multiples of 4"):
        time_all_reduce([1023])
