"""A small GPT: a decoder-only causal language model with GPT-2's layout and a key/value cache.

::

    ids (B, T) → token embedding + learned position embedding → N pre-norm blocks → ln_f → logits (B, T, V)
    block:  x = x + attn(ln_1(x))      causal self-attention, one fused q/k/v projection (c_attn)
            x = x + mlp(ln_2(x))       c_fc (D → 4D), GELU (tanh approximation), c_proj (4D → D)

The output projection is the token embedding matrix itself (tied, as in GPT-2). Module and
parameter names follow HF's ``GPT2LMHeadModel`` (``wte``, ``wpe``, ``h.0.attn.c_attn``…), so
:meth:`GPT.from_hf` is a plain copy, except that GPT-2's ``Conv1D`` layers store their weight as
``(in, out)`` while ``nn.Linear`` stores ``(out, in)``: every such matrix is transposed on the way in.

**Key/value cache.** Generating token ``t+1`` needs the keys and values of tokens ``0..t`` in
every layer; they do not change once computed, so ``forward(..., use_cache=True)`` returns them in a
:class:`~course_lib.models.kv_cache.KVCache` (per layer ``(B, H, T_seen, D/H)``), and the next call
passes it back as ``past_key_values`` with only the new token(s). The model calls nothing but the
cache protocol (``length``, and each layer's ``append``), so the plain cache and the buffers beam
search uses (:mod:`course_lib.models.kv_cache`) go through the same lines.

**Batches of different prompt lengths** are padded on the *left*, so every row's last token is
its newest one. ``attention_mask`` ``(B, T_past + T)`` is 1 at real tokens and 0 at padding;
padding keys are never attended to, and positions count real tokens only
(:func:`~course_lib.attention.masks.positions_from_mask`: ``[0, 0, 1, 2]`` for ``[pad, a, b, c]``), as HF's
``generate`` does, so a padded row gets the same logits as the same prompt alone.

Attention weights: :func:`course_lib.attention.recorder.record_attention` switches each layer's
attention to the readable path and collects its weights. Not covered: dropout schedules, weight decay
groups and training (``scripts/train_gpt.py``), flash/rotary/grouped-query attention, cross-attention,
``scale_attn_by_inverse_layer_idx``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.masks import positions_from_mask
from ..attention.multi_head import merge_heads, split_heads
from ..attention.scaled_dot_product import scaled_dot_product_attention
from ..runtime import CHECKPOINT_DIR
from .kv_cache import KVCache

__all__ = ["GPTConfig", "GPT", "CausalLMOutput", "load_shakespeare_gpt", "SHAKESPEARE_CHECKPOINT"]

SHAKESPEARE_CHECKPOINT = CHECKPOINT_DIR / "gpt_shakespeare.pt"  # scripts/train_gpt.py


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    context_length: int = 1024  # GPT-2's n_positions
    dim: int = 768  # n_embd
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int | None = None  # default 4 * dim, like GPT-2's n_inner=None
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of num_heads ({self.num_heads})")
        self.ffn_dim = self.ffn_dim or 4 * self.dim


class CausalLMOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V)
    past_key_values: KVCache | None  # one layer cache per block


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.c_attn = nn.Linear(config.dim, 3 * config.dim)  # q, k and v in one matrix multiply
        self.c_proj = nn.Linear(config.dim, config.dim)
        self.dropout = config.dropout

    def forward(self, x, allowed, cache, need_weights=False):
        """``x (B, T, D)`` → ``(output (B, T, D), weights (B, H, T, T_total) or None)``; ``cache`` is this
        layer's key/value cache, which grows by the ``T`` new keys and values."""
        q, k, v = self.c_attn(x).split(x.shape[-1], dim=-1)  # 3 × (B, T, D)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))  # (B, H, T, D/H)
        k, v = cache.append(k, v)  # (B, H, T_past + T, D/H): every key so far
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:  # the readable path, for plots (record_attention asks for it)
            heads, weights = scaled_dot_product_attention(q, k, v, allowed, dropout_p=dropout_p)
        else:  # torch's kernel directly: GPT.forward built the mask, so fused_attention's checks are redundant
            heads, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p), None
        return F.dropout(self.c_proj(merge_heads(heads)), self.dropout, self.training), weights  # (B, T, D)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.dim, config.ffn_dim)
        self.c_proj = nn.Linear(config.ffn_dim, config.dim)
        self.dropout = config.dropout

    def forward(self, x):
        # GPT-2's "gelu_new" is the tanh approximation of GELU.
        return F.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, allowed, cache):
        attended, _ = self.attn(self.ln_1(x), allowed, cache)
        x = x + attended  # pre-norm: the residual stream itself is never normalised
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only Transformer language model (GPT-2 layout).

    ``forward(input_ids (B, T), attention_mask=None, position_ids=None, past_key_values=None,
    use_cache=False)`` returns ``CausalLMOutput(logits (B, T, V), past_key_values)``. Logit ``t``
    predicts token ``t + 1``. ``attention_mask`` covers cached and new tokens ``(B, T_past + T)``;
    ``past_key_values`` is a :class:`~course_lib.models.kv_cache.KVCache` (or a tuple of ``(k, v)`` per
    layer), which the call extends in place and returns when ``use_cache=True``.
    """

    def __init__(self, config: GPTConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = config or GPTConfig(**kwargs)
        self.wte = nn.Embedding(config.vocab_size, config.dim)
        self.wpe = nn.Embedding(config.context_length, config.dim)
        self.h = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one (V, D) matrix reads and writes tokens
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/√(2N)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, std=0.02 / (2 * config.num_layers) ** 0.5)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        cache = KVCache.wrap(past_key_values, len(self.h))  # None: an empty cache, filled by this call
        self._validate_inputs(input_ids, attention_mask, cache)
        batch, new = input_ids.shape
        past_len = cache.length
        total = past_len + new
        if attention_mask is None:
            attention_mask = torch.ones(batch, total, dtype=torch.long, device=input_ids.device)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)[:, past_len:]  # (B, T)
        if total > self.config.context_length and int(position_ids.max()) >= self.config.context_length:
            raise ValueError(f"position {int(position_ids.max())} is past the context length "
                             f"{self.config.context_length}; crop the input to its last tokens")
        allowed = self._allowed_keys(attention_mask, past_len, new)

        x = F.dropout(self.wte(input_ids) + self.wpe(position_ids), self.config.dropout, self.training)  # (B, T, D)
        for block, layer_cache in zip(self.h, cache):
            x = block(x, allowed, layer_cache)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return CausalLMOutput(logits, cache if use_cache else None)

    @staticmethod
    def _allowed_keys(attention_mask, past_len, new):
        """Boolean ``(B, 1, T, T_past + T)``: query ``i`` may see real keys up to its own position."""
        total = past_len + new
        if new == 1 and past_len > 0:  # decoding one token per row: it may see every real key
            return None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        query_at = torch.arange(past_len, total, device=attention_mask.device)  # (T,) index of each query
        key_at = torch.arange(total, device=attention_mask.device)  # (T_total,)
        causal = key_at[None, :] <= query_at[:, None]  # (T, T_total)
        # Padding keys are blocked; a padding query still sees itself, so its row is never empty (NaN).
        allowed = causal & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T_total)
        return allowed | (key_at[None, :] == query_at[:, None])

    def _validate_inputs(self, input_ids, attention_mask, cache):
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
            got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a (batch, seq_len) tensor of int64 token ids, got {got}")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty: give at least one token")
        lowest, highest = torch.aminmax(input_ids)
        if lowest < 0 or highest >= self.config.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size}), got "
                             f"{int(input_ids.min())}..{int(input_ids.max())}")
        if len(cache) != len(self.h):
            raise ValueError(f"past_key_values has {len(cache)} layers, the model {len(self.h)}")
        if attention_mask is not None:
            expected = (input_ids.shape[0], cache.length + input_ids.shape[1])
            if tuple(attention_mask.shape) != expected:
                raise ValueError(f"attention_mask must cover past and new tokens, shape {expected}, "
                                 f"got {tuple(attention_mask.shape)}")

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix counts once

    # --- HF GPT-2 interchange -------------------------------------------------------------------

    _CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

    @classmethod
    def config_from_hf(cls, hf_config) -> GPTConfig:
        if getattr(hf_config, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"only GELU's tanh approximation is supported, got {hf_config.activation_function}")
        scaled = getattr(hf_config, "scale_attn_weights", True)
        if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False) or not scaled:
            raise ValueError("only GPT-2's default attention scaling 1/√(D/H) is supported")
        return GPTConfig(vocab_size=hf_config.vocab_size, context_length=hf_config.n_positions,
                         dim=hf_config.n_embd, num_layers=hf_config.n_layer, num_heads=hf_config.n_head,
                         ffn_dim=hf_config.n_inner, dropout=hf_config.resid_pdrop,
                         layer_norm_eps=hf_config.layer_norm_epsilon)

    @classmethod
    def from_hf(cls, hf_model) -> GPT:
        """Our GPT with the weights of a ``transformers.GPT2LMHeadModel`` (same logits, our code)."""
        ours = cls(cls.config_from_hf(hf_model.config))
        state = {name.removeprefix("transformer."): tensor for name, tensor in hf_model.state_dict().items()}
        state = {name: t.t() if name.endswith(cls._CONV1D) else t for name, t in state.items()
                 if not name.endswith((".attn.bias", ".attn.masked_bias"))}  # buffers of old checkpoints
        ours.load_state_dict(state)
        return ours.to(hf_model.device)

    def to_hf(self):
        """The same weights in a ``transformers.GPT2LMHeadModel`` (for benchmarks and HF ``generate``)."""
        from transformers import GPT2Config, GPT2LMHeadModel

        c = self.config
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.dim,
                                        n_layer=c.num_layers, n_head=c.num_heads, n_inner=c.ffn_dim,
                                        resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
                                        layer_norm_epsilon=c.layer_norm_eps))
        state = {}
        for name, tensor in self.state_dict().items():
            prefix = "" if name.startswith("lm_head") else "transformer."
            state[prefix + name] = tensor.t() if name.endswith(self._CONV1D) else tensor  # Conv1D: (in, out)
        hf.load_state_dict(state)
        return hf.eval()

    def save(self, path, **extra) -> None:
        """Weights in float16 (half the file) plus the config; :meth:`load` restores float32."""
        torch.save({"config": asdict(self.config), "state_dict": {k: v.half() for k, v in self.state_dict().items()
                                                                 if k != "lm_head.weight"}, **extra}, path)

    @classmethod
    def load(cls, path, map_location="cpu") -> tuple[GPT, dict]:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(GPTConfig(**checkpoint["config"]))
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in checkpoint["state_dict"].items()},
                                                    strict=False)
        if unexpected or set(missing) != {"lm_head.weight"}:  # the tied head is not stored
            raise ValueError(f"{path} does not fit the model: missing {missing}, unexpected {unexpected}")
        return model.eval(), checkpoint


def load_shakespeare_gpt():
    """The course's small GPT trained on Tiny Shakespeare and its tokenizer: ``(model, tokenizer)``."""
    from ..tokenization import ByteLevelBPE

    model, _ = GPT.load(SHAKESPEARE_CHECKPOINT)
    stem = SHAKESPEARE_CHECKPOINT.with_suffix("")
    tokenizer = ByteLevelBPE.load(f"{stem}-vocab.json", f"{stem}-merges.txt", special_tokens=["<|endoftext|>"])
    return model, tokenizer
