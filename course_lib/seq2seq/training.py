"""Training for the sequence-to-sequence models: teacher forcing, label smoothing, the training loop.

A batch is a pair ``(src (B, S), tgt (B, T))`` of id tensors padded with ``pad_id``; every
target starts with BOS and ends with EOS. **Teacher forcing**: the decoder reads the true
prefix ``tgt[:, :-1]`` and is scored on predicting ``tgt[:, 1:]``, all positions at once::

    tgt      = [BOS, a, b, EOS, PAD]
    input    = [BOS, a, b, EOS]        (what the decoder reads)
    expected = [a,   b, EOS, PAD]      (what it must predict; PAD is not scored)

The loss is cross-entropy with **label smoothing** ε: the target distribution puts ``1 - ε`` on
the right token and spreads ε evenly over the whole vocabulary, which keeps the model from
becoming over-confident (Szegedy et al., 2016; Vaswani et al., 2017 use ε = 0.1).
:func:`train_seq2seq` adds gradient clipping, an optional warm-up, a progress bar (the share of its step
or time budget used) and periodic validation, and works for :class:`~course_lib.seq2seq.transformer.Transformer` and
:class:`~course_lib.seq2seq.rnn.RNNSeq2Seq` alike (both take ``model(src, tgt_in,
src_key_padding_mask, tgt_key_padding_mask)``).

Not covered: decoding (greedy and beam search are :func:`course_lib.decoding.generate` with
``source=``: :func:`course_lib.seq2seq.translation.translate`), BLEU, mixed precision, multi-GPU.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..runtime import get_device

__all__ = ["sequence_loss", "teacher_forcing_logits", "evaluate", "train_seq2seq"]

Batch = tuple[torch.Tensor, torch.Tensor]


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the non-padding targets: logits ``(B, T, V)``, targets ``(B, T)``."""
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree on (batch, seq_len)")
    loss_fn = nn.CrossEntropyLoss(ignore_index=pad_id, label_smoothing=label_smoothing)
    return loss_fn(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def teacher_forcing_logits(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor, pad_id: int):
    """Run ``model`` on ``tgt[:, :-1]``; return ``(logits (B, T-1, V), expected tgt[:, 1:])``."""
    if tgt.ndim != 2 or tgt.shape[1] < 2:
        raise ValueError(f"targets must be (batch, seq_len >= 2) holding BOS ... EOS, got {tuple(tgt.shape)}")
    tgt_in, expected = tgt[:, :-1], tgt[:, 1:]
    logits = model(src, tgt_in, src_key_padding_mask=src != pad_id, tgt_key_padding_mask=tgt_in != pad_id)
    return logits, expected


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], pad_id: int, device: torch.device | None = None) -> float:
    """Mean per-token cross-entropy (no smoothing) over ``batches``, in eval mode."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for src, tgt in batches:
        logits, expected = teacher_forcing_logits(model, src.to(device), tgt.to(device), pad_id)
        count = int((expected != pad_id).sum())
        total += float(sequence_loss(logits, expected, pad_id)) * count
        tokens += count
    model.train(was_training)
    if tokens == 0:
        raise ValueError("evaluate got no target tokens: are the validation batches empty?")
    return total / tokens


class _Progress:
    """A tqdm bar that tells the truth about when training stops: at the step budget or the time budget.

    Training ends at whichever comes first of ``epochs × batches``, ``max_steps`` and ``max_seconds``,
    so the bar shows the share of the budget already used, ``max(step / steps, seconds / max_seconds)``,
    in percent: a run limited to 60 seconds is at 50% after 30 seconds, however many steps that took,
    and tqdm's time-left estimate follows. Without any known budget it counts steps.
    """

    def __init__(self, steps_in_epochs: int | None, max_steps: int | None, max_seconds: float | None, disable: bool):
        known = [n for n in (steps_in_epochs, max_steps) if n is not None]
        self.total_steps, self.max_seconds = (min(known) if known else None), max_seconds
        budgets = ([f"{self.total_steps:,} steps"] if self.total_steps else []) + \
            ([f"{max_seconds:g} s"] if max_seconds else [])
        self.measured = bool(budgets)
        fmt = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]" if self.measured else None
        self.bar = tqdm(total=100 if self.measured else None, disable=disable, bar_format=fmt,
                        desc="training until " + " or ".join(budgets) if budgets else "training")

    def fraction(self, step: int, seconds: float) -> float | None:
        """The share of the budget used after ``step`` steps and ``seconds`` seconds (None without a budget)."""
        if not self.measured:
            return None
        used = [step / self.total_steps] if self.total_steps else []
        used += [seconds / self.max_seconds] if self.max_seconds else []
        return min(max(used), 1.0)

    def step(self, step: int, seconds: float, **postfix) -> None:
        fraction = self.fraction(step, seconds)
        self.bar.set_postfix(step=step, **postfix, refresh=False)
        self.bar.update(1 if fraction is None else 100 * fraction - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def train_seq2seq(model: nn.Module, train_batches: Iterable[Batch], *, pad_id: int,
                  valid_batches: Iterable[Batch] | None = None, epochs: int = 1, lr: float = 1e-3,
                  label_smoothing: float = 0.1, clip_norm: float | None = 1.0, warmup_steps: int = 0,
                  validate_every: int | None = None, max_steps: int | None = None, max_seconds: float | None = None,
                  device: torch.device | str | None = None, progress: bool = True, start_step: int = 0) -> dict:
    """Train with AdamW; return the history dict.

    ``train_batches`` is re-iterated each epoch (a list or a DataLoader). The learning rate
    rises linearly for ``warmup_steps`` steps, then decays as ``1/√step`` (Vaswani et al.'s shape,
    peaking at ``lr``); with ``warmup_steps=0`` it stays at ``lr``. Validation runs every
    ``validate_every`` steps and at the end of each epoch. Training stops early after
    ``max_steps`` steps or ``max_seconds`` seconds. ``start_step`` continues the learning-rate schedule
    of an earlier run that stopped after that many steps (the step counts in the history start at 1). History keys: ``step``, ``train_loss``,
    ``lr``, ``valid_step``, ``valid_loss``, ``seconds``, ``device``.
    """
    device = get_device(device)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    if warmup_steps > 0:
        schedule = lambda step: min((start_step + step + 1) / warmup_steps,
                                    math.sqrt(warmup_steps / (start_step + step + 1)))
    else:
        schedule = lambda step: 1.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    history = {"step": [], "train_loss": [], "lr": [], "valid_step": [], "valid_loss": [], "device": str(device)}
    start, step, stop = time.perf_counter(), 0, False

    def validate():
        if valid_batches is not None and (not history["valid_step"] or history["valid_step"][-1] != step):
            history["valid_step"].append(step)
            history["valid_loss"].append(evaluate(model, valid_batches, pad_id, device))

    bar = _Progress(epochs * len(train_batches) if hasattr(train_batches, "__len__") else None,
                    max_steps, max_seconds, disable=not progress)
    for epoch in range(epochs):
        for src, tgt in train_batches:
            src, tgt = src.to(device), tgt.to(device)
            logits, expected = teacher_forcing_logits(model, src, tgt, pad_id)
            loss = sequence_loss(logits, expected, pad_id, label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:  # one bad batch cannot throw the weights far
                nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            history["lr"].append(optimizer.param_groups[0]["lr"])  # the rate this step uses
            optimizer.step()
            scheduler.step()
            step += 1
            history["step"].append(step)
            history["train_loss"].append(loss.item())
            bar.step(step, time.perf_counter() - start, epoch=epoch + 1, loss=f"{history['train_loss'][-1]:.3f}")
            if validate_every and step % validate_every == 0:
                validate()
            stop = (max_steps is not None and step >= max_steps) or (
                max_seconds is not None and time.perf_counter() - start > max_seconds)
            if stop:
                break
        validate()
        if stop:
            break
    bar.close()
    if step == 0:
        raise ValueError("train_batches yielded no batch: nothing was trained")
    model.eval()
    history["seconds"] = time.perf_counter() - start
    return history
