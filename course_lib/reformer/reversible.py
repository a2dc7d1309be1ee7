"""Reversible residual layers: train deep stacks without storing each layer's activations.

A reversible block keeps two streams and computes (HF's Reformer order)::

    y1 = x1 + F(x2)        # F: attention sub-layer
    y2 = x2 + G(y1)        # G: feed-forward sub-layer

Its inputs can be rebuilt from its outputs — ``x2 = y2 - G(y1)``, then ``x1 = y1 - F(x2)``
(in that order: ``x1`` needs ``x2``). So the backward pass of a whole stack needs only the
*last* block's outputs: walking the blocks in reverse, each block rebuilds its inputs,
re-runs ``G`` and ``F`` with gradients on to get its local graph, back-propagates through it and
throws it away. Memory for activations stays that of one block, whatever the depth; the price
is running every ``F`` and ``G`` twice.

Randomness (dropout, LSH rotations drawn from the global generator) must be the same in the
re-run as in the forward pass: the CPU (and CUDA) generator state is saved before each ``F``
and ``G`` call and restored around the recomputation, so no seeding is needed.

Covered: :class:`ReversibleBlock` (``forward``, ``inverse``, ``backward_pass``),
:class:`ReversibleSequence` (own ``torch.autograd.Function``; ``use_autograd=True`` runs the same
maths with plain autograd, for comparison). Parameter gradients are accumulated into ``.grad`` by
the recomputation itself, as in HF and reformer-pytorch, so use ``loss.backward()``;
``torch.autograd.grad(loss, params)`` does not see them. Not covered: mixing reversible and
ordinary layers in one sequence, sharing parameters between blocks.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

__all__ = ["ReversibleBlock", "ReversibleSequence"]


class _RandomState:
    """Snapshot of the generators a computation on ``device`` draws from."""

    def __init__(self, device: torch.device):
        self.cuda_device = device if device.type == "cuda" else None
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if self.cuda_device is not None else None

    @contextlib.contextmanager
    def replay(self):
        """Run the body with the saved state; the global generators are left as they were."""
        devices = [self.cuda_device] if self.cuda_device is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.cuda_device)
            yield


class ReversibleBlock(nn.Module):
    """``(x1, x2) → (x1 + F(x2), x2 + G(x1 + F(x2)))``; ``F`` may take keyword arguments (a mask)."""

    def __init__(self, f: nn.Module, g: nn.Module):
        super().__init__()
        self.f, self.g = f, g

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, **f_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        y1 = x1 + self.f(x2, **f_kwargs)  # (B, T, D)
        y2 = x2 + self.g(y1)  # (B, T, D)
        return y1, y2

    @torch.no_grad()
    def inverse(self, y1: torch.Tensor, y2: torch.Tensor, **f_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Rebuild the inputs: ``x2 = y2 - G(y1)`` first, then ``x1 = y1 - F(x2)``."""
        x2 = y2 - self.g(y1)
        x1 = y1 - self.f(x2, **f_kwargs)
        return x1, x2

    def backward_pass(self, y1, y2, grad_y1, grad_y2, f_state=None, g_state=None, **f_kwargs):
        """Given outputs and their gradients, return ``x1, x2, grad_x1, grad_x2``.

        Re-runs ``G`` then ``F`` with gradients enabled (restoring the random states saved in the
        forward pass) and accumulates their parameters' gradients into ``.grad``.
        """
        with torch.enable_grad():
            y1 = y1.detach().requires_grad_(True)
            with g_state.replay() if g_state else contextlib.nullcontext():
                g_out = self.g(y1)
            g_out.backward(grad_y2)  # dL/dG's params, and y1.grad = dL/dy1 through G
        with torch.no_grad():
            x2 = y2 - g_out
            grad_y1_total = grad_y1 + y1.grad  # y1 feeds the output directly and through G
            del g_out
        with torch.enable_grad():
            x2 = x2.detach().requires_grad_(True)
            with f_state.replay() if f_state else contextlib.nullcontext():
                f_out = self.f(x2, **f_kwargs)
            f_out.backward(grad_y1_total)
        with torch.no_grad():
            x1 = y1.detach() - f_out
            grad_x2 = grad_y2 + x2.grad  # x2 feeds y2 directly and y1 through F
        return x1, x2.detach(), grad_y1_total, grad_x2


class _ReversibleFunction(torch.autograd.Function):
    """Forward through all blocks without a graph; backward by reconstruction (see module doc)."""

    @staticmethod
    def forward(ctx, x1, x2, blocks, f_kwargs, *params):
        states = []
        for block in blocks:
            f_state = _RandomState(x1.device)
            f_out = block.f(x2, **f_kwargs)
            x1 = x1 + f_out
            g_state = _RandomState(x1.device)
            x2 = x2 + block.g(x1)
            states.append((f_state, g_state))
            del f_out
        ctx.blocks, ctx.f_kwargs, ctx.states = blocks, f_kwargs, states
        ctx.save_for_backward(x1, x2)  # only the last block's outputs are kept
        return x1, x2

    @staticmethod
    def backward(ctx, grad_y1, grad_y2):
        y1, y2 = ctx.saved_tensors
        for block, (f_state, g_state) in zip(reversed(ctx.blocks), reversed(ctx.states)):
            y1, y2, grad_y1, grad_y2 = block.backward_pass(y1, y2, grad_y1, grad_y2, f_state, g_state, **ctx.f_kwargs)
        # parameters received their gradients inside backward_pass
        return (grad_y1, grad_y2, None, None) + (None,) * (len(ctx.needs_input_grad) - 4)


class ReversibleSequence(nn.Module):
    """A stack of :class:`ReversibleBlock` s; ``forward(x1, x2, **f_kwargs) → (y1, y2)``, each ``(B, T, D)``.

    With ``use_autograd=True`` (or when no gradient is needed) the blocks run as ordinary modules.
    """

    def __init__(self, blocks: list[ReversibleBlock], *, use_autograd: bool = False):
        super().__init__()
        if not all(isinstance(b, ReversibleBlock) for b in blocks):
            raise TypeError("ReversibleSequence takes a list of ReversibleBlock")
        self.blocks = nn.ModuleList(blocks)
        self.use_autograd = use_autograd

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, **f_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if x1.shape != x2.shape:
            raise ValueError(f"the two streams must have one shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
        params = [p for p in self.parameters() if p.requires_grad]
        needs_grad = torch.is_grad_enabled() and (x1.requires_grad or x2.requires_grad or bool(params))
        if self.use_autograd or not needs_grad:
            for block in self.blocks:
                x1, x2 = block(x1, x2, **f_kwargs)
            return x1, x2
        # the parameters go in as inputs only so that autograd calls backward when just they need grads
        return _ReversibleFunction.apply(x1, x2, list(self.blocks), f_kwargs, *params)

    @torch.no_grad()
    def inverse(self, y1: torch.Tensor, y2: torch.Tensor, **f_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs of the whole stack rebuilt from its outputs (deterministic blocks only)."""
        for block in reversed(self.blocks):
            y1, y2 = block.inverse(y1, y2, **f_kwargs)
        return y1, y2
