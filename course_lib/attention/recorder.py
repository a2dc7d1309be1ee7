"""Record the attention weights of a model's forward pass, without changing the model.

Attention modules run the fused kernel by default, which never forms the weights. Every attention
module of the course takes a ``need_weights`` argument and returns ``(output, weights)``: with
``need_weights=True`` it runs the readable path (:func:`~course_lib.attention.scaled_dot_product_attention`)
and returns the weights ``(B, H, T_q, T_k)``. :func:`record_attention` hooks every such module of a
model: a forward pre-hook sets ``need_weights=True`` however the caller passed it (by position or by
keyword, or not at all), and a forward hook keeps the weights, in call order, with the module's name::

    with record_attention(model) as recorded:
        model(ids)
    for name, weights in recorded:  # e.g. "layers.0.self_attn", (B, H, T, T)
        ...

The hooks are removed when the block ends, even if it raised. Covered: :class:`MultiHeadAttention`
(the Transformer's layers, the reverser), the GPT's attention, any module with that contract.
Grouping the weights for a view (bertviz's encoder/decoder/cross lists) is the model's business:
:func:`course_lib.seq2seq.transformer.attention_maps`, :func:`course_lib.models.reverser.attention_maps`.
Not covered: attention inside fused blocks that never take ``need_weights`` (``torch.nn.MultiheadAttention``'s
fast path), gradients of the recorded weights (they are detached).
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["RecordedAttention", "attention_modules", "record_attention"]


class RecordedAttention(NamedTuple):
    name: str  # the module's name in the model, e.g. "decoder.layers.0.cross_attn"
    weights: torch.Tensor  # (B, H, T_q, T_k), detached


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every module of ``model`` whose ``forward`` takes ``need_weights``."""
    return [(name, module) for name, module in model.named_modules()
            if "need_weights" in inspect.signature(module.forward).parameters]


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[list[RecordedAttention]]:
    """Collect ``(name, weights (B, H, T_q, T_k))`` of every attention call inside the block, in call order."""
    modules = attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no attention module to record (no forward with need_weights)")
    recorded: list[RecordedAttention] = []
    handles = []
    for name, module in modules:
        signature = inspect.signature(module.forward)

        def ask_for_weights(module, args, kwargs, signature=signature):
            call = signature.bind(*args, **kwargs)  # wherever need_weights was given, it is now in one place
            call.arguments["need_weights"] = True
            return call.args, call.kwargs

        def keep_weights(module, args, kwargs, output, name=name):
            recorded.append(RecordedAttention(name, output[1].detach()))

        handles.append(module.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
        handles.append(module.register_forward_hook(keep_weights, with_kwargs=True))
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
