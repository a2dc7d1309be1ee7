"""The course's own trained models: a small GPT (with its key/value cache) and the string reverser.

:mod:`.gpt` (GPT-2's layout, loads HF's weights, the Shakespeare checkpoint), :mod:`.kv_cache`
(keys and values kept between decoding steps), :mod:`.reverser` (a tiny encoder whose attention is
worth looking at). Built from :mod:`course_lib.attention` and :mod:`course_lib.seq2seq`'s layers.
"""
from .gpt import GPT, GPTConfig, load_shakespeare_gpt
from .reverser import CharVocab, Reverser, load_reverser

__all__ = ["GPT", "CharVocab", "GPTConfig", "Reverser", "load_reverser", "load_shakespeare_gpt"]
