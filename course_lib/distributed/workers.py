"""The equality runs behind the tests and the chapter: from-scratch data parallelism and ZeRO-1 against torch.

    torchrun --nproc-per-node 2 -m course_lib.distributed.workers equality --steps 3 --out result.json
    torchrun --nproc-per-node 2 -m course_lib.distributed.workers fail --rank 1      # one rank raises
    spawn(run_equality, 2, 3)                                                       # the same from a notebook

:func:`run_equality` trains a tiny course GPT (dropout off) for ``steps`` AdamW steps in several ways from the
same start and returns, per way, the largest parameter difference (over every rank) from one process trained
on the combined batch of every rank, plus torch's own references. Every step draws one combined batch of
``world_size × micro_batches × batch_size`` windows; rank r trains on its own slice; with gradient
accumulation it runs ``micro_batches`` backward passes of ``batch_size`` windows (the loss of each divided by
``micro_batches``, so the sum of the gradients is the gradient of the mean). The ranks build their models
from different seeds: only broadcasting rank 0's parameters (or DDP's own broadcast) makes them start equal.
A run that skips the averaging is included as a control: it must differ.

Not covered: timing (``benchmark``), real data (the course's GPT training script does that).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel

from ..models.gpt import GPT, GPTConfig
from .data_parallel import DataParallel, average_gradients, average_gradients_bucketed, broadcast_parameters
from .launch import is_rank_zero, on_rank_zero, setup_process_group, teardown
from .zero import ShardedOptimizer, optimizer_state_bytes

__all__ = ["TINY_GPT", "run_equality", "rank_probe", "fail_on_rank", "main"]

TINY_GPT = dict(vocab_size=64, context_length=16, dim=32, num_layers=2, num_heads=2, dropout=0.0)
ADAMW = dict(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)  # train_gpt.py's learning rate
BUCKET_MB = 0.03  # ~31 KB: several buckets even for the tiny model (DDP's default 25 MB would make one)


def _tiny_gpt_of(seed: int, dtype: torch.dtype = torch.float32) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**TINY_GPT)).to(dtype)


def _loss(model, windows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``windows (B, T + 1)``."""
    logits = model(windows[:, :-1]).logits  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())


def _combined_batch(step: int, rows: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, TINY_GPT["vocab_size"], (rows, TINY_GPT["context_length"] + 1), generator=generator)


def _train(model, optimizer, steps, rank, world_size, batch_size, micro_batches, sync=None, before_step=None):
    """``steps`` optimizer steps on this rank's slice of each combined batch; ``sync`` (a DDP-style wrapper's
    ``no_sync``) keeps all but the last micro-batch's backward local; ``before_step(model)`` averages by hand."""
    per_rank = micro_batches * batch_size
    for step in range(steps):
        mine = _combined_batch(step, world_size * per_rank)[rank * per_rank:(rank + 1) * per_rank]
        optimizer.zero_grad()
        for micro, windows in enumerate(mine.split(batch_size)):
            last = micro == micro_batches - 1
            with sync() if sync is not None and not last else contextlib.nullcontext():
                (_loss(model, windows) / micro_batches).backward()
        if before_step is not None:
            before_step(model)
        optimizer.step()
    return model


def _max_diff(model, reference) -> tuple[float, float]:
    """Largest |difference| of the parameters: ``(every element but the key biases, the key biases)``.

    The key bias gets a gradient of exactly zero in exact arithmetic (it adds q·b_k to every score of a
    query's row, and softmax ignores a shift shared by the row), so its computed gradient is rounding noise
    (~1e-11); AdamW divides by √v + eps and turns that noise into steps of up to ~lr. Two runs that round
    differently (a batch split in two, or not) then differ there by ~lr × noise/eps, whatever their
    correctness, so the key biases are compared apart.
    """
    module = getattr(model, "module", model)
    dim, rest, key_bias = TINY_GPT["dim"], 0.0, 0.0
    for (name, a), b in zip(module.named_parameters(), reference.parameters()):
        diff = (a.detach() - b.detach()).abs()
        if name.endswith("attn.c_attn.bias"):  # q, k, v biases stacked: (3D,)
            key_bias = max(key_bias, diff[dim:2 * dim].max().item())
            diff = torch.cat([diff[:dim], diff[2 * dim:]])
        rest = max(rest, diff.max().item())
    return rest, key_bias


def _first_gradients(rank, world_size, rows, dtype, wrap=None, average=None) -> list[torch.Tensor]:
    """The gradients of the first batch (the slice of ``rank`` of ``world_size``), averaged by ``wrap``'s
    model (DDP, DataParallel) or by ``average(model)``; no optimizer: what data parallelism itself claims."""
    model = _tiny_gpt_of(0, dtype)
    trained = wrap(model) if wrap else model
    _loss(trained, _combined_batch(0, world_size * rows)[rank * rows:(rank + 1) * rows]).backward()
    if average:
        average(model)
    return [p.grad for p in model.parameters()]


def _across_ranks(values: dict[str, float], world_size: int) -> dict[str, float]:
    """The largest value of each entry over every rank (one rank's mismatch is the job's mismatch)."""
    if world_size == 1:
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return dict(zip(values, tensor.tolist()))


