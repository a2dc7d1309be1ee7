"""Scores by source length: worked examples for the grouping, sacrebleu itself for the scores."""
from __future__ import annotations

import matplotlib
import pytest
import sacrebleu

from course_lib.seq2seq.bottleneck import bucket_by_length, plot_scores_by_length, quantile_edges, scores_by_length

matplotlib.use("Agg")

REFERENCES = [
    "A dog runs on the beach.",
    "Two men are playing football in a park.",
    "A woman in a red dress is singing on a stage in front of a crowd.",
    "A child eats an apple.",
    "A man with a hat is riding a bicycle down a busy street in the city.",
    "People are waiting for the bus.",
]
LENGTHS = [7, 10, 17, 6, 18, 8]  # pretend source lengths
GOOD = ["A dog runs on the beach.", "Two men play football in a park.",
        "A woman in a red dress sings on a stage in front of a crowd.", "A child eats an apple.",
        "A man in a hat rides a bike down a busy street in the city.", "People wait for the bus."]
POOR = ["A dog runs.", "Two men are playing.", "A woman is singing.", "A child eats an apple.",
        "A man is riding.", "People are waiting."]


def test_bucket_by_length_worked_example():
    assert bucket_by_length([3, 12, 7, 20, 11], [0, 8, 12, 50]) == [[0, 2], [4], [1, 3]]
    assert bucket_by_length([5, 5], [5, 6, 9]) == [[0, 1], []]  # a left edge is included, a right edge is not


def test_bucket_by_length_rejects_bad_edges_and_lengths():
    with pytest.raises(ValueError, match="strictly increasing"):
        bucket_by_length([3, 4], [0, 5, 5])
    with pytest.raises(ValueError, match="outside the edges"):
        bucket_by_length([3, 60], [0, 10, 50])
    with pytest.raises(ValueError, match="non-negative integers"):
        bucket_by_length([3.5], [0, 10])


def test_quantile_edges_worked_examples():
    assert quantile_edges(list(range(1, 9)), 4) == [1, 3, 5, 7, 9]  # four groups of two
    assert quantile_edges(list(range(1, 9)), 2) == [1, 5, 9]
    assert quantile_edges([5, 5, 5, 5, 9], 2) == [5, 10]  # ties stay together: one group
    edges = quantile_edges(LENGTHS, 3)
    assert [len(group) for group in bucket_by_length(LENGTHS, edges)] == [2, 2, 2]
    with pytest.raises(ValueError, match="num_buckets"):
        quantile_edges(LENGTHS, 0)


def test_scores_by_length_equal_sacrebleu_on_each_group():
    edges = [0, 9, 20]  # [7, 6, 8] -> sentences 0, 3, 5; [10, 17, 18] -> 1, 2, 4
    table = scores_by_length({"good": GOOD, "poor": POOR}, REFERENCES, LENGTHS, edges)
    assert [(row.low, row.high, row.count, row.label) for row in table] == [(0, 9, 3, "0-8"), (9, 20, 3, "9-19")]
    for row, indices in zip(table, ([0, 3, 5], [1, 2, 4])):
        refs = [[REFERENCES[i] for i in indices]]
        for name, hyps in (("good", GOOD), ("poor", POOR)):
            subset = [hyps[i] for i in indices]
            expected = sacrebleu.corpus_bleu(subset, refs)
            assert row.bleu[name] == pytest.approx(expected.score)
            assert row.chrf[name] == pytest.approx(sacrebleu.corpus_chrf(subset, refs).score)
            assert row.length_ratio[name] == pytest.approx(expected.sys_len / expected.ref_len)
    # the poor system drops words, and more of them in the long group
    assert table[1].length_ratio["poor"] < table[0].length_ratio["poor"] < 1.0
    assert table[1].bleu["poor"] < table[0].bleu["poor"]


def test_perfect_translations_score_100_and_empty_groups_are_left_out():
    table = scores_by_length({"copy": REFERENCES}, REFERENCES, LENGTHS, [0, 9, 10, 20])  # [9, 10) is empty
    assert [row.label for row in table] == ["0-8", "10-19"]
    assert all(row.bleu["copy"] == pytest.approx(100.0) and row.length_ratio["copy"] == 1.0 for row in table)


def test_scores_by_length_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="5 translations for 6 references"):
        scores_by_length({"short": GOOD[:5]}, REFERENCES, LENGTHS, [0, 20])
    with pytest.raises(ValueError, match="lengths"):
        scores_by_length({"good": GOOD}, REFERENCES, LENGTHS[:3], [0, 20])
    with pytest.raises(ValueError, match="empty"):
        scores_by_length({}, REFERENCES, LENGTHS, [0, 20])


def test_plot_draws_one_bar_per_model_and_group():
    table = scores_by_length({"good": GOOD, "poor": POOR}, REFERENCES, LENGTHS, [0, 9, 20])
    ax = plot_scores_by_length(table, "chrf")
    for container, name in zip(ax.containers, ("good", "poor")):
        assert [bar.get_height() for bar in container] == pytest.approx([row.chrf[name] for row in table])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0-8\n(3 sent.)", "9-19\n(3 sent.)"]
    with pytest.raises(ValueError, match="metric"):
        plot_scores_by_length(table, "rouge")
