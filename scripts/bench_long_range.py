"""Peak memory and time of one attention layer's forward for every long-range pattern, 1k to 16k tokens and beyond.

    python scripts/bench_long_range.py                 # the table, the ratios and the plot (≤ 5 minutes)
    python scripts/bench_long_range.py --quick         # 1k-4k tokens, about a minute
    python scripts/bench_long_range.py --record        # also write course_lib/checkpoints/long_range_memory.json

Every configuration runs in a fresh process (course_lib.long_range.benchmark.measure, on the Reformer
benchmark's measuring server): B=1, 8 heads of 64, fp32, inference, 1 torch thread unless --threads. A
configuration is skipped, and the record says why, when its predicted memory is over --max-gb (full
attention's T×T scores and weights) or, beyond 16k tokens, its predicted time (the previous length's, times
2 for the patterns linear in T and 4 for the quadratic ones) would overrun the --budget. Then the readable attention and
tiled attention are timed against SDPA in this process (median of repeats, 1 and 2 threads, T=512-4096,
within --timing-budget more seconds).
The load average before and after is recorded: the machine may be shared.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

from course_lib.long_range.benchmark import (PATTERNS, RECORDED, SETTING, measure, plot_benchmark, time_ratios,
                                             unavailable)
from course_lib.reformer.memory import describe

REPO = pathlib.Path(__file__).resolve().parents[1]
REQUIRED_UP_TO = 16384  # every pattern is measured up to here whatever the time (memory permitting)
TIME_GROWTH = {"full": 4, "sdpa": 4, "tiled": 4, "sliding": 2, "bigbird": 2, "lsh": 2}  # × per doubling of T


def full_gb(seq_len: int) -> float:
    """Full attention's scores and weights, both alive at once: 2 · H · T² fp32 numbers."""
    return 2 * SETTING["heads"] * seq_len**2 * 4 / 2**30


def ratio(row: dict, pattern: str) -> float | None:
    """``pattern``'s seconds over SDPA's in one row, to 2 decimals (None when either was not measured)."""
    mine, sdpa = row.get(pattern), row.get("sdpa")
    if not (isinstance(mine, dict) and isinstance(sdpa, dict) and "seconds" in mine and "seconds" in sdpa):
        return None
    return round(mine["seconds"] / sdpa["seconds"], 2)


def summarise(rows: list[dict]) -> dict:
    """The ratios to SDPA's time at every length, and at 4,096 tokens (the issue's yardstick)."""
    summary = {f"{p}_over_sdpa": {str(r["seq_len"]): ratio(r, p) for r in rows} for p in ("tiled", "full")}
    for pattern in ("tiled", "full"):
        summary[f"{pattern}_over_sdpa_at_4096"] = summary[f"{pattern}_over_sdpa"].get("4096")
    return summary


