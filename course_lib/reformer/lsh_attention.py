"""LSH self-attention: attend only within buckets of similar vectors, sorted and chunked.

Steps, for each head (shapes for one batch of ``B`` sequences of ``T`` tokens, ``H`` heads,
``R`` hash rounds, chunk length ``c``)::

    x (B, T, D) --shared QK, V projections--> qk, v (B, H, T, d)
    qk --hash (random rotations)--> buckets (B, H, R, T)
       --stable sort by (round, bucket, position)--> order (B, H, R·T)
    gather qk, v in that order, cut into chunks (B, H, R·T/c, c, d)
    keys = qk normalised to unit RMS / √d; each chunk also sees the chunk before it
    attention inside chunks (a token never attends to itself unless nothing else is allowed)
    --undo the sort--> out (B, H, R, T, d) and log-normalisers (B, H, R, T)
    --weight round r by softmax_r(log-normaliser)--> out (B, H, T, d) --> (B, T, H·d)

Queries and keys share one projection: then "q_i is close to q_j" is symmetric and one
clustering of the qk vectors serves both. Combining hash rounds by their softmax normalisers
``exp(logZ_r) / Σ exp(logZ_r')`` is exactly the full softmax over the union of the rounds' keys
(when a key appears in one round only). Everything matches HF's ``LSHSelfAttention`` (same mask
values ``-1e9`` / ``-1e5``, key normalisation ``x / sqrt(mean(x²) + 1e-6) / √d``, circular
look-back, padding tokens hashed into an extra bucket). With ``T <= chunk_length`` it is plain
full attention (no hashing), as in HF.

Not covered: automatic ``num_buckets``, bucket caching for generation, fp16 mask values, the
paper's de-duplication of keys that appear in several hash rounds (HF does not do it either).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..attention.multi_head import merge_heads, split_heads
from .local_attention import _validate_mask, attend_in_chunks, look_adjacent, validate_chunking
from .lsh import NumBuckets, hash_vectors, random_rotations, sort_by_bucket, total_buckets, validate_num_buckets

__all__ = ["LSHSelfAttention", "normalise_keys"]


def normalise_keys(qk: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Keys from shared query-key vectors: unit root-mean-square, then divided by √d (as HF)."""
    return qk * torch.rsqrt(qk.pow(2).mean(-1, keepdim=True) + eps) / math.sqrt(qk.shape[-1])


