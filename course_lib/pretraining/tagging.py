"""Part-of-speech tagging on top of the encoder: the downstream task that tells whether pretraining paid.

* **Data.** :func:`read_conllu` reads Universal Dependencies' CoNLL-U: per sentence its words, their
  UPOS tags and whether a space came before each (``SpaceAfter=No`` in the previous word's MISC column);
  multi-word token ranges (``3-4``) and empty nodes (``5.1``) carry no UPOS and are skipped.
  :func:`load_ud_esperanto` reads both Esperanto treebanks (Cairo, Prago) through :mod:`course_lib.data`.
* **Labels on sub-words.** A word may become several sub-word tokens; only the *first* sub-word of each
  word carries the word's tag, every other position (later sub-words, ``<s>``, ``</s>``, padding) carries
  :data:`~course_lib.pretraining.masking.IGNORE_INDEX` and gives no loss (:func:`align_labels`). Words are
  encoded with the space that preceded them in the text, as the tokenizer saw them in pretraining. A sentence
  longer than the model's positions is cut into consecutive pieces at word boundaries, so every word is
  scored exactly once (:func:`encode_sentence`).
* **Head.** :class:`EncoderForTokenClassification`: the encoder, dropout, one linear layer per position
  (HF's ``BertForTokenClassification``, to which the tests pin its loss).

Training and k-fold cross-validation: :mod:`.tagging_experiment`. Not covered: dependency parsing, features,
lemmas, CRF layers, labelling every sub-word.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data import read_text
from .encoder import Encoder, EncoderConfig, config_from_hf, from_hf
from .masking import IGNORE_INDEX

__all__ = ["UPOS_TAGS", "UD_ESPERANTO_FILES", "TaggedSentence", "read_conllu", "load_ud_esperanto", "align_labels",
           "encode_sentence", "EncoderForTokenClassification", "token_classification_loss"]

# Universal Dependencies' 17 universal part-of-speech tags (universaldependencies.org/u/pos).
UPOS_TAGS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
             "SCONJ", "SYM", "VERB", "X")
UD_ESPERANTO_FILES = ("ud_esperanto/ud_esperanto_cairo/eo_cairo-ud-test.conllu",
                      "ud_esperanto/ud_esperanto_prago/eo_prago-ud-test.conllu")


class TaggedSentence(NamedTuple):
    sent_id: str
    text: str  # the "# text =" comment: the sentence as written
    words: tuple[str, ...]
    tags: tuple[str, ...]  # one UPOS tag per word
    space_before: tuple[bool, ...]  # False for the first word and after a word marked SpaceAfter=No


def read_conllu(text: str, source: str = "<text>") -> list[TaggedSentence]:
    """The sentences of a CoNLL-U document, with their words and UPOS tags."""
    sentences = []
    for number, block in enumerate(b for b in text.split("\n\n") if b.strip()):
        comments, words, tags, spaces = {}, [], [], []
        space_next = False
        for line in block.strip("\n").split("\n"):
            if line.startswith("#"):
                key, _, value = line[1:].partition("=")
                comments[key.strip()] = value.strip()
                continue
            columns = line.split("\t")
            if len(columns) != 10:
                raise ValueError(f"{source}: sentence {number + 1} has a line with {len(columns)} columns, "
                                 f"CoNLL-U has 10: {line[:60]!r}")
            if "-" in columns[0] or "." in columns[0]:
                continue  # a multi-word token's surface form or an empty node: no UPOS of its own
            if columns[3] not in UPOS_TAGS:
                raise ValueError(f"{source}: {columns[3]!r} is not a UPOS tag (word {columns[1]!r})")
            words.append(columns[1])
            tags.append(columns[3])
            spaces.append(space_next)
            space_next = "SpaceAfter=No" not in columns[9].split("|")
        if words:
            sent_id = comments.get("sent_id", f"{source}#{number + 1}")
            sentences.append(TaggedSentence(sent_id, comments.get("text", " ".join(words)), tuple(words),
                                            tuple(tags), tuple(spaces)))
    return sentences


def load_ud_esperanto(**where) -> list[TaggedSentence]:
    """Both UD Esperanto treebanks (Cairo: 20 sentences, Prago: 131), read through :mod:`course_lib.data`."""
    return [s for name in UD_ESPERANTO_FILES for s in read_conllu(read_text(name, **where), name)]


def align_labels(word_pieces: Sequence[Sequence[int]], tag_ids: Sequence[int], bos_id: int,
                 eos_id: int) -> tuple[list[int], list[int]]:
    """``<s> pieces… </s>`` and labels: each word's tag on its first sub-word, IGNORE_INDEX elsewhere.

    >>> align_labels([[10, 11], [12]], [7, 3], bos_id=0, eos_id=2)
    ([0, 10, 11, 12, 2], [-100, 7, -100, 3, -100])
    """
    if len(word_pieces) != len(tag_ids):
        raise ValueError(f"{len(word_pieces)} words but {len(tag_ids)} tags: one tag per word")
    ids, labels = [bos_id], [IGNORE_INDEX]
    for pieces, tag in zip(word_pieces, tag_ids):
        if not pieces:
            raise ValueError("a word encoded to no token: every word needs at least one sub-word for its tag")
        ids.extend(pieces)
        labels.extend([tag] + [IGNORE_INDEX] * (len(pieces) - 1))
    return ids + [eos_id], labels + [IGNORE_INDEX]


def encode_sentence(sentence: TaggedSentence, encode: Callable[[str], list[int]], bos_id: int, eos_id: int,
                    max_length: int, tag_to_id: dict[str, int] | None = None) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` for a sentence, in as many consecutive pieces as ``max_length`` requires.

    Each word is encoded with the space that preceded it (``" kato"``), so its sub-words are the ones the
    tokenizer produces inside running text. Pieces break between words, never inside one.
    """
    tag_to_id = tag_to_id or {tag: i for i, tag in enumerate(UPOS_TAGS)}
    pieces = [encode((" " if space else "") + word) for word, space in zip(sentence.words, sentence.space_before)]
    tags = [tag_to_id[tag] for tag in sentence.tags]
    room = max_length - 2  # <s> and </s>
    longest = max(len(p) for p in pieces)
    if longest > room:
        raise ValueError(f"{sentence.sent_id}: one word is {longest} tokens, more than the {room} that fit")
    chunks, start, used = [], 0, 0
    for end, word in enumerate(pieces):
        if used + len(word) > room:
            chunks.append(align_labels(pieces[start:end], tags[start:end], bos_id, eos_id))
            start, used = end, 0
        used += len(word)
    chunks.append(align_labels(pieces[start:], tags[start:], bos_id, eos_id))
    return chunks


