"""course_lib.long_range.benchmark: the recorded table (its shape, its summary recomputed from its rows, full
attention's memory growing like T², tiled attention's like T) and one quick fresh-process measurement."""
from __future__ import annotations

import json

import matplotlib
import pytest

from course_lib.long_range import benchmark
from course_lib.long_range.benchmark import PATTERNS, SETTING, measure, plot_benchmark, recorded_benchmark
from tests.paths import REPO

matplotlib.use("Agg")


@pytest.fixture(scope="module", params=[benchmark.RECORDED, benchmark.RERUN])
def record_file(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def record(record_file):
    return recorded_benchmark(record_file)


def _measured(entry) -> bool:
    return isinstance(entry, dict) and "error" not in entry


def test_the_record_is_the_shipped_file_with_its_setting_and_load(record_file, record):
    assert record == json.loads((REPO / "course_lib" / "checkpoints" / record_file).read_text())
    assert record["command"].startswith("python scripts/bench_long_range.py")
    assert record["setting"] == SETTING and list(record["patterns"]) == list(PATTERNS)
    assert len(record["load_average_before"]) == 3 and len(record["load_average_after"]) == 3
    # the whole script keeps to its five minutes, but for the one configuration it started before the deadline;
    # on a machine loaded beyond twice its cores the required 1k-16k lengths alone can take longer
    longest = max(entry["wall_seconds"] for row in record["rows"] for entry in row.values() if _measured(entry))
    assert record["seconds"] <= 300 + longest or record["load_average_before"][0] > 2 * record["cpu_count"]


def test_every_row_has_every_pattern_measured_or_said_why_not(record):
    lengths = [row["seq_len"] for row in record["rows"]]
    assert lengths[:5] == [1024, 2048, 4096, 8192, 16384]
    for row in record["rows"]:
        assert set(row) == {"seq_len", *PATTERNS}
        for pattern in PATTERNS:
            entry = row[pattern]
            if _measured(entry):
                assert entry["peak_mb"] > 0 and entry["seconds"] > 0 and entry["threads"] == record["threads"]
            elif entry is None:  # not run: a shorter one failed or was skipped, or the skip list says why
                said = any(f"{pattern} at T={row['seq_len']}:" in line for line in record["skipped"])
                earlier = [r[pattern] for r in record["rows"] if r["seq_len"] < row["seq_len"]]
                assert said or not _measured(earlier[-1]), (pattern, row["seq_len"])
            else:
                assert entry["error"]
    for pattern in ("full", "sdpa", "tiled", "lsh", "sliding", "bigbird"):
        assert all(_measured(row[pattern]) for row in record["rows"][:3]), pattern  # 1k-4k: everything measured


def test_the_summary_ratios_recompute_from_the_rows(record):
    rows = {str(row["seq_len"]): row for row in record["rows"]}
    for pattern in ("tiled", "full"):
        ratios = record["summary"][f"{pattern}_over_sdpa"]
        assert set(ratios) == set(rows)
        for length, ratio in ratios.items():
            row = rows[length]
            if _measured(row[pattern]) and _measured(row["sdpa"]):
                assert ratio == round(row[pattern]["seconds"] / row["sdpa"]["seconds"], 2)
            else:
                assert ratio is None
        assert record["summary"][f"{pattern}_over_sdpa_at_4096"] == ratios["4096"] is not None


def test_the_in_process_timing_rows_recompute(record):
    rows = record["timing"]["rows"]
    assert rows and {(row["threads"], row["seq_len"]) for row in rows} <= {(t, n) for t in (1, 2)
                                                                          for n in (512, 1024, 2048, 4096)}
    for row in rows:
        for pattern in ("full", "tiled"):  # the ratio from the unrounded times: equal within the rows' rounding
            mine, sdpa = row[f"{pattern}_seconds"], row["sdpa_seconds"]
            rounding = 0.5 * 10.0 ** -len(repr(sdpa).split(".")[1])  # half the last kept digit
            slack = (mine / sdpa) * (rounding / sdpa + rounding / mine) + 0.005
            assert row[f"{pattern}_over_sdpa"] == pytest.approx(mine / sdpa, abs=slack), row


def _peaks(record, pattern):
    return {row["seq_len"]: row[pattern]["peak_mb"] for row in record["rows"] if _measured(row[pattern])}


def test_full_attention_memory_grows_like_t_squared_and_tiled_like_t(record):
    full, tiled = _peaks(record, "full"), _peaks(record, "tiled")
    assert max(full) >= 8192 and max(tiled) >= 16384
    for n in full:
        if n >= 2048 and n // 2 in full:  # above the fixed costs, doubling T multiplies the T×T tensors by 4
            assert 3.3 < full[n] / full[n // 2] < 4.7, (n, full)
    for n in tiled:
        if n // 2 in tiled:  # the output and a row statistic: doubling T adds about as much as T itself holds
            assert tiled[n] / tiled[n // 2] < 2.2, (n, tiled)
    # the point of the chapter: at 8k tokens the T×T tensors are 1000 times the tiles
    assert tiled[8192] * 50 < full[8192]


def test_the_plot_has_memory_and_time_against_t_for_every_measured_pattern(record):
    import matplotlib.pyplot as plt

    fig = plot_benchmark(record)
    try:
        memory_axis, time_axis = fig.axes[:2]
        assert memory_axis.get_xscale() == memory_axis.get_yscale() == time_axis.get_yscale() == "log"
        labels = [line.get_label() for line in memory_axis.get_lines()]
        assert labels == [p for p in PATTERNS if _peaks(record, p)]
        full_line = memory_axis.get_lines()[labels.index("full")]
        assert list(full_line.get_ydata()) == list(_peaks(record, "full").values())
    finally:
        plt.close(fig)


def test_the_rerun_finds_the_same_peak_memory_and_only_the_two_records_are_read():
    """Peak memory is a property of the computation: the second run, on a fresh VM of the same kind, finds the
    same peaks. (Times depend on the machine: both runs' ratios to SDPA are kept as measured, and not compared.)"""
    first, second = recorded_benchmark(), recorded_benchmark(benchmark.RERUN)
    assert first["date"] < second["date"] and first["setting"] == second["setting"]
    pairs = [(a[p], b[p]) for a, b in zip(first["rows"], second["rows"]) for p in PATTERNS
             if _measured(a[p]) and _measured(b[p])]
    assert len(pairs) >= 25
    assert all(abs(a["peak_mb"] - b["peak_mb"]) <= max(1.0, 0.02 * a["peak_mb"]) for a, b in pairs), pairs
    with pytest.raises(ValueError, match="no recorded long-range benchmark named"):
        recorded_benchmark("reformer_memory.json")


def test_bad_requests_get_a_clear_error():
    with pytest.raises(ValueError, match="unknown pattern 'dense'"):
        measure("dense", 1024)
    with pytest.raises(ValueError, match=r"unknown settings \['widow'\]"):
        measure("tiled", 1024, widow=3)


def test_a_pattern_whose_function_is_missing_is_not_available_without_starting_a_process(monkeypatch):
    from course_lib.long_range import sliding_window

    monkeypatch.delattr(sliding_window, "sliding_window_attention")
    result = measure("sliding", 1024)
    assert result == {"error": "not available: course_lib.long_range.sliding_window.sliding_window_attention "
                               "is not in this checkout yet", "not_available": True}


def test_the_measuring_child_runs_the_job_s_runner_and_ours_refuses_a_foreign_job():
    """reformer.memory's child calls ``job["runner"]`` (how measure() hands it run_job); run_job refuses a
    pattern it does not know, naming it."""
    from course_lib.reformer import memory

    assert memory.run_child({"runner": "builtins:len", "seq_len": 8}) == 2  # len(job): the runner got the job
    with pytest.raises(ValueError, match="nonsense"):
        benchmark.run_job({"kind": "long_range", "pattern": "nonsense", "seq_len": 8, "threads": 1,
                           **benchmark.SETTING})


@pytest.mark.slow
def test_a_quick_fresh_process_measurement_full_holds_its_scores_tiled_does_not():
    """Two heads at 1,024 tokens: full attention keeps the (2, 1024, 1024) fp32 weights it returns (8 MB)
    and its scores beside them; tiled attention never holds more than a few tiles and the output."""
    full = measure("full", 1024, heads=2)
    tiled = measure("tiled", 1024, heads=2)
    assert _measured(full) and _measured(tiled), (full, tiled)
    weights_mb = 2 * 1024 * 1024 * 4 / 2**20
    assert full["peak_mb"] > 1.5 * weights_mb
    assert tiled["peak_mb"] < full["peak_mb"] / 2
    assert full["threads"] == tiled["threads"] == 1 and full["wall_seconds"] >= full["seconds"] > 0
