"""Dynamic masking and the two LM losses, pinned to HF transformers.

* the masking rule on targeted cases (special tokens, padding, nothing chosen, everything chosen,
  each corruption forced), then bit for bit against ``DataCollatorForLanguageModeling.torch_mask_tokens``
  under the same seed (``random_ids="vocabulary"``; the default shares HF's choice and mask draws);
* the statistics over 10^6 tokens, against the expected fractions and against HF's collator;
* ``mlm_loss`` against ``BertForMaskedLM``/``RobertaForMaskedLM`` and ``causal_lm_loss`` against
  ``GPT2LMHeadModel`` (tiny random configs, built offline), with padding; what an empty batch gives.
"""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.pretraining.masking import (
    IGNORE_INDEX, causal_lm_loss, mask_tokens, mlm_loss, shift_labels,
)

transformers = pytest.importorskip("transformers")

VOCAB = 30
PAD, CLS, SEP, UNK, MASK = 0, 1, 2, 3, 4  # a BERT-like vocabulary file, specials first
SPECIAL = (PAD, CLS, SEP, UNK, MASK)
N_ORDINARY = VOCAB - len(SPECIAL)


def mask(input_ids, seed=0, **settings):
    settings = dict(dict(mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL), **settings)
    return mask_tokens(input_ids, generator=torch.Generator().manual_seed(seed), **settings)