def _fsdp2(steps, rank, world_size, batch_size, reference) -> dict:
    """FSDP2 (``fully_shard``) on this machine's backend, against the single process; the error if it fails."""
    dtype = next(reference.parameters()).dtype
    try:
        from torch.distributed.fsdp import fully_shard
        model = _tiny_gpt_of(0, dtype)
        for block in model.h:
            fully_shard(block)
        fully_shard(model)
        optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
        _train(model, optimizer, steps, rank, world_size, batch_size, 1)
        gathered = _tiny_gpt_of(0, dtype)  # the sharded parameters gathered whole into a plain model, to compare
        with torch.no_grad():
            for mine, sharded in zip(gathered.parameters(), model.parameters()):
                mine.copy_(sharded.full_tensor() if hasattr(sharded, "full_tensor") else sharded)
        rest, key_bias = _max_diff(gathered, reference)
        return {"ran": True, "max_diff": rest, "key_bias_max_diff": key_bias}
    except Exception as error:  # recorded, not raised: on CPU it may simply be unsupported
        lines = [line for line in traceback.format_exception_only(error)[-1].splitlines() if line.strip()]
        return {"ran": False, "error": lines[0][:500] if lines else type(error).__name__}


def run_equality(steps: int = 3, batch_size: int = 2, micro_batches: int = 2, fsdp: bool = False,
                 dtype: str = "float32") -> dict:
    """Every way of training against one process on the combined batch; the same dict on every rank.

    Call it in each process of a group (torchrun, or :func:`~.launch.spawn`); it leaves the group open (the
    caller, or spawn, tears it down). Every model and batch computation in ``dtype``. Returns ``world_size``,
    ``steps``, ``max_abs_diff`` (per comparison, the maximum over ranks and parameters), ``all_reduces``
    per step, ``optimizer_state_bytes`` per rank, and ``fsdp2`` when asked.
    """
    rank, world_size, _ = setup_process_group("gloo")
    if world_size == 1:
        raise RuntimeError("run_equality compares processes: start it with torchrun (2 or more) or spawn()")
    _tiny_gpt = functools.partial(_tiny_gpt_of, dtype=getattr(torch, dtype))  # every model in this dtype
    args = dict(steps=steps, rank=rank, world_size=world_size, batch_size=batch_size)
    single = _tiny_gpt(0)  # one process, combined batch: every rank computes it on its own
    single_optimizer = torch.optim.AdamW(single.parameters(), **ADAMW)
    _train(single, single_optimizer, steps, 0, 1, world_size * micro_batches * batch_size, 1)

    def trained(way: str, accumulate: bool):
        micro = micro_batches if accumulate else 1
        size = batch_size if accumulate else micro_batches * batch_size  # same rows per rank either way
        kwargs = dict(args, batch_size=size, micro_batches=micro)
        if way == "ddp":
            model = DistributedDataParallel(_tiny_gpt(rank))
            return _train(model, torch.optim.AdamW(model.parameters(), **ADAMW), sync=model.no_sync, **kwargs)
        if way in ("wrapper", "wrapper_bucketed"):
            model = DataParallel(_tiny_gpt(rank), bucket_mb=BUCKET_MB if way == "wrapper_bucketed" else None)
            return _train(model, torch.optim.AdamW(model.parameters(), **ADAMW), sync=model.no_sync, **kwargs)
        model = _tiny_gpt(rank)
        broadcast_parameters(model)
        average = {"per_parameter": average_gradients, "no_averaging": None,
                   "bucketed": lambda m: average_gradients_bucketed(m, BUCKET_MB)}[way]
        return _train(model, torch.optim.AdamW(model.parameters(), **ADAMW), before_step=average, **kwargs)

    # The averaged gradient itself, before AdamW can magnify rounding (see _max_diff).
    rows = micro_batches * batch_size
    combined = _first_gradients(0, 1, world_size * rows, getattr(torch, dtype))
    averaging = {"ddp": {"wrap": DistributedDataParallel}, "per_parameter": {"average": average_gradients},
                 "bucketed": {"average": lambda m: average_gradients_bucketed(m, BUCKET_MB)},
                 "wrapper_bucketed": {"wrap": lambda m: DataParallel(m, bucket_mb=BUCKET_MB)}}
    gradient_diffs = {}
    for name, how in averaging.items():
        averaged = _first_gradients(rank, world_size, rows, getattr(torch, dtype), **how)
        gradient_diffs[name] = max((a - b).abs().max().item() for a, b in zip(averaged, combined))

    diffs = {}
    ddp = trained("ddp", accumulate=False)
    diffs["ddp_vs_single"] = _max_diff(ddp, single)
    for way in ("per_parameter", "bucketed", "wrapper", "wrapper_bucketed", "no_averaging"):
        model = trained(way, accumulate=False)
        diffs[f"{way}_vs_single"], diffs[f"{way}_vs_ddp"] = _max_diff(model, single), _max_diff(model, ddp)
    ddp_accumulated = trained("ddp", accumulate=True)
    diffs["ddp_accumulation_vs_single"] = _max_diff(ddp_accumulated, single)
    for way in ("wrapper", "wrapper_bucketed"):
        model = trained(way, accumulate=True)
        diffs[f"{way}_accumulation_vs_single"] = _max_diff(model, single)
        diffs[f"{way}_accumulation_vs_ddp_accumulation"] = _max_diff(model, ddp_accumulated)

    # ZeRO-1: ours and torch's, both on gradients DDP averaged.
    from torch.distributed.optim import ZeroRedundancyOptimizer
    sharded_model, torch_model = DistributedDataParallel(_tiny_gpt(rank)), DistributedDataParallel(_tiny_gpt(rank))
    sharded = ShardedOptimizer(sharded_model.parameters(), torch.optim.AdamW, **ADAMW)
    torch_zero = ZeroRedundancyOptimizer(torch_model.parameters(), optimizer_class=torch.optim.AdamW, **ADAMW)
    _train(sharded_model, sharded, **args, micro_batches=micro_batches)
    _train(torch_model, torch_zero, **args, micro_batches=micro_batches)
    diffs["zero1_vs_single"] = _max_diff(sharded_model, single)
    diffs["zero1_vs_torch_zero"] = _max_diff(sharded_model, torch_model)
    diffs["torch_zero_vs_single"] = _max_diff(torch_model, single)

    result = {"world_size": world_size, "steps": steps, "dtype": dtype, "batch_size": batch_size,
              "micro_batches": micro_batches, "lr": ADAMW["lr"],
              "max_abs_diff": _across_ranks({k: rest for k, (rest, _) in diffs.items()}, world_size),
              "key_bias_max_abs_diff": _across_ranks({k: kb for k, (_, kb) in diffs.items()}, world_size),
              "first_gradient_max_abs_diff_vs_single": _across_ranks(gradient_diffs, world_size),
              "first_gradient_max_abs": max(g.abs().max().item() for g in combined)}
    gathered = [None] * world_size
    dist.all_gather_object(gathered, {"zero1": optimizer_state_bytes(sharded),
                                      "torch_zero": optimizer_state_bytes(torch_zero)})
    result["optimizer_state_bytes"] = {"unsharded": optimizer_state_bytes(single_optimizer),
                                       "zero1_per_rank": [g["zero1"] for g in gathered],
                                       "torch_zero_per_rank": [g["torch_zero"] for g in gathered]}
    model = _tiny_gpt(0)
    result["all_reduces_per_step"] = {"per_parameter": sum(p.requires_grad for p in model.parameters()),
                                      "bucketed": len(_buckets_of(model))}
    if fsdp:
        result["fsdp2"] = _fsdp2(steps, rank, world_size, micro_batches * batch_size, single)
        if result["fsdp2"]["ran"]:
            for key, field in (("max_abs_diff", "max_diff"), ("key_bias_max_abs_diff", "key_bias_max_diff")):
                result[key]["fsdp2_vs_single"] = _across_ranks({"d": result["fsdp2"][field]}, world_size)["d"]
    return result


