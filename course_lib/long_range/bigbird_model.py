"""BigBird's encoder: the pretraining unit's BERT-shaped :class:`~course_lib.pretraining.encoder.Encoder` with
its self-attention swapped for block-sparse attention, weights copied from HF ``BigBirdModel``.

HF's BigBird *is* BERT's layout (same embeddings, post-norm layers, pooler, the same parameter names) except
for the self-attention, so the model here is our Encoder with :class:`BlockSparseSelfAttention` in every
layer, and the input padded to a multiple of ``block_size`` (with the padding id, masked out, then cut off
the output), as HF pads. :func:`uses_full_attention` is HF's rule for falling back to full attention on
short inputs. :func:`bigbird_from_hf` copies a ``BigBirdModel``. Not covered: the MLM/QA heads, BigBird-ETC,
HF's embedding dropout order (HF drops out before the embedding LayerNorm, ours after: equal at dropout 0
and in eval mode), HF's older random plans at exactly 1024, 3072 or 4096 tokens in training mode (refused).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import merge_heads, scaled_dot_product_attention, split_heads
from ..pretraining.encoder import Encoder, EncoderConfig, EncoderOutput, copy_hf_weights, hf_encoder_names
from ..pretraining.encoder_inputs import validate_encoder_inputs
from .bigbird import bigbird_attention, bigbird_random_blocks

__all__ = ["BlockSparseSelfAttention", "BigBirdEncoder", "uses_full_attention", "bigbird_from_hf"]

_OLD_PLAN_LENGTHS = (1024, 3072, 4096)  # HF draws these lengths' random blocks with an older plan


def uses_full_attention(seq_len: int, block_size: int, num_random_blocks: int) -> bool:
    """HF's fallback rule: full attention when ``seq_len ≤ (5 + 2·num_random_blocks) · block_size``.

    ``seq_len`` is the input's length before HF pads it to a multiple of ``block_size`` (padding the
    input does not change the answer, since the bound is itself a multiple of ``block_size``); 5 blocks are
    the 2 global and the 3 of the window, and ``2r`` blocks leave room for the random ones. Block-sparse
    attention thus always runs on more than ``2r + 5`` blocks. HF's switch is sticky: once a short input
    has turned a ``BigBirdModel`` to ``original_full``, it stays there until ``set_attention_type("block_sparse")``;
    ours decides on every call.
    """
    return seq_len <= (5 + 2 * num_random_blocks) * block_size


class BlockSparseSelfAttention(nn.Module):
    """Self-attention for one encoder layer, with :class:`~course_lib.attention.MultiHeadAttention`'s projection
    names and call (``forward(x (B, T, D), mask=None, key_padding_mask=None, need_weights=False)`` → ``(out, None)``).

    ``T`` a multiple of ``block_size``; when :func:`uses_full_attention` says so it attends to every real key
    (HF's ``original_full``, dropout on the weights in training mode), otherwise :func:`bigbird_attention` with
    the plan HF would use: all zeros in eval mode, drawn with ``seed`` (HF: the layer's index) in training mode,
    one plan per head. Like HF, block-sparse attention gives padded queries a zero context vector.
    """

    def __init__(self, dim: int, num_heads: int, block_size: int, num_random_blocks: int, seed: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be a multiple of num_heads ({num_heads})")
        if block_size < 1 or num_random_blocks < 0:
            raise ValueError(f"block_size must be ≥ 1 and num_random_blocks ≥ 0, got {block_size}, {num_random_blocks}")
        self.num_heads, self.block_size, self.num_random_blocks = num_heads, block_size, num_random_blocks
        self.seed, self.dropout = seed, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, None]:
        if mask is not None or need_weights:
            raise ValueError("block-sparse self-attention takes only a key_padding_mask and returns no weights")
        batch, seq_len, _ = x.shape
        real = torch.ones(batch, seq_len, dtype=torch.bool, device=x.device) if key_padding_mask is None \
            else key_padding_mask  # (B, T), True = real token
        query, key, value = (split_heads(project(x), self.num_heads)
                             for project in (self.q_proj, self.k_proj, self.v_proj))  # (B, H, T, d) each
        if uses_full_attention(seq_len, self.block_size, self.num_random_blocks):
            dropout = self.dropout if self.training else 0.0
            heads, _ = scaled_dot_product_attention(query, key, value, real[:, None, None, :], dropout_p=dropout)
        else:
            if self.training and seq_len in _OLD_PLAN_LENGTHS:
                raise ValueError(f"HF draws the random blocks of a {seq_len}-token input in training mode with an "
                                 "older plan that is not reproduced here: use another length, or eval mode")
            plan = bigbird_random_blocks(seq_len // self.block_size, self.num_random_blocks, seed=self.seed,
                                         training=self.training, num_heads=self.num_heads)  # (H, nb − 2, r)
            heads = bigbird_attention(query, key, value, self.block_size, plan, padding_mask=real)
            heads = heads * real[:, None, :, None]  # HF's convention: padded queries get a zero context
        return self.out_proj(merge_heads(heads)), None  # (B, T, D)


class BigBirdEncoder(Encoder):
    """Our :class:`~course_lib.pretraining.encoder.Encoder` with block-sparse self-attention in every layer
    (layer ``i`` draws its training-mode random blocks with seed ``i``, as HF). ``forward(input_ids (B, T),
    attention_mask=None, token_type_ids=None)`` pads to a multiple of ``block_size`` and returns
    :class:`~course_lib.pretraining.encoder.EncoderOutput` cut back to ``T``."""

    def __init__(self, config: EncoderConfig, block_size: int = 64, num_random_blocks: int = 3, add_pooler: bool = True):
        super().__init__(config, add_pooler=add_pooler)
        self.block_size, self.num_random_blocks = block_size, num_random_blocks
        for index, layer in enumerate(self.layers):
            layer.self_attn = BlockSparseSelfAttention(config.dim, config.num_heads, block_size, num_random_blocks,
                                                       seed=index, dropout=config.dropout)
        self.apply(self._init_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> EncoderOutput:
        real = validate_encoder_inputs(self.config, input_ids, attention_mask, token_type_ids)  # (B, T)
        seq_len = input_ids.shape[1]
        extra = -seq_len % self.block_size  # HF pads only for block-sparse; full attention never reads the masked pad
        if seq_len + extra > self.config.max_length:
            raise ValueError(f"{seq_len} tokens pad to {seq_len + extra} (a multiple of block_size {self.block_size}), "
                             f"more than the {self.config.max_length} positions the model has: truncate the input")
        input_ids = F.pad(input_ids, (0, extra), value=self.config.pad_token_id)
        real = F.pad(real, (0, extra), value=False)
        if token_type_ids is not None:
            token_type_ids = F.pad(token_type_ids, (0, extra), value=0)
        output = super().forward(input_ids, real.long(), token_type_ids)
        return EncoderOutput(output.last_hidden_state[:, :seq_len], output.pooler_output,
                             tuple(h[:, :seq_len] for h in output.hidden_states))


def bigbird_from_hf(hf_model) -> BigBirdEncoder:
    """Our :class:`BigBirdEncoder` with a copy of the weights of a ``transformers`` ``BigBirdModel``
    (``attention_type="block_sparse"``); refuses what our layers do not do."""
    c = hf_model.config
    if c.model_type != "big_bird" or "embeddings.word_embeddings.weight" not in hf_model.state_dict():
        raise ValueError(f"bigbird_from_hf copies a bare BigBirdModel, got {type(hf_model).__name__}")
    problems = [why for bad, why in (
        (c.attention_type != "block_sparse", f"attention_type {c.attention_type!r} (want 'block_sparse')"),
        (c.hidden_act != "gelu", f"hidden_act {c.hidden_act!r} (only exact GELU, 'gelu')"),
        (c.rescale_embeddings, "rescale_embeddings=True"), (not c.use_bias, "use_bias=False"),
        (c.is_decoder, "is_decoder=True"),
        (c.hidden_dropout_prob != c.attention_probs_dropout_prob, "two dropout rates (ours has one)"))
        if bad]
    if problems:
        raise ValueError("this BigBird cannot be copied: " + "; ".join(problems))
    config = EncoderConfig(
        vocab_size=c.vocab_size, dim=c.hidden_size, num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
        ffn_dim=c.intermediate_size, max_positions=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
        layer_norm_eps=c.layer_norm_eps, dropout=c.hidden_dropout_prob, pad_token_id=c.pad_token_id,
        init_std=c.initializer_range)
    has_pooler = hf_model.pooler is not None
    ours = BigBirdEncoder(config, c.block_size, c.num_random_blocks, add_pooler=has_pooler)
    names = hf_encoder_names(config.num_layers, pooler="pooler" if has_pooler else None)  # BigBird's is a Linear
    ours.load_state_dict(copy_hf_weights(hf_model.state_dict(), names), strict=True)  # a missing or extra name is an error, never a silent init
    return ours.to(next(hf_model.parameters()).device).train(hf_model.training)
