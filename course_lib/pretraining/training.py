"""Masked-language-model pretraining, readable: the loop, its learning-rate schedule, and the held-out figures.

One training step (:func:`train_mlm`)::

    blocks (B, T) ──mask_tokens (fresh random choice every batch: "dynamic masking")──► corrupted, labels
    corrupted ──model──► logits (B, T, V) ──mlm_loss (chosen positions only)──► loss ──AdamW──► weights

The learning rate warms up linearly over the first ``warmup`` fraction of the run, then falls linearly
to zero at its end (BERT's and RoBERTa's schedule). The run ends at ``max_steps`` or after
``max_minutes`` of wall time, whichever comes first; the schedule and the progress bar follow whichever
is further along, so a run cut short by a busy machine still ends with a small learning rate, and the
bar's percentage is the share of the budget really used. Every ``eval_every`` steps the loop records
the mean training loss since the last record and the held-out loss (held-out masks drawn with seed 0).

Held-out figures (:func:`evaluate_mlm`) mask the held-out blocks once with a fixed seed, so every model
is scored on the same positions: the mean MLM loss over them, its exponential (perplexity) and the
share of them where the most probable token is the original one. :func:`unigram_baseline` scores a
model that ignores the context: training-split token frequencies with add-one smoothing.

Not covered: mixed precision, gradient accumulation, several devices, checkpoint resumption.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .masking import IGNORE_INDEX, mask_tokens, mlm_loss

__all__ = ["MLMFigures", "TokenIds", "TrainingRun", "evaluate_mlm", "learning_rate", "length_bucketed_batches",
           "mask_blocks", "train_mlm", "unigram_baseline"]


class TokenIds(NamedTuple):
    """What masking needs to know about a vocabulary."""
    vocab_size: int
    mask: int  # the <mask> token
    pad: int  # padding: not attended to, never masked
    special: tuple[int, ...]  # never chosen for masking (pad included)


@dataclass
class MLMFigures:
    loss: float  # mean cross-entropy (nats) over the masked positions
    perplexity: float  # exp(loss)
    accuracy: float  # share of masked positions whose top prediction is the original token
    masked: int  # how many positions were scored

    def rounded(self) -> dict:
        return {"loss": round(self.loss, 4), "perplexity": round(self.perplexity, 2),
                "accuracy": round(self.accuracy, 4), "masked": self.masked}


@dataclass
class TrainingRun:
    steps: int = 0
    tokens_seen: int = 0  # positions fed to the model, padding excluded
    seconds: float = 0.0
    # (step, seconds, mean training loss since the last point, held-out loss)
    history: list[tuple[int, float, float, float]] = field(default_factory=list)


def learning_rate(progress: float, peak: float, warmup: float = 0.06) -> float:
    """Linear warm-up to ``peak`` over the first ``warmup`` of the run, then linear decay to 0 at its end."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return peak * progress / warmup
    return peak * (1.0 - progress) / (1.0 - warmup)


