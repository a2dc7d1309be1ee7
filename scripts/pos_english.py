"""Does pretraining pay on a real treebank? UPOS tagging on UD English-EWT: the real MiniLM fine-tuned vs the
same architecture from random initialisation, at equal steps (:mod:`course_lib.transfer.pos_english`).

Trains each contender on the training set, scores it on every word of the dev and test sets, and writes
the record (data files and SHA-256, model, settings, every run, the per-word majority baseline, summary,
wall and CPU time, hardware, the machine's load) to ``course_lib/checkpoints/ewt_pos.json`` after each
finished run; a rerun with the same settings skips the runs the record already holds. Example::

    nohup nice -n 5 python scripts/pos_english.py --threads 1 > /tmp/pos_english.log 2>&1 &
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
from course_lib.pretraining.tagging import EncoderForTokenClassification
from course_lib.runtime import CHECKPOINT_DIR, cpu_name
from course_lib.transfer.datasets import load_ud_english_ewt
from course_lib.transfer.pos_english import POS_SETTINGS, encode_treebank, majority_runs, run_contender, summarize

SPLITS = ("train", "dev", "test")



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=POS_SETTINGS.steps)
    parser.add_argument("--batch-size", type=int, default=POS_SETTINGS.batch_size)
    parser.add_argument("--lr", type=float, default=POS_SETTINGS.lr)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-length", type=int, default=128, help="tokens per piece; longer sentences are cut")
    parser.add_argument("--max-word-pieces", type=int, default=32, help="sub-words kept of a very long word")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "ewt_pos.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = type(POS_SETTINGS)(**{**POS_SETTINGS.to_dict(), "steps": args.steps, "batch_size": args.batch_size,
                                     "lr": args.lr})
    encoder, tokenizer = load_minilm()
    treebank = {split: load_ud_english_ewt(split) for split in SPLITS}
    started = time.perf_counter()
    encoded = {split: encode_treebank(sentences, tokenizer, args.max_length, args.max_word_pieces) for split, sentences in treebank.items()}
    print(f"encoded in {time.perf_counter() - started:.0f} s: "
          + ", ".join(f"{split} {len(pieces)} pieces" for split, pieces in encoded.items()), flush=True)
    contenders = {
        "MiniLM fine-tuned": lambda: EncoderForTokenClassification.from_encoder(encoder),
        "random init": lambda: EncoderForTokenClassification(encoder.config),
    }
    record = {
        "command": "python scripts/pos_english.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "task": "UPOS tagging, 17 tags, trained on EWT train, scored on the first sub-word of every dev and test word",
        "data": {f"ud_english_ewt/en_ewt-ud-{split}.conllu": DATA_FILES[f"ud_english_ewt/en_ewt-ud-{split}.conllu"].sha256
                 for split in SPLITS},
        "sentences": {split: len(s) for split, s in treebank.items()},
        "words": {split: sum(len(x.words) for x in s) for split, s in treebank.items()},
        "pieces": {split: len(p) for split, p in encoded.items()},
        "model": "all-MiniLM-L6-v2 (course_lib.pretraining.encoder.load_minilm), uncased WordPiece",
        "config": encoder.config.to_dict(), "parameters_encoder": sum(
            p.numel() for name, p in encoder.named_parameters() if not name.startswith("pooler.")),
        "max_length": args.max_length, "max_word_pieces": args.max_word_pieces, "settings": settings.to_dict(), "seeds": args.seeds,
        "contenders": {"MiniLM fine-tuned": "MiniLM's pretrained weights (no pooler), copied; a fresh linear tagger",
                       "random init": "the same architecture, every weight from random initialisation",
                       "majority tag per word": "each word's most frequent training tag (lower-cased); unseen words: "
                                                "the commonest tag (no model)"},
        "protocol": "both models: same seed (tagger init and batch order), steps, batch size, AdamW, learning rate "
                    "with linear warm-up and decay (course_lib.pretraining.tagging_experiment.fine_tune); "
                    "no early stopping, the test set read once per run after training",
        "hardware": f"CPU ({cpu_name()}), {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "majority tag per word": majority_runs(treebank["train"], {"dev": treebank["dev"], "test": treebank["test"]}),
        "runs": [],
    }
    if args.out.exists():  # resume: keep the finished runs of the same experiment
        previous = json.loads(args.out.read_text(encoding="utf-8"))
        same = all(previous.get(k) == record[k] for k in ("data", "config", "settings", "max_length",
                                                                 "max_word_pieces", "seeds"))
        record["runs"] = previous["runs"] if same else []
    evaluation = {"dev": encoded["dev"], "test": encoded["test"]}
    for seed in args.seeds:
        for name, build in contenders.items():
            if any(r["model"] == name and r["seed"] == seed for r in record["runs"]):
                print(f"{name} seed {seed}: already in {args.out}, skipped", flush=True)
                continue
            load_before = [round(x, 1) for x in os.getloadavg()]
            run = run_contender(name, build, encoded["train"], evaluation, settings, seed, tokenizer.pad_token_id)
            run["load_average_before"], run["load_average_after"] = load_before, [round(x, 1) for x in os.getloadavg()]
            record["runs"].append(run)
            record["summary"] = summarize(record["runs"])
            args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"{name} seed {seed}: dev {run['dev']['accuracy']:.4f}, test {run['test']['accuracy']:.4f}, "
                  f"loss {run['first_loss']:.3f} → {run['last_loss']:.3f}, {run['seconds_wall']} s wall, "
                  f"{run['seconds_cpu']} s CPU, load {load_before} → {run['load_average_after']}", flush=True)
    for split in ("dev", "test"):
        print(f"majority tag per word, {split}: {record['majority tag per word'][split]['accuracy']:.4f}")
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