def batch(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """(rows, length) sentences: [CLS] ordinary ids [SEP] then padding, of random lengths."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL), VOCAB, (rows, length), generator=generator)
    lengths = torch.randint(3, length + 1, (rows,), generator=generator)
    positions = torch.arange(length)[None, :]
    ids[:, 0] = CLS
    ids[positions == (lengths[:, None] - 1)] = SEP
    ids[positions >= lengths[:, None]] = PAD
    return ids


# --- the rule, targeted ----------------------------------------------------------------------------------

def test_special_tokens_and_padding_are_never_chosen_even_with_probability_one():
    ids = batch(8, 12)
    corrupted, labels = mask(ids, mlm_probability=1.0, mask_fraction=1.0, random_fraction=0.0)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert torch.equal(labels, ids.masked_fill(special, IGNORE_INDEX))  # every ordinary token chosen
    assert torch.equal(corrupted, ids.masked_fill(~special, MASK))  # ... and masked; specials untouched


def test_attention_mask_zero_is_never_chosen():
    ids = torch.full((2, 6), 7)
    attention = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    _, labels = mask(ids, mlm_probability=1.0, attention_mask=attention)
    assert torch.equal(labels != IGNORE_INDEX, attention.bool())


def test_nothing_chosen_leaves_the_input_and_ignores_every_label():
    ids = batch(4, 10)
    corrupted, labels = mask(ids, mlm_probability=0.0)
    assert torch.equal(corrupted, ids) and bool((labels == IGNORE_INDEX).all())


def test_each_corruption_forced():
    ids = batch(16, 20)
    ordinary = ~torch.isin(ids, torch.tensor(SPECIAL))
    kept, labels = mask(ids, mlm_probability=1.0, mask_fraction=0.0, random_fraction=0.0)
    assert torch.equal(kept, ids) and torch.equal(labels != IGNORE_INDEX, ordinary)  # chosen, left as they were
    randomised, _ = mask(ids, mlm_probability=1.0, mask_fraction=0.0, random_fraction=1.0)
    assert torch.equal(randomised[~ordinary], ids[~ordinary])
    assert bool((randomised[ordinary] >= len(SPECIAL)).all())  # ordinary ids only, never <pad> or <mask>
    assert (randomised[ordinary] != ids[ordinary]).float().mean() > 0.8  # really redrawn (1/25 stay by chance)
    from_vocabulary, _ = mask(ids, mlm_probability=1.0, mask_fraction=0.0, random_fraction=1.0,
                              random_ids="vocabulary")
    assert bool((from_vocabulary[ordinary] < len(SPECIAL)).any())  # HF's choice reaches the special ids


def test_labels_are_the_original_ids_where_chosen_and_ignore_elsewhere():
    ids = batch(32, 24, seed=3)
    corrupted, labels = mask(ids, seed=5, mask_fraction=1.0, random_fraction=0.0)  # every chosen token becomes <mask>: chosen is visible
    chosen = (corrupted == MASK) & (ids != MASK)
    assert chosen.any()
    assert torch.equal(labels, torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX)))


def test_reproducible_with_a_generator_and_inputs_untouched():
    ids = batch(8, 16)
    before = ids.clone()
    first, second, other = mask(ids, seed=1), mask(ids, seed=1), mask(ids, seed=2)
    assert torch.equal(ids, before)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize(("ids", "settings", "error", "message"), [
    (torch.rand(2, 3), {}, TypeError, "integer tensor"),
    (torch.tensor([[5, 30]]), {}, ValueError, r"\[0, 30\)"),
    (torch.tensor([[5, -1]]), {}, ValueError, r"\[0, 30\)"),
    (torch.tensor([[5, 6]]), {"mlm_probability": 1.5}, ValueError, "mlm_probability"),
    (torch.tensor([[5, 6]]), {"mask_fraction": 0.8, "random_fraction": 0.3}, ValueError, "exceeds 1"),
    (torch.tensor([[5, 6]]), {"random_ids": "special"}, ValueError, "random_ids"),
    (torch.tensor([[5, 6]]), {"attention_mask": torch.ones(1, 3)}, ValueError, "must match"),
    (torch.tensor([[5, 6]]), {"mask_id": 40}, ValueError, "mask_id"),
])
def test_bad_input_gets_a_clear_error(ids, settings, error, message):
    with pytest.raises(error, match=message):
        mask(ids, **settings)


# --- against HF's collator -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def collator(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
                               + [f"w{i}" for i in range(N_ORDINARY)]) + "\n")
    tokenizer = transformers.BertTokenizer(str(vocab))
    assert (len(tokenizer), tokenizer.mask_token_id, tokenizer.pad_token_id) == (VOCAB, MASK, PAD)
    return transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)


def hf_mask(collator, ids, seed):
    collator.generator = torch.Generator().manual_seed(seed)
    return collator.torch_mask_tokens(ids.clone(), special_tokens_mask=torch.isin(ids, torch.tensor(SPECIAL)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vocabulary_draw_equals_hf_collator_bit_for_bit(collator, seed):
    ids = batch(64, 48, seed=seed)
    hf_corrupted, hf_labels = hf_mask(collator, ids, seed)
    corrupted, labels = mask(ids, seed=seed, random_ids="vocabulary")
    assert torch.equal(labels, hf_labels) and torch.equal(corrupted, hf_corrupted)


def test_ordinary_draw_shares_hf_choice_and_masks_and_differs_only_in_random_ids(collator):
    ids = batch(64, 48, seed=4)
    hf_corrupted, hf_labels = hf_mask(collator, ids, 4)
    corrupted, labels = mask(ids, seed=4)
    assert torch.equal(labels, hf_labels)
    assert torch.equal(corrupted == MASK, hf_corrupted == MASK)
    assert torch.equal(corrupted != ids, (hf_corrupted != ids) | ((corrupted != ids) & (hf_corrupted == ids)))


def fractions(ids, corrupted, labels):
    """Observed: chosen among ordinary tokens; among the chosen, masked / another id / unchanged; random ids special."""
    ordinary = ~torch.isin(ids, torch.tensor(SPECIAL))
    chosen = labels != IGNORE_INDEX
    masked, same = chosen & (corrupted == MASK), chosen & (corrupted == ids)
    other = chosen & ~masked & ~same
    n_chosen = int(chosen.sum())
    return {"chosen": int(chosen.sum()) / int(ordinary.sum()), "masked": int(masked.sum()) / n_chosen,
            "other": int(other.sum()) / n_chosen, "same": int(same.sum()) / n_chosen,
            "special_from_random": int((other & torch.isin(corrupted, torch.tensor(SPECIAL))).sum()),
            "n_ordinary": int(ordinary.sum()), "n_chosen": n_chosen, "unchosen_changed": int((~chosen & (corrupted != ids)).sum())}


def test_statistics_over_a_million_tokens_match_the_rule_and_hf(collator):
    """Tolerance: 5 binomial standard deviations of each fraction (a false alarm about 1 in 3.5 million),
    and sqrt(2) times that between our estimate and HF's (two independent estimates). At ~1.35 x 10^5 chosen
    tokens that is about +-0.005 on the masked fraction: a 90/10 or 80/20 mix-up is 10 to 20 times further off."""
    ids = batch(1000, 1024, seed=11)
    ours = fractions(ids, *mask(ids, seed=12))
    hf = fractions(ids, *hf_mask(collator, ids, 13))
    assert ours["n_ordinary"] > 10**5 * 5 and ids.numel() >= 10**6
    # A random id equals the original with probability 1/25 (ours) or 1/30 (HF's, whole vocabulary).
    expected = {"chosen": 0.15, "masked": 0.8, "other": 0.1 * (1 - 1 / N_ORDINARY), "same": 0.1 + 0.1 / N_ORDINARY}
    for name, p in expected.items():
        n = ours["n_ordinary"] if name == "chosen" else ours["n_chosen"]
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(ours[name] - p) < 5 * sigma, (name, ours[name], p)
        assert abs(ours[name] - hf[name]) < 5 * math.sqrt(2) * sigma + 0.1 / VOCAB, (name, ours[name], hf[name])
    assert ours["unchosen_changed"] == 0 and hf["unchosen_changed"] == 0
    # HF's random ids reach the special ids (4 of the 30 not the mask: ~0.1 * 4/30 of the chosen); ours never do.
    assert ours["special_from_random"] == 0
    assert hf["special_from_random"] > 0.5 * 0.1 * 4 / VOCAB * hf["n_chosen"]


# --- the losses ------------------------------------------------------------------------------------------

def tiny(config_class, model_class, **extra):
    config = config_class(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=64, **extra)
    return model_class(config).eval()


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_mlm_loss_equals_hf_masked_lm_loss(family):
    torch.manual_seed(0)
    if family == "bert":
        model = tiny(transformers.BertConfig, transformers.BertForMaskedLM)
    else:
        model = tiny(transformers.RobertaConfig, transformers.RobertaForMaskedLM, pad_token_id=PAD)
    ids = batch(6, 20, seed=7)
    corrupted, labels = mask(ids, seed=8)
    with torch.no_grad():
        output = model(input_ids=corrupted, attention_mask=(ids != PAD).long(), labels=labels)
    assert torch.allclose(mlm_loss(output.logits, labels), output.loss, atol=1e-6, rtol=0)
    assert not torch.allclose(mlm_loss(output.logits, torch.where(ids == PAD, IGNORE_INDEX, ids)), output.loss)


def test_mlm_loss_averages_over_chosen_positions_only():
    logits = torch.randn(2, 5, VOCAB)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 3] = 7, 9
    by_hand = -(logits[0, 1].log_softmax(-1)[7] + logits[1, 3].log_softmax(-1)[9]) / 2
    assert torch.allclose(mlm_loss(logits, labels), by_hand, atol=1e-6)


def test_nothing_chosen_gives_zero_loss_and_zero_gradients_where_hf_gives_nan():
    logits = torch.randn(2, 5, VOCAB, requires_grad=True)
    labels = torch.full((2, 5), IGNORE_INDEX)
    loss = mlm_loss(logits, labels)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    hf = torch.nn.CrossEntropyLoss()(logits.detach().view(-1, VOCAB), labels.view(-1))
    assert math.isnan(hf.item())  # why we do not copy HF here
    assert causal_lm_loss(logits.detach()[:, :1], torch.tensor([[5], [6]])).item() == 0.0  # T = 1: no next token


@pytest.mark.parametrize(("logits", "labels", "message"), [
    (torch.randn(2, 5, VOCAB), torch.zeros(2, 4, dtype=torch.long), r"logits \(B, T, V\)"),
    (torch.randn(10, VOCAB), torch.zeros(10, dtype=torch.long), r"logits \(B, T, V\)"),
    (torch.randn(2, 5, VOCAB), torch.full((2, 5), VOCAB), r"labels must be ids in \[0, 30\) or -100"),
    (torch.randn(2, 5, VOCAB), torch.full((2, 5), -1), r"labels must be ids"),
])
def test_loss_bad_input(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        mlm_loss(logits, labels)


def test_shift_labels_position_t_predicts_token_t_plus_one_and_ignores_padding():
    ids = torch.tensor([[11, 12, 13, 14], [21, 22, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert shift_labels(ids, attention).tolist() == [[12, 13, 14, -100], [22, -100, -100, -100]]
    assert shift_labels(ids).tolist() == [[12, 13, 14, -100], [22, 0, 0, -100]]
    with pytest.raises(ValueError, match="must match"):
        shift_labels(ids, attention[:, :3])


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_causal_lm_loss_equals_gpt2_with_padding(padding_side):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    model = transformers.GPT2LMHeadModel(config).eval()
    lengths = torch.tensor([12, 7, 3])
    positions = torch.arange(12)[None, :]
    attention = (positions < lengths[:, None]) if padding_side == "right" else (positions >= 12 - lengths[:, None])
    ids = torch.randint(len(SPECIAL), VOCAB, (3, 12)).masked_fill(~attention, PAD)
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=attention.long(), labels=ids.masked_fill(~attention, IGNORE_INDEX))
    ours = causal_lm_loss(output.logits, ids, attention.long())
    assert torch.allclose(ours, output.loss, atol=1e-6, rtol=0)
    assert torch.allclose(ours, mlm_loss(output.logits, shift_labels(ids, attention.long())), atol=0, rtol=0)
    unshifted = mlm_loss(output.logits, ids.masked_fill(~attention, IGNORE_INDEX))
    assert not torch.allclose(unshifted, output.loss, atol=1e-3)  # the shift is what makes it equal
