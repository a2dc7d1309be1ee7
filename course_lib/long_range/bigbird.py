"""BigBird's block-sparse attention: global, sliding and random blocks (skeleton: the agreed contract).

The sequence is cut into blocks of ``block_size`` tokens; attention is decided per (query block, key block).
:func:`bigbird_block_layout` is the readable picture of which block pairs are computed, as HF
``BigBirdModel`` (``attention_type="block_sparse"``) computes them.
"""
from __future__ import annotations

import torch

__all__ = ["bigbird_block_layout"]


def bigbird_block_layout(num_blocks: int, random_blocks: torch.Tensor | None = None) -> torch.Tensor:
    """Which key blocks each query block attends to: ``(num_blocks, num_blocks)`` boolean, True = computed.

    The first and last blocks are global (they see every block and every block sees them); every other
    query block sees its own block and one neighbour on each side (the sliding window of 3 blocks), and the
    key blocks listed for it in ``random_blocks``: ``(num_blocks − 2, r)`` integer block indices for query
    blocks ``1 … num_blocks − 2`` in HF's layout (its ``rand_attn`` plan); None = no random blocks.
    HF's special cases at the second and second-to-last query blocks are reproduced exactly.
    """
    raise NotImplementedError("p16-bigbird implements this first (MILESTONE)")
