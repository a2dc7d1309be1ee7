"""Distil the fine-tuned MiniLM on SST-2 into a 3-layer student: does the teacher's signal help, does the
teacher's initialisation help, what do size and speed buy (:mod:`course_lib.transfer.distillation_experiment`).

1. Teacher: the real MiniLM (6 layers) fine-tuned on all of SST-2's training sentences, gold labels only.
2. Its targets on the training sentences, in eval mode: logits and last hidden states.
3. Students, 3 layers, for every seed: {teacher's layers 0, 2, 4 (+ embeddings, head), random init} ×
   {gold labels only, DistilBERT's loss}; all with the same steps, batches (drawn from the seed) and recipe.
4. Dev accuracy of everyone, test accuracy too (the best student is chosen on dev); parameters; inference
   time on the dev batches, teacher and student taking turns in one run, one thread, median of repeats.

The record (``course_lib/checkpoints/sst2_distillation.json``) is written after every finished step and read
back on a rerun with the same settings, so an interrupted run resumes (the teacher's weights are kept in
``--work-dir``, not committed: 90 MB). Example::

    nice -n 5 python scripts/distil_sst2.py --threads 1
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from course_lib.data.registry import DATA_FILES
from course_lib.pretraining.encoder import load_minilm
from course_lib.runtime import CHECKPOINT_DIR
from course_lib.transfer import load_sst2
from course_lib.transfer import distillation_experiment as exp
from course_lib.transfer.distillation import student_from_scratch, student_from_teacher

SST2_FILES = [f"sst2_trec/stsa.binary.{split}" for split in ("train", "dev", "test")]
INITS = {"teacher layers 0,2,4": student_from_teacher, "random init": student_from_scratch}
LOSSES = ("hard labels only", "distilled")


def cpu_name() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def uptime() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def summarise(record: dict) -> dict:
    """Per student kind: dev (and test) accuracy mean and sample std over seeds; the best kind by dev mean."""
    summary = {}
    for init in INITS:
        for loss in LOSSES:
            runs = [r for r in record["students"] if (r["init"], r["loss"]) == (init, loss)]
            if runs:
                dev, test = [r["dev_accuracy"] for r in runs], [r["test_accuracy"] for r in runs]
                summary[f"{init} / {loss}"] = dict(
                    runs=len(runs), dev_mean=statistics.mean(dev), dev_std=statistics.stdev(dev) if len(dev) > 1 else 0.0,
                    test_mean=statistics.mean(test), test_std=statistics.stdev(test) if len(test) > 1 else 0.0)
    best = max(summary, key=lambda k: summary[k]["dev_mean"]) if summary else None
    return dict(students=summary, best_student_by_dev=best)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--teacher-seed", type=int, default=0)
    parser.add_argument("--teacher-epochs", type=float, default=exp.Settings.teacher_epochs)
    parser.add_argument("--student-epochs", type=float, default=exp.Settings.student_epochs)
    parser.add_argument("--train-size", type=int, default=None, help="first N training sentences (a quick check)")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/distil_sst2"))
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "sst2_distillation.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    settings = exp.Settings(teacher_epochs=args.teacher_epochs, student_epochs=args.student_epochs)

    minilm, tokenizer = load_minilm()
    pad_id = tokenizer.pad_token_id
    train_sentences = load_sst2("train")[:args.train_size]
    train = exp.encode(tokenizer, train_sentences, settings.max_length)
    dev_batches = exp.batches_in_order(exp.encode(tokenizer, load_sst2("dev"), settings.max_length),
                                       settings.batch_size, pad_id)
    test_batches = exp.batches_in_order(exp.encode(tokenizer, load_sst2("test"), settings.max_length),
                                        settings.batch_size, pad_id)
    steps_per_epoch = -(-len(train) // settings.batch_size)
    teacher_steps = round(settings.teacher_epochs * steps_per_epoch)
    student_steps = round(settings.student_epochs * steps_per_epoch)
    fresh = {
        "command": "python scripts/distil_sst2.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "task": "SST-2 (sentence-level, binary sentiment): dev and test accuracy",
        "data": {name: DATA_FILES[name].sha256 for name in SST2_FILES},
        "train_sentences": len(train), "dev_sentences": sum(len(b.rows) for b in dev_batches),
        "test_sentences": sum(len(b.rows) for b in test_batches),
        "teacher_model": "all-MiniLM-L6-v2 (course_lib.pretraining.load_minilm), fine-tuned here, mean pooling",
        "classifier": "course_lib.transfer.distillation_experiment.SentenceClassifier (masked mean → dropout 0.1 → linear)",
        "settings": settings.to_dict(), "teacher_seed": args.teacher_seed, "seeds": args.seeds,
        "teacher_steps": teacher_steps, "student_steps": student_steps,
        "students_init": {"teacher layers 0,2,4": "the fine-tuned teacher's embeddings, layers 0, 2, 4 and head",
                          "random init": "the same 3-layer shape, BERT's random initialisation"},
        "losses": {"hard labels only": "cross-entropy on the gold labels",
                   "distilled": "DistilBERT's: weights.soft · T²·KL(teacher_T ‖ student_T) + weights.hard · "
                                "cross-entropy + weights.cosine · (1 − cos) of last hidden states at real tokens"},
    }
    record = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    same = all(record.get(k) == v for k, v in fresh.items() if k not in ("command", "seeds"))
    if not same:
        record = {}
    record.update(fresh)
    record.setdefault("students", [])
    record.setdefault("log", [])
    record.update(torch=torch.__version__, machine=f"CPU ({cpu_name()}), {os.cpu_count()} cores, "
                  f"{torch.get_num_threads()} torch thread(s)", date=datetime.date.today().isoformat())
    import transformers
    record["transformers"] = transformers.__version__

    def save():
        record["summary"] = summarise(record)
        args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    def note(what: str, started: float, cpu_started: float, load_before: str):
        record["log"].append(dict(step=what, seconds_wall=round(time.perf_counter() - started, 1),
                                  seconds_cpu=round(time.process_time() - cpu_started, 1),
                                  uptime_before=load_before, uptime_after=uptime()))
        print(f"{what}: {record['log'][-1]['seconds_wall']} s wall; {record['log'][-1]['uptime_after']}", flush=True)

    teacher_file = args.work_dir / "teacher.pt"
    torch.manual_seed(args.teacher_seed)
    teacher = exp.SentenceClassifier(minilm, pooling="mean")
    if "teacher" in record and teacher_file.exists():
        teacher.load_state_dict(torch.load(teacher_file))
        print("teacher: read back from", teacher_file)
    else:
        started, cpu_started, load = time.perf_counter(), time.process_time(), uptime()
        losses = exp.train(teacher, train, settings, teacher_steps, args.teacher_seed, pad_id, log=print)
        correct, total = exp.accuracy(teacher, dev_batches)
        test_correct, test_total = exp.accuracy(teacher, test_batches)
        record["teacher"] = dict(dev_correct=correct, dev_accuracy=correct / total, test_correct=test_correct,
                                 test_accuracy=test_correct / test_total, first_loss=losses[0],
                                 last_loss=statistics.mean(losses[-20:]))
        torch.save(teacher.state_dict(), teacher_file)
        note("teacher fine-tuning", started, cpu_started, load)
        save()
    print(f"teacher: dev {record['teacher']['dev_accuracy']:.4f}, test {record['teacher']['test_accuracy']:.4f}")

    targets = None  # computed once, when the first distilled student needs them (a resumed run may not)
    for seed in args.seeds:
        for init, build in INITS.items():
            for loss in LOSSES:
                if any((r["seed"], r["init"], r["loss"]) == (seed, init, loss) for r in record["students"]):
                    continue
                if loss == "distilled" and targets is None:
                    started, cpu_started, load = time.perf_counter(), time.process_time(), uptime()
                    targets = exp.teacher_targets(teacher, train, pad_id)
                    note("teacher targets", started, cpu_started, load)
                started, cpu_started, load = time.perf_counter(), time.process_time(), uptime()
                torch.manual_seed(seed)
                student = build(teacher)
                losses = exp.train(student, train, settings, student_steps, seed, pad_id,
                                   targets if loss == "distilled" else None, log=print)
                correct, total = exp.accuracy(student, dev_batches)
                test_correct, test_total = exp.accuracy(student, test_batches)
                record["students"].append(dict(
                    seed=seed, init=init, loss=loss, dev_correct=correct, dev_accuracy=correct / total,
                    test_correct=test_correct, test_accuracy=test_correct / test_total, first_loss=losses[0],
                    last_loss=statistics.mean(losses[-20:])))
                note(f"student seed {seed}, {init}, {loss}: dev {correct / total:.4f}", started, cpu_started, load)
                save()

    student = student_from_teacher(teacher)  # timing and size depend on the shape only
    record["parameters"] = {"teacher": exp.parameter_counts(teacher), "student": exp.parameter_counts(student)}
    load = uptime()
    timing = exp.time_inference({"teacher": teacher, "student": student}, dev_batches, args.repeats)
    record["inference"] = dict(
        what=f"classify all {record['dev_sentences']} dev sentences ({len(dev_batches)} batches of "
             f"{settings.batch_size}, sorted by length), eval mode, no gradients, models taking turns",
        repeats=args.repeats, threads=torch.get_num_threads(), uptime_before=load, uptime_after=uptime(),
        **timing, student_over_teacher=timing["student"]["median"] / timing["teacher"]["median"])
    save()
    print(json.dumps(record["summary"], indent=1))
    print(f"parameters: {record['parameters']}; student time / teacher time = "
          f"{record['inference']['student_over_teacher']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
