"""Measure the peak memory of one Reformer configuration, honestly, in a fresh process.

Every configuration runs in its own process, forked from a server that has imported torch once
(:func:`serve`, ``python -m course_lib.reformer.memory --serve``), so it starts in milliseconds. The
child resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``), notes its resident
memory, builds the model, runs it, and reads the peak (``VmHWM``): the figure is the peak *above* that
baseline (weights, activations, temporaries, allocator slack, and the pages of torch's code the run
reads back in, about 10 MB: a fork does not inherit them resident), a real measurement, not an
estimate. glibc's mmap threshold is fixed so freed tensors go back to the OS. A child that runs out of
memory (an allocation fails, or a container's limit kills it) gives an ``{"error": "over the memory
limit: ...", "out_of_memory": True}`` result instead of an exception, so a notebook can show it and go on.

Used by ``scripts/bench_reformer.py`` (the four tables at full size, recorded once in
``checkpoints/reformer_memory.json``: :func:`recorded_benchmark`) and the efficient-attention chapter
(sizes that fit in 2 GB). Linux only. Not covered: GPU memory (use ``torch.cuda.max_memory_allocated``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

__all__ = ["RECORDED", "describe", "global_scores_gb", "lsh_buckets", "measure", "recorded_benchmark", "run_child"]

RECORDED = "reformer_memory.json"  # in course_lib/checkpoints: written by scripts/bench_reformer.py --record


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
    """One measurement in the child: a Reformer job (``kind``), or ``job["runner"]`` (``"module:function"``),
    which another unit's benchmark names to measure its own work with this machinery."""
    if "runner" in job:
        import importlib

        module, _, function = job["runner"].partition(":")
        return getattr(importlib.import_module(module), function)(job)
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
    return {"peak_mb": _status_mb("VmHWM") - baseline, "baseline_mb": baseline, "seconds": time.perf_counter() - start,
            "parameters": model.num_parameters()}


OUT_OF_MEMORY = ("can't allocate memory", "MemoryError", "Cannot allocate memory", "std::bad_alloc")


def serve() -> None:
    """The measuring server (``python -m course_lib.reformer.memory --serve``): it imports torch once, then for
    each job read from stdin forks a fresh child that measures it, and writes the result as a line of JSON.

    A forked child starts in milliseconds instead of the seconds that importing torch takes; its baseline is
    read after the fork, so the imports are no more counted than before. The server never computes with
    torch itself, so its children inherit no thread pool.
    """
    import resource

    import torch  # noqa: F401 - what the children would otherwise each import
    from course_lib.reformer import ReformerModel  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        read_end, write_end = os.pipe()
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: one measurement, then leave without running any of the server's clean-up
            os.close(read_end)
            try:
                if request.get("memory_limit_mb") is not None:
                    size = int(request["memory_limit_mb"] * 2**20)
                    resource.setrlimit(resource.RLIMIT_AS, (size, size))
                result = run_child(request["job"])
            except BaseException as exc:  # every failure goes back as a result
                result = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            with os.fdopen(write_end, "w") as out:
                out.write(json.dumps(result))
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as answer:
            text = answer.read()
        _, status = os.waitpid(pid, 0)
        if text:
            result = json.loads(text)
        elif os.WIFSIGNALED(status):
            result = {"error": f"killed by signal {os.WTERMSIG(status)}", "signal": os.WTERMSIG(status)}
        else:
            result = {"error": f"the measuring process died (exit code {os.waitstatus_to_exitcode(status)})"}
        print(json.dumps({**result, "wall_seconds": time.perf_counter() - started}), flush=True)


_server = None  # the subprocess.Popen of serve(), started by the first measurement


def measure(job: dict, timeout: float = 600, memory_limit_mb: float | None = None) -> dict:
    """Run ``job`` in a fresh process: ``{"peak_mb", "baseline_mb", "seconds", "wall_seconds", "parameters"}``
    (``seconds``: the run itself; ``wall_seconds``: with starting the process), or ``{"error"}``.

    The process is forked from a server that has imported torch once (:func:`serve`), so it starts at once.
    A child that runs out of memory does not raise here: its result is ``{"error": "over the memory limit: ...",
    "out_of_memory": True}``, whether its allocation failed or the system killed it (as a container's
    memory limit does), so a notebook can show the failure and go on. ``memory_limit_mb`` caps the
    child's address space (``RLIMIT_AS``; torch alone maps about 0.8 GB of it).
    """
    global _server
    import select

    if _server is None or _server.poll() is not None:
        # a fixed mmap threshold: big tensors always get their own mapping and go back to the OS when
        # freed, so resident memory follows live tensors instead of glibc's cached heap (forks inherit it)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
        _server = subprocess.Popen([sys.executable, "-m", "course_lib.reformer.memory", "--serve"], env=env,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    _server.stdin.write(json.dumps({"job": job, "memory_limit_mb": memory_limit_mb}) + "\n")
    _server.stdin.flush()
    if not select.select([_server.stdout], [], [], timeout)[0]:
        os.killpg(_server.pid, signal.SIGKILL)  # the server and its child
        _server.wait()
        return {"error": f"timed out after {timeout:.0f} s"}
    line = _server.stdout.readline()
    if not line:  # the server itself was killed (a memory limit may pick it): its child goes too
        _server.wait()
        try:
            os.killpg(_server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return {"error": "over the memory limit: the measuring server was killed", "out_of_memory": True}
    result = json.loads(line)
    if result.get("signal") == signal.SIGKILL:
        return {"error": "over the memory limit: the measuring process was killed (SIGKILL), as a memory limit does",
                "out_of_memory": True}
    if "error" in result and any(sign in result["error"] for sign in OUT_OF_MEMORY):
        return {"error": "over the memory limit: " + result["error"], "out_of_memory": True}
    return result if "error" not in result else {"error": result["error"]}


def describe(result: dict | None, field: str = "peak_mb", spec: str = ".0f") -> str:
    """A table cell: ``result[field]`` formatted, or why there is none (``"over memory limit"``, ``"failed"``,
    ``"not run"`` for None)."""
    if result is None:
        return "not run"
    if "error" in result:
        return "over memory limit" if result.get("out_of_memory") else "failed"
    return format(result[field], spec)


def recorded_benchmark() -> dict:
    """The full-size run of ``scripts/bench_reformer.py`` shipped with the course (``checkpoints/reformer_memory.json``):
    the sizes a notebook cannot afford on a 2 GB machine, measured once, with the hardware and load it ran on."""
    from ..runtime import CHECKPOINT_DIR

    return json.loads((CHECKPOINT_DIR / RECORDED).read_text())


def global_scores_gb(seq_len: int, heads: int = 1) -> float:
    """Size of one (1, H, T, T) fp32 score tensor; the softmax keeps about three alive at once."""
    return 3 * heads * seq_len * seq_len * 4 / 2**30


if __name__ == "__main__":  # --serve: the measuring server; JOB: one measurement in this process, as JSON
    serve() if sys.argv[1:] == ["--serve"] else print(json.dumps(run_child(json.loads(sys.argv[1]))))
