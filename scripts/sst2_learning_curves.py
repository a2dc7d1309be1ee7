"""SST-2 learning curves with the real MiniLM: full fine-tuning, feature extraction and random initialisation
over training-set sizes (:mod:`course_lib.transfer.learning_curves`), scored on the dev set.

Writes the record (data files and SHA-256, model, recipe, steps rule, seeds, every run with its steps,
seconds and dev accuracy, the summary, the majority-class baseline, time, hardware, the machine's load) to
``course_lib/checkpoints/sst2_learning_curves.json`` after every run; a second start skips the runs already
there (same recipe required). Full fine-tuning on all 6,920 sentences is also scored once on the test set.
Examples::

    nice -n 5 python scripts/sst2_learning_curves.py --threads 1
    nice -n 5 python scripts/sst2_learning_curves.py --threads 1 --plan 6920:1 --conditions "full fine-tuning"
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

from course_lib.data.registry import DATA_FILES
from course_lib.pretraining.encoder import load_minilm
from course_lib.runtime import CHECKPOINT_DIR, cpu_name
from course_lib.transfer.datasets import load_sst2
from course_lib.transfer.finetuning import ClassifierSettings, encode_sentences, extract_features
from course_lib.transfer.heads import EncoderForSequenceClassification
from course_lib.transfer.learning_curves import (
    CONDITIONS, DEFAULT_PLAN, majority_baseline, planned_runs, run_condition, summarise, training_subset,
)

# Every other recipe tried on SST-2 dev (the shipped defaults are ClassifierSettings), in order, with what it got.
RECIPES_TRIED = [
    dict(recipe="the defaults but batch_size=32 (434 steps)", condition="full fine-tuning", size=6920, seed=0,
         dev_accuracy=0.8693, test_accuracy=0.8852, seconds=1608.3,
         note="below 88 % dev: not kept. Its test accuracy was printed by the same run (the script scores test "
              "for full fine-tuning on all data) and played no part in the choice of the next recipe"),
    dict(recipe="the defaults but batch_size=32, lr=5e-5, epochs=3 (651 steps)", condition="full fine-tuning",
         size=6920, seed=0, dev_accuracy=0.8624, test_accuracy=0.8863, seconds=980.2,
         note="tried after the defaults' seed 0 (87.3 %), to see whether a gentler, longer schedule does better: "
              "it does not; not kept. Run by the same library functions (fine_tune_classifier, evaluate_classifier) "
              "from a one-off driver, not this script; its seed-1 twin was stopped unfinished"),
]

SST2_FILES = [f"sst2_trec/stsa.binary.{split}" for split in ("train", "dev", "test")]



def parse_plan(text: str) -> dict[int, int]:
    """``"100:5,500:5"`` → ``{100: 5, 500: 5}`` (training-set size: number of seeds)."""
    try:
        return {int(size): int(seeds) for size, seeds in (item.split(":") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE:SEEDS,SIZE:SEEDS…, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", type=parse_plan, default=DEFAULT_PLAN, help="SIZE:SEEDS,… (default: %(default)s)")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "sst2_learning_curves.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = ClassifierSettings()

    record = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else None
    if record is not None and record["settings"] != settings.to_dict():
        raise SystemExit(f"{args.out} was made with another recipe ({record['settings']}); move it away to start over")
    encoder, tokenizer = load_minilm()
    pretrained = EncoderForSequenceClassification.from_encoder(encoder, 2, settings.pooling, settings.dropout)
    splits = {split: load_sst2(split) for split in ("train", "dev", "test")}
    encoded, truncated = {}, {}
    for split, sentences in splits.items():
        encoded[split], truncated[split] = encode_sentences(tokenizer, sentences, settings.max_length)
    if record is None:
        record = {
            "task": "SST-2 sentence sentiment (2 classes); dev accuracy",
            "data": {name: DATA_FILES[name].sha256 for name in SST2_FILES},
            "sentences": {split: len(s) for split, s in splits.items()},
            "truncated_at_max_length": truncated,
            "model": "all-MiniLM-L6-v2 (course_lib.pretraining.encoder.load_minilm), in our Encoder",
            "config": encoder.config.to_dict(), "parameters_encoder": encoder.num_parameters,
            "conditions": {
                "full fine-tuning": "MiniLM's weights copied, a fresh linear classifier, every weight trained",
                "feature extraction": "MiniLM frozen (eval mode); pooled vectors computed once; only the linear "
                                      "classifier trained (settings.head_lr, settings.head_epochs)",
                "random init": "the same architecture from its own random initialisation, trained like full "
                               "fine-tuning"},
            "settings": settings.to_dict(),
            "steps_rule": "max(min_steps, ceil(epochs * ceil(size / batch_size))); feature extraction: the "
                          "same with head_epochs",
            "seeds_rule": "seed s draws the training subset (a random `size` of the 6,920 sentences), the new "
                          "weights' initialisation and the batch order; the three conditions share them",
            "recipes_tried_before": RECIPES_TRIED,
            "majority_baseline": majority_baseline([e.label for e in encoded["train"]],
                                                   [e.label for e in encoded["dev"]]),
            "hardware": f"CPU ({cpu_name()}), {os.cpu_count()} cores",
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "runs": [], "summary": {},
        }
    command = "python scripts/sst2_learning_curves.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record["commands"] = [*record.pop("commands", [record.pop("command")] if "command" in record else []), command]
    done = {(r["condition"], r["size"], r["seed"]) for r in record["runs"]}
    todo = [run for run in planned_runs(args.plan, args.conditions) if run not in done]
    print(f"{len(todo)} runs to do, {len(done)} already in {args.out}; truncated at {settings.max_length} tokens: "
          f"{truncated}", flush=True)
    features = None
    for condition, size, seed in todo:
        if condition == "feature extraction" and features is None:
            started = time.perf_counter()
            features = {split: extract_features(pretrained, encoded[split]) for split in ("train", "dev")}
            record["feature_seconds"] = round(time.perf_counter() - started, 1)
            print(f"features of train and dev: {record['feature_seconds']} s", flush=True)
        subset = training_subset(len(encoded["train"]), size, seed)
        train = [encoded["train"][i] for i in subset]
        load_before, cpu_before = os.getloadavg(), time.process_time()
        result = run_condition(
            condition, pretrained, train, encoded["dev"], settings, seed,
            features=(features["train"][subset], features["dev"]) if condition == "feature extraction" else None,
            test=encoded["test"] if condition == "full fine-tuning" and size == len(encoded["train"]) else None)
        run = dict(condition=condition, size=size, seed=seed, **result,
                   cpu_seconds=round(time.process_time() - cpu_before, 1), threads=torch.get_num_threads(),
                   load_average_before=[round(x, 1) for x in load_before],
                   load_average_after=[round(x, 1) for x in os.getloadavg()],
                   finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        record["runs"].append(run)
        record["summary"] = summarise(record["runs"])
        record["seconds_wall_total"] = round(sum(r["seconds"] for r in record["runs"])
                                             + record.get("feature_seconds", 0))
        args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        extra = f", test {run['test_accuracy']:.4f}" if "test_accuracy" in run else ""
        print(f"{condition:>18} size {size:>5} seed {seed}: dev {run['dev_accuracy']:.4f}{extra}, "
              f"{run['steps']} steps, {run['seconds']} s, loss {run['first_loss']} → {run['last_loss']}, "
              f"load {run['load_average_before']}", flush=True)
    for condition, cells in record["summary"].items():
        print(condition + ": " + ", ".join(f"{size}: {c['mean']:.3f} ± {c['std']:.3f} ({c['runs']})"
                                         for size, c in cells.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
