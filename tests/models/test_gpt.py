"""The course GPT against HF's GPT2LMHeadModel (random weights, no download), and the shipped checkpoint."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from course_lib.attention.masks import positions_from_mask  # noqa: E402
from course_lib.attention.recorder import record_attention  # noqa: E402
from course_lib.models.gpt import GPT, SHAKESPEARE_CHECKPOINT, GPTConfig, load_shakespeare_gpt  # noqa: E402

VOCAB = 101


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(1)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=3, n_head=4,
                                    bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()
    with torch.no_grad():  # biases and norms away from their 0/1 init, so a swapped one shows
        for name, p in hf.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return hf, GPT.from_hf(hf).eval()


@pytest.fixture(scope="module")
def padded_batch():
    ids = torch.randint(3, VOCAB, (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :4], mask[1, :1] = 0, 0  # prompts of 5, 8 and 9 tokens, padded on the left
    return ids.masked_fill(mask == 0, 0), mask


def test_same_logits_as_hf(pair, padded_batch):
    hf, ours = pair
    ids, mask = padded_batch
    with torch.no_grad():
        expected = hf(ids[2:]).logits
        assert torch.allclose(ours(ids[2:]).logits, expected, atol=1e-5)
        expected = hf(ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
        got = ours(ids, attention_mask=mask).logits
    real = mask.bool()
    assert torch.allclose(got[real], expected[real], atol=1e-5)


def test_cache_gives_the_same_logits_as_one_full_pass(pair, padded_batch):
    _, ours = pair
    ids, mask = padded_batch
    with torch.no_grad():
        full = ours(ids, attention_mask=mask).logits  # (B, T, V)
        out = ours(ids[:, :6], attention_mask=mask[:, :6], use_cache=True)
        pieces = [out.logits]
        for t in range(6, ids.shape[1]):  # then one token at a time
            out = ours(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], past_key_values=out.past_key_values,
                       use_cache=True)
            pieces.append(out.logits)
    assert out.past_key_values[0].keys.shape == (3, 4, 9, 12)  # (B, H, T_seen, D/H)
    real = mask.bool()
    assert torch.allclose(torch.cat(pieces, dim=1)[real], full[real], atol=1e-5)


def test_left_padding_does_not_change_a_prompt(pair, padded_batch):
    _, ours = pair
    ids, mask = padded_batch
    with torch.no_grad():
        batched = ours(ids, attention_mask=mask).logits[0, 4:]
        alone = ours(ids[:1, 4:]).logits[0]
    assert torch.allclose(batched, alone, atol=1e-5)


def test_round_trip_to_hf_and_tied_head(pair, padded_batch):
    hf, ours = pair
    ids, _ = padded_batch
    assert ours.lm_head.weight is ours.wte.weight
    # Conv1D stores (in, out): our c_attn weight is its transpose.
    assert torch.equal(ours.h[0].attn.c_attn.weight, hf.transformer.h[0].attn.c_attn.weight.t())
    back = ours.to_hf()
    with torch.no_grad():
        assert torch.equal(back(ids).logits, hf(ids).logits)


def test_readable_attention_path_matches_fused(pair, padded_batch):
    _, ours = pair
    ids, mask = padded_batch
    with torch.no_grad():
        fused = ours(ids, attention_mask=mask).logits
        with record_attention(ours) as recorded:  # switches every layer to the readable path
            readable = ours(ids, attention_mask=mask).logits
    assert torch.allclose(fused[mask.bool()], readable[mask.bool()], atol=1e-5)
    assert [name for name, _ in recorded] == ["h.0.attn", "h.1.attn", "h.2.attn"]
    weights = recorded[0].weights  # (B, H, T, T)
    assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-6)
    assert (weights[0, :, 5, 6:] == 0).all() and (weights[0, :, 5, :4] == 0).all()  # no future, no padding


def test_bad_input_is_explained():
    model = GPT(GPTConfig(vocab_size=10, context_length=8, dim=16, num_layers=1, num_heads=2))
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 10\)"):
        model(torch.tensor([[3, 10]]))
    with pytest.raises(ValueError, match="context length"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must cover"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        GPTConfig(dim=10, num_heads=3)


def test_save_and_load_round_trip(tmp_path, pair, padded_batch):
    _, ours = pair
    ids, _ = padded_batch
    ours.save(tmp_path / "m.pt")
    loaded, _ = GPT.load(tmp_path / "m.pt")
    with torch.no_grad():  # float16 storage: close, not equal
        assert torch.allclose(loaded(ids).logits, ours(ids).logits, atol=0.05)


# --- the shipped checkpoint ------------------------------------------------------------------------

VAL_LOSS_THRESHOLD = 4.8  # nats/token on held-out Shakespeare (shipped model: 4.38 here); uniform guessing: 7.6


@pytest.mark.skipif(not SHAKESPEARE_CHECKPOINT.exists(), reason="run scripts/train_gpt.py first")
def test_checkpoint_predicts_held_out_shakespeare_and_writes_text():
    from course_lib.data import read_text
    from course_lib.decoding import generate

    torch.set_num_threads(1)
    model, tokenizer = load_shakespeare_gpt()
    assert model.num_parameters < 3_000_000 and SHAKESPEARE_CHECKPOINT.stat().st_size < 10 * 2**20
    text = read_text("tinyshakespeare/input.txt")
    held_out = torch.tensor([tokenizer.encode(text[-3000:])[-257:]])  # the end of the validation split
    with torch.no_grad():
        loss = F.cross_entropy(model(held_out[:, :-1]).logits[0], held_out[0, 1:]).item()
    assert loss < VAL_LOSS_THRESHOLD, f"validation loss {loss:.3f} (perplexity {math.exp(loss):.0f})"

    prompt = torch.tensor([tokenizer.encode("KING HENRY:\n")])
    ids = generate(model, prompt, max_new_tokens=200, do_sample=True, top_k=40, seed=0)
    sample = tokenizer.decode(ids[0, prompt.shape[1]:].tolist())
    words = sample.split()
    letters = sum(c.isalpha() or c.isspace() for c in sample) / len(sample)
    assert letters > 0.85 and len(set(words)) > 40, sample
    with torch.no_grad():  # the model finds its own text likely, far more than uniform noise
        own = F.cross_entropy(model(ids[:, :-1]).logits[0, prompt.shape[1] - 1:], ids[0, prompt.shape[1]:]).item()
    assert own < VAL_LOSS_THRESHOLD
