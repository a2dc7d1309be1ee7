"""Train the course's small GPT on Tiny Shakespeare on the CPU and ship it as a checkpoint.

    COURSE_DATA_DIR=../shared/data python scripts/train_gpt.py                 # 15 minutes, writes the checkpoint
    COURSE_DATA_DIR=../shared/data python scripts/train_gpt.py --minutes 1 --dry-run

Steps:

1. Train a byte-level BPE vocabulary on the training part of the corpus with
   ``course_lib.tokenization``: 2048 tokens = 256 bytes + 1791 merges + ``<|endoftext|>``. A
   vocabulary of our own keeps the chapter's tokens Shakespearean and the output layer (most of the
   compute of a model this small) 25× smaller than with GPT-2's 50k tokens, mostly unused here.
2. Encode the corpus: the first 90 % (cut between two speeches) for training, the rest for validation.
3. Train a 4-layer, 4-head, d=128 GPT with a 256-token context (about 1.1 M parameters) with AdamW,
   batches of 8 random windows, and a learning rate that warms up and then follows a cosine *over
   the wall-clock budget*, so the run ends at a low learning rate whatever the machine's speed.
   (On a busy 2-core machine, batches of 8 reached a lower loss in 15 minutes than batches of 16:
   more updates matter more than less noisy ones this early in training.)
4. Print the validation loss every ``--eval-every`` seconds; write
   ``course_lib/checkpoints/gpt_shakespeare.pt`` (float16 weights, about 2 MB, with the training
   record) and ``gpt_shakespeare-vocab.json`` + ``gpt_shakespeare-merges.txt`` beside it.

Fixed seeds; ``--threads`` defaults to 1 (on a 2-core machine shared with other work, 2 threads
measured slower per step).
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from course_lib.data import read_text
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.runtime import CHECKPOINT_DIR
from course_lib.tokenization import ByteLevelBPE, train_bpe

NAME = "gpt_shakespeare"
VOCAB_SIZE = 2048
END_OF_TEXT = "<|endoftext|>"
MODEL = dict(context_length=256, dim=128, num_layers=4, num_heads=4, dropout=0.1)


def random_windows(ids: torch.Tensor, batch_size: int, context: int, generator: torch.Generator):
    """``batch_size`` random windows of ``context + 1`` tokens: inputs and next-token targets ``(B, T)``."""
    starts = torch.randint(0, len(ids) - context - 1, (batch_size,), generator=generator)
    windows = torch.stack([ids[s:s + context + 1] for s in starts.tolist()])  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def validation_loss(model: GPT, ids: torch.Tensor, context: int, max_windows: int = 64) -> float:
    """Mean next-token cross-entropy (nats per token) over consecutive non-overlapping windows."""
    model.eval()
    count = min(max_windows, (len(ids) - 1) // context)
    inputs = ids[: count * context].view(count, context)
    targets = ids[1: count * context + 1].view(count, context)
    losses = [F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten()).item()
              for x, y in zip(inputs.split(16), targets.split(16))]
    model.train()
    return sum(losses) / len(losses)


def learning_rate(elapsed: float, budget: float, peak: float, warmup: float = 0.03) -> float:
    """Linear warm-up over the first 3 % of the time, then a cosine down to 10 % of the peak."""
    progress = min(elapsed / budget, 1.0)
    if progress < warmup:
        return peak * progress / warmup
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget of the training loop")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=float, default=60.0, help="seconds between validation losses")
    parser.add_argument("--dry-run", action="store_true", help="do not write the checkpoint")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)

    text = read_text("tinyshakespeare/input.txt")
    split = int(0.9 * len(text))
    split = text.rfind("\n\n", 0, split) + 2  # cut between two speeches
    start = time.perf_counter()
    tokenizer = train_bpe([text[:split]], VOCAB_SIZE, special_tokens=[END_OF_TEXT])
    train_ids = torch.tensor(tokenizer.encode(text[:split]), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(text[split:]), dtype=torch.long)
    print(f"tokenizer: {tokenizer} in {time.perf_counter() - start:.1f} s; "
          f"{len(train_ids):,} training and {len(val_ids):,} validation tokens")

    model = GPT(GPTConfig(vocab_size=len(tokenizer), **MODEL))
    context = model.config.context_length
    print(f"model: {model.num_parameters:,} parameters, config {model.config}")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))

    budget = args.minutes * 60
    start = last_eval = time.perf_counter()
    step, tokens_seen, history = 0, 0, []
    model.train()
    while (elapsed := time.perf_counter() - start) < budget:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(elapsed, budget, args.lr)
        inputs, targets = random_windows(train_ids, args.batch_size, context, generator)
        loss = F.cross_entropy(model(inputs).logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step, tokens_seen = step + 1, tokens_seen + inputs.numel()
        if time.perf_counter() - last_eval >= args.eval_every:
            last_eval = time.perf_counter()
            val = validation_loss(model, val_ids, context)
            history.append((step, round(elapsed, 1), round(loss.item(), 4), round(val, 4)))
            print(f"{elapsed / 60:5.1f} min  step {step:5d}  train loss {loss.item():.3f}  val loss {val:.3f}  "
                  f"({tokens_seen / elapsed:,.0f} tokens/s)", flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    val = validation_loss(model, val_ids, context, max_windows=10_000)
    print(f"trained {step} steps ({tokens_seen:,} tokens, {tokens_seen / len(train_ids):.1f} epochs) in "
          f"{seconds / 60:.1f} min; validation loss {val:.4f} nats/token (perplexity {math.exp(val):.1f})")

    if not args.dry_run:
        CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
        path = CHECKPOINT_DIR / f"{NAME}.pt"
        model.save(path, training=dict(steps=step, seconds=round(seconds, 1), tokens=tokens_seen,
                                       val_loss=round(val, 4), history=history, batch_size=args.batch_size,
                                       lr=args.lr, threads=args.threads, vocab_size=VOCAB_SIZE,
                                       val_chars=len(text) - split))
        tokenizer.save(CHECKPOINT_DIR, prefix=NAME)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) and the tokenizer files")

    from course_lib.decoding import generate  # noqa: E402  (only needed for the sample)

    prompt = torch.tensor([tokenizer.encode("ROMEO:\n")])
    sample = generate(model, prompt, max_new_tokens=80, do_sample=True, top_k=50, temperature=0.8, seed=0)
    print("sample:\n" + tokenizer.decode(sample[0].tolist()))


def load_tokenizer() -> ByteLevelBPE:
    """The checkpoint's tokenizer (also used by the tests and the chapter)."""
    return ByteLevelBPE.load(CHECKPOINT_DIR / f"{NAME}-vocab.json", CHECKPOINT_DIR / f"{NAME}-merges.txt",
                             special_tokens=[END_OF_TEXT])


if __name__ == "__main__":
    main()
