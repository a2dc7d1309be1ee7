"""Chunked feed-forward: run a position-wise layer on slices of the sequence, one at a time.

A feed-forward layer treats every position independently, so ``FF(X)`` equals the
concatenation of ``FF`` applied to consecutive slices of ``X``. Run slice by slice, only one
slice's intermediate activations ``(B, chunk, d_ff)`` exist at a time instead of ``(B, T, d_ff)``:
peak memory falls when ``d_ff`` is large, at the price of a Python loop (slower).

Covered: :func:`apply_chunking` (any position-wise function, several inputs, any dimension) and
:class:`ChunkedFeedForward`, matched to HF's ``ChunkReformerFeedForward``: LayerNorm → Linear →
dropout → activation → Linear → dropout, chunked along the sequence when ``chunk_size > 0``.
Not covered: saving memory in *training* (autograd keeps every chunk's activations for the
backward pass unless the layer is also recomputed, e.g. inside a reversible layer).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["apply_chunking", "ChunkedFeedForward"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": nn.functional.relu,
    "gelu": nn.functional.gelu,
    "silu": nn.functional.silu,
}


def apply_chunking(fn: Callable[..., torch.Tensor], chunk_size: int, dim: int, *inputs: torch.Tensor) -> torch.Tensor:
    """``fn(*inputs)`` computed on slices of ``chunk_size`` along ``dim`` and concatenated.

    ``chunk_size = 0`` calls ``fn`` once on the whole inputs. The length along ``dim`` must be a
    multiple of ``chunk_size`` and the same for every input.

    >>> x = torch.arange(6.).view(1, 6, 1)
    >>> torch.equal(apply_chunking(lambda t: t * 2, 2, 1, x), x * 2)
    True
    """
    if not inputs:
        raise ValueError("apply_chunking needs at least one input tensor")
    try:
        n_params = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        n_params = len(inputs)
    if n_params != len(inputs):
        raise ValueError(f"fn takes {n_params} arguments but {len(inputs)} input tensors were given")
    if chunk_size < 0:
        raise ValueError(f"chunk_size must be >= 0 (0 = no chunking), got {chunk_size}")
    if chunk_size == 0:
        return fn(*inputs)
    length = inputs[0].shape[dim]
    if any(t.shape[dim] != length for t in inputs):
        raise ValueError(f"all inputs must have the same size along dim {dim}: {[t.shape[dim] for t in inputs]}")
    if length % chunk_size:
        raise ValueError(
            f"size {length} along dim {dim} is not a multiple of chunk_size {chunk_size}; "
            "pad the sequence or choose a chunk size that divides it"
        )
    slices = zip(*(t.split(chunk_size, dim=dim) for t in inputs))
    return torch.cat([fn(*parts) for parts in slices], dim=dim)


class ChunkedFeedForward(nn.Module):
    """Pre-norm position-wise feed-forward ``(B, T, D) → (B, T, D)``, optionally chunked over T."""

    def __init__(
        self,
        hidden_size: int,
        feed_forward_size: int,
        *,
        chunk_size: int = 0,
        activation: str | Callable[[torch.Tensor], torch.Tensor] = "relu",
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-12,
    ):
        super().__init__()
        if isinstance(activation, str):
            if activation not in ACTIVATIONS:
                raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)} or pass a callable")
            activation = ACTIVATIONS[activation]
        self.chunk_size, self.activation, self.dropout = chunk_size, activation, dropout
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dense = nn.Linear(hidden_size, feed_forward_size)
        self.output = nn.Linear(feed_forward_size, hidden_size)

    def forward_chunk(self, hidden: torch.Tensor) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        inner = nn.functional.dropout(self.dense(self.layer_norm(hidden)), p)  # (B, c, d_ff)
        return nn.functional.dropout(self.output(self.activation(inner)), p)  # (B, c, D)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return apply_chunking(self.forward_chunk, self.chunk_size, 1, hidden)

    @classmethod
    def from_hf(cls, reference: nn.Module) -> ChunkedFeedForward:
        """Copy of a ``transformers`` ``ChunkReformerFeedForward``."""
        ours = cls(
            reference.dense.dense.in_features, reference.dense.dense.out_features,
            chunk_size=reference.chunk_size_feed_forward, activation=reference.dense.act_fn,
            dropout=reference.dense.dropout, layer_norm_eps=reference.layer_norm.eps,
        )
        ours.layer_norm.load_state_dict(reference.layer_norm.state_dict())
        ours.dense.load_state_dict(reference.dense.dense.state_dict())
        ours.output.load_state_dict(reference.output.dense.state_dict())
        return ours
