"""Byte-level BPE tokenization from scratch, pinned to GPT-2's tokenizer and HF ``tokenizers``.

Modules, in reading order: :mod:`.byte_level` (bytes as characters, the GPT-2 split pattern,
special tokens), :mod:`.tokenizer` (encode/decode with merge ranks, ``vocab.json`` +
``merges.txt``), :mod:`.naive_trainer` (recount every pair after each merge: read this first) and
:mod:`.fast_trainer` (incremental pair counts: use this one).
"""
from .byte_level import bytes_to_unicode, count_words, pretokenize, split_special
from .fast_trainer import train_bpe
from .naive_trainer import best_pair, get_stats, train_bpe_naive
from .tokenizer import ByteLevelBPE, merge_pair

__all__ = [
    "ByteLevelBPE",
    "best_pair",
    "bytes_to_unicode",
    "count_words",
    "get_stats",
    "merge_pair",
    "pretokenize",
    "split_special",
    "train_bpe",
    "train_bpe_naive",
]
