"""Warm-starting an encoder-decoder from a pretrained encoder (BERT2BERT), pinned to HF ``EncoderDecoderModel``.

::

    source ids (B, S) ─► Encoder (the pretrained one, copied as is) ─► memory (B, S, D)
                                                                          │ keys, values
    target prefix (B, T) ─► embeddings ─► N × [causal self-attention ─► cross-attention (NEW) ─► FFN] ─► LM head ─► (B, T, V)
                            (copied)          (copied)                                      (copied)   (new, tied)

A pretrained encoder has everything a decoder layer needs except two things: the **cross-attention**
block (queries from the target, keys and values from the encoder's output, with its own LayerNorm) and
an **LM head**. :func:`warm_start_from_encoder` copies the encoder's embeddings, self-attention, feed-forward and
LayerNorm weights into both halves; the self-attention of the decoder is simply made causal (the same
weights, now reading only the prefix). What stays randomly initialised (BERT's N(0, 0.02), zero biases,
LayerNorm at identity) is listed in ``model.new_parameter_names``: the cross-attention of every decoder
layer, and the LM head's transform (dense + GELU + LayerNorm) and bias — MiniLM ships no MLM head; the
head's output matrix is the decoder's word embeddings (tied), so it is pretrained. Both halves keep their
own copy of the embeddings (HF's default, ``tie_encoder_decoder=False``); the encoder's pooler is left
out (a seq2seq model never reads it).

The layers are the library's: :class:`course_lib.seq2seq.layers.TransformerDecoderLayer` in post-norm with
exact GELU (BERT's layout: ``norm1`` after self-attention, ``norm2`` after cross-attention, ``norm3`` after
the FFN), the encoder is :class:`course_lib.pretraining.encoder.Encoder`, the head its ``MaskedLMHead``.
The loss is HF's: cross-entropy of logit ``t`` against ``labels[t]`` (−100 ignored), where the decoder
reads ``labels`` shifted right behind the start token (:func:`shift_right`). :func:`from_hf` copies an HF
``EncoderDecoderModel`` of two BERTs; :func:`greedy_generate` decodes through
:func:`course_lib.decoding.generate`. Not covered: training (:mod:`.warm_start_experiment`), beam search
settings, shared (tied) encoder-decoder weights, GPT-2 or RoBERTa decoders, key/value caches.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.masks import causal_mask
from ..decoding.generation import generate
from ..pretraining.encoder import Encoder, EncoderConfig, MaskedLMHead, bert_init, config_from_hf
from ..pretraining.encoder_inputs import validate_encoder_inputs
from ..seq2seq.layers import TransformerDecoderLayer

__all__ = ["BertDecoder", "BertEncoderDecoder", "Seq2SeqOutput", "from_hf", "greedy_generate", "hf_name",
           "seq2seq_loss", "shift_right", "warm_start_from_encoder"]

IGNORE_INDEX = -100  # label value the loss skips (HF's)


class Seq2SeqOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None  # scalar, when labels were given


class BertDecoder(nn.Module):
    """BERT's layout as a decoder: embeddings → N post-norm decoder layers (causal self-attention,
    cross-attention, FFN) → the LM head tied to the word embeddings. The embedding names match
    :class:`Encoder`'s, so an encoder's weights copy over by name."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_positions, config.dim)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.dim)
                                      if config.type_vocab_size else None)
        self.embedding_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(self._layer(config) for _ in range(config.num_layers))
        self.lm_head = MaskedLMHead(config, self.word_embeddings)

    @staticmethod
    def _layer(config: EncoderConfig) -> TransformerDecoderLayer:
        layer = TransformerDecoderLayer(config.dim, config.num_heads, config.ffn_dim, config.dropout,
                                        activation="gelu", norm_first=False, layer_norm_eps=config.layer_norm_eps)
        layer.ffn.dropout = nn.Identity()  # as in BERT: no dropout between the FFN's two linears
        return layer

    def hidden_states(self, input_ids, memory, attention_mask=None, memory_mask=None) -> torch.Tensor:
        """The last layer's output ``(B, T, D)`` (before the LM head)."""
        real = validate_encoder_inputs(self.config, input_ids, attention_mask, None)  # (B, T) True = real
        if memory.ndim != 3 or memory.shape[0] != input_ids.shape[0] or memory.shape[2] != self.config.dim:
            raise ValueError(f"memory must be (batch={input_ids.shape[0]}, src_len, {self.config.dim}), "
                             f"got {tuple(memory.shape)}")
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]  # (1, T)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # (B, T, D)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings.weight[0]  # the decoder's tokens are all segment 0
        x = self.embedding_dropout(self.embedding_norm(x))
        causal = causal_mask(input_ids.shape[1], device=input_ids.device)  # (T, T) True = may attend
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=causal, tgt_key_padding_mask=real, memory_key_padding_mask=memory_mask)
        return x  # (B, T, D)

    def forward(self, input_ids, memory, attention_mask=None, memory_mask=None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids, memory, attention_mask, memory_mask))  # (B, T, V)