def length_bucketed_batches(lengths, batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch's batches of indices for examples of the given ``lengths``: random, yet each batch of similar
    lengths (less padding). A random permutation, cut into windows of 4 batches, each window sorted by length and
    cut into batches; then the batches shuffled. Every draw comes from ``generator``: a seed repeats the epoch.
    The fine-tuning loops (tagging, sentence classification, distillation) all batch this way."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = 4 * batch_size
    batches = []
    for start in range(0, len(order), window):
        ranked = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [ranked[i:i + batch_size] for i in range(0, len(ranked), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def mask_blocks(blocks: torch.Tensor, ids: TokenIds, generator: torch.Generator):
    """``(corrupted, labels)`` for token blocks ``(B, T)``: the 15 % / 80-10-10 rule of :mod:`.masking`."""
    return mask_tokens(blocks, mask_id=ids.mask, vocab_size=ids.vocab_size, special_ids=ids.special,
                       generator=generator)


@torch.no_grad()
def evaluate_mlm(model, blocks: torch.Tensor, ids: TokenIds, *, seed: int = 0, batch_size: int = 32) -> MLMFigures:
    """Masked-LM loss, perplexity and accuracy on ``blocks`` masked once with ``seed``."""
    corrupted, labels = mask_blocks(blocks, ids, torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for inputs, targets in zip(corrupted.split(batch_size), labels.split(batch_size)):
        logits = model(inputs, attention_mask=(inputs != ids.pad).long())  # (b, T, V)
        chosen = targets != IGNORE_INDEX
        total_loss += torch.nn.functional.cross_entropy(logits[chosen], targets[chosen], reduction="sum").item()
        correct += (logits[chosen].argmax(-1) == targets[chosen]).sum().item()
        count += int(chosen.sum())
    model.train(was_training)
    loss = total_loss / count
    return MLMFigures(loss, math.exp(loss), correct / count, count)


def unigram_baseline(train_blocks: torch.Tensor, blocks: torch.Tensor, ids: TokenIds, *, seed: int = 0) -> MLMFigures:
    """A context-blind model scored on the same masked positions as :func:`evaluate_mlm` (same ``seed``):
    probabilities from the training blocks' counts of ordinary (non-special) tokens with add-one
    smoothing over the whole vocabulary; its guess is always the most frequent ordinary token."""
    counts = torch.bincount(train_blocks.flatten(), minlength=ids.vocab_size).double()  # (V,)
    counts[list(ids.special)] = 0  # special tokens are never masked, so never an answer
    probabilities = (counts + 1) / (counts.sum() + ids.vocab_size)
    _, labels = mask_blocks(blocks, ids, torch.Generator().manual_seed(seed))
    targets = labels[labels != IGNORE_INDEX]
    loss = -probabilities[targets].log().mean().item()
    accuracy = (targets == counts.argmax()).double().mean().item()
    return MLMFigures(loss, math.exp(loss), accuracy, len(targets))


def train_mlm(model, train_blocks: torch.Tensor, held_out_blocks: torch.Tensor, ids: TokenIds, *,
              batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.01, warmup: float = 0.06,
              max_steps: int | None = None, max_minutes: float | None = None, eval_every: int = 50,
              seed: int = 0, progress: bool = True) -> TrainingRun:
    """Train ``model`` in place on random batches of ``train_blocks``; see the module docstring."""
    if max_steps is None and max_minutes is None:
        raise ValueError("give max_steps, max_minutes or both: the run needs an end for its schedule")
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)  # batches and masks: the same run for the same seed
    decay = [p for p in model.parameters() if p.dim() >= 2]  # no weight decay on biases and norms
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)
    run, budget = TrainingRun(), (max_minutes or math.inf) * 60
    losses_since_eval: list[float] = []
    bar = tqdm(total=100, disable=not progress, desc="share of the budget",
               bar_format="{desc}: {n:.0f}% |{bar}| [{elapsed}<{remaining}{postfix}]")
    start = time.perf_counter()
    model.train()
    while True:
        elapsed = time.perf_counter() - start
        done = max(run.steps / max_steps if max_steps else 0.0, elapsed / budget)
        bar.update(min(done, 1.0) * 100 - bar.n)
        if done >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(done, lr, warmup)
        rows = torch.randint(0, len(train_blocks), (batch_size,), generator=generator)
        batch = train_blocks[rows]  # (B, T)
        corrupted, labels = mask_blocks(batch, ids, generator)
        logits = model(corrupted, attention_mask=(batch != ids.pad).long())  # (B, T, V)
        loss = mlm_loss(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        run.steps += 1
        run.tokens_seen += int((batch != ids.pad).sum())
        losses_since_eval.append(loss.item())
        if run.steps % eval_every == 0:
            held_out = evaluate_mlm(model, held_out_blocks, ids).loss
            train_loss = sum(losses_since_eval) / len(losses_since_eval)
            run.history.append((run.steps, round(time.perf_counter() - start, 1), round(train_loss, 4),
                                round(held_out, 4)))
            losses_since_eval.clear()
            bar.set_postfix_str(f"step {run.steps}, train {train_loss:.3f}, held-out {held_out:.3f}")
    bar.close()
    run.seconds = time.perf_counter() - start
    model.eval()
    return run
