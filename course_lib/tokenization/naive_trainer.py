"""BPE training, the readable way: count every adjacent pair, merge the most frequent, repeat.

Read this one first. After every merge it recounts all pairs in all words from scratch, which is
easy to check by eye but costs a full pass over the corpus per merge (minutes for an 8k vocabulary
on a few MB). :mod:`.fast_trainer` learns exactly the same merges, only faster.

The rules, chosen to reproduce HF ``tokenizers``' ``BpeTrainer`` (as used by
``ByteLevelBPETokenizer``) merge for merge:

* **Words**: each training text is pre-tokenised on its own with the GPT-2 pattern; a word is
  counted once per occurrence, and pairs never cross words. Special tokens are not cut out of the
  training text (HF does not do it either); they only take the first ids of the vocabulary.
* **Ids**: special tokens first (in the order given), then all 256 byte characters in code-point
  order, then one new id per merge.
* **Counting**: a pair's count is the number of adjacent positions holding it, weighted by word
  frequency, overlaps included ("aaa" holds ``(a, a)`` twice); merging scans left to right and
  never overlaps ("aaa" becomes ``aa a``).
* **Ties**: among pairs with the highest count, the one with the smallest ``(left id, right id)``
  wins. (HF's ``Merge`` ordering: higher count first, then the smaller pair.)
* **Stopping**: when the vocabulary reaches ``vocab_size`` (special tokens and the 256 bytes count)
  or when the best count is below ``min_frequency`` (or zero).
* A merge whose string already exists (``"a"+"bc"`` after ``"ab"+"c"``) reuses that id, so the
  vocabulary may end up smaller than ``256 + specials + merges``.

Not covered: ``limit_alphabet``, word prefixes/suffixes (WordPiece-style ``##``), max token length.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

from .byte_level import count_words, initial_vocab
from .tokenizer import ByteLevelBPE, merge_pair

__all__ = ["add_merge", "best_pair", "get_stats", "train_bpe_naive", "validate_training_args"]


def get_stats(words: dict[tuple[int, ...], int]) -> Counter[tuple[int, int]]:
    """Count adjacent pairs over all words, each word weighted by its frequency.

    >>> get_stats({(1, 2, 3, 1, 2): 1})
    Counter({(1, 2): 2, (2, 3): 1, (3, 1): 1})
    >>> get_stats({(7, 7, 7): 10})   # overlapping occurrences both count
    Counter({(7, 7): 20})
    """
    stats: Counter[tuple[int, int]] = Counter()
    for word, frequency in words.items():
        for pair in pairwise(word):
            stats[pair] += frequency
    return stats


def best_pair(stats: dict[tuple[int, int], int]) -> tuple[int, int]:
    """The most frequent pair; ties go to the smallest ``(left id, right id)``.

    >>> best_pair({(5, 1): 3, (2, 9): 3, (0, 0): 1})
    (2, 9)
    """
    return min(stats, key=lambda pair: (-stats[pair], pair))


def add_merge(left: str, right: str, token_to_id: dict[str, int], id_to_token: list[str],
              merges: list[tuple[str, str]]) -> int:
    """Record the merge ``(left, right)``; return the merged token's id: a new one, unless that string is
    already in the vocabulary (two different pairs can spell the same string; the vocabulary then stays)."""
    new_token = left + right
    if new_token not in token_to_id:
        token_to_id[new_token] = len(id_to_token)
        id_to_token.append(new_token)
    merges.append((left, right))
    return token_to_id[new_token]


def validate_training_args(vocab_size, min_frequency, special_tokens) -> list[str]:
    """Validate the trainer settings; return the special tokens as a list."""
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if not isinstance(min_frequency, int) or isinstance(min_frequency, bool) or min_frequency < 0:
        raise ValueError(f"min_frequency must be a non-negative int, got {min_frequency!r}")
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a list of strings, got the single string {special_tokens!r}; "
                        f"write [{special_tokens!r}]")
    return list(special_tokens)


def train_bpe_naive(texts, vocab_size: int, *, min_frequency: int = 2,
                    special_tokens: Sequence[str] = ()) -> ByteLevelBPE:
    """Learn merges until the vocabulary has ``vocab_size`` tokens, recounting pairs every step.

    ``texts``: one string or an iterable of strings (e.g. the lines of a file, ends included).

    >>> bpe = train_bpe_naive(["aaab aaab"], vocab_size=258, min_frequency=1)
    >>> bpe.merges
    [('a', 'a'), ('a', 'b')]
    """
    special_tokens = validate_training_args(vocab_size, min_frequency, special_tokens)
    id_to_token = initial_vocab(special_tokens)
    token_to_id = {token: index for index, token in enumerate(id_to_token)}
    # Each distinct word as a tuple of ids, with how often it occurs.
    words = {tuple(token_to_id[char] for char in word): count for word, count in count_words(texts).items()}
    merges: list[tuple[str, str]] = []
    while len(token_to_id) < vocab_size:
        stats = get_stats(words)
        if not stats:
            break
        pair = best_pair(stats)
        if stats[pair] < max(1, min_frequency):
            break
        left, right = id_to_token[pair[0]], id_to_token[pair[1]]
        new_id = add_merge(left, right, token_to_id, id_to_token, merges)
        merged: Counter[tuple[int, ...]] = Counter()
        for word, count in words.items():
            merged[tuple(merge_pair(list(word), pair, new_id)) if len(word) > 1 else word] += count
        words = merged
    return ByteLevelBPE(token_to_id, merges, special_tokens)
