"""Part-of-speech tagging on UD English-EWT with the real pretrained MiniLM, against the same model from scratch.

* **Encoding.** Each word of a treebank sentence goes through MiniLM's WordPiece tokenizer on its own
  (:func:`wordpiece_word_encoder`); the pretraining unit's :func:`~course_lib.pretraining.tagging.encode_sentence`
  puts ``[CLS]`` and ``[SEP]`` around the pieces and the word's UPOS tag on its *first* sub-word, ``-100``
  on every other position. HF's own route (the fast tokenizer with ``is_split_into_words=True`` and
  ``word_ids()``) gives the same ids and labels; ``tests/transfer/test_pos_english.py`` pins it on real
  EWT sentences. Web text has a few very long "words" (URLs, rows of dashes: up to 335 sub-words in the test
  set); such a word keeps its first ``max_word_pieces`` (32) sub-words, which changes nothing in how it is
  scored (its first sub-word carries the tag) and lets every sentence fit 128 positions. A word the tokenizer
  turns into nothing (none in EWT) becomes ``[UNK]``, so every word is scored exactly once.
* **Experiment.** :func:`run_pos_experiment`: the contenders (MiniLM's weights with a fresh linear tagger on
  top, and the same architecture from random initialisation) are trained by the pretraining unit's loop
  (:func:`course_lib.pretraining.tagging_experiment.fine_tune`: same seed, batches, steps, AdamW and
  schedule) and scored by UPOS accuracy on every word of the dev and test sets; the per-word majority tag
  (:func:`~course_lib.pretraining.tagging_experiment.majority_baseline`) gives the scale.
  ``scripts/pos_english.py`` writes the record ``course_lib/checkpoints/ewt_pos.json``.

Not covered: XPOS, features, lemmas, dependency relations, hyper-parameter search (one setting, fixed before
the runs, shared by both contenders).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..pretraining.tagging import UPOS_TAGS, TaggedSentence, encode_sentence
from ..pretraining.tagging_experiment import Example, FineTuneSettings, evaluate, fine_tune, majority_baseline

__all__ = ["POS_SETTINGS", "wordpiece_word_encoder", "encode_treebank", "score", "run_contender",
           "majority_runs", "summarize"]

# The one recipe both contenders get, fixed before any run: ~1.3 epochs of EWT's 12,544 sentences, within
# the ~20 single-thread CPU minutes the two runs may take (a MiniLM step on 32 sentences ≈ 0.7-0.9 s).
POS_SETTINGS = FineTuneSettings(steps=500, batch_size=32, lr=1e-4, weight_decay=0.01, warmup_fraction=0.1)


def wordpiece_word_encoder(tokenizer, max_word_pieces: int | None = None) -> Callable[[str], list[int]]:
    """``encode(word) -> sub-word ids`` for a HF WordPiece tokenizer, without ``[CLS]``/``[SEP]``, memoised
    (EWT's 204k words are ~20k distinct forms), at most ``max_word_pieces`` of them (``None``: all). The
    leading space ``encode_sentence`` adds is dropped by BERT's pre-tokenizer; a word that encodes to nothing
    becomes ``[UNK]`` (module docstring)."""
    if max_word_pieces is not None and max_word_pieces < 1:
        raise ValueError(f"max_word_pieces must be at least 1 (the sub-word that carries the tag), got {max_word_pieces}")
    memo: dict[str, list[int]] = {}

    def encode(word: str) -> list[int]:
        if word not in memo:
            pieces = tokenizer(word, add_special_tokens=False)["input_ids"] or [tokenizer.unk_token_id]
            memo[word] = pieces[:max_word_pieces]
        return list(memo[word])

    return encode


def encode_treebank(sentences: Sequence[TaggedSentence], tokenizer, max_length: int = 128,
                    max_word_pieces: int | None = 32) -> list[Example]:
    """Every sentence as ``(input_ids, labels)`` pieces of at most ``max_length`` tokens (cut between words)."""
    encode = wordpiece_word_encoder(tokenizer, max_word_pieces)
    tag_to_id = {tag: i for i, tag in enumerate(UPOS_TAGS)}
    return [piece for sentence in sentences
            for piece in encode_sentence(sentence, encode, tokenizer.cls_token_id, tokenizer.sep_token_id,
                                         max_length, tag_to_id)]


def score(model: nn.Module, examples: Sequence[Example], pad_id: int) -> tuple[int, int]:
    """``(correct, words)`` on ``examples``, read in order of length (less padding; the count is the same)."""
    by_length = sorted(examples, key=lambda example: len(example[0]))
    return evaluate(model, by_length, pad_id, batch_size=64)


def run_contender(name: str, build: Callable[[], nn.Module], train: Sequence[Example],
                  evaluation: dict[str, Sequence[Example]], settings: FineTuneSettings, seed: int,
                  pad_id: int) -> dict:
    """Build under ``torch.manual_seed(seed)``, fine-tune, score on each evaluation split: one run's record."""
    torch.manual_seed(seed)
    model, started = build(), time.perf_counter()
    cpu_started = time.process_time()
    losses = fine_tune(model, train, settings, seed, pad_id)
    train_seconds = time.perf_counter() - started
    run = dict(model=name, seed=seed, steps=settings.steps, first_loss=losses[0], last_loss=losses[-1],
               loss_every_50_steps=[round(loss, 4) for loss in losses[::50]], seconds_train=round(train_seconds, 1))
    for split, examples in evaluation.items():
        correct, words = score(model, examples, pad_id)
        run[split] = dict(correct=correct, words=words, accuracy=correct / words)
    run["seconds_wall"] = round(time.perf_counter() - started, 1)
    run["seconds_cpu"] = round(time.process_time() - cpu_started, 1)
    return run


def majority_runs(train: Sequence[TaggedSentence], evaluation: dict[str, Sequence[TaggedSentence]]) -> dict:
    """The per-word majority tag learnt on ``train``, scored on each evaluation split (no model)."""
    runs = {}
    for split, sentences in evaluation.items():
        correct, words = majority_baseline(train, sentences)
        runs[split] = dict(correct=correct, words=words, accuracy=correct / words)
    return runs


def summarize(runs: Sequence[dict], splits: Sequence[str] = ("dev", "test")) -> dict:
    """Per contender and split: the accuracy's mean, its sample standard deviation (``None`` for a single
    run: one seed says nothing about the spread) and the number of runs."""
    summary = {}
    for name in dict.fromkeys(run["model"] for run in runs):
        summary[name] = {}
        for split in splits:
            accuracies = [run[split]["accuracy"] for run in runs if run["model"] == name]
            summary[name][split] = dict(mean=statistics.mean(accuracies), runs=len(accuracies),
                                        std=statistics.stdev(accuracies) if len(accuracies) > 1 else None)
    return summary
