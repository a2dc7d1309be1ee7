"""Locality-sensitive hashing of vectors into buckets with random rotations (angular LSH).

A random matrix ``R`` of shape ``(d, n_buckets/2)`` projects each vector ``x``; the bucket is the
position of the largest entry of the concatenation ``[xR, -xR]`` (``n_buckets`` candidates).
Vectors pointing in similar directions land in the same bucket with high probability, which is
what LSH self-attention needs: queries that would give each other large attention weights end up
next to each other after sorting by bucket.

Covered:

* :func:`validate_num_buckets` — an even number of buckets, or a factorized pair/list of even
  counts ``[b1, b2]`` (``b1 * b2`` buckets from only ``(b1 + b2) / 2`` rotation columns, which
  keeps the rotations small for very long sequences);
* :func:`random_rotations` — drawn like HF's Reformer: ``torch.randn(H, d, n_hashes, size/2)``,
  from a private generator when a ``seed`` is given, so ``seed=s`` reproduces HF's
  ``hash_seed=s`` without touching the global random state;
* :func:`hash_vectors` — bucket ids per hash round, padding tokens sent to one extra bucket;
* :func:`sort_by_bucket` — the permutation that sorts by (hash round, bucket, position), and its
  inverse. Within a bucket positions keep their order (a *stable* sort); an unstable sort would
  shuffle them and break causal masking and chunking.

Not covered: choosing ``n_buckets`` automatically from the sequence length (HF does, with a
warning), multi-probe LSH, learned hashes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["validate_num_buckets", "total_buckets", "random_rotations", "hash_vectors", "sort_by_bucket"]

NumBuckets = int | Sequence[int]


def validate_num_buckets(num_buckets: NumBuckets) -> list[int]:
    """Validate ``num_buckets`` (an even int, or a list of even ints) and return it as a list.

    >>> validate_num_buckets(8), validate_num_buckets([4, 8])
    ([8], [4, 8])
    """
    factors = [num_buckets] if isinstance(num_buckets, int) else list(num_buckets)
    if not factors:
        raise ValueError("num_buckets must be an even integer or a non-empty list of even integers, got []")
    for factor in factors:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2 or factor % 2:
            raise ValueError(
                f"num_buckets must be even (each bucket pairs a rotation column with its negation), "
                f"got {num_buckets!r}"
            )
    return factors


def total_buckets(num_buckets: NumBuckets) -> int:
    """Number of distinct buckets: ``b`` or the product ``b1 * b2 * ...``."""
    return math.prod(validate_num_buckets(num_buckets))


def random_rotations(
    num_heads: int,
    head_dim: int,
    num_hashes: int,
    num_buckets: NumBuckets,
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian rotations ``(H, d, n_hashes, sum(factors) / 2)``, one set per head and hash round.

    Without ``seed`` they come from the global generator (like HF without ``hash_seed``).
    """
    if num_hashes < 1:
        raise ValueError(f"num_hashes must be >= 1, got {num_hashes}")
    columns = sum(validate_num_buckets(num_buckets)) // 2
    shape = (num_heads, head_dim, num_hashes, columns)
    if seed is None:
        return torch.randn(shape, device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)  # CPU draws: identical to torch.manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


def hash_vectors(
    vectors: torch.Tensor,
    rotations: torch.Tensor,
    num_buckets: NumBuckets,
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bucket id of every vector in every hash round.

    ``vectors (B, H, T, d)``, ``rotations (H, d, n_hashes, sum(factors)/2)`` →
    buckets ``(B, H, n_hashes, T)`` with values in ``[0, total_buckets)``. With factors
    ``[b1, b2]`` the id is ``i1 + b1 * i2`` where ``i1`` hashes with the first ``b1/2`` columns and
    ``i2`` with the next ``b2/2``. ``padding_mask (B, T)`` (True = real token): if any token is
    padding, padding tokens all go to the extra bucket ``total_buckets`` so that they sort last.
    """
    factors = validate_num_buckets(num_buckets)
    if vectors.ndim != 4:
        raise ValueError(f"vectors must have shape (batch, heads, seq_len, dim), got {tuple(vectors.shape)}")
    heads, dim, _, columns = rotations.shape
    if (heads, dim) != (vectors.shape[1], vectors.shape[3]) or columns != sum(factors) // 2:
        raise ValueError(
            f"rotations of shape {tuple(rotations.shape)} do not fit vectors {tuple(vectors.shape)} and "
            f"num_buckets {num_buckets!r}: expected ({vectors.shape[1]}, {vectors.shape[3]}, n_hashes, "
            f"{sum(factors) // 2})"
        )
    rotated = torch.einsum("bhtd,hdnr->bhntr", vectors.detach(), rotations)  # (B, H, n_hashes, T, cols)

    buckets, first_column, stride = 0, 0, 1
    for factor in factors:
        part = rotated[..., first_column : first_column + factor // 2]
        # argmax over [xR, -xR]: half the rotated dimensions alone would give only factor/2 buckets
        index = torch.cat([part, -part], dim=-1).argmax(dim=-1)  # (B, H, n_hashes, T)
        buckets = buckets + stride * index
        first_column, stride = first_column + factor // 2, stride * factor

    if padding_mask is not None and not bool(padding_mask.all()):
        keep = padding_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, T)
        buckets = torch.where(keep, buckets, torch.full_like(buckets, stride))  # stride == total_buckets
    return buckets


def sort_by_bucket(buckets: torch.Tensor, num_buckets_per_round: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort order over all hash rounds and its inverse.

    ``buckets (B, H, n_hashes, T)`` → ``order, undo`` of shape ``(B, H, n_hashes * T)``:
    ``order[k]`` is the flat index ``round * T + position`` of the k-th item after sorting by
    (round, bucket, position); ``undo`` puts sorted things back (``sorted[..., undo] == original``).
    ``num_buckets_per_round`` must exceed every bucket id (``total_buckets`` + 1 with padding).

    >>> order, undo = sort_by_bucket(torch.tensor([[[[1, 0, 1, 0]]]]), 2)
    >>> order.tolist(), undo.tolist()
    ([[[1, 3, 0, 2]]], [[[2, 0, 3, 1]]])
    """
    num_hashes = buckets.shape[2]
    rounds = torch.arange(num_hashes, device=buckets.device).view(1, 1, -1, 1)
    round_buckets = (buckets + rounds * num_buckets_per_round).flatten(2)  # (B, H, n_hashes*T)
    # stable: ties (same round and bucket) keep increasing position order
    order = torch.sort(round_buckets, dim=-1, stable=True).indices
    undo = torch.empty_like(order)
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    undo.scatter_(-1, order, positions)
    return order, undo
