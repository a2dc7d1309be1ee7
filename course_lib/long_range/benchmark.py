"""Peak memory and time of one attention layer's forward, for every long-range pattern, each in a fresh process.

The setting (:data:`SETTING`): batch 1, 8 heads of 64, fp32, CPU, inference (``torch.no_grad``); queries,
keys and values are drawn before the measurement starts, so the peak is the attention's own working memory
and output. The patterns (:data:`PATTERNS`): the readable full attention (it also returns the T×T weights),
torch's SDPA, Longformer's sliding window (256 keys each side, 4 global tokens), BigBird's block-sparse
attention (blocks of 64, 3 random blocks), the Reformer's LSH attention layer as its own benchmark runs it
(chunks of 64, one hash round; this layer includes its two projections) and exact attention in tiles.

Each measurement runs in a child forked from ``course_lib.reformer.memory``'s measuring server (the peak
resident memory above the child's baseline, ``VmHWM``): :func:`measure` names :func:`run_job` as the child's
work (the job's ``runner``) and otherwise uses :func:`course_lib.reformer.memory.measure` unchanged, so running
out of memory is a result, not an exception. ``scripts/bench_long_range.py`` runs the whole table and records it
(:data:`RECORDED`, read back by :func:`recorded_benchmark`); :func:`plot_benchmark` draws it. A second run on
another machine of the same kind (:data:`RERUN`) is kept beside it: memory repeats to the megabyte, times do not.
:func:`time_ratios` times the readable attention and tiled attention against SDPA in this process.
Not covered: training (backward) memory, GPUs, batch sizes above 1.
"""
from __future__ import annotations

import json
import statistics
import time

from ..reformer import memory

__all__ = ["PATTERNS", "RECORDED", "RERUN", "SETTING", "measure", "plot_benchmark", "recorded_benchmark", "run_job",
           "time_ratios", "unavailable"]

RECORDED = "long_range_memory.json"  # in course_lib/checkpoints: written by scripts/bench_long_range.py --record
RERUN = "long_range_memory_rerun.json"  # the same script the next day on a fresh VM (--json), kept as measured
SETTING = {"batch": 1, "heads": 8, "head_dim": 64, "dtype": "float32", "window": 256, "global_tokens": 4,
           "block_size": 64, "random_blocks": 3, "lsh_chunk": 64, "num_hashes": 1, "tile_size": 256}
PATTERNS = {
    "full": "readable attention (course_lib.attention), T×T scores and weights",
    "sdpa": "torch.nn.functional.scaled_dot_product_attention",
    "sliding": "sliding window, 256 keys each side + 4 global tokens (sliding_window_attention)",
    "bigbird": "BigBird block-sparse, blocks of 64, 3 random blocks (bigbird_attention)",
    "lsh": "Reformer LSH self-attention layer, chunks of 64, 1 hash round (with its projections)",
    "tiled": "exact attention in 256 × 256 tiles (tiled_attention)",
}
WARM_UP_LENGTH = 512  # each child runs its pattern once at this length first: one-time set-up is not timed


def unavailable(pattern: str) -> str | None:
    """Why ``pattern`` cannot be measured in this checkout (its function is not there yet), or None."""
    needed = {"sliding": ("sliding_window", "sliding_window_attention"), "bigbird": ("bigbird", "bigbird_attention")}
    if pattern not in needed:
        return None
    module, name = needed[pattern]
    from importlib import import_module

    if not hasattr(import_module(f"course_lib.long_range.{module}"), name):
        return f"course_lib.long_range.{module}.{name} is not in this checkout yet"
    return None


def _attention(pattern: str, seq_len: int, settings: dict):
    """A function of no argument that runs ``pattern`` once at ``seq_len``, on inputs drawn now."""
    import torch

    from ..attention import scaled_dot_product_attention
    from .bigbird import bigbird_attention, bigbird_random_blocks
    from .sliding_window import sliding_window_attention
    from .tiled import tiled_attention

    batch, heads, dim = settings["batch"], settings["heads"], settings["head_dim"]
    if pattern == "lsh":
        from ..reformer.lsh_attention import LSHSelfAttention

        layer = LSHSelfAttention(heads * dim, heads, dim, settings["lsh_chunk"],
                                 memory.lsh_buckets(seq_len, settings["lsh_chunk"]),
                                 num_hashes=settings["num_hashes"], hash_seed=0).eval()
        hidden = torch.randn(batch, seq_len, heads * dim)  # (B, T, H·d)
        return lambda: layer(hidden)
    query, key, value = (torch.randn(batch, heads, seq_len, dim) for _ in range(3))  # (B, H, T, d) each
    if pattern == "full":
        return lambda: scaled_dot_product_attention(query, key, value)
    if pattern == "sdpa":
        return lambda: torch.nn.functional.scaled_dot_product_attention(query, key, value)
    if pattern == "tiled":
        return lambda: tiled_attention(query, key, value, tile_size=settings["tile_size"])
    if pattern == "sliding":
        global_positions = list(range(settings["global_tokens"]))
        return lambda: sliding_window_attention(query, key, value, settings["window"], global_positions)
    if pattern == "bigbird":
        plan = bigbird_random_blocks(seq_len // settings["block_size"], settings["random_blocks"], seed=0,
                                     training=True)  # a real random plan (eval's plan is all zeros)
        return lambda: bigbird_attention(query, key, value, settings["block_size"], plan)
    raise ValueError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")


