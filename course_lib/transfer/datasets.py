"""The transfer-learning tasks' data, read through :mod:`course_lib.data` (local folder or checksummed download).

* SST-2, sentence level (Socher et al. 2013, as distributed with Kim 2014's ``CNN_sentence``): 6,920 training,
  872 dev and 1,821 test sentences, lower-cased and tokenised (``wo n't``), labelled 0 (negative) or 1 (positive).
* UD English-EWT v2.16: 12,544 / 2,001 / 2,077 sentences with UPOS tags, read by the pretraining unit's
  CoNLL-U reader.

Not covered: TREC-6 (registered in :mod:`course_lib.data`, unused here), the phrase-level SST.
"""
from __future__ import annotations

from typing import NamedTuple

from ..data import read_lines, read_text
from ..pretraining.tagging import TaggedSentence, read_conllu

__all__ = ["SST2_LABELS", "LabelledSentence", "load_sst2", "load_ud_english_ewt"]

SST2_LABELS = ("negative", "positive")
_SPLITS = ("train", "dev", "test")


class LabelledSentence(NamedTuple):
    text: str
    label: int  # an index into SST2_LABELS


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def load_sst2(split: str = "train", **where) -> list[LabelledSentence]:
    """SST-2's ``split`` (train: 6,920, dev: 872, test: 1,821 sentences), in the file's order."""
    _check_split(split)
    name, sentences = f"sst2_trec/stsa.binary.{split}", []
    for number, line in enumerate(read_lines(name, **where), 1):
        label, _, text = line.partition(" ")
        if label not in ("0", "1") or not text.strip():
            raise ValueError(f"{name} line {number}: expected '<0|1> <sentence>', got {line[:60]!r}")
        sentences.append(LabelledSentence(text.strip(), int(label)))
    return sentences


def load_ud_english_ewt(split: str = "train", **where) -> list[TaggedSentence]:
    """UD English-EWT's ``split`` (train: 12,544, dev: 2,001, test: 2,077 sentences) with UPOS tags."""
    _check_split(split)
    name = f"ud_english_ewt/en_ewt-ud-{split}.conllu"
    return read_conllu(read_text(name, **where), name)
