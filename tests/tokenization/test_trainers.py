"""BPE training (course_lib.tokenization.naive_trainer and fast_trainer), pinned to HF
``tokenizers``' ByteLevelBPETokenizer: same merges in the same order, and the same vocabulary ids."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from course_lib.data import read_text
from course_lib.tokenization import best_pair, get_stats, train_bpe, train_bpe_naive
from course_lib.tokenization.fast_trainer import merge_word_with_changes

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's, as in the EsperBERTo tokenizer


def hf_train(texts=None, files=None, **settings_):
    """Train HF's ByteLevelBPETokenizer; return (merges as pairs of strings, vocab)."""
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    if files is not None:
        tokenizer.train([str(path) for path in files], show_progress=False, **settings_)
    else:
        tokenizer.train_from_iterator(texts, show_progress=False, **settings_)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in merges], \
        tokenizer.get_vocab()


def corpus_lines(chars_per_source: int) -> list[str]:
    """English, Esperanto and Shakespeare lines (ends kept, as HF reads files line by line)."""
    sources = ["gutenberg_en/pg11_alice_in_wonderland.txt", "esperanto/fundamenta_krestomatio.txt",
               "tinyshakespeare/input.txt"]
    text = "".join(read_text(name)[:chars_per_source] for name in sources)
    return text.splitlines(keepends=True) + ["<s>a special token in the text is plain text</s>\n"]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return corpus_lines(100_000)  # ~300 KB


@pytest.fixture(scope="module")
def hf_reference(corpus):
    return hf_train(corpus, vocab_size=2000, min_frequency=2, special_tokens=SPECIALS)


# --- the building blocks -----------------------------------------------------------------------------

def test_get_stats_counts_overlaps_and_weights():
    assert get_stats({(1, 1, 1, 1): 2, (1, 2): 5}) == {(1, 1): 6, (1, 2): 5}


def test_best_pair_breaks_ties_by_smallest_ids():
    assert best_pair({(3, 0): 4, (2, 7): 4, (2, 5): 4, (0, 0): 3}) == (2, 5)


@given(st.lists(st.integers(0, 3), max_size=12), st.integers(0, 3), st.integers(0, 3))
@settings(max_examples=300, deadline=None)
def test_merge_changes_match_a_recount(word, first, second):
    """The incremental updates equal recounting from scratch (the merged pair itself aside)."""
    merged, changes = merge_word_with_changes(word, (first, second), 99)
    updated = get_stats({tuple(word): 1})
    for pair, change in changes:
        updated[pair] += change
    updated = {pair: count for pair, count in updated.items() if count and pair != (first, second)}
    recount = {pair: count for pair, count in get_stats({tuple(merged): 1}).items() if pair != (first, second)}
    assert updated == recount


# --- equal to HF on real text -------------------------------------------------------------------------

def test_fast_trainer_equals_hf_train_from_iterator(corpus, hf_reference):
    hf_merges, hf_vocab = hf_reference
    ours = train_bpe(corpus, 2000, min_frequency=2, special_tokens=SPECIALS)
    assert sum(map(len, corpus)) >= 300_000
    assert len(hf_merges) == 2000 - 256 - len(SPECIALS)
    assert ours.merges == hf_merges  # same merges, same order
    assert ours.vocab == hf_vocab  # same ids: specials first, bytes by code point, then merges


def test_fast_trainer_equals_hf_train_from_files(corpus, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(corpus), encoding="utf-8", newline="")
    hf_merges, hf_vocab = hf_train(files=[path], vocab_size=1500, min_frequency=2, special_tokens=SPECIALS)
    ours = train_bpe(corpus, 1500, min_frequency=2, special_tokens=SPECIALS)
    assert ours.merges == hf_merges and ours.vocab == hf_vocab


def test_fast_trainer_stops_at_min_frequency_like_hf():
    lines = corpus_lines(3_000)
    hf_merges, hf_vocab = hf_train(lines, vocab_size=5000, min_frequency=3, special_tokens=["<|endoftext|>"])
    ours = train_bpe(lines, 5000, min_frequency=3, special_tokens=["<|endoftext|>"])
    assert len(ours) < 5000, "the corpus is too small to reach the vocabulary size: min_frequency stops it"
    assert ours.merges == hf_merges and ours.vocab == hf_vocab


def test_naive_trainer_equals_hf_on_a_small_corpus():
    lines = corpus_lines(15_000)
    hf_merges, hf_vocab = hf_train(lines, vocab_size=600, min_frequency=2, special_tokens=SPECIALS)
    ours = train_bpe_naive(lines, 600, min_frequency=2, special_tokens=SPECIALS)
    assert ours.merges == hf_merges and ours.vocab == hf_vocab


@pytest.mark.slow
def test_naive_trainer_equals_hf_on_the_full_corpus(corpus, hf_reference):
    ours = train_bpe_naive(corpus, 2000, min_frequency=2, special_tokens=SPECIALS)
    assert ours.merges == hf_reference[0] and ours.vocab == hf_reference[1]


# Tiny corpora over a few characters force ties, long runs ("aaaa": overlapping pairs) and
# merges that rebuild an existing token from other parts.
TINY_TEXTS = st.lists(st.text(st.sampled_from("aab \n"), max_size=20), min_size=1, max_size=8)


@given(TINY_TEXTS, st.integers(257, 300), st.integers(0, 3))
@settings(max_examples=200, deadline=None)
def test_both_trainers_equal_hf_on_tiny_corpora(texts, vocab_size, min_frequency):
    hf_merges, hf_vocab = hf_train(texts, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=["<s>"])
    fast = train_bpe(texts, vocab_size, min_frequency=min_frequency, special_tokens=["<s>"])
    naive = train_bpe_naive(texts, vocab_size, min_frequency=min_frequency, special_tokens=["<s>"])
    assert fast.merges == naive.merges == hf_merges
    assert fast.vocab == naive.vocab == hf_vocab


def test_trained_tokenizer_round_trips_and_compresses(corpus):
    bpe = train_bpe(corpus, 1000, special_tokens=SPECIALS)
    text = read_text("esperanto/fundamenta_krestomatio.txt")[400_000:420_000]  # unseen in training
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert len(ids) < 0.5 * len(text.encode("utf-8"))  # merges really shorten the sequence


# --- bad settings --------------------------------------------------------------------------------------

@pytest.mark.parametrize("trainer", [train_bpe, train_bpe_naive])
@pytest.mark.parametrize("texts, kwargs, error, message", [
    (None, {}, TypeError, "got None"),
    (b"raw bytes", {}, TypeError, "decode it first"),
    ([b"raw bytes"], {}, TypeError, "decode it first"),
    (["ok", 3], {}, TypeError, "got int"),
    (["ok"], {"vocab_size": "300"}, ValueError, "vocab_size"),
    (["ok"], {"vocab_size": 0}, ValueError, "vocab_size"),
    (["ok"], {"min_frequency": -1}, ValueError, "min_frequency"),
    (["ok"], {"special_tokens": "<s>"}, TypeError, r"write \['<s>'\]"),
    (["ok"], {"special_tokens": [None]}, TypeError, "non-empty strings"),
])
def test_trainers_reject_bad_input(trainer, texts, kwargs, error, message):
    arguments = {"vocab_size": 300, **kwargs}
    with pytest.raises(error, match=message):
        trainer(texts, arguments.pop("vocab_size"), **arguments)


def test_single_string_is_one_text():
    assert train_bpe("low low low", 258).merges == train_bpe(["low low low"], 258).merges == [("l", "o"), ("lo", "w")]
