"""What the tokenization lab's checks (:mod:`.tokenization`) compare against, and their inputs.

* the references, in the lab's signatures on one sequence of ids: :func:`reference_get_stats`,
  :func:`reference_train`, :func:`reference_encode`, built from :mod:`course_lib.tokenization`'s
  building blocks, which follow HF ``tokenizers``' rules;
* the classic mistakes, written out, so a check can recognise one and name it: pairs counted
  without overlaps (two ways), stale counts after a merge, ties broken by the first or the largest pair,
  merges applied leftmost first or in reverse order;
* the random inputs: corpora of words over a small random alphabet (runs, ties, sometimes a
  two-byte letter), id lists with runs of equal ids.

Not covered: the checks themselves and the rubric (:mod:`.tokenization`).
"""
from __future__ import annotations

from itertools import pairwise

from ...tokenization import best_pair, get_stats as library_get_stats, merge_pair
from ..toolkit import Trial

__all__ = [
    "FIRST_NEW_ID", "reference_get_stats", "reference_train", "reference_encode",
    "only_self_pairs_undercounted", "stats_without_overlaps", "has_overlap", "train_with_stale_counts", "first_seen_among_ties",
    "largest_among_ties", "encode_leftmost_first", "encode_reverse_order",
    "random_corpus", "random_ids", "tie_free_steps",
]

FIRST_NEW_ID = 256


# --- references (the library's building blocks on a single sequence) -------------------------------

def reference_get_stats(ids: list[int]) -> dict[tuple[int, int], int]:
    """Adjacent pair -> count, overlaps included: ``[7, 7, 7]`` holds ``(7, 7)`` twice."""
    return dict(library_get_stats({tuple(ids): 1}))


def reference_train(text: str, num_merges: int) -> list[tuple[int, int]]:
    """``num_merges`` merges learnt on ``text``'s bytes (fewer if the sequence shrinks to one token)."""
    ids, merges = list(text.encode("utf-8")), []
    for index in range(num_merges):
        if len(ids) < 2:
            break
        pair = best_pair(reference_get_stats(ids))
        ids = merge_pair(ids, pair, FIRST_NEW_ID + index)
        merges.append(pair)
    return merges


def reference_encode(text: str, merges: list[tuple[int, int]]) -> list[int]:
    """``text``'s bytes with the merges applied lowest rank first."""
    ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while len(ids) > 1:
        present = [pair for pair in pairwise(ids) if pair in ranks]
        if not present:
            break
        pair = min(present, key=ranks.__getitem__)
        ids = merge_pair(ids, pair, FIRST_NEW_ID + ranks[pair])
    return ids


# --- the classic mistakes, to recognise them ------------------------------------------------------

def only_self_pairs_undercounted(got: dict, expected: dict) -> bool:
    """True when ``got`` differs from ``expected`` only by too-low counts of pairs ``(x, x)``:
    the signature of counting runs like 'aaaa' without overlaps."""
    differ = {pair for pair in got.keys() | expected.keys() if got.get(pair, 0) != expected.get(pair, 0)}
    return bool(differ) and all(pair[0] == pair[1] and got.get(pair, 0) < expected[pair] for pair in differ)


def stats_without_overlaps(ids: list[int]) -> tuple[dict, dict]:
    """The two ways of counting pairs without overlaps: scanning and jumping past a pair (x, x) just
    counted, so "aab" loses (a, b) too; and counting each pair's non-overlapping occurrences, like str.count."""
    jumping, i = {}, 0
    while i < len(ids) - 1:
        pair = (ids[i], ids[i + 1])
        jumping[pair] = jumping.get(pair, 0) + 1
        i += 2 if pair[0] == pair[1] else 1
    apart = {pair: len(ids) - len(merge_pair(list(ids), pair, -1)) for pair in reference_get_stats(ids)}
    return jumping, apart


def has_overlap(ids, pair) -> bool:
    """Whether ``pair`` is (x, x) and ``ids`` holds a run of at least three x's (overlapping occurrences)."""
    return pair[0] == pair[1] and any(ids[i:i + 3] == [pair[0]] * 3 for i in range(len(ids) - 2))


def train_with_stale_counts(text, num_merges, forget_merged: bool):
    ids, merges = list(text.encode("utf-8")), []
    stats = reference_get_stats(ids)
    for index in range(num_merges):
        if not stats:
            break
        pair = best_pair(stats)
        if forget_merged:
            del stats[pair]
        ids = merge_pair(ids, pair, FIRST_NEW_ID + index)
        merges.append(pair)
    return merges


def first_seen_among_ties(ids):
    stats = reference_get_stats(ids)
    return max(stats, key=stats.get)  # dict order = first occurrence


def largest_among_ties(ids):
    stats = reference_get_stats(ids)
    return max(stats, key=lambda pair: (stats[pair], pair))


def encode_leftmost_first(text, merges):
    ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while True:
        pair = next((p for p in pairwise(ids) if p in ranks), None)
        if pair is None:
            return ids
        ids = merge_pair(ids, pair, FIRST_NEW_ID + ranks[pair])


def encode_reverse_order(text, merges):
    ids = list(text.encode("utf-8"))
    for rank in reversed(range(len(merges))):
        ids = merge_pair(ids, tuple(merges[rank]), FIRST_NEW_ID + rank)
    return ids


# --- inputs ------------------------------------------------------------------------------------

def random_corpus(trial: Trial, min_words: int = 4, max_words: int = 14) -> str:
    """Words from a small random lexicon, joined by spaces: repeats, runs ("aaa"), sometimes "ĉ"."""
    alphabet = "ab" + "cdefg"[: trial.randint(0, 3)] + ("ĉ" if trial.randint(0, 2) == 0 else "")
    lexicon = ["".join(alphabet[trial.randint(0, len(alphabet) - 1)] for _ in range(trial.randint(1, 5)))
               for _ in range(trial.randint(2, 5))]
    return " ".join(lexicon[trial.randint(0, len(lexicon) - 1)] for _ in range(trial.randint(min_words, max_words)))


def random_ids(trial: Trial) -> list[int]:
    """Ids with runs of equal values (where overlaps matter), sometimes merged ids above 255."""
    symbols = [trial.randint(0, 300) for _ in range(trial.randint(1, 4))]
    ids = []
    for _ in range(trial.randint(0, 8)):
        ids += [symbols[trial.randint(0, len(symbols) - 1)]] * trial.randint(1, 5)
    return ids


def tie_free_steps(text: str, limit: int = 12) -> int:
    """How many merges ``reference_train`` makes on ``text`` before its best pair first has a tie."""
    ids = list(text.encode("utf-8"))
    for index in range(limit):
        stats = reference_get_stats(ids)
        if not stats:
            return index
        top = max(stats.values())
        if sum(count == top for count in stats.values()) > 1:
            return index
        ids = merge_pair(ids, best_pair(stats), FIRST_NEW_ID + index)
    return limit
