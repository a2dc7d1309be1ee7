"""BigBird's block-sparse attention: global, sliding and random blocks.

The sequence is cut into ``num_blocks`` blocks of ``block_size`` tokens; attention is decided per
(query block, key block), as HF ``BigBirdModel`` (``attention_type="block_sparse"``) decides it:

* the first and last blocks are *global*: they see every key, and every query sees them;
* every other query block sees its own block and one neighbour on each side (a window of 3 blocks);
* and ``r`` *random* key blocks per query block, listed in a plan of shape ``(num_blocks − 2, r)``.

:func:`bigbird_random_blocks` makes HF's plan (all zeros in eval mode; numpy draws in training mode),
:func:`bigbird_block_layout` is the readable picture of which block pairs are computed,
:func:`bigbird_block_counts` says how many times each key block enters a query block's softmax (HF's
eval-mode plan repeats block 0), and :func:`bigbird_attention` computes the attention by gathering key
blocks, never building the T×T scores. The model around it is :mod:`.bigbird_model`.
Not covered: BigBird-ETC (extra global tokens), HF's older plans used only at exactly 1024, 3072 or
4096 tokens in training mode.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["bigbird_block_layout", "bigbird_block_counts", "bigbird_random_blocks", "bigbird_attention"]


def _check_num_blocks(num_blocks) -> None:
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"num_blocks must be a positive int, got {num_blocks!r}")


def _check_plan(num_blocks: int, random_blocks: torch.Tensor) -> torch.Tensor:
    plan = torch.as_tensor(random_blocks)
    if plan.dtype.is_floating_point or plan.dtype == torch.bool or plan.ndim < 2:
        raise ValueError(f"random_blocks must be integer block indices of shape (..., num_blocks − 2, r), "
                         f"got dtype {plan.dtype} and shape {tuple(plan.shape)}")
    if plan.shape[-2] != max(num_blocks - 2, 0):
        raise ValueError(f"random_blocks needs one row per non-global query block: {max(num_blocks - 2, 0)} rows "
                         f"for {num_blocks} blocks, got shape {tuple(plan.shape)}")
    if plan.numel() and (plan.min() < 0 or plan.max() >= num_blocks):
        raise ValueError(f"random block indices must lie in [0, {num_blocks}), got {plan.min()}…{plan.max()}")
    return plan.long()


def bigbird_block_counts(num_blocks: int, random_blocks: torch.Tensor | None = None) -> torch.Tensor:
    """How many times each key block enters each query block's softmax: ``(..., num_blocks, num_blocks)`` int.

    The fixed part (window ∪ the two global blocks) counts once per block, each random slot once more.
    HF's eval-mode plan is all zeros, so there a middle query block counts key block 0 ``1 + r`` times:
    its keys take ``1 + r`` times their share of the softmax. ``random_blocks`` as in :func:`bigbird_block_layout`.
    """
    _check_num_blocks(num_blocks)
    block = torch.arange(num_blocks)
    window = (block[:, None] - block[None, :]).abs() <= 1  # (nb, nb): own block and its two neighbours
    is_global = (block == 0) | (block == num_blocks - 1)
    fixed = window | is_global[:, None] | is_global[None, :]  # (nb, nb)
    if random_blocks is None:
        return fixed.long()
    plan = _check_plan(num_blocks, random_blocks)  # (..., nb − 2, r)
    counts = fixed.long().expand(*plan.shape[:-2], num_blocks, num_blocks).clone()  # (..., nb, nb)
    if num_blocks > 2:
        middle = counts[..., 1:-1, :]  # (..., nb − 2, nb): a view, so adding to it adds to counts
        middle.scatter_add_(-1, plan, torch.ones_like(plan))  # global rows see every block once: no random slots
    return counts


def bigbird_block_layout(num_blocks: int, random_blocks: torch.Tensor | None = None) -> torch.Tensor:
    """Which key blocks each query block attends to: ``(num_blocks, num_blocks)`` boolean, True = computed.

    The first and last blocks are global (they see every block and every block sees them); every other
    query block sees its own block and one neighbour on each side (the sliding window of 3 blocks), and the
    key blocks listed for it in ``random_blocks``: ``(num_blocks − 2, r)`` integer block indices for query
    blocks ``1 … num_blocks − 2`` in HF's layout (its ``rand_attn`` plan); None = no random blocks.
    HF's special cases at the second and second-to-last query blocks are reproduced exactly: their window
    already holds a global block (block 0, resp. the last block), which they score once, not twice.
    A stack of plans ``(H, num_blocks − 2, r)`` (one per head) gives ``(H, num_blocks, num_blocks)``.

    >>> bigbird_block_layout(6).int()  # no random blocks: global rows and columns, and the band
    tensor([[1, 1, 1, 1, 1, 1],
            [1, 1, 1, 0, 0, 1],
            [1, 1, 1, 1, 0, 1],
            [1, 0, 1, 1, 1, 1],
            [1, 0, 0, 1, 1, 1],
            [1, 1, 1, 1, 1, 1]], dtype=torch.int32)
    """
    return bigbird_block_counts(num_blocks, random_blocks) > 0


# --- HF's random-block plan ---------------------------------------------------------------------------

def _plan_parts(num_blocks: int, r: int) -> list[tuple[int, int]]:
    """HF's split of the key range: ``[(end block, random blocks drawn below it), ...]`` (its ``_get_rand_attn_plan``)."""
    if 2 * r + 5 < num_blocks:
        return [(2 * r + 5, r), (num_blocks, 0)]  # every row draws its r blocks among the first 2r + 5
    if r + 5 < num_blocks:
        return [(r + 5, r // 2), (num_blocks, r - r // 2)]
    return [(num_blocks, r)]


def _draw_row(rng: np.random.RandomState, row: int, low: int, high: int, how_many: int) -> np.ndarray:
    """Up to ``how_many`` key blocks from ``[low, high)`` for query block ``row``: the first ones of a random
    permutation that are neither in the row's window nor block 0 nor the range's last block ``high − 1`` (HF's
    illegal blocks, quirks kept: that "last global block" is the range's end; row 1 also skips block ``high − 2``,
    and row ``high − 2`` skips block 1)."""
    permuted = rng.permutation(np.arange(low, high, dtype=np.int32))
    illegal = {row - 1, row, row + 1, 0, high - 1}
    if row == 1:
        illegal.add(high - 2)
    if row == high - 2:
        illegal.add(1)
    return np.array([b for b in permuted if b not in illegal][:how_many], dtype=np.int32)


def bigbird_random_blocks(num_blocks: int, num_random_blocks: int, seed: int | None = None, training: bool = False,
                          *, num_heads: int | None = None) -> torch.Tensor:
    """HF's random-block plan (``rand_attn``): ``(num_blocks − 2, r)`` long, one row per query block ``1 … nb − 2``.

    Eval mode (``training=False``): all zeros, as HF returns in eval — no randomness at all, and every middle
    query block then scores key block 0 once more per random slot (see :func:`bigbird_block_counts`).
    Training mode: HF's draws, reproduced number for number from numpy's legacy generator seeded with ``seed``
    (HF seeds ``np.random`` with the layer's index on every forward, so its "random" blocks are the same at
    every step; ``seed=None`` draws afresh). Rows draw in order, and for each row every head in turn: a plan
    for ``num_heads`` heads is ``(num_heads, nb − 2, r)`` and differs per head; None = one head, no head axis.
    HF's model only uses these plans when ``num_blocks > 2r + 5`` (:mod:`.bigbird_model`'s fallback rule);
    then every row draws among the first ``2r + 5`` blocks. Not reproduced: HF's older plan at exactly
    1024, 3072 or 4096 tokens (training mode only; in eval it is zeros too).
    """
    _check_num_blocks(num_blocks)
    if isinstance(num_random_blocks, bool) or not isinstance(num_random_blocks, int) or num_random_blocks < 0:
        raise ValueError(f"num_random_blocks must be an int ≥ 0, got {num_random_blocks!r}")
    heads = 1 if num_heads is None else num_heads
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"num_heads must be a positive int or None, got {num_heads!r}")
    if num_blocks < 3:
        raise ValueError(f"a plan needs a query block between the two global ones: num_blocks ≥ 3, got {num_blocks}")
    r = num_random_blocks
    plan = np.zeros((heads, num_blocks, r), dtype=np.int32)  # rows 0 and nb − 1 are drawn too, then dropped (as HF)
    if training:
        rng = np.random.RandomState(seed)  # the same stream as HF's np.random.seed(seed), without touching the global one
        parts = _plan_parts(num_blocks, r)
        starts = [0] + [end for end, _ in parts[:-1]]  # first key block of each part
        columns = np.cumsum([0] + [count for _, count in parts])  # part p fills plan columns [columns[p], columns[p+1])

        def fill(rows, part):
            for row in rows:
                for head in range(heads):
                    # a slice assignment, as HF's: numpy broadcasts a single draw over the slice, an empty one fails
                    drawn = _draw_row(rng, row, starts[part], parts[part][0], parts[part][1])
                    if len(drawn) not in (1, parts[part][1]):  # numpy would refuse the assignment, and so does HF
                        raise ValueError(
                            f"HF's plan finds only {len(drawn)} of {parts[part][1]} random blocks for query block "
                            f"{row} among key blocks [{starts[part]}, {parts[part][0]}) at num_blocks={num_blocks}, "
                            f"r={r}: too few blocks (HF's model uses block-sparse attention only when "
                            f"num_blocks > 2r + 5 = {2 * r + 5})")
                    plan[head, row, columns[part]:columns[part + 1]] = drawn

        for part, (end, count) in enumerate(parts):
            if part > 0:
                if count > 0:  # rows above this part also draw from it
                    fill(range(1, starts[part]), part)
                for earlier in range(part):  # this part's rows draw from every earlier part
                    if parts[earlier][1] > 0:
                        fill(range(starts[part], end), earlier)
            if count > 0:
                fill(range(max(starts[part], 1), end), part)
    plan = torch.from_numpy(plan[:, 1:-1].astype(np.int64))  # (heads, nb − 2, r)
    return plan[0] if num_heads is None else plan


# --- the computation ------------------------------------------------------------------------------------

def _middle_key_blocks(num_blocks: int, plan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For query blocks ``1 … nb − 2``: the key blocks they score ``(..., nb − 2, 5 + r)`` (first, window of 3,
    last, then the random ones) and which of these slots count ``(nb − 2, 5 + r)`` bool: a global slot that the
    window already holds (rows 1 and nb − 2) is dropped, random slots always count."""
    rows = torch.arange(1, num_blocks - 1)  # (nb − 2,)
    fixed = torch.stack([torch.zeros_like(rows), rows - 1, rows, rows + 1,
                         torch.full_like(rows, num_blocks - 1)], dim=-1)  # (nb − 2, 5)
    keep = torch.ones(num_blocks - 2, 5 + plan.shape[-1], dtype=torch.bool)
    keep[:, 0] = rows - 1 != 0  # row 1's window starts at block 0
    keep[:, 4] = rows + 1 != num_blocks - 1  # row nb − 2's window ends at the last block
    blocks = torch.cat([fixed.expand(*plan.shape[:-1], 5), plan], dim=-1)  # (..., nb − 2, 5 + r)
    return blocks, keep


def bigbird_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, block_size: int,
                      random_blocks: torch.Tensor | None, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """BigBird's block-sparse attention: ``query, key, value (B, H, T, d)`` → output ``(B, H, T, d)``.

    ``T`` must be a multiple of ``block_size`` (HF's model pads to one). The two global query blocks score all
    T keys; each other query block gathers its ``5 + r`` key blocks (:func:`bigbird_block_layout`) and scores
    only those: memory O(T · block_size · (5 + r)), never T×T. ``random_blocks``: the plan
    (:func:`bigbird_random_blocks`), ``(nb − 2, r)`` shared by all heads or ``(H, nb − 2, r)``; None = r = 0.
    A key block named again by a random slot is scored again, as HF does: it enters that row's softmax once per
    mention. HF's eval-mode plan of zeros names block 0 in all ``r`` random slots, so in eval every middle row
    weighs block 0's keys ``1 + r`` times as much as a boolean block mask would. The result equals
    :func:`course_lib.attention.scaled_dot_product_attention` with the additive mask ``log(counts)`` of
    :func:`bigbird_block_counts` expanded to tokens (a plain boolean mask when no block repeats).
    ``padding_mask (B, T)`` bool, True = real token: padding keys get no weight; a query with no real key
    gets zeros (the readable attention's rule).
    """
    if query.ndim != 4 or key.shape != query.shape or value.shape[:-1] != query.shape[:-1]:
        raise ValueError(f"query, key and value must be (B, H, T, d) with one shape, got {tuple(query.shape)}, "
                         f"{tuple(key.shape)}, {tuple(value.shape)}")
    batch, heads, seq_len, dim = query.shape
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1 or seq_len % block_size:
        raise ValueError(f"the sequence length {seq_len} must be a multiple of block_size, got {block_size!r}: "
                         "pad the input (BigBird's model pads to a multiple of the block size)")
    num_blocks = seq_len // block_size
    if num_blocks < 3:
        raise ValueError(f"block-sparse attention needs at least 3 blocks, got {num_blocks}: use full attention")
    plan = torch.zeros(num_blocks - 2, 0, dtype=torch.long) if random_blocks is None else \
        _check_plan(num_blocks, random_blocks)
    if plan.ndim == 3 and plan.shape[0] != heads:
        raise ValueError(f"a per-head plan needs {heads} heads, got shape {tuple(plan.shape)}")
    if padding_mask is None:
        padding_mask = torch.ones(batch, seq_len, dtype=torch.bool, device=query.device)
    if padding_mask.dtype != torch.bool or padding_mask.shape != (batch, seq_len):
        raise ValueError(f"padding_mask must be boolean (B, T) = {(batch, seq_len)}, True = real token, got "
                         f"{padding_mask.dtype} {tuple(padding_mask.shape)}")
    scale = 1.0 / math.sqrt(dim)

    def attend(q, k, v, allowed):  # q (..., Tq, d), k/v (..., Tk, d), allowed (..., Tq or 1, Tk) bool
        scores = (q @ k.transpose(-2, -1) * scale).masked_fill(~allowed, float("-inf"))
        nothing = ~allowed.any(dim=-1, keepdim=True)  # a row with no real key: zero output, not NaN
        weights = torch.softmax(scores.masked_fill(nothing, 0.0), dim=-1).masked_fill(nothing, 0.0)
        return weights @ v

    real_key = padding_mask[:, None, None, :]  # (B, 1, 1, T)
    output = torch.empty_like(query)
    for block in (0, num_blocks - 1):  # the global rows: every key
        rows = slice(block * block_size, (block + 1) * block_size)
        output[:, :, rows] = attend(query[:, :, rows], key, value, real_key)

    blocks, keep = _middle_key_blocks(num_blocks, plan.to(query.device))  # (nb−2, 5+r) or (H, nb−2, 5+r)
    keep = keep.to(query.device)
    slots = blocks.shape[-1]
    blocks = blocks.expand(heads, num_blocks - 2, slots)  # (H, nb − 2, 5 + r): a shared plan serves every head
    blocked_key = key.view(batch, heads, num_blocks, block_size, dim)
    blocked_value = value.view(batch, heads, num_blocks, block_size, dim)
    gather_index = blocks.reshape(1, heads, -1, 1, 1).expand(batch, heads, -1, block_size, dim)
    shape = (batch, heads, num_blocks - 2, slots * block_size, dim)
    gathered_key = blocked_key.gather(2, gather_index).view(shape)  # (B, H, nb − 2, (5 + r)·bs, d)
    gathered_value = blocked_value.gather(2, gather_index).view(shape)
    real = padding_mask.view(batch, 1, num_blocks, block_size).expand(batch, heads, num_blocks, block_size)
    gathered_real = real.gather(2, blocks.reshape(1, heads, -1, 1).expand(batch, heads, -1, block_size))
    allowed = gathered_real.view(batch, heads, num_blocks - 2, slots, block_size) & keep[:, :, None]
    middle_query = query[:, :, block_size:-block_size].reshape(batch, heads, num_blocks - 2, block_size, dim)
    middle = attend(middle_query, gathered_key, gathered_value,
                    allowed.view(batch, heads, num_blocks - 2, 1, slots * block_size))
    output[:, :, block_size:-block_size] = middle.reshape(batch, heads, seq_len - 2 * block_size, dim)
    return output
