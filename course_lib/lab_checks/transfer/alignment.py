"""The transfer lab's label-alignment check: one tag per word, put on the word's first sub-word.

Students write ``align_labels(word_pieces, tag_ids, bos_id, eos_id) -> (ids, labels)``: ``word_pieces``
holds each word's sub-word ids (a list of lists of ints), ``tag_ids`` one tag per word; ``ids`` is
``[bos_id] + every piece in order + [eos_id]`` and ``labels`` the same length, each word's tag on its
first piece and -100 (no loss) on its other pieces and on the two special tokens. The reference is
:func:`course_lib.pretraining.tagging.align_labels` (what the course's tagging head trains on, pinned to
HF ``BertForTokenClassification``'s loss in tests/pretraining). Results may be lists, tuples or 1-D
integer tensors; they are compared as lists of ints.

Inputs are plain lists (the sandboxed grader exchanges them as such): random sentences of words of 1
to 4 pieces with tags that include 0, then a sentence of single-piece words, a one-word sentence of many
pieces and a one-word, one-piece sentence. The student gets copies, and a function that changes the
caller's lists (``tag_ids.insert(0, -100)``) fails: the toolkit's in-place rule covers tensors only, so
this module compares the lists itself. Classic mistakes named: the tag on every piece, on the last piece,
0 instead of -100 on the other pieces or on the special tokens, the special tokens missing.

Not covered: splitting long sentences (:func:`course_lib.pretraining.tagging.encode_sentence`), tokenizing.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from ...pretraining.tagging import IGNORE_INDEX, align_labels as library_align_labels
from ..hints import hint_for_exception
from ..inputs import IN_PLACE_HINT
from ..toolkit import CheckFailed, diagnose, fail, trials

__all__ = ["BOS_ID", "EOS_ID", "alignment_cases", "check_align", "reference_align_labels"]

BOS_ID, EOS_ID = 101, 102  # MiniLM's (BERT's) [CLS] and [SEP]


def reference_align_labels(word_pieces, tag_ids, bos_id, eos_id):
    """The lab's ``align_labels``: :func:`course_lib.pretraining.tagging.align_labels`."""
    return library_align_labels(word_pieces, tag_ids, bos_id, eos_id)


def alignment_cases():
    """(word_pieces, tag_ids, context): random sentences, then the edge cases."""
    for trial in trials(3, seed=2700):
        words = trial.randint(2, 6)
        sizes = [trial.randint(1, 4) for _ in range(words)]
        sizes[0] = max(sizes[0], 2)  # a word of several pieces in every sentence
        pieces = [[trial.randint(1000, 29999) for _ in range(size)] for size in sizes]
        tags = [trial.randint(0, 16) for _ in range(words)]
        tags[-1] = 0  # tag 0 exists (UPOS "ADJ"): a label 0 is not "no label"
        yield pieces, tags, f"{words} words of {sizes} sub-words, tags {tags}"
    yield [[2023], [3185], [2003], [2307]], [5, 7, 16, 0], "4 words of one sub-word each"
    yield [[4895, 10354, 3085, 2135, 2094, 6633]], [3], "a one-word sentence of 6 sub-words"
    yield [[7592]], [0], "a one-word sentence of one sub-word"


def _as_ints(value, what: str, context: str) -> list[int]:
    if isinstance(value, torch.Tensor) and value.dim() == 1 and not value.is_floating_point():
        return [int(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) or (isinstance(v, torch.Tensor) and v.numel() == 1
                                                                       and not v.is_floating_point()) for v in value):
        return [int(v) for v in value]
    fail(f"align_labels' {what} should be a list of ints, got {type(value).__name__} (on {context})",
         "build Python lists: ids = [bos_id], then ids.extend(pieces) for each word, then ids.append(eos_id).")


