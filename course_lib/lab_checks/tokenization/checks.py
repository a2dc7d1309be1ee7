"""The checks of lab 02, tokenization: pair counts, a merge step, training, encoding; one per graded cell.

The package's docstring (:mod:`course_lib.lab_checks.tokenization`) says how each classic mistake
costs only its own cell; the references and the written-out mistakes are in :mod:`.references`.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from itertools import pairwise

from ...tokenization import best_pair, merge_pair
from ..toolkit import call_student, diagnose, fail, trials
from .references import (
    encode_leftmost_first, encode_reverse_order, first_seen_among_ties, has_overlap, largest_among_ties,
    only_self_pairs_undercounted, random_corpus, random_ids, stats_without_overlaps, reference_encode, reference_get_stats, reference_train,
    tie_free_steps, train_with_stale_counts,
)

__all__ = ["check_encode", "check_get_stats", "check_merge", "check_train", "check_train_ties"]

TRIALS = 12
# train's edge cases, after the random corpora: nothing to merge, one id, a run merged twice, no merge asked for.
TRAIN_EDGES = (("", 3), ("a", 2), ("aaaa", 3), ("ab", 5), ("abc", 0), ("ĉĉ", 4))


def _one_of(got, versions) -> bool:
    """Whether ``got`` equals one of ``versions`` (the ways one mistake can show)."""
    return got in versions


def _as_pairs(value, name: str, context: str) -> list[tuple[int, int]]:
    if not isinstance(value, (list, tuple)):
        fail(f"{name} should return a list of pairs, got {type(value).__name__} ({context})",
             "did you forget a `return merges`?" if value is None else None)
    pairs = []
    for item in value:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(i, int) for i in item)):
            fail(f"{name} should return a list of (int, int) pairs, got an item {item!r} ({context})",
                 "append the merged pair itself, e.g. merges.append(pair) with pair = (97, 98).")
        pairs.append(tuple(item))
    return pairs


def _as_ids(value, name: str, context: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(i, int) for i in value):
        fail(f"{name} should return a list of ints, got {type(value).__name__} {value!r:.80} ({context})",
             "did you forget a `return`?" if value is None else None)
    return list(value)


# --- the checks -----------------------------------------------------------------------------------

def check_get_stats(get_stats: Callable) -> None:
    """``get_stats(ids)`` counts every adjacent pair, overlapping occurrences included, the last pair too.

    Every case runs before a verdict, so a mistake is named by what explains *all* the wrong counts:
    on "aaaa" a count without overlaps and a count without the last pair both give (a, a) twice.
    """
    cases = [[97, 97, 97, 97], [1, 2, 3, 1, 2], [5], []]
    cases += [random_ids(trial) for trial in trials(TRIALS, seed=100)]
    cases += [[7, 7], [1, 2, 3, 3], [4, 9, 4, 9], [300, 2, 300]]  # the last pair a run, a repeat, a merged id
    wrong, all_but_last = [], True  # wrong: (ids, got, expected); all_but_last: every result lacks the last pair
    for ids in cases:
        got = call_student(get_stats, list(ids), name="get_stats")
        if not isinstance(got, Mapping):  # a dict, Counter, defaultdict, OrderedDict, ... will do
            fail(f"get_stats should return a dict {{pair: count}}, got {type(got).__name__} (ids = {ids})",
                 "did you forget a `return`?" if got is None else None)
        got = {tuple(pair): count for pair, count in got.items() if count}
        if got != reference_get_stats(ids):
            wrong.append((ids, got, reference_get_stats(ids)))
        all_but_last &= len(ids) < 2 or got == reference_get_stats(ids[:-1])
    if not wrong:
        return
    ids, got, expected = wrong[0]
    outcome = f"got {got}, expected {expected} (ids = {ids})"
    if all_but_last:  # shown on a case where the lost pair is not part of a run, if there is one
        ids, got, expected = next((case for case in wrong if case[0][-2] != case[0][-1]), wrong[0])
        outcome = f"got {got}, expected {expected} (ids = {ids})"
        fail(f"get_stats misses the last pair {tuple(ids[-2:])}: {outcome}",
             "a sequence of n ids has n - 1 adjacent pairs, the last one being (ids[-2], ids[-1]): loop i over "
             "range(len(ids) - 1), not range(len(ids) - 2), or count zip(ids, ids[1:]).")
    if all(got in stats_without_overlaps(ids) or only_self_pairs_undercounted(got, expected)
           for ids, got, expected in wrong):
        fail(f"get_stats skips overlapping pairs: {outcome}",
             "in a run like 'aaaa' every position starts a pair: (a, a) occurs 3 times, as HF tokenizers "
             "counts it. Count zip(ids, ids[1:]), one pair per position, without jumping ahead.")
    fail(f"get_stats returned {outcome}",
         "count each adjacent pair (ids[i], ids[i + 1]) for i in range(len(ids) - 1).")


def check_merge(merge: Callable) -> None:
    """``merge(ids, pair, new_id)`` replaces non-overlapping occurrences, scanning left to right."""
    cases = [([1, 2, 3, 1, 2], (1, 2), 256), ([1, 2], (2, 1), 256), ([], (1, 1), 256), ([5, 5, 5, 5, 5], (5, 5), 9),
             ([3, 1, 2], (1, 2), 256), ([1, 2], (1, 2), 256), ([4, 5, 5, 5], (5, 5), 260), ([5], (5, 5), 9)]
    for trial in trials(TRIALS, seed=200):
        ids = random_ids(trial)
        pairs = list(pairwise(ids))
        pair = pairs[trial.randint(0, len(pairs) - 1)] if pairs and trial.index % 4 else (7, 7)  # (7, 7): often absent
        cases.append((ids, pair, 301 + trial.index))
    cases.sort(key=lambda case: has_overlap(case[0], case[1]))  # general mistakes first, with the general message
    for ids, pair, new_id in cases:
        context = f"merge({ids}, {pair}, {new_id})"
        got = _as_ids(call_student(merge, list(ids), pair, new_id, name="merge"), "merge", context)
        expected = merge_pair(list(ids), pair, new_id)
        if got == expected:
            continue
        if has_overlap(ids, pair):
            fail(f"merge mishandles overlapping occurrences: {context} gave {got}, expected {expected}",
                 "scan left to right and, after a match at i and i + 1, continue at i + 2: with (a, a), 'aaa' "
                 "becomes 'X a' (the middle 'a' is used up by the first match) and 'aaaa' becomes 'X X'.")
        fail(f"{context} gave {got}, expected {expected}",
             "scan left to right; at a match append new_id and skip two positions, else append ids[i] and skip "
             "one; do not lose the last token.")


def check_train(train: Callable) -> None:
    """``train(text, num_merges)`` learns the reference merges when the best pair is never tied."""
    done = 0
    for trial in trials(10 * TRIALS, seed=300):
        text = random_corpus(trial, 8, 20)
        num_merges = tie_free_steps(text)
        if num_merges < 3:
            continue  # a tie early on: the tie rule is check_train_ties' business
        context = f"train({text!r}, {num_merges})"
        got = _as_pairs(call_student(train, text, num_merges, name="train"), "train", context)
        expected = reference_train(text, num_merges)
        if got != expected:
            stale = (train_with_stale_counts(text, num_merges, True), train_with_stale_counts(text, num_merges, False))
            diagnose(got, [(stale, f"train does not update the counts after a merge: {context} gave {got}, "
                                   f"expected {expected}",
                            "a merge changes which pairs exist (merging (a, b) destroys the pairs around it and "
                            "creates new ones with the new id): recount the pairs of the *merged* ids at every step.")],
                     matches=_one_of)
            fail(f"{context} gave {got}, expected {expected}",
                 "each step: count the pairs of the current ids, take the most frequent, append it to merges, "
                 "replace it by 256 + step in ids, and repeat with the new ids.")
        done += 1
        if done == TRIALS:
            break
    else:
        raise RuntimeError("too few tie-free corpora drawn")  # unreachable with these seeds (tested)
    for text, num_merges in TRAIN_EDGES:
        context = f"train({text!r}, {num_merges})"
        got = _as_pairs(call_student(train, text, num_merges, name="train"), "train", context)
        expected = reference_train(text, num_merges)
        if got != expected:
            fail(f"{context} gave {got}, expected {expected}",
                 "stop early when fewer than two ids are left (nothing to count), make no merge for num_merges = 0, "
                 "and recount after every merge: a run like 'aaaa' merges to 'XX', whose pair (X, X) comes next.")


def check_train_ties(train: Callable) -> None:
    """Among pairs with the same count, ``train`` merges the smallest pair, as HF tokenizers does."""
    texts = ["xyab xyab", "dcba"]
    for trial in trials(10 * TRIALS, seed=400):
        text = random_corpus(trial, 2, 8)
        stats = reference_get_stats(list(text.encode("utf-8")))
        if stats and sum(count == max(stats.values()) for count in stats.values()) > 1:
            texts.append(text)
        if len(texts) == TRIALS:
            break
    for text in texts:
        context = f"train({text!r}, 1)"
        got = _as_pairs(call_student(train, text, 1, name="train"), "train", context)
        ids = list(text.encode("utf-8"))
        expected = [best_pair(reference_get_stats(ids))]
        if got == expected:
            continue
        stats = reference_get_stats(ids)
        tied = sorted(pair for pair, count in stats.items() if count == stats[expected[0]])
        where = f"{context}: pairs {tied} are all seen {stats[expected[0]]} times"
        outcome = f"got {got}, expected {expected}"
        diagnose(got, [
            ([first_seen_among_ties(ids)], f"train breaks ties by the first pair seen: {where}; {outcome}",
             "max(stats, key=stats.get) returns the first of the tied pairs in dict order; break ties by "
             "the smallest pair, as HF tokenizers does: min(stats, key=lambda p: (-stats[p], p))."),
            ([largest_among_ties(ids)], f"train breaks ties by the largest pair: {where}; {outcome}",
             "break ties by the smallest pair: min(stats, key=lambda p: (-stats[p], p))."),
        ], matches=operator.eq)
        fail(f"{context} gave {got}, expected {expected}",
             "merge the most frequent pair; among equally frequent pairs, the smallest (compare the tuples).")


def check_encode(encode: Callable) -> None:
    """``encode(text, merges)`` applies the merges lowest rank first, like the library's tokenizer."""
    cases = [("abcab", [(98, 99), (97, 98)]), ("", [(97, 98)]), ("abc", [])]
    cases += [("xab", [(97, 98)]), ("abab", [(97, 98), (256, 256)]), ("aaa", [(97, 97)]), ("ĉ", [(196, 137)])]
    for trial in trials(TRIALS, seed=500):
        corpus = random_corpus(trial, 6, 16)
        merges = reference_train(corpus, trial.randint(2, 12))
        cases.append((random_corpus(trial, 2, 6) if trial.index % 2 else corpus, merges))
    for text, merges in cases:
        context = f"encode({text!r}, merges={merges})"
        got = _as_ids(call_student(encode, text, [tuple(m) for m in merges], name="encode"), "encode", context)
        expected = reference_encode(text, merges)
        if got == expected:
            continue
        out_of_order = (encode_leftmost_first(text, merges), encode_reverse_order(text, merges))
        diagnose(got, [(out_of_order, f"encode applies the merges out of rank order: {context} gave {got}, "
                                      f"expected {expected}",
                        "at each step merge the pair with the lowest rank (learnt earliest) among all adjacent "
                        "pairs, not the leftmost mergeable pair or the latest merge: min(pairs, key=rank).")],
                 matches=_one_of)
        fail(f"{context} gave {got}, expected {expected}",
             "start from list(text.encode('utf-8')); while some adjacent pair is in merges, merge the one "
             "with the lowest index i into 256 + i.")
