"""Translation quality by source length: how the fixed-context bottleneck shows up in the scores.

An encoder-decoder without attention squeezes every source sentence into one vector of the same
size, so a long sentence should lose more in translation than a short one. To see it, split the
test sentences into groups by source length and score each group on its own::

    lengths = [12, 7, 25, ...]                  # source tokens per sentence
    edges = quantile_edges(lengths, 4)          # e.g. [6, 12, 14, 18, 42]: four groups of about equal size
    bucket_by_length(lengths, edges)            # indices of the sentences in [6, 12), [12, 14), ...
    scores_by_length({"plain": hyps_a, "attention": hyps_b}, references, lengths, edges)

Each group gets sacrebleu's **corpus** BLEU and chrF over its sentences (cased, BLEU with the
``13a`` tokenization), not an average of sentence scores: sentence-level BLEU of a short
sentence is mostly 0 or noise. ``length_ratio`` is sacrebleu's hypothesis length over reference
length (its tokens): above 1 the translations run long (repetitions), below 1 they drop words.
:func:`plot_scores_by_length` draws one group of bars per length range. Not covered: confidence
intervals (sacrebleu's bootstrap), other metrics, translating (see :mod:`course_lib.seq2seq.translation`).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["BucketScores", "bucket_by_length", "plot_scores_by_length", "quantile_edges", "scores_by_length"]


class BucketScores(NamedTuple):
    low: int  # the group holds the sentences with low <= length < high
    high: int
    count: int
    bleu: dict[str, float]  # model name -> corpus BLEU (0-100) of the group
    chrf: dict[str, float]  # model name -> corpus chrF (0-100)
    length_ratio: dict[str, float]  # model name -> hypothesis / reference length

    @property
    def label(self) -> str:
        """``"6-11"``: the shortest and longest length the group may hold."""
        return f"{self.low}-{self.high - 1}" if self.high - 1 > self.low else str(self.low)


def _validate_lengths(lengths) -> np.ndarray:
    array = np.asarray(lengths)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"lengths must be a non-empty list of integers, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) or (array < 0).any():
        raise ValueError("lengths must be non-negative integers (tokens or words per sentence)")
    return array


def quantile_edges(lengths: Sequence[int], num_buckets: int) -> list[int]:
    """Integer edges that cut ``lengths`` into ``num_buckets`` groups of about equal size.

    Sentences of equal length always share a group, so with many ties there may be fewer groups.

    >>> quantile_edges([1, 2, 3, 4, 5, 6, 7, 8], 4)
    [1, 3, 5, 7, 9]
    """
    array = _validate_lengths(lengths)
    if not isinstance(num_buckets, int) or num_buckets < 1:
        raise ValueError(f"num_buckets must be a positive integer, got {num_buckets!r}")
    inner = [math.ceil(float(np.quantile(array, q))) for q in np.linspace(0, 1, num_buckets + 1)[1:-1]]
    edges = [int(array.min())] + inner + [int(array.max()) + 1]  # the last edge is exclusive
    return sorted(set(edges))


def bucket_by_length(lengths: Sequence[int], edges: Sequence[int]) -> list[list[int]]:
    """Indices of the sentences in each range ``edges[k] <= length < edges[k + 1]``.

    >>> bucket_by_length([3, 12, 7, 20, 11], [0, 8, 12, 50])
    [[0, 2], [4], [1, 3]]
    """
    array = _validate_lengths(lengths)
    edges = [int(edge) for edge in edges]
    if len(edges) < 2 or any(a >= b for a, b in itertools.pairwise(edges)):
        raise ValueError(f"edges must be at least two strictly increasing integers, got {edges}")
    outside = array[(array < edges[0]) | (array >= edges[-1])]
    if outside.size:
        raise ValueError(f"length {int(outside[0])} lies outside the edges [{edges[0]}, {edges[-1]}); "
                         "widen the first or last edge")
    group = np.searchsorted(edges, array, side="right") - 1  # (N,) the range each length falls in
    return [np.flatnonzero(group == k).tolist() for k in range(len(edges) - 1)]


def scores_by_length(hypotheses: Mapping[str, Sequence[str]], references: Sequence[str], lengths: Sequence[int],
                     edges: Sequence[int]) -> list[BucketScores]:
    """sacrebleu corpus BLEU, chrF and length ratio of every model's translations, one group per length range.

    ``hypotheses`` maps a model name to its translations, aligned with ``references`` and
    ``lengths`` (one per sentence). Empty ranges are left out.
    """
    import sacrebleu

    if not hypotheses:
        raise ValueError("hypotheses is empty: give {model name: list of translations}")
    for name, outputs in hypotheses.items():
        if isinstance(outputs, str) or len(outputs) != len(references):
            raise ValueError(f"{name!r} has {1 if isinstance(outputs, str) else len(outputs)} translations "
                             f"for {len(references)} references")
    if len(lengths) != len(references):
        raise ValueError(f"{len(lengths)} lengths for {len(references)} references")
    table = []
    for k, indices in enumerate(bucket_by_length(lengths, edges)):
        if not indices:
            continue
        refs = [[references[i] for i in indices]]  # one reference stream
        bleu, chrf, ratio = {}, {}, {}
        for name, outputs in hypotheses.items():
            hyps = [outputs[i] for i in indices]
            result = sacrebleu.corpus_bleu(hyps, refs)
            bleu[name] = result.score
            chrf[name] = sacrebleu.corpus_chrf(hyps, refs).score
            ratio[name] = result.sys_len / result.ref_len
        table.append(BucketScores(int(edges[k]), int(edges[k + 1]), len(indices), bleu, chrf, ratio))
    return table


def plot_scores_by_length(table: Sequence[BucketScores], metric: str = "bleu", *, ax=None, unit: str = "tokens"):
    """Grouped bars: one group per length range, one bar per model; returns the Axes.

    ``ax.containers[m]`` holds model ``m``'s bars, left to right from the shortest range.
    """
    if metric not in ("bleu", "chrf", "length_ratio"):
        raise ValueError(f"metric must be 'bleu', 'chrf' or 'length_ratio', got {metric!r}")
    if not table:
        raise ValueError("the table is empty: no length range held a sentence")
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.figure(figsize=(7, 3.5), layout="constrained").add_subplot()
    names = list(getattr(table[0], metric))
    width = 0.8 / len(names)
    for m, name in enumerate(names):
        values = [getattr(row, metric)[name] for row in table]
        ax.bar(np.arange(len(table)) + (m - (len(names) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(range(len(table)), [f"{row.label}\n({row.count} sent.)" for row in table])
    ax.set_xlabel(f"source length ({unit})")
    ax.set_ylabel({"bleu": "BLEU", "chrf": "chrF", "length_ratio": "output / reference length"}[metric])
    ax.legend()
    return ax