def run_job(job: dict) -> dict:
    """The measuring child's work (a ``"long_range"`` job): set up, reset the peak, run once, then time."""
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    with torch.no_grad():
        _attention(job["pattern"], WARM_UP_LENGTH, job)()  # kernels' one-time set-up, before the peak resets
        run = _attention(job["pattern"], job["seq_len"], job)
        open("/proc/self/clear_refs", "w").write("5")  # the peak from here on: the inputs are in the baseline
        baseline = memory._status_mb("VmRSS")
        start = time.perf_counter()
        run()
        first_run = time.perf_counter() - start
        peak = memory._status_mb("VmHWM") - baseline
        _reuse_the_heap()
        times = []
        while len(times) < 5 and (not times or sum(times) < 0.5):  # repeat short runs: their median is steadier
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return {"peak_mb": peak, "baseline_mb": baseline, "seconds": statistics.median(times), "repeats": len(times),
            "first_run_seconds": first_run, "threads": torch.get_num_threads()}


def _reuse_the_heap() -> None:
    """For the timed runs, let glibc keep freed blocks up to 32 MB (its own dynamic threshold's ceiling).

    The measuring server fixes the mmap threshold at 64 KB so that the peak follows live tensors; but then
    every freed tile goes back to the OS and the next one is faulted in afresh, which doubles tiled
    attention's time (measured at T=4,096). Time is measured as an ordinary process would run.
    """
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD


def measure(pattern: str, seq_len: int, *, threads: int = 1, timeout: float = 600,
            memory_limit_mb: float | None = None, **overrides) -> dict:
    """One configuration in a fresh process: ``{"peak_mb", "baseline_mb", "first_run_seconds", "seconds",
    "repeats", "threads", "wall_seconds"}``, or ``{"error", ...}`` (``"out_of_memory": True`` when it ran out
    of memory, ``"not_available": True`` when the pattern's function is not in this checkout).

    ``overrides`` change :data:`SETTING` (``heads=2``, ``window=64``...). ``peak_mb`` and
    ``first_run_seconds`` come from one run; ``seconds`` from the runs after it, with glibc reusing freed
    memory as usual (:func:`_reuse_the_heap`): the median of up to five when one takes under half a second.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    unknown = set(overrides) - set(SETTING)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {', '.join(SETTING)}")
    reason = unavailable(pattern)
    if reason:
        return {"error": f"not available: {reason}", "not_available": True}
    job = {"kind": "long_range", "runner": f"{__name__}:run_job", "pattern": pattern, "seq_len": seq_len,
           "threads": threads, **SETTING, **overrides}
    return memory.measure(job, timeout, memory_limit_mb)


def time_ratios(seq_lens=(512, 1024, 2048, 4096), threads=(1, 2), repeats: int = 5, heads: int = 8,
                head_dim: int = 64, stop_at: float | None = None) -> list[dict]:
    """Median seconds of the readable attention, tiled attention and SDPA (B=1, fp32, no grad) in this process,
    and their ratios to SDPA: one dict per (threads, T). Each is run once untimed, then ``repeats`` times.
    ``stop_at``: a ``time.perf_counter()`` instant after which no further (threads, T) is started."""
    import torch
    import torch.nn.functional as F

    from ..attention import scaled_dot_product_attention
    from .tiled import tiled_attention

    def median_seconds(run):
        run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    rows, before = [], torch.get_num_threads()
    try:
        for count in threads:
            torch.set_num_threads(count)
            for seq_len in seq_lens:
                if stop_at is not None and time.perf_counter() > stop_at:
                    return rows
                query, key, value = (torch.randn(1, heads, seq_len, head_dim) for _ in range(3))
                with torch.no_grad():
                    sdpa = median_seconds(lambda: F.scaled_dot_product_attention(query, key, value))
                    full = median_seconds(lambda: scaled_dot_product_attention(query, key, value))
                    tiled = median_seconds(lambda: tiled_attention(query, key, value))
                rows.append({"threads": count, "seq_len": seq_len, "sdpa_seconds": sdpa, "full_seconds": full,
                             "tiled_seconds": tiled, "full_over_sdpa": full / sdpa, "tiled_over_sdpa": tiled / sdpa})
    finally:
        torch.set_num_threads(before)
    return rows


def recorded_benchmark(name: str = RECORDED) -> dict:
    """A run of ``scripts/bench_long_range.py`` shipped with the course, by default the one the chapter quotes
    (:data:`RECORDED`; :data:`RERUN` for the second): settings, hardware, load, one row per length, the summary ratios."""
    from ..runtime import CHECKPOINT_DIR

    if name not in (RECORDED, RERUN):
        raise ValueError(f"no recorded long-range benchmark named {name!r}: {RECORDED!r} or {RERUN!r}")
    return json.loads((CHECKPOINT_DIR / name).read_text())


def plot_benchmark(record: dict):
    """Peak memory and time against T, log-log, one line per pattern that has measurements: a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for index, pattern in enumerate(record["patterns"]):
        points = [(row["seq_len"], row[pattern]) for row in record["rows"]
                  if isinstance(row.get(pattern), dict) and "error" not in row[pattern]]
        if not points:
            continue
        lengths = [n for n, _ in points]
        style = dict(marker="os^vDx"[index % 6], label=pattern)
        memory_axis.plot(lengths, [r["peak_mb"] for _, r in points], **style)
        time_axis.plot(lengths, [r["seconds"] for _, r in points], **style)
    setting = record["setting"]
    where = f"B={setting['batch']}, H={setting['heads']}, d={setting['head_dim']}, {setting['dtype']}"
    memory_axis.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="peak MB above baseline",
                    title=f"Memory of one attention forward ({where})")
    time_axis.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="seconds",
                  title=f"Time, {record.get('threads', '?')} thread(s)")
    for axis in (memory_axis, time_axis):
        axis.set_xscale("log", base=2)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    return fig
