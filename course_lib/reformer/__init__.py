"""The Reformer's memory savers, one module each, pinned to HF ``transformers``' Reformer by the tests.

* :mod:`.lsh` — hashing vectors into buckets with random rotations; sorting by bucket.
* :mod:`.lsh_attention` — LSH self-attention (shared QK, sorted chunks, hash rounds combined).
* :mod:`.local_attention` — chunked local self-attention and the chunk helpers.
* :mod:`.chunked_ff` — feed-forward layers applied chunk by chunk along the sequence.
* :mod:`.reversible` — reversible residual layers with a reconstructing backward pass.
* :mod:`.axial` — axial position embeddings.
* :mod:`.model` — the layers and the whole model assembled (parameter counts as HF).
"""
from .axial import AxialPositionEmbeddings, PositionEmbeddings
from .chunked_ff import ChunkedFeedForward, apply_chunking
from .local_attention import LocalSelfAttention, look_adjacent
from .lsh import hash_vectors, random_rotations, sort_by_bucket, total_buckets, validate_num_buckets
from .lsh_attention import LSHSelfAttention, normalise_keys
from .model import AttentionBlock, ReformerModel, ReformerSettings, layer_from_hf, reformer_layer
from .reversible import ReversibleBlock, ReversibleSequence

__all__ = [
    "validate_num_buckets", "total_buckets", "random_rotations", "hash_vectors", "sort_by_bucket",
    "LSHSelfAttention", "normalise_keys", "LocalSelfAttention", "look_adjacent",
    "ChunkedFeedForward", "apply_chunking", "ReversibleBlock", "ReversibleSequence",
    "AxialPositionEmbeddings", "PositionEmbeddings",
    "ReformerSettings", "AttentionBlock", "reformer_layer", "layer_from_hf", "ReformerModel",
]
