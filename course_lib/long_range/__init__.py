"""Long documents: attention that does not pay T² — by looking at fewer keys, or by never storing the scores.

* :mod:`.sliding_window` — Longformer's pattern: each token sees a band of neighbours, a few global tokens
  see and are seen by everyone; the readable mask, and the banded computation in chunks that never builds
  the T×T matrix; :mod:`.longformer`, the encoder built on it, pinned to HF ``LongformerSelfAttention`` /
  ``LongformerModel``.
* :mod:`.bigbird` — BigBird's block-sparse attention: global, sliding and random *blocks*; the block layout
  (HF's random-block plan included) and the computation, pinned to HF's block-sparse attention;
  :mod:`.bigbird_model` — the pretraining Encoder with it swapped in, pinned to HF ``BigBirdModel``
  (``block_sparse``, eval and training mode), with HF's rule for falling back to full attention on short inputs.
* :mod:`.tiled` — exact attention computed tile by tile with an online softmax (FlashAttention's idea in
  plain PyTorch): the same result as torch's SDPA, with memory linear in T.
* :mod:`.benchmark` — peak memory and time of every pattern from 1k to 16k tokens, each configuration in a
  fresh process (``scripts/bench_long_range.py``; the record is ``checkpoints/long_range_memory.json``).
* :mod:`.widgets` — the long-documents chapter's attention-pattern explorer and pictures.

Built on :mod:`course_lib.attention` (the readable attention, masks) and :mod:`course_lib.reformer`
(LSH attention, the fresh-process memory measurement). Not covered: custom CUDA/Triton kernels,
FlashAttention's GPU-specific tricks (warp scheduling, shared memory), ring attention across devices.
"""
from .bigbird import bigbird_attention, bigbird_block_counts, bigbird_block_layout, bigbird_random_blocks
from .bigbird_model import BigBirdEncoder, bigbird_from_hf, uses_full_attention
from .longformer import LongformerEncoder, LongformerSelfAttention
from .sliding_window import sliding_window_attention, sliding_window_mask
from .tiled import online_softmax_update, tiled_attention

__all__ = ["sliding_window_mask", "sliding_window_attention", "LongformerSelfAttention", "LongformerEncoder",
           "online_softmax_update", "tiled_attention",
           "bigbird_block_layout", "bigbird_block_counts", "bigbird_random_blocks", "bigbird_attention",
           "BigBirdEncoder", "bigbird_from_hf", "uses_full_attention"]