def _buckets_of(model):
    from .data_parallel import gradient_buckets
    return gradient_buckets([p for p in model.parameters() if p.requires_grad][::-1], BUCKET_MB)


def rank_probe() -> dict:
    """What one process of a group sees: its rank, the group's size, a sum over ranks, rank-0-only writing."""
    rank, world_size, device = setup_process_group()
    total = torch.tensor([float(rank)])
    dist.all_reduce(total)  # 0 + 1 + … + (N-1) on every rank
    written = on_rank_zero(lambda: f"written by rank {rank}")()
    return {"rank": rank, "world_size": world_size, "device": str(device), "rank_sum": total.item(),
            "is_rank_zero": is_rank_zero(), "written": written}


def fail_on_rank(failing_rank: int) -> None:
    """Rank ``failing_rank`` raises; the others wait in a barrier it never reaches (the launcher must end them)."""
    rank, _, _ = setup_process_group("gloo")
    if rank == failing_rank:
        raise RuntimeError(f"deliberate failure on rank {rank} at t={time.time():.3f}")  # when: for the tests
    dist.barrier()  # never completes: the failed rank is gone


@record  # torchrun's failure summary then shows the rank's exception, not only its exit code
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    equality = commands.add_parser("equality", help="train every way and write the differences (rank 0)")
    equality.add_argument("--steps", type=int, default=3)
    equality.add_argument("--fsdp", action="store_true", help="also try FSDP2 (fully_shard)")
    equality.add_argument("--dtypes", default="float32,float64", help="comma-separated: one run in each")
    equality.add_argument("--out", type=Path, required=True)
    fail = commands.add_parser("fail", help="one rank raises")
    fail.add_argument("--rank", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "fail":
        fail_on_rank(args.rank)
        return
    try:
        results = {dtype: run_equality(args.steps, fsdp=args.fsdp, dtype=dtype) for dtype in args.dtypes.split(",")}
    finally:
        teardown()
    if int(os.environ["RANK"]) == 0:  # rank 0 writes
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
