"""Hidden checks of lab 04, seq2seq: additive attention and a Transformer decoder layer.

``RUBRIC`` lists the graded cells of ``labs/source/04_seq2seq/seq2seq.ipynb`` with their points and
checks, ``REFERENCES`` the course's version of every function the lab asks for. The checks live in
three parts, :mod:`.additive` (``additive_attention``: chapter 3), :mod:`.decoder`
(``masked_self_attention``, ``cross_attention``) and :mod:`.layer` (``decoder_layer``: chapter 4),
over the references and random inputs of :mod:`.references`; each part's docstring says how its
classic mistakes cost only their own cell, and which cell each costs.

Students work on plain tensors and dicts of parameter tensors (the sandboxed grader exchanges nothing
else). Not covered: dropout, the encoder layer, incremental decoding with a key/value cache.
"""
from __future__ import annotations

from ..rubric import Criterion, Rubric
from .additive import check_additive_context, check_additive_padding, check_additive_weights
from .decoder import check_causal_self_attention, check_cross_attention, check_self_attention_padding
from .layer import check_decoder_padding, check_post_norm, check_pre_norm
from .references import (
    reference_additive_attention, reference_cross_attention, reference_decoder_layer, reference_self_attention,
)

__all__ = ["REFERENCES", "RUBRIC"]

# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "additive_attention": reference_additive_attention,
    "masked_self_attention": reference_self_attention,
    "cross_attention": reference_cross_attention,
    "decoder_layer": reference_decoder_layer,
}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_additive_weights", 2, check_additive_weights, ("additive_attention",),
              "additive attention: softmax over the source positions of vᵀ tanh(W_q q + W_k k)"),
    Criterion("test_additive_padding", 1, check_additive_padding, ("additive_attention",),
              "additive attention: padded source positions get weight 0"),
    Criterion("test_additive_context", 1, check_additive_context, ("additive_attention",),
              "additive attention: context = the weights applied to the keys, (B, D_k)"),
    Criterion("test_causal_self_attention", 2, check_causal_self_attention, ("masked_self_attention",),
              "decoder self-attention is causal: no position reads a later one"),
    Criterion("test_self_attention_padding", 1, check_self_attention_padding, ("masked_self_attention",),
              "decoder self-attention ignores target padding"),
    Criterion("test_cross_attention", 2, check_cross_attention, ("cross_attention",),
              "cross-attention: queries from the decoder, keys and values from the memory, source padding masked"),
    Criterion("test_post_norm", 2, check_post_norm, ("decoder_layer",),
              "post-norm decoder layer: x = norm(x + sublayer(x)), equal to course_lib's"),
    Criterion("test_pre_norm", 2, check_pre_norm, ("decoder_layer",),
              "pre-norm decoder layer: x = x + sublayer(norm(x)), equal to course_lib's"),
    Criterion("test_decoder_padding", 1, check_decoder_padding, ("decoder_layer",),
              "decoder layer: target and source padding masks reach the right sub-layers"),
))
