"""Transformers from Scratch: the course's teaching library.

One canonical implementation of each concept the course teaches; the chapters show this code
(``inspect.getsource``) and the labs grade against it.
"""
from .attention import fused_attention, scaled_dot_product_attention
from .decoding import generate
from .device import describe_device, get_device
from .gpt import GPT, GPTConfig, load_shakespeare_gpt
from .masks import causal_mask, padding_mask, to_additive
from .multi_head import MultiHeadAttention, merge_heads, split_heads
from .positional import SinusoidalPositionalEncoding, sinusoidal_positional_encoding
from .rnn_seq2seq import AdditiveAttention, RNNSeq2Seq
from .training import greedy_decode_rnn, greedy_decode_transformer, sequence_loss, train_seq2seq
from .transformer_layers import (
    TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer,
)
from .transformer_model import Transformer

__version__ = "0.1.0"
REPOSITORY = "transformers-from-scratch/course"  # GitHub owner/name: Colab badges, Binder, book links

__all__ = [
    "scaled_dot_product_attention", "fused_attention",
    "causal_mask", "padding_mask", "to_additive",
    "MultiHeadAttention", "split_heads", "merge_heads",
    "sinusoidal_positional_encoding", "SinusoidalPositionalEncoding",
    "get_device", "describe_device",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder", "Transformer",
    "AdditiveAttention", "RNNSeq2Seq",
    "train_seq2seq", "sequence_loss", "greedy_decode_transformer", "greedy_decode_rnn",
    "GPT", "GPTConfig", "load_shakespeare_gpt", "generate",
]
