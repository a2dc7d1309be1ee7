"""Measure the peak memory of one Reformer configuration, honestly, in a fresh process.

Every configuration runs in its own Python process (``python -m course_lib.reformer.memory JOB``).
After imports the child resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``),
notes its resident memory, builds the model, runs it, and reads the peak (``VmHWM``): the figure is
the peak *above* that baseline (weights, activations, temporaries, allocator slack), a real
measurement, not an estimate. glibc's mmap threshold is fixed so freed tensors go back to the OS.
Used by ``scripts/bench_reformer.py`` (the four tables at full size) and the efficient-attention
chapter (small sizes). Linux only. Not covered: GPU memory (use ``torch.cuda.max_memory_allocated``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

__all__ = ["measure", "run_child", "lsh_buckets", "global_scores_gb"]


# --- child: one measurement ------------------------------------------------------------------

def _status_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def _settings(**overrides):
    from course_lib.reformer import ReformerSettings

    base = dict(vocab_size=256, hidden_size=128, num_attention_heads=1, attention_head_size=64,
                attn_layers=["local", "lsh"], feed_forward_size=512, local_attn_chunk_length=64,
                lsh_attn_chunk_length=64, num_buckets=8, num_hashes=1, hash_seed=0, is_decoder=True,
                max_position_embeddings=65536, axial_pos_shape=(256, 256), axial_pos_embds_dim=(64, 64))
    base.update(overrides)
    return ReformerSettings(**base)


def lsh_buckets(seq_len: int, chunk: int):
    """HF's rule: about 2·T/c buckets, a power of two, factorized in two when above 128."""
    power = (2 * seq_len // chunk).bit_length() - 1
    return 2 ** power if power <= 7 else [2 ** (power // 2), 2 ** (power - power // 2)]


def run_child(job: dict) -> dict:
    import torch

    torch.manual_seed(0)
    from course_lib.reformer import ReformerModel

    kind, seq_len, batch = job["kind"], job["seq_len"], job.get("batch", 1)
    if kind == "attention":
        if job["mode"] == "global":
            s = _settings(local_attn_chunk_length=seq_len, lsh_attn_chunk_length=seq_len,
                          local_num_chunks_before=0, lsh_num_chunks_before=0)
        else:
            s = _settings(num_buckets=lsh_buckets(seq_len, 64))
        train = False
    elif kind == "feed_forward":
        s = _settings(hidden_size=256, axial_pos_embds_dim=(64, 192), feed_forward_size=16384,
                      num_buckets=lsh_buckets(seq_len, 64), chunk_size_feed_forward=job["chunk"])
        train = False
    elif kind == "reversible":
        s = _settings(hidden_size=256, num_attention_heads=2, axial_pos_embds_dim=(64, 192),
                      feed_forward_size=1024, attn_layers=["local", "lsh"] * (job["layers"] // 2),
                      num_buckets=lsh_buckets(seq_len, 64), max_position_embeddings=4096,
                      axial_pos_shape=(64, 64))
        train = True
    elif kind == "axial":
        s = _settings(vocab_size=320, hidden_size=256, num_attention_heads=2, attn_layers=["local", "lsh"] * 3,
                      num_buckets=[64, 128], max_position_embeddings=524288, axial_pos_embds=job["axial"],
                      axial_pos_shape=(512, 1024), axial_pos_embds_dim=(64, 192))
        train = False
    else:
        raise ValueError(kind)

    open("/proc/self/clear_refs", "w").write("5")  # reset the peak: imports do not count
    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    model = ReformerModel(s, reversible=job.get("reversible", True))
    ids = torch.randint(0, s.vocab_size, (batch, seq_len))
    if train:
        model.train()
        model(ids).pow(2).mean().backward()
    else:
        model.eval()
        with torch.no_grad():
            model(ids)
    return {"peak_mb": _status_mb("VmHWM") - baseline, "seconds": time.perf_counter() - start,
            "parameters": model.num_parameters()}


def measure(job: dict, timeout: float = 600) -> dict:
    # a fixed mmap threshold: big tensors always get their own mapping and go back to the OS when
    # freed, so resident memory follows live tensors instead of glibc's cached heap
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-m", "course_lib.reformer.memory", json.dumps(job)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def global_scores_gb(seq_len: int, heads: int = 1) -> float:
    """Size of one (1, H, T, T) fp32 score tensor; the softmax keeps about three alive at once."""
    return 3 * heads * seq_len * seq_len * 4 / 2**30




if __name__ == "__main__":  # the child: one measurement, printed as JSON
    print(json.dumps(run_child(json.loads(sys.argv[1]))))
