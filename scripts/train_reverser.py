"""Train the course's string reverser on the CPU and write its checkpoint into course_lib/checkpoints/.

    python scripts/train_reverser.py            # train, evaluate, write reverser.pt
    python scripts/train_reverser.py --dry-run  # train and evaluate only

The reverser: a 2-layer, 2-head encoder (d=32) learns to reverse random strings of letters and
digits (lengths 1 to 12). Fixed seed, one CPU thread, about 20 s. The weights are stored in
float16 to keep the committed file small (it is loaded back as float32), under the parameter names of
:class:`course_lib.models.reverser.Reverser`, whose layers are the library's
``TransformerEncoderLayer`` (``layers.i.self_attn``, ``norm1``, ``norm2``, ``ffn.linear1``, ``ffn.linear2``).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from course_lib.models.reverser import REVERSER_ALPHABET, REVERSER_CHECKPOINT, CharVocab, Reverser

CONFIG = dict(dim=32, num_heads=2, num_layers=2, ffn_dim=64, max_len=12)
MIN_LEN = 1


def random_batch(vocab: CharVocab, batch_size: int, generator: torch.Generator, max_len: int):
    """Random strings, right-padded: ``(ids, targets, real)``, each ``(B, max_len)``."""
    lengths = torch.randint(MIN_LEN, max_len + 1, (batch_size,), generator=generator)  # (B,)
    ids = torch.randint(1, len(vocab), (batch_size, max_len), generator=generator)  # (B, T), no padding id
    positions = torch.arange(max_len)  # (T,)
    real = positions[None, :] < lengths[:, None]  # (B, T), True at real tokens
    # Target at position i is the input at T-1-i (for each row's own length T).
    source = (lengths[:, None] - 1 - positions[None, :]).clamp(min=0)  # (B, T)
    targets = ids.gather(1, source).masked_fill(~real, -100)  # -100: ignored by cross_entropy
    return ids.masked_fill(~real, vocab.pad_id), targets, real


@torch.no_grad()
def exact_match(model: Reverser, vocab: CharVocab, generator: torch.Generator, n: int = 2000) -> float:
    """Fraction of fresh random strings reversed exactly (every character right)."""
    model.eval()
    ids, targets, real = random_batch(vocab, n, generator, model.config["max_len"])
    predictions = model(ids, key_padding_mask=real).argmax(-1)  # (B, T)
    correct = (predictions == targets) | ~real
    return correct.all(dim=1).float().mean().item()


def train_reverser(steps: int = 1000, batch_size: int = 128, seed: int = 0) -> tuple[Reverser, CharVocab]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    vocab = CharVocab(REVERSER_ALPHABET)
    model = Reverser(len(vocab), **CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(1, steps + 1):
        ids, targets, real = random_batch(vocab, batch_size, generator, CONFIG["max_len"])
        logits = model(ids, key_padding_mask=real)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}")
    model.vocab = vocab
    return model.eval(), vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dry-run", action="store_true", help="do not write the checkpoint")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread

    start = time.perf_counter()
    model, vocab = train_reverser(steps=args.steps)
    seconds = time.perf_counter() - start
    held_out = torch.Generator().manual_seed(12345)  # a different stream from training
    accuracy = exact_match(model, vocab, held_out)
    print(f"trained in {seconds:.1f} s; exact-match accuracy on 2000 held-out strings: {accuracy:.2%}")
    print("example:", "hello42 ->", model.reverse("hello42"))

    if not args.dry_run:
        REVERSER_CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
        state = {name: t.half() for name, t in model.state_dict().items()}  # load_reverser's layout
        torch.save({"config": model.config, "characters": REVERSER_ALPHABET, "state_dict": state},
                   REVERSER_CHECKPOINT)
        print(f"wrote {REVERSER_CHECKPOINT} ({REVERSER_CHECKPOINT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
