"""Transformers from Scratch: the course's teaching library.

One canonical implementation of each concept the course teaches; the chapters show this code
(``show_source``) and the labs grade against it. Organised by topic, each package a chapter's
subject, its modules small and in reading order:

=================  ==========================================================================
``attention``      scaled dot-product attention, masks, multi-head attention, positions
``tokenization``   byte-level BPE, pinned to GPT-2's tokenizer and HF ``tokenizers``
``decoding``       greedy search, sampling, beam search, constrained search; the steppers
``seq2seq``        RNN encoder-decoders, the Transformer, training, translation and BLEU
``models``         the course's own trained models: a GPT and the string reverser
``reformer``       LSH attention, chunking, reversible layers (and the memory benchmark)
``pretraining``    masked and causal LM objectives, the BERT/RoBERTa encoder, EsperBERTo
``transfer``       task heads, fine-tuning the real MiniLM, distillation, warm-started encoder-decoders
``long_range``     sliding-window + global attention (Longformer), block-sparse (BigBird), exact tiled attention
``distributed``    data parallelism from scratch pinned to DDP, sharded optimizer state, torchrun launching
``lab_checks``     the labs' hidden checks (the instructor's grader is ``course_grader``)
=================  ==========================================================================

Below them: ``runtime`` (device, fast mode, checkpoints), ``data`` (the datasets), ``viz`` (plots,
the explorers' frame, ``show_source``, offline bertviz, the book's Sphinx extension), ``notebooks``
(the course's notebook headers) and ``version``.
**One rule for widgets:** each chapter's explorers live beside their topic, in
``course_lib/<topic>/widgets.py``, built on :class:`course_lib.viz.Explorer`. **One rule for
imports:** a package imports only packages listed above it in this table (and the ones below
the table), never the package root, so there is no import circle; ``tests/test_layout.py`` checks it.

The names below are the ones the chapters, labs and README use: ``from course_lib import X``.
"""
from .attention import (
    MultiHeadAttention, SinusoidalPositionalEncoding, causal_mask, fused_attention, merge_heads, padding_mask,
    scaled_dot_product_attention, sinusoidal_positional_encoding, split_heads, to_additive,
)
from .decoding import generate
from .models import GPT, GPTConfig, load_shakespeare_gpt
from .notebooks import REPOSITORY
from .runtime import describe_device, fast_mode, get_device
from .seq2seq import (
    AdditiveAttention, RNNSeq2Seq, Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
    TransformerEncoderLayer, sequence_loss, train_seq2seq,
)
from .version import __version__ as __version__  # the package version (pyproject.toml reads it)

__all__ = [
    "scaled_dot_product_attention", "fused_attention",
    "causal_mask", "padding_mask", "to_additive",
    "MultiHeadAttention", "split_heads", "merge_heads",
    "sinusoidal_positional_encoding", "SinusoidalPositionalEncoding",
    "get_device", "describe_device", "fast_mode",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder", "Transformer",
    "AdditiveAttention", "RNNSeq2Seq",
    "train_seq2seq", "sequence_loss",
    "GPT", "GPTConfig", "load_shakespeare_gpt", "generate", "REPOSITORY",
]
