"""A training run's resumable state: what :mod:`.trainer` writes with ``--state`` and reads with ``--resume``.

Full-precision weights, the optimizer's state, the run's progress (step, tokens, elapsed time, history, settings),
the data generator (the same on every rank) and *every rank's* RNG state (dropout masks differ per rank), gathered
to rank 0, which alone writes. A state resumes only with the same number of processes: each rank's data slice and
RNG stream depend on it. The file is written whole or not at all (a temporary file, then renamed), so a run
killed while saving keeps its previous state. Not covered: sharded (per-rank) checkpoints, optimizer state for ZeRO.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from ..models.gpt import GPT

__all__ = ["save_state", "load_state"]


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":  # dropout on a GPU draws from the device's generator
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save_state(path: Path, model: GPT, optimizer: torch.optim.Optimizer, generator: torch.Generator,
               progress: dict, rank: int, world_size: int, device: torch.device) -> None:
    """Collective: every rank sends its RNG state to rank 0, which writes the resumable state to ``path``; every
    rank returns once the file is written."""
    rng_states = [None] * world_size
    if world_size > 1:
        dist.all_gather_object(rng_states, _rng_state(device))
    else:
        rng_states = [_rng_state(device)]
    if rank == 0:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "progress": progress,
                    "data_generator": generator.get_state(), "rng_states": rng_states, "world_size": world_size},
                   partial)
        os.replace(partial, path)  # atomic: a run killed while saving leaves the previous state whole
    if world_size > 1:
        dist.barrier()  # the file is complete before any rank goes on (and may read it, e.g. to resume)


def load_state(path: Path, model: GPT, optimizer: torch.optim.Optimizer, generator: torch.Generator,
               rank: int, world_size: int, device: torch.device) -> dict:
    """Restore what :func:`save_state` wrote (each rank its own RNG state); return the saved progress."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not {"model", "optimizer", "progress", "rng_states"} <= state.keys():
        raise ValueError(f"{path} is not a training state written by --state (a checkpoint written to --out holds "
                         "float16 weights only and cannot resume a run)")
    if state["world_size"] != world_size:
        raise ValueError(f"{path} was saved by {state['world_size']} processes and this run has {world_size}: "
                         "resume with the same number of processes (each rank's data slice and RNG depend on it)")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["data_generator"])
    torch.set_rng_state(state["rng_states"][rank]["cpu"])
    if device.type == "cuda" and "cuda" in state["rng_states"][rank]:
        torch.cuda.set_rng_state(state["rng_states"][rank]["cuda"], device)
    return state["progress"]