class LSHSelfAttention(nn.Module):
    """Shared-QK attention restricted to LSH buckets.

    ``forward(hidden (B, T, D), attention_mask (B, T) or None, rotations=None)`` → ``(B, T, H·d)``.
    ``rotations (H, d, num_hashes, sum(buckets)/2)`` overrides the random draw; otherwise they are
    drawn with :func:`~.lsh.random_rotations` (from ``hash_seed`` when set, else the global RNG,
    a fresh draw every call). ``last_buckets`` keeps the last call's buckets ``(B, H, R, T)``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_size: int,
        chunk_length: int,
        num_buckets: NumBuckets,
        *,
        num_hashes: int = 1,
        num_chunks_before: int = 1,
        num_chunks_after: int = 0,
        causal: bool = False,
        hash_seed: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        validate_num_buckets(num_buckets)
        if min(hidden_size, num_heads, head_size, chunk_length, num_hashes) < 1:
            raise ValueError("hidden_size, num_heads, head_size, chunk_length and num_hashes must be >= 1")
        self.num_heads, self.head_size, self.chunk_length = num_heads, head_size, chunk_length
        self.num_buckets, self.num_hashes, self.hash_seed = num_buckets, num_hashes, hash_seed
        self.num_chunks_before, self.num_chunks_after = num_chunks_before, num_chunks_after
        self.causal, self.dropout = causal, dropout
        self.query_key = nn.Linear(hidden_size, num_heads * head_size, bias=False)
        self.value = nn.Linear(hidden_size, num_heads * head_size, bias=False)
        self.last_buckets: torch.Tensor | None = None

    def forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotations: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, seq_len, _ = hidden.shape
        num_chunks = validate_chunking(seq_len, self.chunk_length)
        if attention_mask is not None:
            _validate_mask(attention_mask, batch, seq_len)
        qk = split_heads(self.query_key(hidden), self.num_heads)  # (B, H, T, d)
        v = split_heads(self.value(hidden), self.num_heads)  # (B, H, T, d)
        dropout_p = self.dropout if self.training else 0.0

        if num_chunks == 1:  # short sequence: full shared-QK attention, no hashing
            positions = torch.arange(seq_len, device=hidden.device).expand(batch, 1, 1, seq_len)
            keep = None if attention_mask is None else attention_mask.to(torch.bool)[:, None, None, :]
            out, _ = attend_in_chunks(
                qk[:, :, None], normalise_keys(qk)[:, :, None], v[:, :, None], positions, positions, keep,
                causal=self.causal, mask_self=True, dropout_p=dropout_p,
            )
            return merge_heads(out[:, :, 0])  # (B, T, H·d)

        if rotations is None:
            rotations = random_rotations(
                self.num_heads, self.head_size, self.num_hashes, self.num_buckets,
                seed=self.hash_seed, device=hidden.device, dtype=hidden.dtype,
            )
        rounds = rotations.shape[2]
        buckets = hash_vectors(qk, rotations, self.num_buckets, attention_mask)  # (B, H, R, T)
        self.last_buckets = buckets
        has_padding = attention_mask is not None and not bool(attention_mask.all())
        order, undo = sort_by_bucket(buckets, total_buckets(self.num_buckets) + int(has_padding))  # (B, H, R·T)
        sorted_positions = order % seq_len  # (B, H, R·T): token index of each sorted item

        def sort_and_chunk(t):  # (B, H, T, d) -> (B, H, R·T/c, c, d), rows in sorted order
            gathered = t.gather(2, sorted_positions.unsqueeze(-1).expand(-1, -1, -1, t.shape[-1]))
            return gathered.reshape(batch, self.num_heads, -1, self.chunk_length, t.shape[-1])

        before, after = self.num_chunks_before, self.num_chunks_after
        query_positions = sorted_positions.reshape(batch, self.num_heads, -1, self.chunk_length)  # (B, H, N', c)
        key_positions = look_adjacent(query_positions, before, after)  # (B, H, N', k)
        keep = None
        if attention_mask is not None:
            keep = attention_mask.to(torch.bool)[:, None, None, :].expand(-1, self.num_heads, key_positions.shape[2], -1)
            keep = keep.gather(-1, key_positions)  # (B, H, N', k): is each key a real token
        out, log_normaliser = attend_in_chunks(
            sort_and_chunk(qk),
            look_adjacent(sort_and_chunk(normalise_keys(qk)), before, after),
            look_adjacent(sort_and_chunk(v), before, after),
            query_positions, key_positions, keep,
            causal=self.causal, mask_self=True, dropout_p=dropout_p,
        )  # (B, H, N', c, d), (B, H, N', c)

        out = out.flatten(2, 3).gather(2, undo.unsqueeze(-1).expand(-1, -1, -1, self.head_size))  # (B, H, R·T, d)
        log_normaliser = log_normaliser.flatten(2, 3).gather(2, undo)  # (B, H, R·T)
        out = out.reshape(batch, self.num_heads, rounds, seq_len, self.head_size)
        log_normaliser = log_normaliser.reshape(batch, self.num_heads, rounds, seq_len)
        # softmax over rounds, written as HF writes it: a token that only sees itself has scores
        # near -1e5, where float32 rounding makes the two formulas differ by ~1e-3
        round_weights = torch.exp(log_normaliser - torch.logsumexp(log_normaliser, dim=2, keepdim=True))
        out = (out * round_weights.unsqueeze(-1)).sum(dim=2)  # (B, H, T, d)
        return merge_heads(out)  # (B, T, H·d)

    @classmethod
    def from_hf(cls, reference: nn.Module) -> LSHSelfAttention:
        """Copy of a ``transformers`` ``LSHSelfAttention`` (weights, settings, ``hash_seed``)."""
        if reference.num_buckets is None:
            raise ValueError("set config.num_buckets explicitly; automatic bucket counts are not covered")
        ours = cls(
            reference.hidden_size, reference.num_attention_heads, reference.attention_head_size,
            reference.chunk_length, reference.num_buckets, num_hashes=reference.num_hashes,
            num_chunks_before=reference.num_chunks_before, num_chunks_after=reference.num_chunks_after,
            causal=bool(reference.is_decoder), hash_seed=reference.hash_seed, dropout=reference.dropout,
        )
        ours.load_state_dict({k: v for k, v in reference.state_dict().items() if "mask_value" not in k})
        return ours
