"""Data parallelism from scratch: every rank holds the whole model, sees its own batch, averages gradients.

With N ranks each computing the mean loss of an equal-sized batch, the average of their gradients is the
gradient of the mean loss over the combined batch, so N processes take the very step one process would take
on N times the data, provided they start from the same parameters (:func:`broadcast_parameters`):

    rank r:  g_r = ∇ mean-loss(batch_r)      all-reduce:  g = (g_0 + … + g_{N-1}) / N  on every rank

* :func:`average_gradients` — one all-reduce per parameter (simple; many small messages).
* :func:`average_gradients_bucketed` — gradients flattened into buckets of about ``bucket_mb`` megabytes, one
  all-reduce per bucket: fewer, larger messages, each paying the per-message latency once (DDP's idea).
* :class:`DataParallel` — a wrapper that averages at the end of every ``backward()``, as torch's
  ``DistributedDataParallel`` does, with ``no_sync()`` for gradient accumulation.

Pinned to ``torch.nn.parallel.DistributedDataParallel`` and to one process trained on the combined batch by
``tests/distributed/test_data_parallel_torchrun.py`` (2 and 3 gloo processes, through :mod:`.workers`). A
parameter a rank did not use gets a zero gradient, not ``None``, so every rank makes the same all-reduces.
Not covered: overlapping the all-reduce with the backward pass (DDP launches each bucket as soon as its
gradients are ready; here all are averaged once backward has finished), mixed precision.
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from .launch import get_world_size

__all__ = ["average_gradients", "average_gradients_bucketed", "broadcast_parameters", "gradient_buckets",
           "DataParallel"]


def _gradients(model: nn.Module) -> list[torch.Tensor]:
    """Every trainable parameter's gradient, in a fixed order; a parameter this rank did not use gets zeros,
    so all ranks call the same collectives (a rank skipping one would leave the others waiting forever)."""
    grads = []
    for p in model.parameters():  # parameters() lists a tied (shared) weight once
        if p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    return grads


def average_gradients(model: nn.Module) -> int:
    """Replace each gradient by its mean over the ranks: one all-reduce per parameter. Returns the number
    of all-reduces (0 for a single process, where there is nothing to average)."""
    world_size = get_world_size()
    if world_size == 1:
        return 0
    grads = _gradients(model)
    for grad in grads:
        grad.div_(world_size)  # divide first, then sum, as DDP's all-reduce hook does
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
    return len(grads)


def gradient_buckets(tensors: list[torch.Tensor], bucket_mb: float) -> list[list[torch.Tensor]]:
    """Consecutive groups of ``tensors`` of at most ``bucket_mb`` megabytes each (a larger tensor alone), one
    dtype and device per group (a flat buffer has one of each)."""
    if bucket_mb <= 0:
        raise ValueError(f"bucket_mb must be positive, got {bucket_mb}")
    limit = bucket_mb * 2**20
    buckets, current, size = [], [], 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        fits = current and size + nbytes <= limit and (tensor.dtype, tensor.device) == (current[0].dtype,
                                                                                      current[0].device)
        if current and not fits:
            buckets.append(current)
            current, size = [], 0
        current.append(tensor)
        size += nbytes
    return buckets + [current] if current else buckets


def average_gradients_bucketed(model: nn.Module, bucket_mb: float = 25.0) -> int:
    """Average the gradients over the ranks with one all-reduce per bucket of about ``bucket_mb`` MB
    (DDP's default is 25). Returns the number of all-reduces."""
    world_size = get_world_size()
    if world_size == 1:
        return 0
    # Last parameters first: backward produces their gradients first (the order DDP fills its buckets in).
    buckets = gradient_buckets(_gradients(model)[::-1], bucket_mb)
    for bucket in buckets:
        flat = torch.cat([grad.reshape(-1) for grad in bucket])  # (total elements,) one message
        flat.div_(world_size)  # before the sum, as DDP does
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for grad, averaged in zip(bucket, flat.split([grad.numel() for grad in bucket])):
            grad.copy_(averaged.view_as(grad))
    return len(buckets)


@torch.no_grad()
def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank, so all start from the same model."""
    if get_world_size() == 1:
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=src)


class DataParallel(nn.Module):
    """``module`` trained data-parallel: parameters broadcast from rank 0 at construction, gradients averaged
    over the ranks at the end of each ``backward()`` (per parameter, or in buckets of ``bucket_mb`` MB).

    Use it like ``DistributedDataParallel``: ``loss = f(model(x)); loss.backward(); optimizer.step()``. For
    gradient accumulation, run the first k-1 micro-batches' backward inside ``with model.no_sync():`` (the
    gradients only add up locally) and the last one outside (it averages the sum).
    """

    def __init__(self, module: nn.Module, bucket_mb: float | None = None):
        super().__init__()
        if bucket_mb is not None and bucket_mb <= 0:
            raise ValueError(f"bucket_mb must be positive or None (one all-reduce per parameter), got {bucket_mb}")
        self.module, self.bucket_mb = module, bucket_mb
        self.require_sync, self._queued = True, False
        self.all_reduces = 0  # how many all-reduces the last synchronisation made
        broadcast_parameters(module)
        for p in module.parameters():
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(self._on_gradient_ready)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside only accumulate gradients locally; the next one outside averages them."""
        previous, self.require_sync = self.require_sync, False
        try:
            yield
        finally:
            self.require_sync = previous

    def _on_gradient_ready(self, _parameter):
        # The first gradient of a backward pass asks autograd to call us back once the whole pass is done
        # (DDP uses the same hook): only then is every gradient final.
        if self.require_sync and not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._synchronise)

    def _synchronise(self):
        self._queued = False
        if self.bucket_mb is None:
            self.all_reduces = average_gradients(self.module)
        else:
            self.all_reduces = average_gradients_bucketed(self.module, self.bucket_mb)
