"""Sequence to sequence: RNN encoder-decoders with additive attention and the Transformer, trained on Multi30k.

Models: :mod:`.rnn` (GRU encoder-decoder, additive attention), :mod:`.layers` (Transformer encoder and
decoder layers and stacks, pinned to ``torch.nn``), :mod:`.transformer` (the full model), with
:mod:`.validation` (input errors that name the problem). Training: :mod:`.training`. Applications,
imported by name: :mod:`.translation` (Multi30k, BPE, batches, ``translate``, BLEU), :mod:`.alignment`,
:mod:`.bottleneck` (scores by sentence length) and :mod:`.widgets` (the translation explorer).
"""
from .layers import TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer
from .rnn import AdditiveAttention, RNNDecoder, RNNEncoder, RNNSeq2Seq
from .training import evaluate, sequence_loss, teacher_forcing_logits, train_seq2seq
from .transformer import Transformer

__all__ = [
    "AdditiveAttention", "RNNDecoder", "RNNEncoder", "RNNSeq2Seq", "Transformer", "TransformerDecoder",
    "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer", "evaluate", "sequence_loss",
    "teacher_forcing_logits", "train_seq2seq",
]
