"""The transfer unit's data loaders: the registered files, their sizes, their parsing, clear errors."""
from __future__ import annotations

import pytest

from course_lib.transfer import datasets
from course_lib.transfer.datasets import SST2_LABELS, load_sst2, load_ud_english_ewt


@pytest.mark.parametrize(("split", "count", "positives"), [("train", 6920, 3610), ("dev", 872, 444), ("test", 1821, 909)])
def test_sst2_splits_have_their_published_sizes(split, count, positives):
    sentences = load_sst2(split)
    assert len(sentences) == count and sum(s.label for s in sentences) == positives
    assert {s.label for s in sentences} == {0, 1} and len(SST2_LABELS) == 2
    assert all(s.text == s.text.strip() and s.text for s in sentences)


def test_sst2_reads_the_label_and_the_sentence_of_each_line():
    first = load_sst2("dev")[0]
    assert first == (("one long string of cliches ."), 0)


@pytest.mark.parametrize(("split", "count"), [("train", 12544), ("dev", 2001), ("test", 2077)])
def test_ewt_splits_have_their_published_sizes(split, count):
    sentences = load_ud_english_ewt(split)
    assert len(sentences) == count
    assert all(len(s.words) == len(s.tags) for s in sentences)


def test_a_wrong_split_is_a_clear_error():
    with pytest.raises(ValueError, match="split must be one of"):
        load_sst2("validation")
    with pytest.raises(ValueError, match="split must be one of"):
        load_ud_english_ewt("training")


def test_a_malformed_sst2_line_names_the_file_and_the_line(monkeypatch):
    monkeypatch.setattr(datasets, "read_lines", lambda name, **where: ["1 a fine film .", "2 what label is this"])
    with pytest.raises(ValueError, match=r"stsa\.binary\.train line 2"):
        load_sst2("train")
    monkeypatch.setattr(datasets, "read_lines", lambda name, **where: ["0 "])
    with pytest.raises(ValueError, match="line 1"):
        load_sst2("train")
