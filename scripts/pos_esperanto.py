"""Does pretraining pay? UPOS tagging on UD Esperanto: EsperBERTo fine-tuned vs the same architecture
from random initialisation, k-fold cross-validated (:mod:`course_lib.pretraining.tagging_experiment`).

Writes the runs, their summary (accuracy mean ± standard deviation, per fold) and the record (data files
and SHA-256, model, settings, time, hardware, the machine's load, the treebank's overlap with the
pretraining text) to ``course_lib/checkpoints/esperberto_pos.json``. Examples::

    nice -n 5 python scripts/pos_esperanto.py --threads 1
    python scripts/pos_esperanto.py --untrained --steps 20 --folds 2 --seeds 0 --out /tmp/pos.json  # no checkpoint needed

``--untrained`` stands an untrained small RoBERTa-layout model and a BPE learnt in a second in for
EsperBERTo (for developing the experiment before the checkpoint exists); its results mean nothing.
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

from course_lib.data import read_text
from course_lib.data.registry import DATA_FILES
from course_lib.pretraining.encoder import EncoderConfig, EncoderForMaskedLM
from course_lib.pretraining.tagging import UD_ESPERANTO_FILES, EncoderForTokenClassification, load_ud_esperanto
from course_lib.pretraining.tagging_experiment import FineTuneSettings, cross_validate, ngram_overlap
from course_lib.runtime import CHECKPOINT_DIR, cpu_name

PRETRAINING_FILES = ("esperanto/fundamenta_krestomatio.txt", "esperanto/fundamento_ekzercaro.txt")
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's, ids 0-4



def untrained_stand_in():
    """A small untrained RoBERTa-layout model and a quick BPE: the experiment's plumbing without EsperBERTo."""
    from course_lib.tokenization import train_bpe

    tokenizer = train_bpe(read_text(PRETRAINING_FILES[1]).splitlines(), vocab_size=2000, special_tokens=SPECIALS)
    config = EncoderConfig(vocab_size=len(tokenizer), dim=128, num_layers=2, num_heads=4, ffn_dim=512,
                           max_positions=130, type_vocab_size=1, pad_token_id=1, padding_offset_positions=True,
                           layer_norm_eps=1e-5)
    torch.manual_seed(0)
    return EncoderForMaskedLM(config).eval(), tokenizer, "untrained stand-in (results mean nothing)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=FineTuneSettings.steps)
    parser.add_argument("--batch-size", type=int, default=FineTuneSettings.batch_size)
    parser.add_argument("--lr", type=float, default=FineTuneSettings.lr)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-length", type=int, default=None, help="tokens per piece (default: the model's maximum)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--untrained", action="store_true", help="an untrained stand-in for EsperBERTo (see above)")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "esperberto_pos.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.untrained:
        mlm, tokenizer, model_name = untrained_stand_in()
        pretraining_text, pretraining_name = "\n".join(read_text(n) for n in PRETRAINING_FILES), "the whole files"
    else:
        from course_lib.pretraining.esperberto import esperanto_corpus, load_esperberto

        mlm, tokenizer = load_esperberto()
        model_name = "EsperBERTo (course_lib.pretraining.esperberto.load_esperberto)"
        pretraining_text = "\n".join(esperanto_corpus().train)
        pretraining_name = "EsperBERTo's training paragraphs (esperberto.esperanto_corpus().train)"
    config = mlm.config
    ids = {token: tokenizer.special_tokens[token] for token in SPECIALS}
    max_length = args.max_length or config.max_length
    settings = FineTuneSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    contenders = {
        "pretrained": lambda: EncoderForTokenClassification.from_encoder(mlm.encoder),
        "random init": lambda: EncoderForTokenClassification(config),
    }
    sentences = load_ud_esperanto()
    load_before, started, cpu_started = os.getloadavg(), time.perf_counter(), time.process_time()
    encode = lambda text: tokenizer.encode(text, allow_special=False)  # noqa: E731  a word reading "<s>" is text
    results = cross_validate(sentences, contenders, encode, ids["<s>"], ids["</s>"], ids["<pad>"],
                             max_length, settings, folds=args.folds, seeds=args.seeds)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    record = {
        "command": "python scripts/pos_esperanto.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "task": "UPOS tagging, 17 tags, scored on the first sub-word of every word",
        "data": {name: DATA_FILES[name].sha256 for name in UD_ESPERANTO_FILES},
        "sentences": len(sentences), "words": sum(len(s.words) for s in sentences),
        "model": model_name, "config": config.to_dict(), "parameters_encoder": mlm.encoder.num_parameters,
        "max_length": max_length,
        "contenders": {"pretrained": "the pretrained encoder's weights, copied; a fresh linear classifier",
                       "random init": "the same architecture, every weight from random initialisation",
                       "majority tag per word": "each word's most frequent training tag; unseen words: the "
                                                "commonest tag (no model)"},
        "protocol": "both models: same folds, seeds (model init and batch order), steps, batch size, AdamW, "
                    "learning rate with linear warm-up and decay; std: sample std over all (fold, seed) runs",
        "overlap_with_pretraining_text": {
            "text": pretraining_name, "files": {n: DATA_FILES[n].sha256 for n in PRETRAINING_FILES},
            **{f"{n}-word runs": ngram_overlap(sentences, pretraining_text, n) for n in (5, 8)}},
        "seconds_wall": round(wall), "seconds_cpu": round(cpu),
        "hardware": f"CPU ({cpu_name()}), {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)",
        "torch": torch.__version__,
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        **results,
    }
    args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, summary in results["summary"].items():
        folds = ", ".join(f"{a:.3f}" for a in summary["per_fold"])
        print(f"{name:>22}: {summary['mean']:.4f} ± {summary['std']:.4f} over {summary['runs']} runs (folds: {folds})")
    for name, paired in results["paired"].items():
        print(f"{name}: {paired['mean']:+.4f} ± {paired['std']:.4f} (paired by fold and seed; "
              f"{paired['wins']} wins, {paired['ties']} ties, {paired['losses']} losses)")
    print(f"{wall:.0f} s wall, {cpu:.0f} s CPU → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