class BertEncoderDecoder(nn.Module):
    """``forward(input_ids (B, S), attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
    labels=None) -> Seq2SeqOutput``; without ``decoder_input_ids`` the decoder reads ``shift_right(labels)``.
    Masks are 1 (or True) at real tokens. Built as is, every weight is random (BERT's initialisation);
    :func:`warm_start_from_encoder` and :func:`from_hf` fill it."""

    def __init__(self, config: EncoderConfig, decoder_config: EncoderConfig | None = None, *,
                 decoder_start_token_id: int = 101, eos_token_id: int = 102):
        super().__init__()
        decoder_config = decoder_config or config
        if decoder_config.dim != config.dim:
            raise ValueError(f"cross-attention reads the encoder's output: the decoder's dim ({decoder_config.dim}) "
                             f"must equal the encoder's ({config.dim})")
        for name, token in (("decoder_start_token_id", decoder_start_token_id), ("eos_token_id", eos_token_id)):
            if not 0 <= token < decoder_config.vocab_size:
                raise ValueError(f"{name} {token} is outside the decoder's vocabulary [0, {decoder_config.vocab_size})")
        self.config, self.decoder_config = config, decoder_config
        self.decoder_start_token_id, self.eos_token_id = decoder_start_token_id, eos_token_id
        self.pad_token_id = decoder_config.pad_token_id
        self.encoder = Encoder(config, add_pooler=False)
        self.decoder = BertDecoder(decoder_config)
        self.decoder.apply(self._bert_init)
        self.new_parameter_names: list[str] = []  # filled by warm_start: what it could not copy

    def _bert_init(self, module: nn.Module) -> None:
        bert_init(module, self.decoder_config.init_std)  # the encoder initialises itself the same way

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask).last_hidden_state  # (B, S, D)

    def decode(self, decoder_input_ids, memory, memory_key_padding_mask=None, decoder_attention_mask=None):
        """Logits ``(B, T, V)`` for the target prefix, reading the encoder's ``memory`` ``(B, S, D)``."""
        memory_mask = None if memory_key_padding_mask is None else memory_key_padding_mask.bool()
        return self.decoder(decoder_input_ids, memory, decoder_attention_mask, memory_mask)

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                labels=None) -> Seq2SeqOutput:
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("give decoder_input_ids, or labels (the decoder then reads them shifted right)")
            decoder_input_ids = shift_right(labels, self.decoder_start_token_id, self.pad_token_id)
        memory = self.encode(input_ids, attention_mask)
        memory_mask = None if attention_mask is None else attention_mask.bool()
        logits = self.decode(decoder_input_ids, memory, memory_mask, decoder_attention_mask)
        loss = None if labels is None else seq2seq_loss(logits, labels)
        return Seq2SeqOutput(logits, loss)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix counts once


