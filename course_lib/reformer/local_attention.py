"""Local (chunked) self-attention, and the chunk helpers LSH attention shares with it.

The sequence is cut into chunks of ``chunk_length`` tokens; each chunk's queries attend to the
keys of their own chunk plus ``num_chunks_before`` chunks before it and ``num_chunks_after``
after it (wrapping around at the ends, as HF does: the first chunk looks back at the last).
The score matrix is ``(T / c) · c · c(1 + before + after)`` instead of ``T · T``, so memory grows
linearly with the sequence length. When ``T <= chunk_length`` it is ordinary full attention.

Details matched to HF's ``LocalSelfAttention``: separate query/key/value projections without
bias, keys divided by √d, masked scores replaced by the finite value ``-1e9`` (a query whose
every key is masked averages the values uniformly rather than producing NaN), a causal option
comparing *positions*. Output ``(B, T, H·d)`` before the layer's output projection.

Covered: :func:`look_adjacent`, :func:`attend_in_chunks` (used by :mod:`.lsh_attention` too),
:class:`LocalSelfAttention`. Not covered: key/value caches for generation, fp16 mask values.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..attention.multi_head import merge_heads, split_heads

__all__ = ["MASK_VALUE", "SELF_MASK_VALUE", "validate_chunking", "look_adjacent", "attend_in_chunks",
           "LocalSelfAttention"]

MASK_VALUE = -1e9  # blocked by causal or padding mask
SELF_MASK_VALUE = -1e5  # a token's score with itself in LSH attention: above MASK_VALUE, so used only as last resort


def validate_chunking(seq_len: int, chunk_length: int) -> int:
    """Number of chunks; a clear error when ``seq_len`` is not a multiple of ``chunk_length``."""
    if chunk_length < 1:
        raise ValueError(f"chunk_length must be >= 1, got {chunk_length}")
    if seq_len > chunk_length and seq_len % chunk_length:
        raise ValueError(
            f"sequence length {seq_len} is not a multiple of the chunk length {chunk_length}: pad the "
            f"sequence to {math.ceil(seq_len / chunk_length) * chunk_length} tokens (with a padding mask)"
        )
    return max(seq_len // chunk_length, 1)


def look_adjacent(chunks: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Append neighbouring chunks to each chunk, wrapping around.

    ``chunks (B, H, N, c, ...)`` → ``(B, H, N, c·(1 + before + after), ...)``, order: the
    ``before`` previous chunks (oldest first), the chunk itself, the ``after`` next chunks.
    """
    if before == 0 and after == 0:
        return chunks
    # torch.roll(x, i) moves chunk n - i to position n: i = 1 brings each chunk's predecessor
    pieces = [chunks if shift == 0 else torch.roll(chunks, -shift, dims=2) for shift in range(-before, after + 1)]
    return torch.cat(pieces, dim=3)


