"""Decoding: turn a model's next-token scores into text, one token at a time.

Modules: :mod:`.search` (greedy search, sampling, one beam step and a beam search written to be read),
:mod:`.generation` (``generate``, HF's arguments), :mod:`.batched_beam_search` (the fast beam search
``generate`` runs, pinned to the readable one), :mod:`.processors` (temperature, top-k, top-p, repetition
penalty, n-gram blocking), :mod:`.steppers` (what decoding needs from a model: decoder-only, Transformer or
RNN encoder-decoder), :mod:`.constrained` (forced words); :mod:`.widgets` holds the decoding chapter's
pictures. Not covered: training (:mod:`course_lib.seq2seq`).
"""
from .batched_beam_search import batched_beam_search
from .generation import generate
from .processors import (
    no_repeat_ngram_mask, repetition_penalty, sampling_logits, temperature, top_k_filter, top_p_filter,
)
from .search import BeamSearchStep, Hypothesis, beam_search, beam_step, greedy_search, sample
from .steppers import CausalLMStepper, RNNStepper, Seq2SeqStepper, Stepper, stepper_for

__all__ = [
    "BeamSearchStep", "CausalLMStepper", "Hypothesis", "RNNStepper", "Seq2SeqStepper", "Stepper",
    "batched_beam_search", "beam_search", "beam_step", "generate", "greedy_search", "no_repeat_ngram_mask",
    "repetition_penalty", "sample", "sampling_logits", "stepper_for", "temperature", "top_k_filter",
    "top_p_filter",
]
