"""Peak memory of the Reformer's four tricks on CPU, after the Reformer blog post's four tables.

    python scripts/bench_reformer.py                      # all four tables (~5 minutes on 2 cores)
    python scripts/bench_reformer.py --quick              # smaller sizes (~1 minute)
    python scripts/bench_reformer.py --plot out.png --max-global-gb 4
    python scripts/bench_reformer.py --record             # also write course_lib/checkpoints/reformer_memory.json

Tables (course_lib.reformer models, fp32, CPU):

1. inference: global attention (chunk length = sequence length, no look-back: full T×T scores)
   vs local + LSH attention (chunks of 64, one chunk of look-back), against the sequence length;
2. inference with a big feed-forward (d_ff = 16384, one head): unchunked vs chunked (``--ff-chunk``,
   default 64; the blog's 1 works too but is weight-bandwidth bound on CPU: minutes);
3. training (forward + backward) with 2, 4 and 8 layers: ordinary autograd vs reversible layers,
   and the memory each added layer costs;
4. position embeddings for ``google/reformer-crime-and-punishment`` (n_max = 524,288): parameter
   counts of the whole model and inference memory, standard table vs axial.

How memory is measured (``course_lib.reformer.memory``): every configuration runs in a fresh
process, forked from a server that has imported torch once. The child resets the kernel's peak-RSS
counter (``echo 5 > /proc/self/clear_refs``), notes its resident memory, builds the model, runs it,
and reads the peak (``VmHWM``). The tables report the peak *above* that baseline: weights,
activations and temporaries, not the Python interpreter and torch libraries (except about 10 MB of
torch's code that the run reads back in). This is a real measurement (Linux only), not an estimate;
it includes allocator slack. Global attention is skipped where its score tensors alone would exceed ``--max-global-gb``
(the machine is shared); the table says so. ``--json FILE`` writes every result with the hardware,
the load average before and after and the time taken; ``--record`` writes it where the chapter reads it
(``course_lib.reformer.memory.recorded_benchmark``), for the sizes a 2 GB notebook cannot measure itself.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time

from course_lib.reformer.memory import RECORDED, global_scores_gb, measure

REPO = pathlib.Path(__file__).resolve().parents[1]


def table(title: str, header: list[str], rows: list[list]) -> str:
    lines = [f"\n### {title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mb(result: dict | None) -> str:
    if result is None:
        return "skipped"
    return result.get("error", f"{result['peak_mb']:.0f}") if "error" in result else f"{result['peak_mb']:.0f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, about a minute")
    parser.add_argument("--plot", default=str(REPO / "test-artifacts" / "reformer_memory.png"), help="PNG path")
    parser.add_argument("--ff-chunk", type=int, default=64,
                        help="feed-forward chunk size (the blog's 1 is weight-bandwidth bound: minutes on CPU)")
    parser.add_argument("--max-global-gb", type=float, default=6.0,
                        help="skip global attention when its score tensors would exceed this")
    parser.add_argument("--json", type=pathlib.Path, help="write every result, the hardware and the load here")
    parser.add_argument("--record", action="store_true",
                        help=f"write the JSON to course_lib/checkpoints/{RECORDED}, where the chapter reads it")
    args = parser.parse_args(argv)
    if args.record:
        args.json = REPO / "course_lib" / "checkpoints" / RECORDED
    load_before, started = os.getloadavg(), time.perf_counter()

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine())
    out = [f"Hardware: {cpu}, {torch.get_num_threads()} threads, "
           f"torch {torch.__version__}; peak resident memory above the post-import baseline, MB."]

    # 1. global vs LSH + local attention
    lengths = [1024, 2048, 4096, 8192] if args.quick else [2048, 4096, 8192, 16384, 32768, 65536]
    attention = {}
    for n in lengths:
        fits = global_scores_gb(n) <= args.max_global_gb
        attention[n] = (measure({"kind": "attention", "mode": "global", "seq_len": n}) if fits else None,
                        measure({"kind": "attention", "mode": "lsh", "seq_len": n}))
        print(f"attention T={n}: global {mb(attention[n][0])} MB, LSH+local {mb(attention[n][1])} MB", flush=True)
    rows = []
    for n, (g, lsh) in attention.items():
        ratio = f"{lsh['peak_mb'] / g['peak_mb']:.2f}" if g and "error" not in g and "error" not in lsh else "—"
        rows.append([n, mb(g), mb(lsh), ratio, f"{lsh.get('seconds', float('nan')):.1f}"])
    out.append(table("1. Inference, global vs local+LSH attention (2 layers, D=128, 1 head, batch 1)",
                     ["seq len", "global MB", "LSH+local MB", "LSH / global", "LSH s"], rows))
    skipped = [n for n, (g, _) in attention.items() if g is None]
    if skipped:
        out.append(f"Global attention skipped at {skipped}: its T×T scores would need more than "
                   f"{args.max_global_gb} GB (about {global_scores_gb(skipped[0]):.0f} GB at {skipped[0]}).")

    # 2. chunked feed-forward
    ff_lengths = [512, 1024, 2048] if args.quick else [1024, 2048, 4096]
    rows, ff = [], {}
    for n in ff_lengths:
        plain = measure({"kind": "feed_forward", "seq_len": n, "batch": 2, "chunk": 0})
        chunked = measure({"kind": "feed_forward", "seq_len": n, "batch": 2, "chunk": args.ff_chunk})
        ff[n] = (plain, chunked)
        saving = f"{1 - chunked['peak_mb'] / plain['peak_mb']:.0%}"
        rows.append([n, mb(plain), mb(chunked), saving, f"{plain['seconds']:.1f} / {chunked['seconds']:.1f}"])
        print(f"feed-forward T={n}: {mb(plain)} vs {mb(chunked)} MB", flush=True)
    out.append(table("2. Inference, feed-forward as the bottleneck (d_ff=16384, 1 head, batch 2)",
                     ["seq len", "unchunked MB", f"chunk size {args.ff_chunk} MB", "saving", "seconds (plain / chunked)"], rows))

    # 3. reversible layers in training
    layer_counts = [2, 4, 8]
    seq_len = 1024 if args.quick else 2048
    rev = {}
    for layers in layer_counts:
        rev[layers] = (measure({"kind": "reversible", "seq_len": seq_len, "batch": 2, "layers": layers,
                                "reversible": False}),
                       measure({"kind": "reversible", "seq_len": seq_len, "batch": 2, "layers": layers,
                                "reversible": True}))
        print(f"training {layers} layers: {mb(rev[layers][0])} vs {mb(rev[layers][1])} MB", flush=True)
    rows = [[n, mb(s), mb(r)] for n, (s, r) in rev.items()]
    span = layer_counts[-1] - layer_counts[0]
    per_layer = [(rev[layer_counts[-1]][i]["peak_mb"] - rev[layer_counts[0]][i]["peak_mb"]) / span for i in (0, 1)]
    rows.append(["per added layer", f"{per_layer[0]:.1f}", f"{per_layer[1]:.1f}"])
    out.append(table(f"3. Training (forward+backward), D=256, 2 heads, d_ff=1024, T={seq_len}, batch 2",
                     ["layers", "standard MB", "reversible MB"], rows))
    out.append(f"Reversible / standard memory per added layer: {per_layer[1] / per_layer[0]:.2f}")

    # 4. axial position embeddings
    axial = {flag: measure({"kind": "axial", "seq_len": 512, "batch": 8, "axial": flag}) for flag in (False, True)}
    rows = [[name, f"{axial[flag]['parameters']:,}", mb(axial[flag])]
            for name, flag in (("standard", False), ("axial", True))]
    out.append(table("4. crime-and-punishment config (n_max=524288), inference, batch 8 × 512 tokens",
                     ["position embeddings", "model parameters", "peak MB"], rows))
    print("\n".join(out))

    plot(args.plot, attention, ff, rev, axial)
    print(f"\nplot written to {args.plot}")
    if args.json:
        record = {
            "command": "python scripts/bench_reformer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.date.today().isoformat(), "hardware": out[0],
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "seconds": round(time.perf_counter() - started),
            "note": "peak_mb: peak resident memory above the child's post-import baseline (baseline_mb); "
                    "null: not measured (global attention's scores above --max-global-gb)",
            "attention": [{"seq_len": n, "global": g, "lsh": lsh} for n, (g, lsh) in attention.items()],
            "feed_forward": {"chunk": args.ff_chunk,
                             "rows": [{"seq_len": n, "plain": a, "chunked": b} for n, (a, b) in ff.items()]},
            "reversible": {"seq_len": seq_len,
                           "rows": [{"layers": n, "standard": a, "reversible": b} for n, (a, b) in rev.items()]},
            "axial": {"standard": axial[False], "axial": axial[True]},
            "tables": "\n".join(out),
        }
        args.json.write_text(json.dumps(rounded(record), indent=1) + "\n")
        print(f"results written to {args.json}")
    return 0


def rounded(value):
    """Floats to one decimal (MB and seconds), through dicts and lists."""
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def plot(path: str, attention, ff, rev, axial) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    ax = axes[0]
    ns = list(attention)
    glob = [(n, g["peak_mb"]) for n, (g, _) in attention.items() if g and "error" not in g]
    ax.plot([n for n, _ in glob], [m for _, m in glob], "o-", label="global")
    ax.plot(ns, [attention[n][1]["peak_mb"] for n in ns], "s-", label="LSH + local")
    ax.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="peak MB", title="Attention (inference)")
    ax = axes[1]
    ns = list(ff)
    ax.plot(ns, [ff[n][0]["peak_mb"] for n in ns], "o-", label="unchunked")
    ax.plot(ns, [ff[n][1]["peak_mb"] for n in ns], "s-", label="chunked")
    ax.set(xlabel="sequence length", ylabel="peak MB", title="Feed-forward d_ff=16384")
    ax = axes[2]
    ls = list(rev)
    ax.plot(ls, [rev[n][0]["peak_mb"] for n in ls], "o-", label="standard")
    ax.plot(ls, [rev[n][1]["peak_mb"] for n in ls], "s-", label="reversible")
    ax.set(xlabel="layers", ylabel="peak MB", title="Training memory")
    ax = axes[3]
    ax.bar(["standard", "axial"], [axial[False]["peak_mb"], axial[True]["peak_mb"]], color=["C0", "C1"])
    ax.set(ylabel="peak MB", title="Position embeddings (n_max=524288)")
    for ax in axes[:3]:
        ax.legend()
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