def attend_in_chunks(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_keep: torch.Tensor | None = None,
    *,
    causal: bool = False,
    mask_self: bool = False,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention inside chunks (keys already extended with their neighbours).

    ``query (B, H, N, c, d)``, ``key``/``value (B, H, N, k, d)``, ``query_positions (B, H, N, c)``,
    ``key_positions (B, H, N, k)``, ``key_keep`` broadcastable to ``(B, H, N, k)`` (True = real
    token). Returns ``out (B, H, N, c, d)`` and the log-sum-exp of each query's scores
    ``(B, H, N, c)`` (the softmax normaliser LSH attention needs to combine hash rounds).
    """
    scores = query @ key.transpose(-1, -2)  # (B, H, N, c, k)
    allowed = None
    if key_keep is not None:
        allowed = key_keep.unsqueeze(-2)  # (B, H|1, N, 1, k)
    if causal:
        not_future = query_positions.unsqueeze(-1) >= key_positions.unsqueeze(-2)  # (B, H, N, c, k)
        allowed = not_future if allowed is None else allowed & not_future
    if allowed is not None:
        scores = torch.where(allowed, scores, torch.tensor(MASK_VALUE, dtype=scores.dtype, device=scores.device))
    if mask_self:
        # shared QK: q·q is nearly always the largest score, so a token may see itself only when
        # every other key is blocked (-1e5 still beats -1e9)
        itself = query_positions.unsqueeze(-1) == key_positions.unsqueeze(-2)
        scores = torch.where(itself, torch.tensor(SELF_MASK_VALUE, dtype=scores.dtype, device=scores.device), scores)
    log_normaliser = torch.logsumexp(scores, dim=-1, keepdim=True)  # (B, H, N, c, 1)
    weights = torch.exp(scores - log_normaliser)
    if dropout_p > 0.0:
        weights = nn.functional.dropout(weights, p=dropout_p)
    return weights @ value, log_normaliser.squeeze(-1)


class LocalSelfAttention(nn.Module):
    """Each token attends to its own chunk and ``num_chunks_before``/``after`` neighbouring chunks.

    ``forward(hidden (B, T, D), attention_mask (B, T) or None)`` → ``(B, T, H·d)``.
    ``T`` must be a multiple of ``chunk_length`` (or at most one chunk long).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_size: int,
        chunk_length: int,
        *,
        num_chunks_before: int = 1,
        num_chunks_after: int = 0,
        causal: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        if min(hidden_size, num_heads, head_size, chunk_length) < 1 or min(num_chunks_before, num_chunks_after) < 0:
            raise ValueError("sizes must be positive and chunk counts non-negative")
        self.num_heads, self.head_size, self.chunk_length = num_heads, head_size, chunk_length
        self.num_chunks_before, self.num_chunks_after = num_chunks_before, num_chunks_after
        self.causal, self.dropout = causal, dropout
        self.query = nn.Linear(hidden_size, num_heads * head_size, bias=False)
        self.key = nn.Linear(hidden_size, num_heads * head_size, bias=False)
        self.value = nn.Linear(hidden_size, num_heads * head_size, bias=False)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, seq_len, _ = hidden.shape
        num_chunks = validate_chunking(seq_len, self.chunk_length)
        chunk = seq_len // num_chunks
        before, after = (self.num_chunks_before, self.num_chunks_after) if num_chunks > 1 else (0, 0)

        def chunked(t):  # (B, H, T, ...) -> (B, H, N, c, ...)
            return t.reshape(t.shape[0], t.shape[1], num_chunks, chunk, *t.shape[3:])

        q = chunked(split_heads(self.query(hidden), self.num_heads))  # (B, H, N, c, d)
        k = chunked(split_heads(self.key(hidden), self.num_heads)) / math.sqrt(self.head_size)
        v = chunked(split_heads(self.value(hidden), self.num_heads))
        positions = chunked(torch.arange(seq_len, device=hidden.device).expand(batch, 1, seq_len))  # (B, 1, N, c)
        keep = None
        if attention_mask is not None:
            _validate_mask(attention_mask, batch, seq_len)
            keep = look_adjacent(chunked(attention_mask.to(torch.bool)[:, None, :]), before, after)  # (B, 1, N, k)
        out, _ = attend_in_chunks(
            q, look_adjacent(k, before, after), look_adjacent(v, before, after),
            positions, look_adjacent(positions, before, after), keep,
            causal=self.causal, dropout_p=self.dropout if self.training else 0.0,
        )
        return merge_heads(out.flatten(2, 3))  # (B, H, T, d) -> (B, T, H·d)

    @classmethod
    def from_hf(cls, reference: nn.Module) -> LocalSelfAttention:
        """Copy of a ``transformers`` ``LocalSelfAttention`` (weights and settings)."""
        ours = cls(
            reference.hidden_size, reference.num_attention_heads, reference.attention_head_size,
            reference.chunk_length, num_chunks_before=reference.num_chunks_before,
            num_chunks_after=reference.num_chunks_after, causal=bool(reference.is_decoder),
            dropout=reference.dropout,
        )
        ours.load_state_dict({k: v for k, v in reference.state_dict().items() if "mask_value" not in k})
        return ours


def _validate_mask(mask: torch.Tensor, batch: int, seq_len: int) -> None:
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (batch, seq_len):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"attention_mask must have shape (batch, seq_len) = {(batch, seq_len)}, got {shape}")
