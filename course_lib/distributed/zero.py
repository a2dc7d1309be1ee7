"""Optimizer-state sharding (ZeRO stage 1) from scratch: each rank keeps the optimizer state of its shard only.

Adam(W) keeps two running moments per parameter: 8 bytes of state for every 4-byte fp32 weight, twice the
model again on every rank of a plain data-parallel job. ZeRO-1 splits that state:

    partition:  the parameters are dealt out to the N ranks (largest first, each to the least-loaded rank)
    step:       gradients already averaged (DDP or :mod:`.data_parallel`) → each rank runs the optimizer on
                its own shard only → each rank broadcasts its updated parameters to the others

so every rank ends the step with the same parameters as an unsharded optimizer, while holding about 1/N
of the state (:func:`optimizer_state_bytes` measures it). Pinned to torch's ``ZeroRedundancyOptimizer``
and to the unsharded optimizer by ``tests/distributed/test_data_parallel_torchrun.py`` (through
:mod:`.workers`, in the same launches as the data-parallel pins); ``tests/distributed/test_zero.py`` checks
the partition and the state's size in one process.

Not covered: sharding the gradients (ZeRO-2) or the parameters themselves (ZeRO-3, torch's FSDP), saving
and loading a sharded state, learning-rate schedulers that need a ``torch.optim.Optimizer`` (set the rate
through :attr:`ShardedOptimizer.param_groups` instead, as the course's training loop does).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .launch import get_rank, get_world_size

__all__ = ["ShardedOptimizer", "partition_parameters", "optimizer_state_bytes"]


def partition_parameters(params: list[torch.Tensor], world_size: int) -> list[list[torch.Tensor]]:
    """Deal ``params`` to ``world_size`` ranks, balancing their element counts: the largest parameter first,
    each to the rank holding the fewest elements so far. The same on every rank (no communication needed)."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    owned, loads = [[] for _ in range(world_size)], [0] * world_size  # parameter indices per rank
    for i in sorted(range(len(params)), key=lambda i: -params[i].numel()):  # stable: ties keep their order
        owner = loads.index(min(loads))
        owned[owner].append(i)
        loads[owner] += params[i].numel()
    return [[params[i] for i in sorted(indices)] for indices in owned]  # each shard in the model's order


class ShardedOptimizer:
    """ZeRO stage 1: ``optimizer_class(**kwargs)`` built on this rank's shard of ``params`` only.

    ``step()`` updates the shard, then every rank broadcasts its shard's new values (one flat message per
    rank). ``zero_grad()`` clears every parameter's gradient, since all of them are computed and averaged
    on every rank. ``param_groups`` are the local optimizer's (empty on a rank that owns no parameter).
    """

    def __init__(self, params, optimizer_class: type[torch.optim.Optimizer], **kwargs):
        params = list(params)
        if any(not isinstance(p, torch.Tensor) for p in params):
            raise TypeError("ShardedOptimizer takes tensors (e.g. model.parameters()), not parameter-group dicts")
        params = list(dict.fromkeys(params))  # a tied parameter listed twice is one parameter
        if not params:
            raise ValueError("ShardedOptimizer got no parameters")
        self.params = params
        self.rank, self.world_size = get_rank(), get_world_size()
        self.shards = partition_parameters(params, self.world_size)
        own = self.shards[self.rank]
        self.optimizer = optimizer_class(own, **kwargs) if own else None  # torch refuses an empty list

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups if self.optimizer else []

    @property
    def state(self):
        return self.optimizer.state if self.optimizer else {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        if self.optimizer:
            self.optimizer.step()
        if self.world_size == 1:
            return
        for owner, shard in enumerate(self.shards):
            if not shard:
                continue
            flat = torch.cat([p.reshape(-1) for p in shard])  # (shard elements,) the owner's new values
            dist.broadcast(flat, src=owner)
            if owner != self.rank:
                for p, values in zip(shard, flat.split([p.numel() for p in shard])):
                    p.copy_(values.view_as(p))


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of the tensors in this rank's optimizer state: a ``torch.optim`` optimizer, a
    :class:`ShardedOptimizer` (its shard's) or torch's ``ZeroRedundancyOptimizer`` (its local ``optim``'s)."""
    inner = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer wraps its local optimizer so
    return sum(value.numel() * value.element_size()
               for per_parameter in inner.state.values()
               for value in per_parameter.values() if isinstance(value, torch.Tensor))