def shift_right(labels: torch.Tensor, start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """The decoder's input for ``labels`` ``(B, T)``: the start token, then ``labels[:, :-1]`` (−100 → padding)."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be (batch, target_len), got shape {tuple(labels.shape)}")
    shifted = labels.new_full(labels.shape, start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_token_id)


def seq2seq_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logit ``t`` against ``labels[t]`` over the positions whose label is not −100."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits (B, T, V) {tuple(logits.shape)} and labels (B, T) {tuple(labels.shape)} disagree")
    if not (labels != IGNORE_INDEX).any():
        raise ValueError("every label is -100: there is nothing to score")
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


# --- warm-starting --------------------------------------------------------------------------------

_COPIED_LAYER_PARTS = ("self_attn", "ffn", "norm1", "norm3")  # decoder layer ← encoder layer (norm2 is cross's)
_ENCODER_TO_DECODER_NORM = {"norm1": "norm1", "norm2": "norm3"}  # encoder: norm2 follows the FFN


def warm_start_from_encoder(encoder: Encoder, decoder_source: Encoder | None = None, *,
                            decoder_start_token_id: int = 101, eos_token_id: int = 102) -> BertEncoderDecoder:
    """A :class:`BertEncoderDecoder` whose encoder is a copy of ``encoder`` (pooler left out) and whose
    decoder copies ``decoder_source`` (default: the same encoder) wherever the layouts match; the rest is
    new and named in ``model.new_parameter_names``. The inputs are not modified."""
    decoder_source = decoder_source or encoder
    for name, part in (("encoder", encoder), ("decoder_source", decoder_source)):
        if not isinstance(part, Encoder):
            raise TypeError(f"{name} must be a course_lib Encoder (e.g. load_minilm()[0]), got {type(part).__name__}")
    if decoder_source.config.padding_offset_positions:
        raise ValueError("the decoder numbers positions 0..T-1 (BERT); a RoBERTa-style decoder_source is not covered")
    model = BertEncoderDecoder(copy.deepcopy(encoder.config), copy.deepcopy(decoder_source.config),
                               decoder_start_token_id=decoder_start_token_id, eos_token_id=eos_token_id)
    encoder_state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    model.encoder.load_state_dict(encoder_state, strict=True)
    copied = {}
    for name, tensor in decoder_source.state_dict().items():
        if name.startswith("pooler."):
            continue
        if name.startswith("layers."):
            _, index, part, rest = name.split(".", 3)
            part = _ENCODER_TO_DECODER_NORM.get(part, part)
            name = f"layers.{index}.{part}.{rest}"
        copied[name] = tensor
    copied["lm_head.decoder.weight"] = copied["word_embeddings.weight"]  # the tie
    missing, unexpected = model.decoder.load_state_dict(copied, strict=False)
    if unexpected:
        raise ValueError(f"decoder_source has weights the decoder has no place for: {unexpected[:4]}")
    model.new_parameter_names = sorted(f"decoder.{name}" for name in missing)
    return model.train(encoder.training)


# --- HF EncoderDecoderModel interchange -----------------------------------------------------------

_DECODER_LAYER_NAMES = {  # ours (inside decoder.layers.i) ← HF (inside decoder.bert.encoder.layer.i)
    "self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
    "norm1": "attention.output.LayerNorm",
    "cross_attn.q_proj": "crossattention.self.query", "cross_attn.k_proj": "crossattention.self.key",
    "cross_attn.v_proj": "crossattention.self.value", "cross_attn.out_proj": "crossattention.output.dense",
    "norm2": "crossattention.output.LayerNorm",
    "ffn.linear1": "intermediate.dense", "ffn.linear2": "output.dense", "norm3": "output.LayerNorm",
}
_ENCODER_LAYER_NAMES = {  # ours (inside encoder.layers.i) ← HF (inside encoder.encoder.layer.i)
    "self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
    "norm1": "attention.output.LayerNorm", "ffn.linear1": "intermediate.dense", "ffn.linear2": "output.dense",
    "norm2": "output.LayerNorm",
}
_EMBEDDING_NAMES = {"word_embeddings": "embeddings.word_embeddings",
                    "position_embeddings": "embeddings.position_embeddings",
                    "token_type_embeddings": "embeddings.token_type_embeddings",
                    "embedding_norm": "embeddings.LayerNorm"}
_HEAD_NAMES = {"lm_head.dense": "cls.predictions.transform.dense",
               "lm_head.norm": "cls.predictions.transform.LayerNorm", "lm_head.decoder": "cls.predictions.decoder"}


def hf_name(our_name: str) -> str:
    """The HF ``EncoderDecoderModel`` name of one of our parameters, e.g.
    ``decoder.layers.0.cross_attn.q_proj.weight`` → ``decoder.bert.encoder.layer.0.crossattention.self.query.weight``."""
    half, rest = our_name.split(".", 1)
    if rest == "lm_head.bias" and half == "decoder":
        return "decoder.cls.predictions.bias"
    module, leaf = rest.rsplit(".", 1)
    model = {"encoder": "encoder.", "decoder": "decoder.bert."}.get(half)
    if model is None:
        raise ValueError(f"{our_name!r} is not in our encoder or decoder")
    if module in _EMBEDDING_NAMES:
        return f"{model}{_EMBEDDING_NAMES[module]}.{leaf}"
    if module in _HEAD_NAMES and half == "decoder":
        return f"decoder.{_HEAD_NAMES[module]}.{leaf}"
    if module.startswith("layers."):
        _, index, part = module.split(".", 2)
        table = _DECODER_LAYER_NAMES if half == "decoder" else _ENCODER_LAYER_NAMES
        if part in table:
            return f"{model}encoder.layer.{index}.{table[part]}.{leaf}"
    raise ValueError(f"{our_name!r} has no counterpart in HF's EncoderDecoderModel")


def from_hf(hf_model) -> BertEncoderDecoder:
    """Our model holding a copy of the weights of an HF ``EncoderDecoderModel`` whose encoder is a
    ``BertModel`` and decoder a ``BertLMHeadModel`` (``is_decoder=True, add_cross_attention=True``)."""
    encoder_config, decoder_config = hf_model.config.encoder, hf_model.config.decoder
    if encoder_config.model_type != "bert" or decoder_config.model_type != "bert":
        raise ValueError(f"from_hf copies BERT2BERT models, got {encoder_config.model_type}2{decoder_config.model_type}")
    if not (decoder_config.is_decoder and decoder_config.add_cross_attention):
        raise ValueError("the HF decoder must have is_decoder=True and add_cross_attention=True")
    if getattr(hf_model.config, "tie_encoder_decoder", False):
        raise ValueError("tie_encoder_decoder=True (shared weights) is not covered: ours keeps two copies")
    start = hf_model.config.decoder_start_token_id
    eos = hf_model.config.eos_token_id if hf_model.config.eos_token_id is not None else decoder_config.sep_token_id
    decoder_as_encoder = copy.deepcopy(decoder_config)
    decoder_as_encoder.is_decoder = False  # config_from_hf refuses decoders: we only read its sizes here
    ours = BertEncoderDecoder(config_from_hf(encoder_config), config_from_hf(decoder_as_encoder),
                              decoder_start_token_id=101 if start is None else start,
                              eos_token_id=102 if eos is None else eos)
    state = hf_model.state_dict()
    if state["decoder.cls.predictions.decoder.weight"].data_ptr() != state[
            "decoder.bert.embeddings.word_embeddings.weight"].data_ptr():
        raise ValueError("the HF decoder's output matrix is not tied to its word embeddings; ours always is")
    copied = {name: state[hf_name(name)] for name in ours.state_dict()}
    ours.load_state_dict(copied, strict=True)
    return ours.to(next(hf_model.parameters()).device).train(hf_model.training)


# --- decoding -------------------------------------------------------------------------------------

class _LastPositionLogits(nn.Module):
    """The model as :func:`course_lib.decoding.generate` sees it (``encode``/``decode``), with the LM head
    applied to the last position only: the stepper reads nothing else, and the head is the costliest
    part of a step (D × 30,522 per position)."""

    def __init__(self, model: BertEncoderDecoder):
        super().__init__()
        self.model = model

    def encode(self, source, source_mask):
        return self.model.encode(source, source_mask)

    def decode(self, target, memory, memory_key_padding_mask=None):
        decoder = self.model.decoder
        hidden = decoder.hidden_states(target, memory, None, memory_key_padding_mask)  # (B, T, D)
        return decoder.lm_head(hidden[:, -1:])  # (B, 1, V)


def greedy_generate(model: BertEncoderDecoder, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    max_new_tokens: int = 40) -> torch.Tensor:
    """Greedy decoding ``(B, 1 + generated)``: the start token, then the chosen tokens up to and including
    ``eos_token_id``, finished rows padded with the pad id (HF ``generate``'s output for the same ids)."""
    if not isinstance(model, BertEncoderDecoder):
        raise TypeError(f"greedy_generate takes a BertEncoderDecoder, got {type(model).__name__}")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    start = torch.full((len(input_ids), 1), model.decoder_start_token_id, device=input_ids.device)
    return generate(_LastPositionLogits(model), start, source=input_ids, source_mask=mask,
                    max_new_tokens=max_new_tokens, eos_token_id=model.eos_token_id, pad_token_id=model.pad_token_id)