def _call(align_labels: Callable, pieces, tags, context) -> tuple[list[int], list[int]]:
    """The student's (ids, labels) on copies of the lists, failing if the function changed them."""
    pieces_copy, tags_copy = copy.deepcopy(pieces), list(tags)
    try:
        result = align_labels(pieces_copy, tags_copy, BOS_ID, EOS_ID)
    except CheckFailed:
        raise
    except Exception as error:  # the student's bug, reported as a failed check with the cause
        fail(f"align_labels raised {type(error).__name__}{': ' + str(error) if str(error) else ''} (on {context})",
             hint_for_exception(error))
    for name, before, after in (("word_pieces", pieces, pieces_copy), ("tag_ids", tags, tags_copy)):
        if before != after:
            fail(f"align_labels modified its input {name} in place; a graded function must leave its inputs as they "
                 f"were (on {context})", "build new lists (labels = [...]; labels.append(...)); " + IN_PLACE_HINT)
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        got = f"{len(result)} values" if isinstance(result, (tuple, list)) else type(result).__name__
        fail(f"align_labels should return a pair (ids, labels), got {got} (on {context})",
             "end the function with `return ids, labels`.")
    return _as_ints(result[0], "ids", context), _as_ints(result[1], "labels", context)


def _labels_with(pieces, tags, first, rest, special) -> list[int]:
    """Labels built by a rule: ``first(tag)`` and ``rest(tag)`` on a word's first and other pieces (``last``
    puts the tag on the last piece instead), ``special`` on [CLS] and [SEP]."""
    labels = [special]
    for word, tag in zip(pieces, tags):
        labels += [first(tag)] + [rest(tag)] * (len(word) - 1)
    return labels + [special]


def check_align(align_labels: Callable) -> None:
    """``[bos] pieces… [eos]`` and each word's tag on its first piece, -100 everywhere else."""
    for pieces, tags, context in alignment_cases():
        ids, labels = _call(align_labels, pieces, tags, context)
        expected_ids, expected_labels = reference_align_labels(pieces, tags, BOS_ID, EOS_ID)
        flat = [piece for word in pieces for piece in word]
        if ids != expected_ids:
            if ids == flat:
                fail(f"align_labels' ids lack the special tokens (on {context})",
                     "the encoder reads [CLS] first and [SEP] last: ids = [bos_id] + pieces + [eos_id], and each "
                     "special token gets the label -100.")
            fail(f"align_labels' ids are {ids}, expected {expected_ids} (on {context})",
                 "ids = [bos_id], then every word's pieces in order, then eos_id: nothing dropped, nothing repeated.")
        if len(labels) != len(ids):
            fail(f"align_labels gives {len(labels)} labels for {len(ids)} ids (on {context})",
                 "one label per id: -100 for [CLS] and [SEP], a word's tag on its first piece, -100 on its others.")
        if labels == expected_labels:
            continue
        last = [IGNORE_INDEX]
        for word, tag in zip(pieces, tags):
            last += [IGNORE_INDEX] * (len(word) - 1) + [tag]
        diagnose(labels, [
            (_labels_with(pieces, tags, lambda t: t, lambda t: t, IGNORE_INDEX),
             "align_labels puts the word's tag on every one of its sub-words",
             "the word is scored once, on its first sub-word: the others get -100, or a long word would count as "
             "several words in the loss and the accuracy."),
            (last + [IGNORE_INDEX], "align_labels puts the tag on the word's last sub-word",
             "the convention (BERT's paper, HF's examples) is the first sub-word: labels.append(tag), then -100 for "
             "each of the other len(pieces) - 1 pieces."),
            (_labels_with(pieces, tags, lambda t: t, lambda t: 0, IGNORE_INDEX),
             "align_labels labels a word's other sub-words 0 instead of -100",
             "0 is a real tag (a class the loss would train towards); -100 is what cross_entropy skips."),
            (_labels_with(pieces, tags, lambda t: t, lambda t: IGNORE_INDEX, 0),
             "align_labels labels [CLS] and [SEP] 0 instead of -100",
             "0 is a real tag: the model would learn to call [CLS] and [SEP] that class. Give them -100 (no loss)."),
            (_labels_with(pieces, tags, lambda t: t, lambda t: 0, 0),
             "align_labels labels the special tokens and the other sub-words 0 instead of -100",
             "0 is a real tag; -100 means no loss: use it for [CLS], [SEP] and every sub-word after a word's first."),
        ], context=context, matches=lambda got, expected: got == expected)
        wrong = next(i for i, (a, b) in enumerate(zip(labels, expected_labels)) if a != b)
        fail(f"align_labels' label at position {wrong} (id {ids[wrong]}) is {labels[wrong]}, expected "
             f"{expected_labels[wrong]}; labels {labels}, expected {expected_labels} (on {context})",
             "-100 for [CLS] and [SEP], each word's tag on its first sub-word, -100 on its other sub-words.")
