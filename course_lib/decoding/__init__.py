"""Decoding: turn a model's next-token scores into text, one token at a time.

Modules: :mod:`.search` (``generate``, greedy search, sampling, beam search), :mod:`.processors`
(temperature, top-k, top-p, repetition penalty, n-gram blocking), :mod:`.steppers` (what decoding
needs from a model: decoder-only or encoder-decoder), :mod:`.constrained` (forced words);
:mod:`.widgets` holds the decoding chapter's pictures. Not covered: training (:mod:`course_lib.seq2seq`).
"""
from .processors import no_repeat_ngram_mask, repetition_penalty, temperature, top_k_filter, top_p_filter
from .search import beam_search, generate, greedy_search, sample
from .steppers import CausalLMStepper, Seq2SeqStepper, Stepper

__all__ = [
    "CausalLMStepper", "Seq2SeqStepper", "Stepper", "beam_search", "generate", "greedy_search", "no_repeat_ngram_mask",
    "repetition_penalty", "sample", "temperature", "top_k_filter", "top_p_filter",
]
