"""The committed POS results (course_lib/checkpoints/esperberto_pos.json) agree with themselves and the data.

What can be recomputed cheaply is: the folds and the words each fold scores (every word once per run),
the majority baseline's every run, the summary from the runs, the overlap check, the data's checksums
and the model's config against EsperBERTo's checkpoint. The fine-tuning runs themselves take minutes
(``scripts/pos_esperanto.py``), so their accuracies are checked for consistency, not rerun.
"""
from __future__ import annotations

import json
import statistics

import pytest

from course_lib.data.registry import DATA_FILES
from course_lib.pretraining.tagging import load_ud_esperanto
from course_lib.pretraining.tagging_experiment import kfold, majority_baseline, ngram_overlap
from course_lib.runtime import CHECKPOINT_DIR

RESULTS = CHECKPOINT_DIR / "esperberto_pos.json"
CONTENDERS = ("pretrained", "random init")


@pytest.fixture(scope="module")
def record():
    return json.loads(RESULTS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sentences():
    return load_ud_esperanto()


def test_it_is_the_real_experiment_on_the_real_data(record, sentences):
    assert record["model"].startswith("EsperBERTo")
    assert record["data"] == {name: DATA_FILES[name].sha256 for name in record["data"]} and len(record["data"]) == 2
    assert (record["sentences"], record["words"]) == (len(sentences), sum(len(s.words) for s in sentences))
    assert record["folds"] >= 5 and len(record["seeds"]) >= 2
    from course_lib.pretraining.esperberto import load_esperberto

    model, _ = load_esperberto()
    assert record["config"] == model.config.to_dict()


def test_every_run_scores_every_word_of_its_fold_once(record, sentences):
    folds = kfold(len(sentences), record["folds"], record["split_seed"])
    assert [len(f) for f in folds] == record["fold_sizes"]
    words = [sum(len(sentences[i].words) for i in fold) for fold in folds]
    for name in CONTENDERS:
        runs = [r for r in record["runs"] if r["model"] == name]
        assert sorted((r["fold"], r["seed"]) for r in runs) == sorted(
            (f, s) for f in range(record["folds"]) for s in record["seeds"])
        for run in runs:
            assert run["words"] == words[run["fold"]] and run["accuracy"] == run["correct"] / run["words"]


def test_majority_baseline_runs_recompute(record, sentences):
    folds = kfold(len(sentences), record["folds"], record["split_seed"])
    runs = [r for r in record["runs"] if r["model"] == "majority tag per word"]
    assert len(runs) == record["folds"]
    for run in runs:
        test = set(folds[run["fold"]])
        expected = majority_baseline([s for i, s in enumerate(sentences) if i not in test],
                                     [sentences[i] for i in sorted(test)])
        assert (run["correct"], run["words"]) == expected


def test_summary_recomputes_from_the_runs(record):
    for name, summary in record["summary"].items():
        accuracies = [r["accuracy"] for r in record["runs"] if r["model"] == name]
        assert summary["runs"] == len(accuracies)
        assert summary["mean"] == pytest.approx(statistics.mean(accuracies), abs=1e-12)
        assert summary["std"] == pytest.approx(statistics.stdev(accuracies), abs=1e-12)
        per_fold = [statistics.mean(r["accuracy"] for r in record["runs"] if r["model"] == name and r["fold"] == f)
                    for f in range(record["folds"])]
        assert summary["per_fold"] == pytest.approx(per_fold, abs=1e-12)


def test_the_overlap_check_recomputes(record, sentences):
    from course_lib.pretraining.esperberto import esperanto_corpus

    overlap = record["overlap_with_pretraining_text"]
    training_text = "\n".join(esperanto_corpus().train)
    for key, found in overlap.items():
        if key.endswith("-word runs"):
            assert ngram_overlap(sentences, training_text, found["n"]) == found


def test_paired_differences_recompute(record):
    [(name, paired)] = record["paired"].items()
    assert name == "pretrained minus random init"
    accuracy = {(r["model"], r["fold"], r["seed"]): r["accuracy"] for r in record["runs"]}
    differences = [accuracy[("pretrained", f, s)] - accuracy[("random init", f, s)]
                   for f in range(record["folds"]) for s in record["seeds"]]
    assert paired["differences"] == pytest.approx(differences, abs=1e-12)
    assert paired["mean"] == pytest.approx(statistics.mean(differences), abs=1e-12)
    assert paired["std"] == pytest.approx(statistics.stdev(differences), abs=1e-12)
    assert (paired["wins"], paired["ties"], paired["losses"]) == (
        sum(d > 0 for d in differences), sum(d == 0 for d in differences), sum(d < 0 for d in differences))
