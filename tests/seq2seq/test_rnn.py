"""The GRU encoder-decoder and additive (Bahdanau) attention: the formula, masks and padding."""
from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings, strategies as st

from course_lib import padding_mask
from course_lib.seq2seq.rnn import AdditiveAttention, RNNSeq2Seq
from tests.conftest import available_devices

DEVICES = available_devices()


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 4), src_len=st.integers(1, 7), query_dim=st.integers(1, 6), key_dim=st.integers(1, 6),
       attention_dim=st.integers(1, 6), padded=st.booleans(), seed=st.integers(0, 10_000))
def test_additive_attention_matches_the_formula(device, batch, src_len, query_dim, key_dim, attention_dim, padded, seed):
    torch.manual_seed(seed)
    attention = AdditiveAttention(query_dim, key_dim, attention_dim).to(device)
    query = torch.randn(batch, query_dim, device=device)
    keys = torch.randn(batch, src_len, key_dim, device=device)
    lengths = torch.randint(1, src_len + 1, (batch,))
    keep = padding_mask(lengths, src_len, device=device) if padded else None
    context, weights = attention(query, keys, keep)

    W_q, W_k, v = attention.W_q.weight, attention.W_k.weight, attention.v.weight[0]  # (A, Dq), (A, Dk), (A,)
    for b in range(batch):
        real = int(lengths[b]) if padded else src_len
        # score_s = vᵀ tanh(W_q q + W_k k_s), one source position at a time
        scores = torch.stack([v @ torch.tanh(W_q @ query[b] + W_k @ keys[b, s]) for s in range(real)])
        expected = torch.softmax(scores, dim=0)
        torch.testing.assert_close(weights[b, :real], expected, atol=1e-6, rtol=1e-5)
        assert (weights[b, real:] == 0).all()  # padding gets exactly nothing
        torch.testing.assert_close(weights[b].sum(), torch.tensor(1.0, device=device), atol=1e-6, rtol=0)
        torch.testing.assert_close(context[b], expected @ keys[b, :real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention.scores(query, attention.project_keys(keys)).shape, (batch, src_len))


def test_additive_attention_rejects_bad_shapes():
    attention = AdditiveAttention(4, 3, 5)
    with pytest.raises(ValueError, match=r"expected query \(B, D_q\) and keys \(B, S, D_k\)"):
        attention(torch.randn(2, 4), torch.randn(3, 6, 3))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(batch, seq_len\) = \(2, 6\)"):
        attention(torch.randn(2, 4), torch.randn(2, 6, 3), torch.ones(2, 5, dtype=torch.bool))


def _model(use_attention, device="cpu", seed=0):
    torch.manual_seed(seed)
    return RNNSeq2Seq(13, 17, embed_dim=8, hidden_dim=10, use_attention=use_attention, dropout=0.2,
                      max_len=20).to(device).eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("use_attention", [True, False])
def test_padding_changes_nothing(device, use_attention):
    """A padded batch gives each sentence the logits it gets alone: packing and masks hide the padding."""
    model = _model(use_attention, device)
    lengths = [6, 2, 4]
    src = torch.randint(1, 13, (3, 6), device=device)
    keep = padding_mask(lengths, device=device)
    src = src.masked_fill(~keep, 0)
    tgt = torch.randint(0, 17, (3, 5), device=device)
    with torch.no_grad():
        batched, weights = model(src, tgt, keep, return_attention=True)
        for b, length in enumerate(lengths):
            alone = model(src[b: b + 1, :length], tgt[b: b + 1])
            torch.testing.assert_close(batched[b: b + 1], alone, atol=1e-5, rtol=1e-5)
    if use_attention:
        assert weights.shape == (3, 5, 6)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5, device=device))
        assert (weights[1, :, 2:] == 0).all() and (weights[2, :, 4:] == 0).all()
    else:
        assert weights is None


@pytest.mark.parametrize("use_attention", [True, False])
def test_decoder_reads_only_the_past(use_attention):
    model = _model(use_attention)
    src, tgt = torch.randint(0, 13, (2, 5)), torch.randint(0, 17, (2, 6))
    with torch.no_grad():
        base = model(src, tgt)
        changed = tgt.clone()
        changed[:, 3:] = (changed[:, 3:] + 1) % 17
        logits = model(src, changed)
    torch.testing.assert_close(logits[:, :3], base[:, :3], atol=0, rtol=0)
    assert (logits[:, 3:] - base[:, 3:]).abs().max() > 1e-4


def test_without_attention_the_source_arrives_only_through_the_summary():
    """The bottleneck: two sources with the same encoder summary give the same translation logits."""
    model = _model(False)
    src, tgt = torch.randint(0, 13, (1, 5)), torch.randint(0, 17, (1, 4))
    with torch.no_grad():
        state = model.encode(src)
        other_memory = torch.randn_like(state["memory"])  # every per-position state replaced
        logits_a, _, _ = model.decoder.step(tgt[:, 0], state)
        logits_b, _, _ = model.decoder.step(tgt[:, 0], {**state, "memory": other_memory})
    torch.testing.assert_close(logits_a, logits_b, atol=0, rtol=0)
    attentive = _model(True)
    with torch.no_grad():
        state = attentive.encode(src)
        changed = {**state, "memory": torch.randn_like(state["memory"]), "projected_keys": None}
        assert (attentive.decoder.step(tgt[:, 0], state)[0] - attentive.decoder.step(tgt[:, 0], changed)[0]).abs().max() > 1e-4


def test_gradients_reach_every_parameter():
    model = _model(True).train()
    logits = model(torch.randint(0, 13, (2, 5)), torch.randint(0, 17, (2, 4)))
    logits.sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


@pytest.mark.parametrize("src, tgt, kwargs, message", [
    (torch.tensor([[1, 13]]), torch.tensor([[1, 2]]), {}, "source token id 13 is out of range for the source vocabulary of size 13"),
    (torch.tensor([[1, 2]]), torch.tensor([[1, 17]]), {}, "target token id 17 is out of range for the target vocabulary of size 17"),
    (torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long), {}, "empty target batch"),
    (torch.ones(1, 21, dtype=torch.long), torch.tensor([[1, 2]]), {}, "source sequence length 21 exceeds"),
    (torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2]]), {"src_key_padding_mask": torch.ones(1, 2, dtype=torch.bool)},
     "src_key_padding_mask must have shape (batch, seq_len) = (1, 3)"),
    (torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2]]), {"src_key_padding_mask": torch.zeros(1, 3, dtype=torch.bool)},
     "inverted mask"),
])
def test_bad_input_is_named(src, tgt, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _model(True)(src, tgt, **kwargs)