def rounded(value):
    """Seconds to 0.0001 (so the ratios recompute from the rows), ratios to 0.01, MB to 0.1, through dicts
    and lists."""
    if isinstance(value, dict):
        digits = lambda key: 4 if "seconds" in key else 2 if "_over_" in key else 1  # noqa: E731
        return {key: round(item, digits(key)) if isinstance(item, float) else rounded(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k-4k tokens only")
    parser.add_argument("--max-len", type=int, default=65536, help="longest sequence to try")
    parser.add_argument("--budget", type=float, default=250, help="seconds for the memory table beyond 16k tokens")
    parser.add_argument("--timing-budget", type=float, default=50, help="seconds more for the in-process timing")
    parser.add_argument("--max-gb", type=float, default=8.0, help="skip full attention predicted above this")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each measuring process")
    parser.add_argument("--no-timing", action="store_true", help="skip the in-process readable/tiled timing")
    parser.add_argument("--plot", default=str(REPO / "test-artifacts" / "long_range_memory.png"), help="PNG path")
    parser.add_argument("--json", type=pathlib.Path, help="write the record here")
    parser.add_argument("--record", action="store_true", help=f"write course_lib/checkpoints/{RECORDED}")
    args = parser.parse_args(argv)
    if args.record:
        args.json = REPO / "course_lib" / "checkpoints" / RECORDED
    load_before, started = os.getloadavg(), time.perf_counter()
    import torch

    lengths, n = [], 1024
    while n <= (4096 if args.quick else args.max_len):
        lengths.append(n)
        n *= 2
    rows, skipped, last = [], [], {}
    for seq_len in lengths:
        if last and all(entry is None for entry in last.values()):
            break  # nothing was measured at the previous length: no longer one is tried
        row = {"seq_len": seq_len}
        for pattern in PATTERNS:
            spent = time.perf_counter() - started
            # the previous length's wall time (with its process start and repeats) times the growth per doubling
            predicted = last[pattern]["wall_seconds"] * TIME_GROWTH[pattern] if last.get(pattern) else 0.0
            if unavailable(pattern):
                row[pattern] = {"error": f"not available: {unavailable(pattern)}", "not_available": True}
            elif pattern in last and last[pattern] is None:
                row[pattern] = None  # a shorter length was not measured: no longer one is tried
            elif pattern == "full" and full_gb(seq_len) > args.max_gb:
                row[pattern] = None
                skipped.append(f"full at T={seq_len}: its scores and weights need {full_gb(seq_len):.0f} GB "
                               f"(> --max-gb {args.max_gb:g})")
            elif seq_len > REQUIRED_UP_TO and spent + predicted > args.budget:
                row[pattern] = None
                skipped.append(f"{pattern} at T={seq_len}: about {predicted:.0f} s more would overrun the "
                               f"{args.budget:g} s budget ({spent:.0f} s spent)")
            else:
                row[pattern] = measure(pattern, seq_len, threads=args.threads)
                if "error" in row[pattern]:
                    skipped.append(f"{pattern} at T={seq_len}: {row[pattern]['error']}")
            last[pattern] = row[pattern] if row[pattern] is not None and "error" not in row[pattern] else None
            print(f"T={seq_len:6d} {pattern:8s} {describe(row[pattern]):>8s} MB "
                  f"{describe(row[pattern], 'seconds', '.3f'):>8s} s", flush=True)
        rows.append(row)
    rows = rounded(rows)
    timing = [] if args.no_timing else rounded(time_ratios(seq_lens=(512, 1024, 2048, 4096), repeats=3,
                                                           stop_at=started + args.budget + args.timing_budget))
    if not args.no_timing and len(timing) < 8:
        skipped.append(f"in-process timing: {8 - len(timing)} of its 8 (threads, T) not started, past the "
                       f"{args.budget + args.timing_budget:g} s budget")
    for line in timing:
        print(f"in process, {line['threads']} thread(s), T={line['seq_len']}: readable / SDPA "
              f"{line['full_over_sdpa']:.2f}, tiled / SDPA {line['tiled_over_sdpa']:.2f}")
    summary = summarise(rows)
    print(f"at T=4096: tiled / SDPA {summary['tiled_over_sdpa_at_4096']}, "
          f"readable / SDPA {summary['full_over_sdpa_at_4096']}; skipped: {len(skipped)}")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    record = {
        "command": "python scripts/bench_long_range.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "hardware": cpu, "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "threads": args.threads,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.perf_counter() - started),
        "setting": SETTING, "patterns": PATTERNS,
        "note": "one attention forward (no grad) on inputs drawn before the measurement; peak_mb: peak resident "
                "memory above the child's baseline, over its first run (first_run_seconds, freed memory "
                "returned to the OS at once); seconds: the runs after it with glibc's usual heap reuse, median "
                "of up to 5 when one is under 0.5 s; null: not run (see skipped)",
        "rows": rows, "skipped": skipped, "summary": summary,
        "timing": {"note": "in one process, median of 3 repeats, B=1, H=8, d=64, fp32", "rows": timing},
    }
    fig = plot_benchmark(record)
    pathlib.Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)
    print(f"plot written to {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"record written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
