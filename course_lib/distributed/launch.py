"""Starting and ending a group of training processes: torchrun's environment, rank 0's writing, spawning.

A data-parallel job is N copies of one script. ``torchrun --nproc-per-node N -m module`` starts them and
tells each its place through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); :func:`setup_process_group` reads them and joins the group:

    rank, world_size, device = setup_process_group()   # gloo on CPUs, nccl on GPUs
    ...                                                 # train; write files under on_rank_zero / is_rank_zero()
    teardown()

Without torchrun's variables the same script runs as one plain process (rank 0 of 1, no group), so the
course's scripts need no second code path. :func:`spawn` starts N CPU processes from a notebook or a test,
with the same environment torchrun would give them; a rank that raises ends the whole job at once with an
error naming the rank and its exception, and a job past its ``timeout`` is killed, so nothing hangs.

Not covered: elastic restarts and multi-node rendezvous (torchrun's own ``--nnodes``/``--rdzv-endpoint``
do it; this module only reads the resulting environment). The nccl path is written but was only run where
a GPU was lent (the tests check the choice of backend and device everywhere).
"""
from __future__ import annotations

import datetime
import functools
import json
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["setup_process_group", "teardown", "is_rank_zero", "on_rank_zero", "get_rank", "get_world_size",
           "default_backend", "spawn", "RankFailedError", "TORCHRUN_VARIABLES"]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT_S = 120.0  # a collective waiting longer than this fails instead of hanging (torch's default: 10 min)


def default_backend() -> str:
    """``"nccl"`` when CUDA is available (GPU to GPU), else ``"gloo"`` (CPU processes)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def _device_for(backend: str, local_rank: int) -> torch.device:
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend 'nccl' needs CUDA GPUs and none is available: use backend='gloo' on CPUs")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this node: "
                             "start at most one process per GPU (--nproc-per-node)")
        return torch.device("cuda", local_rank)  # one process per GPU: the local rank picks it
    if backend == "gloo":
        return torch.device("cpu")
    raise ValueError(f"unknown backend {backend!r}: expected 'gloo' (CPU) or 'nccl' (CUDA)")


def setup_process_group(backend: str | None = None,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int, torch.device]:
    """Join the process group torchrun described; return ``(rank, world_size, device)``.

    ``backend=None`` picks :func:`default_backend`. The device is ``cuda:LOCAL_RANK`` with nccl (made the
    current device) and the CPU with gloo. Run without torchrun's variables, it returns ``(0, 1, device)``
    and starts no group: every helper in this package then acts as for one process. ``timeout_s`` bounds
    every collective, so a rank left waiting for a dead peer fails instead of hanging.
    """
    backend = backend or default_backend()
    present = [name for name in TORCHRUN_VARIABLES if name in os.environ]
    if not present:  # a plain `python script.py`: one process, no group
        return 0, 1, _device_for(backend, 0)
    if missing := [name for name in TORCHRUN_VARIABLES if name not in os.environ]:
        raise RuntimeError(f"torchrun's environment is incomplete: {', '.join(present)} set but "
                           f"{', '.join(missing)} missing; start the script with torchrun or spawn()")
    rank, world_size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if not 0 <= rank < world_size:
        raise RuntimeError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")
    device = _device_for(backend, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's collectives run on the current device
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return rank, world_size, device


def teardown() -> None:
    """Leave the process group (nothing to do for a plain single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_rank_zero() -> bool:
    """True in the one process that writes checkpoints, logs and records (and in a plain single process)."""
    return get_rank() == 0


def on_rank_zero(fn: Callable) -> Callable:
    """Decorator: ``fn`` runs on rank 0 only (its result there; ``None`` on the other ranks).

    For files every rank could write (checkpoints, logs): N processes writing one path would race.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) if is_rank_zero() else None
    return wrapper


class RankFailedError(RuntimeError):
    """A spawned rank raised or died; ``rank`` is its rank, the message its exception and traceback."""

    def __init__(self, rank: int, message: str):
        super().__init__(message)
        self.rank = rank


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))  # the system picks a port nobody holds
        return probe.getsockname()[1]


def _run_rank(index: int, fn: Callable, args: tuple, world_size: int, port: int, results: str,
              threads: int) -> None:
    """One spawned process: torchrun's environment, then ``fn(*args)``; its result saved for the parent."""
    os.environ.update(RANK=str(index), LOCAL_RANK=str(index), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)  # N processes share the cores: more threads each only oversubscribe
    try:
        result = fn(*args)
    except BaseException:
        # When or why it failed, for the parent: a rank whose peer died fails too, a moment later.
        failure = {"time": time.time(), "traceback": traceback.format_exc()}
        (Path(results) / f"rank{index}.error.json").write_text(json.dumps(failure), encoding="utf-8")
        raise
    finally:
        teardown()  # in case fn left its group open
    torch.save(result, Path(results) / f"rank{index}.pt")


def _first_failure(results: str, nprocs: int, reported: int, default: str) -> tuple[int, str]:
    """The rank that failed first (its peers then fail on the broken connection) and its traceback."""
    failures = {}
    for index in range(nprocs):
        path = Path(results) / f"rank{index}.error.json"
        if path.exists():
            failures[index] = json.loads(path.read_text(encoding="utf-8"))
    if not failures:
        return reported, default
    first = min(failures, key=lambda index: failures[index]["time"])
    later = sorted(set(failures) - {first})
    note = f"\n(then rank(s) {', '.join(map(str, later))} failed too)" if later else ""
    return first, failures[first]["traceback"] + note


def spawn(fn: Callable, nprocs: int, *args: Any, timeout: float = 120.0, threads: int = 1,
          start_method: str = "spawn") -> list:
    """Run ``fn(*args)`` in ``nprocs`` new CPU processes, ranks ``0..nprocs-1``; return their results by rank.

    Each process gets torchrun's environment variables (a free local port), so ``fn`` calls
    :func:`setup_process_group` exactly as a torchrun script does. ``fn`` must be importable by name (a
    module's function, not one defined in a notebook) under the default ``start_method="spawn"``; its
    result must be picklable. Raises :class:`RankFailedError` naming the rank that failed first, with its
    traceback (the others are terminated at once), or ``TimeoutError`` after ``timeout`` seconds (every
    rank killed).
    """
    if not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs must be a positive int, got {nprocs!r}")
    if start_method != "fork" and getattr(fn, "__module__", None) == "__main__":
        raise ValueError(f"{getattr(fn, '__name__', fn)!r} is defined in __main__ (a notebook or a script), which "
                         f"spawned processes cannot import: put it in a module, or pass start_method='fork'")
    with tempfile.TemporaryDirectory(prefix="course-spawn-") as results:
        context = mp.start_processes(_run_rank, args=(fn, args, nprocs, _free_port(), results, threads),
                                     nprocs=nprocs, join=False, start_method=start_method)
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=0.1):  # join() terminates the other ranks as soon as one fails
                if time.monotonic() > deadline:
                    raise TimeoutError(f"spawn: {nprocs} processes still running after {timeout:g} s; all killed")
        except mp.ProcessRaisedException as error:
            rank, trace = _first_failure(results, nprocs, error.error_index, str(error))
            raise RankFailedError(rank, f"rank {rank} of {nprocs} raised:\n{trace}") from None
        except mp.ProcessExitedException as error:
            raise RankFailedError(error.error_index, f"rank {error.error_index} of {nprocs} died "
                                  f"(exit code {error.exit_code}): {error}") from None
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                process.join()
        return [torch.load(Path(results) / f"rank{index}.pt", weights_only=False) for index in range(nprocs)]
