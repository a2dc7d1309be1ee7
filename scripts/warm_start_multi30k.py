"""Warm-started vs randomly initialised encoder-decoder on Multi30k German → English, at equal steps and data
(:mod:`course_lib.transfer.warm_start_experiment`).

Contenders, all the same BERT2BERT architecture (MiniLM's sizes, its WordPiece on both sides):

* ``warm``: encoder and decoder warm-started from the real MiniLM (:func:`course_lib.transfer.warm_start.warm_start_from_encoder`);
* ``random``: every weight from random initialisation;
* ``warm_encoder`` (optional): MiniLM's encoder, a random decoder.

Writes ``course_lib/checkpoints/multi30k_warm_start.json`` after every finished run (resumable: runs already in
the record with the same settings are skipped): data files and SHA-256, the tokenizer's coverage of each
side, settings, per run the steps, time, loss history, BLEU on test2016 (greedy, lower-cased) and every
hypothesis, the machine and its load. Example::

    nice -n 5 python scripts/warm_start_multi30k.py --threads 1 --pairs 4000 --steps 300 --seeds 0
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from course_lib.data import load_multi30k
from course_lib.data.registry import DATA_FILES
from course_lib.pretraining.encoder import load_minilm
from course_lib.runtime import CHECKPOINT_DIR
from course_lib.transfer.warm_start import BertEncoderDecoder, warm_start_from_encoder
from course_lib.transfer.warm_start_experiment import (
    Seq2SeqSettings, encode_pairs, lowercase_bleu, tokenizer_coverage, train_translator, translate_greedy,
)

FILES = ("multi30k/train.de.gz", "multi30k/train.en.gz", "multi30k/test_2016_flickr.de.gz",
         "multi30k/test_2016_flickr.en.gz")
CONTENDERS = {
    "warm": "encoder and decoder warm-started from MiniLM (new: cross-attention, LM-head transform and bias)",
    "random": "the same architecture, every weight from random initialisation (BERT's N(0, 0.02))",
    "warm_encoder": "MiniLM's encoder, a randomly initialised decoder",
}


def cpu_name() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def build(name: str, minilm, seed: int) -> BertEncoderDecoder:
    torch.manual_seed(seed)  # the new weights' initialisation
    if name == "warm":
        return warm_start_from_encoder(minilm)
    if name == "random":
        return BertEncoderDecoder(minilm.config)
    model = BertEncoderDecoder(minilm.config)
    model.encoder.load_state_dict({k: v for k, v in minilm.state_dict().items() if not k.startswith("pooler.")})
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = Seq2SeqSettings()
    parser.add_argument("--pairs", type=int, default=4000, help="training pairs, drawn from train with --data-seed")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--max-sentences", type=int, default=defaults.max_sentences)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", default=["warm", "random"], choices=sorted(CONTENDERS))
    parser.add_argument("--test-limit", type=int, default=None, help="score the first N test2016 pairs only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "multi30k_warm_start.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Seq2SeqSettings(steps=args.steps, lr=args.lr, max_sentences=args.max_sentences)

    minilm, tokenizer = load_minilm()
    train = load_multi30k("train", "de", "en")
    chosen = sorted(random.Random(args.data_seed).sample(range(len(train)), args.pairs))
    pairs = [train[i] for i in chosen]
    test = load_multi30k("test_2016_flickr", "de", "en")[:args.test_limit]
    sources, targets = encode_pairs(tokenizer, pairs, settings.max_length)
    import transformers

    header = {
        "command": "python scripts/warm_start_multi30k.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "task": "Multi30k German → English, greedy decoding, BLEU (sacrebleu 13a) against lower-cased references",
        "data": {name: DATA_FILES[name].sha256 for name in FILES},
        "train_pairs": len(pairs), "train_pairs_drawn_with_seed": args.data_seed, "train_indices_sha256":
            __import__("hashlib").sha256(json.dumps(chosen).encode()).hexdigest(),
        "test": "test2016", "test_pairs": len(test),
        "tokenizer": "MiniLM's uncased WordPiece (30,522 pieces), both sides",
        "coverage": {"de_train": tokenizer_coverage(tokenizer, [p[0] for p in pairs]),
                     "en_train": tokenizer_coverage(tokenizer, [p[1] for p in pairs]),
                     "de_test": tokenizer_coverage(tokenizer, [p[0] for p in test])},
        "why_lowercase": "the uncased tokenizer can only write lower case: cased BLEU would charge every capital "
                         "of the references as an unavoidable miss",
        "model": "BERT2BERT from MiniLM's config (6 + 6 layers, D=384, 12 heads)",
        "config": minilm.config.to_dict(), "settings": settings.to_dict(), "contenders": {
            m: CONTENDERS[m] for m in args.models},
        "protocol": "every contender: the same pairs, batches (seed), steps, AdamW settings and schedule",
        "hardware": f"CPU ({cpu_name()}), {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)",
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    same = previous.get("settings") == header["settings"] and previous.get("data") == header["data"] and previous.get(
        "train_indices_sha256") == header["train_indices_sha256"] and previous.get("test_pairs") == len(test)
    runs = previous.get("runs", []) if same else []
    references = [p[1] for p in test]
    for seed in args.seeds:
        for name in args.models:
            if any(r["model"] == name and r["seed"] == seed for r in runs):
                print(f"{name} seed {seed}: already in the record, skipped")
                continue
            load_before, started, cpu_started = os.getloadavg(), time.perf_counter(), time.process_time()
            model = build(name, minilm, seed)
            trained = train_translator(model, sources, targets, settings, seed, on_step=lambda s, loss: print(
                f"{name} seed {seed} step {s} loss {loss:.3f}", flush=True) if s % 25 == 0 else None)
            decode_start = time.perf_counter()
            hypotheses = translate_greedy(model, tokenizer, [p[0] for p in test], max_length=settings.max_length)
            score = lowercase_bleu(hypotheses, references)
            runs.append({"model": name, "seed": seed, **trained, "seconds_decoding": round(
                time.perf_counter() - decode_start, 1), "seconds_total": round(time.perf_counter() - started, 1),
                "seconds_cpu": round(time.process_time() - cpu_started, 1),
                "load_average_before": [round(x, 1) for x in load_before],
                "load_average_after": [round(x, 1) for x in os.getloadavg()],
                "bleu": round(score, 2), "hypotheses": hypotheses})
            print(f"{name} seed {seed}: BLEU {score:.2f} ({runs[-1]['seconds_total']:.0f} s)", flush=True)
            summary = {}
            for m in dict.fromkeys(r["model"] for r in runs):
                scores = [r["bleu"] for r in runs if r["model"] == m]
                summary[m] = {"runs": len(scores), "mean": round(statistics.fmean(scores), 2),
                              "std": round(statistics.stdev(scores), 2) if len(scores) > 1 else None}
            examples = [{"de": test[i][0], "en": test[i][1], **{f"{r['model']} (seed {r['seed']})": r["hypotheses"][i]
                                                               for r in runs}} for i in (0, 1, 2, 3, 4)]
            record = {**header, "date": datetime.date.today().isoformat(), "runs": runs, "summary": summary,
                      "examples": examples}
            args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