class EncoderForTokenClassification(nn.Module):
    """The encoder (no pooler), dropout and a linear layer: ``forward(input_ids (B, T), attention_mask=None)``
    returns one score per tag at every position, ``(B, T, num_labels)``."""

    def __init__(self, config: EncoderConfig, num_labels: int = len(UPOS_TAGS), classifier_dropout: float | None = None):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.encoder = Encoder(config, add_pooler=False)
        self.dropout = nn.Dropout(config.dropout if classifier_dropout is None else classifier_dropout)
        self.classifier = nn.Linear(config.dim, num_labels)
        nn.init.normal_(self.classifier.weight, std=config.init_std)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask).last_hidden_state  # (B, T, D)
        return self.classifier(self.dropout(hidden))  # (B, T, num_labels)

    @classmethod
    def from_encoder(cls, encoder: Encoder, num_labels: int = len(UPOS_TAGS)) -> EncoderForTokenClassification:
        """A tagger starting from a (pretrained) encoder's weights, copied; a fresh classifier on top.
        Pass ``mlm_model.encoder`` to start from a masked-LM model (its MLM head is not used)."""
        tagger = cls(encoder.config, num_labels)
        state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
        tagger.encoder.load_state_dict(state)  # copies the values: the tagger shares no tensor with `encoder`
        return tagger

    @classmethod
    def from_hf(cls, hf_model) -> EncoderForTokenClassification:
        """A copy of a ``transformers`` ``BertForTokenClassification``/``RobertaForTokenClassification``."""
        base = getattr(hf_model, hf_model.config.model_type)
        ours = cls(config_from_hf(hf_model.config), hf_model.num_labels, hf_model.dropout.p)
        ours.encoder.load_state_dict(from_hf(base).state_dict())  # HF builds the base without a pooler here
        ours.classifier.load_state_dict(hf_model.classifier.state_dict())
        return ours.train(hf_model.training)


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not IGNORE_INDEX: logits ``(B, T, C)``, labels ``(B, T)``."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must share (batch, seq_len)")
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
