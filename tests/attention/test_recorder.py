"""course_lib.attention.recorder: one recorder for every attention module, whatever calls it and however."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.attention import MultiHeadAttention, record_attention, scaled_dot_product_attention
from course_lib.attention.multi_head import split_heads
from course_lib.models.gpt import GPT, GPTConfig


class TwoCallers(nn.Module):
    """Three attention calls in an order that is not the modules' order, need_weights passed three ways."""

    def __init__(self):
        super().__init__()
        self.first = MultiHeadAttention(8, 2)
        self.second = MultiHeadAttention(8, 4)

    def forward(self, x, memory):
        out, _ = self.second(x, memory, memory, None, None, False)  # need_weights by position
        out, _ = self.first(out, need_weights=False)  # by keyword
        out, _ = self.second(out)  # not at all (the default)
        return out


def test_names_and_call_order_whatever_the_call_style():
    torch.manual_seed(0)
    model = TwoCallers().eval()
    x, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    with torch.no_grad():
        plain = model(x, memory)
        with record_attention(model) as recorded:
            readable = model(x, memory)
    assert [name for name, _ in recorded] == ["second", "first", "second"]
    assert [tuple(w.shape) for _, w in recorded] == [(2, 4, 3, 5), (2, 2, 3, 3), (2, 4, 3, 3)]
    torch.testing.assert_close(readable, plain, atol=1e-5, rtol=1e-5)  # the readable path computes the same
    assert all(not w.requires_grad for _, w in recorded)


def test_weights_equal_the_readable_path_computed_by_hand():
    torch.manual_seed(1)
    attention = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 4, 8)
    keep = torch.tensor([[True, True, True, False]])
    with torch.no_grad(), record_attention(attention) as recorded:
        attention(x, key_padding_mask=keep, need_weights=False)
        q, k = split_heads(attention.q_proj(x), 2), split_heads(attention.k_proj(x), 2)
        v = split_heads(attention.v_proj(x), 2)
        _, expected = scaled_dot_product_attention(q, k, v, keep[:, None, None, :])
    assert recorded[0].name == ""  # the model itself is the attention module
    torch.testing.assert_close(recorded[0].weights, expected, rtol=0, atol=0)


def test_gpt_attention_is_recorded_with_its_cache():
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=30, context_length=16, dim=16, num_layers=2, num_heads=2, dropout=0.0)).eval()
    ids = torch.randint(0, 30, (1, 6))
    with torch.no_grad(), record_attention(model) as recorded:
        first = model(ids[:, :5], use_cache=True)
        model(ids[:, 5:], past_key_values=first.past_key_values)
    assert [name for name, _ in recorded] == ["h.0.attn", "h.1.attn"] * 2
    assert recorded[0].weights.shape == (1, 2, 5, 5) and recorded[2].weights.shape == (1, 2, 1, 6)
    with torch.no_grad(), record_attention(model) as whole:
        model(ids)
    torch.testing.assert_close(recorded[2].weights[0, :, 0], whole[0].weights[0, :, 5], atol=1e-6, rtol=1e-5)


def _hooks(model):
    return [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]


def test_hooks_are_removed_afterwards_even_on_an_exception():
    model = TwoCallers()
    with record_attention(model):
        assert len(_hooks(model)) == 2
    assert _hooks(model) == []
    with pytest.raises(RuntimeError, match="boom"):
        with record_attention(model):
            raise RuntimeError("boom")
    assert _hooks(model) == []
    with pytest.raises(ValueError):  # a shape error inside the forward pass: hooks go too
        with record_attention(model):
            model(torch.randn(2, 3, 7), torch.randn(2, 5, 8))
    assert _hooks(model) == []


def test_a_model_without_attention_is_refused():
    with pytest.raises(ValueError, match="no attention module"):
        with record_attention(nn.Linear(2, 2)):
            pass
