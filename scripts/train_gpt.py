"""Train the course's small GPT on Tiny Shakespeare, on one process or many, and ship it as a checkpoint.

    COURSE_DATA_DIR=../shared/data python scripts/train_gpt.py                 # 15 minutes, writes the checkpoint
    COURSE_DATA_DIR=../shared/data python scripts/train_gpt.py --minutes 1 --dry-run
    torchrun --standalone --nproc-per-node 2 scripts/train_gpt.py --steps 200 --out /tmp/gpt    # 2 processes
    accelerate launch --cpu --num_processes 2 scripts/train_gpt.py --steps 200 --out /tmp/gpt  # the same

Steps:

1. Train a byte-level BPE vocabulary on the training part of the corpus with
   ``course_lib.tokenization``: 2048 tokens = 256 bytes + 1791 merges + ``<|endoftext|>``. A
   vocabulary of our own keeps the chapter's tokens Shakespearean and the output layer (most of the
   compute of a model this small) 25× smaller than with GPT-2's 50k tokens, mostly unused here.
2. Encode the corpus: the first 90 % (cut between two speeches) for training, the rest for validation.
3. Train a 4-layer, 4-head, d=128 GPT with a 256-token context (about 1.1 M parameters) with AdamW,
   batches of 8 random windows per process, and a learning rate that warms up and then follows a cosine
   *over the wall-clock budget* (or over ``--steps``), so the run ends at a low learning rate whatever the
   machine's speed. (On a busy 2-core machine, batches of 8 reached a lower loss in 15 minutes than batches
   of 16: more updates matter more than less noisy ones this early in training.)
4. Print the validation loss every ``--eval-every`` seconds; write
   ``course_lib/checkpoints/gpt_shakespeare.pt`` (float16 weights, about 2 MB, with the training
   record) and ``gpt_shakespeare-vocab.json`` + ``gpt_shakespeare-merges.txt`` beside it.

Under torchrun or ``accelerate launch`` the same script runs as N processes: torch's DistributedDataParallel,
each rank a different slice of one global batch, rank 0 alone writing. ``--state``/``--resume`` stop and
continue a run (``--state-every K`` also writes the state every K steps, against crashes). The loop is :func:`course_lib.distributed.trainer.train`. Fixed seeds; ``--threads``
defaults to 1 per process (on a 2-core machine shared with other work, 2 threads measured slower per step).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from course_lib.distributed.trainer import MODELS, TrainSettings, train
from course_lib.runtime import CHECKPOINT_DIR


def build_parser() -> argparse.ArgumentParser:
    # torchrun and accelerate read their own options anywhere on the line, abbreviations included: none of ours
    # may be the start of one of theirs (a `--log` was taken for torchrun's `--log-dir`; the tests check it).
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget of the training loop")
    parser.add_argument("--steps", type=int, help="a step budget instead of --minutes (runs repeat exactly)")
    parser.add_argument("--stop-after", type=int, help="stop after this many steps, on the full budget's schedule")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per process (global: × processes)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--eval-every", type=float, default=60.0, help="seconds between validation losses")
    parser.add_argument("--model", choices=sorted(MODELS), default="small", help="'tiny' for quick checks")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--corpus-chars", type=int, help="use only the corpus's first characters (quick checks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR, help="folder for the checkpoint and tokenizer")
    parser.add_argument("--name", default="gpt_shakespeare", help="file name stem of the checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="do not write the checkpoint")
    parser.add_argument("--log-file", type=Path, help="rank 0 appends its printed lines to this file")
    parser.add_argument("--record", type=Path, help="rank 0 writes the training record here as JSON")
    parser.add_argument("--state", type=Path, help="write the resumable training state here at the end")
    parser.add_argument("--state-every", type=int, help="also write --state every this many steps (a crash then "
                        "loses at most that many)")
    parser.add_argument("--resume", type=Path, help="continue from a state written by --state")
    parser.add_argument("--sample-tokens", type=int, default=80, help="length of the final sample (0: none)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    train(TrainSettings(minutes=args.minutes, steps=args.steps, stop_after=args.stop_after,
                        batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every, model=args.model,
                        vocab_size=args.vocab_size, corpus_chars=args.corpus_chars, seed=args.seed,
                        threads=args.threads, out_dir=args.out, name=args.name, dry_run=args.dry_run,
                        log=args.log_file, record=args.record, state=args.state, state_every=args.state_every,
                        resume=args.resume,
                        sample_tokens=args.sample_tokens))


if __name__ == "__main__":
    main()
