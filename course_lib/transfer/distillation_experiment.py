"""Distilling the fine-tuned MiniLM on SST-2: the pieces ``scripts/distil_sst2.py`` strings together.

* :class:`SentenceClassifier` — a minimal sequence classifier on the library's encoder (pooled sentence →
  dropout → linear), written here because p15-classify's ``heads.EncoderForSequenceClassification`` was not
  there yet when this experiment had to start; same attribute names (``.encoder``, ``.classifier``) and
  ``forward(input_ids, attention_mask=None, token_type_ids=None) -> logits (B, C)``. With ``pooling="mean"``
  it computes what ``EncoderForSequenceClassification(config, pooling="mean")`` computes (no pooler, dropout,
  linear); the committed record was made with this class, so it stays until the experiment is rerun.
* :func:`encode` / :func:`batches_in_order` / :func:`pad` — token ids, padded batches
  of similar length.
* :func:`train` — AdamW, linear warm-up then linear decay, gradient norm clipped at 1; on the gold labels
  only, or with DistilBERT's loss against teacher targets computed beforehand in eval mode
  (:func:`teacher_targets`).
* :func:`accuracy`, :func:`time_inference` (the models interleaved on the same batches, median of repeats),
  :func:`parameter_counts`.

Not covered: hyper-parameter search (one recipe for every student), early stopping, data augmentation
(DistilBERT's task-specific variants), quantisation.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..pretraining.training import learning_rate, length_bucketed_batches
from .distillation import DISTILBERT_WEIGHTS, LossWeights, distilbert_loss, hard_label_loss
from .heads import pool

__all__ = ["Settings", "SentenceClassifier", "Example", "Batch", "encode", "pad", "batches_in_order",
           "forward_with_hidden", "teacher_targets", "train", "accuracy", "time_inference",
           "parameter_counts"]


@dataclass
class Settings:
    max_length: int = 64  # word pieces per sentence, [CLS] and [SEP] included (SST-2's longest needs ~70)
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1  # share of the steps spent warming up
    teacher_epochs: float = 2.0
    student_epochs: float = 1.0  # every student: the same steps, batches and order
    temperature: float = 2.0  # DistilBERT's
    weights: tuple = tuple(DISTILBERT_WEIGHTS)

    def to_dict(self) -> dict:
        return asdict(self)


class SentenceClassifier(nn.Module):
    """``encoder`` → pooled sentence (``"cls"``: BERT's pooler, dense + tanh on position 0; ``"mean"``: the
    masked mean) → dropout → linear ``(B, C)``. With ``"mean"`` the encoder's pooler is removed (in place)."""

    def __init__(self, encoder: nn.Module, num_labels: int = 2, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if pooling == "cls" and encoder.pooler is None:
            raise ValueError("pooling='cls' needs an encoder with a pooler")
        if pooling == "mean":
            encoder.pooler = None  # unused by mean pooling: dropped so it is neither computed nor counted
        self.encoder, self.pooling = encoder, pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.dim, num_labels)
        nn.init.normal_(self.classifier.weight, std=encoder.config.init_std)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        out = self.encoder(input_ids, attention_mask, token_type_ids)
        if self.pooling == "cls":
            sentence = out.pooler_output  # (B, D)
        else:
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            sentence = pool(out.last_hidden_state, mask, "mean")  # (B, D)
        return self.classifier(self.dropout(sentence))  # (B, C)


class Example(NamedTuple):
    ids: list[int]  # word pieces, [CLS] … [SEP]
    label: int


class Batch(NamedTuple):
    rows: list[int]  # which examples
    input_ids: torch.Tensor  # (B, T), right-padded
    attention_mask: torch.Tensor  # (B, T), 1 = real token
    labels: torch.Tensor  # (B,)


def encode(tokenizer, sentences: Sequence, max_length: int) -> list[Example]:
    """``(text, label)`` pairs → :class:`Example` with the tokenizer's ids, cut at ``max_length``."""
    ids = tokenizer([s[0] for s in sentences], truncation=True, max_length=max_length)["input_ids"]
    return [Example(list(i), int(s[1])) for i, s in zip(ids, sentences)]


def pad(examples: Sequence[Example], rows: Sequence[int], pad_id: int) -> Batch:
    length = max(len(examples[r].ids) for r in rows)
    ids = torch.full((len(rows), length), pad_id)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(examples[r].ids)] = torch.tensor(examples[r].ids)
        mask[i, :len(examples[r].ids)] = 1
    return Batch(list(rows), ids, mask, torch.tensor([examples[r].label for r in rows]))


def batches_in_order(examples: Sequence[Example], batch_size: int, pad_id: int) -> list[Batch]:
    """Fixed batches for scoring and timing: examples sorted by length (less padding), cut in order."""
    order = sorted(range(len(examples)), key=lambda r: len(examples[r].ids))
    return [pad(examples, order[i:i + batch_size], pad_id) for i in range(0, len(order), batch_size)]


def forward_with_hidden(model: nn.Module, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (B, C), last hidden states (B, T, D))`` in one forward: a hook reads ``model.encoder``'s
    output, so any classifier built on the library's encoder works."""
    seen = []
    handle = model.encoder.register_forward_hook(lambda module, args, output: seen.append(output.last_hidden_state))
    try:
        logits = model(input_ids, attention_mask)
    finally:
        handle.remove()
    return logits, seen[-1]


@torch.no_grad()
def teacher_targets(teacher: nn.Module, examples: Sequence[Example], pad_id: int,
                    batch_size: int = 64) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The teacher in eval mode (no dropout): logits ``(N, C)`` and each example's last hidden states
    ``(T_i, D)`` at its real tokens, in the examples' order."""
    teacher.eval()
    logits, hidden = [None] * len(examples), [None] * len(examples)
    for batch in batches_in_order(examples, batch_size, pad_id):
        batch_logits, batch_hidden = forward_with_hidden(teacher, batch.input_ids, batch.attention_mask)
        for i, r in enumerate(batch.rows):
            logits[r] = batch_logits[i]
            hidden[r] = batch_hidden[i, :len(examples[r].ids)].clone()
    return torch.stack(logits), hidden


def train(model: nn.Module, examples: Sequence[Example], settings: Settings, steps: int, seed: int, pad_id: int,
          targets: tuple[torch.Tensor, list[torch.Tensor]] | None = None,
          log: Callable[[str], None] | None = None) -> list[float]:
    """Train ``model`` in place for ``steps`` steps; the loss of every step. Without ``targets``: the gold
    labels only; with them (:func:`teacher_targets`): :func:`distilbert_loss` with ``settings``' T and weights.
    The batches and their order come from ``seed`` alone, so every model trained with it sees the same data."""
    decay = [p for p in model.parameters() if p.dim() >= 2]  # no weight decay on biases and LayerNorms
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=settings.lr)
    draws = torch.Generator().manual_seed(seed)
    lengths = [len(e.ids) for e in examples]
    queue: list[list[int]] = []
    losses = []
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step / steps, settings.lr, settings.warmup)
        if not queue:
            queue = length_bucketed_batches(lengths, settings.batch_size, draws)
        batch = pad(examples, queue.pop(), pad_id)
        if targets is None:
            loss = hard_label_loss(model(batch.input_ids, batch.attention_mask), batch.labels)
        else:
            logits, hidden = forward_with_hidden(model, batch.input_ids, batch.attention_mask)
            teacher_hidden = torch.zeros_like(hidden)  # (B, T, D): zeros at padding, which the loss skips
            for i, r in enumerate(batch.rows):
                teacher_hidden[i, :len(examples[r].ids)] = targets[1][r]
            loss = distilbert_loss(logits, targets[0][batch.rows], batch.labels, settings.temperature,
                                   LossWeights(*settings.weights), hidden, teacher_hidden, batch.attention_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if log and (step + 1) % 50 == 0:
            log(f"  step {step + 1}/{steps}: loss {statistics.mean(losses[-50:]):.4f}")
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, batches: Sequence[Batch]) -> tuple[int, int]:
    """``(correct, total)`` of the arg-max class against the labels, in eval mode."""
    model.eval()
    correct = sum(int((model(b.input_ids, b.attention_mask).argmax(-1) == b.labels).sum()) for b in batches)
    return correct, sum(len(b.rows) for b in batches)


@torch.no_grad()
def time_inference(models: dict[str, nn.Module], batches: Sequence[Batch], repeats: int = 5) -> dict[str, dict]:
    """Seconds for each model to classify all ``batches``, ``repeats`` times, the models taking turns within
    each repeat (so a change in the machine's load touches all of them); per model the times and their median."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()
        model(batches[0].input_ids, batches[0].attention_mask)  # warm-up: first-call allocations
    for _ in range(repeats):
        for name, model in models.items():
            started = time.perf_counter()
            for b in batches:
                model(b.input_ids, b.attention_mask)
            times[name].append(time.perf_counter() - started)
    return {name: dict(seconds=[round(t, 4) for t in ts], median=statistics.median(ts)) for name, ts in times.items()}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters in all, and without the word-embedding table (the bulk of a small BERT)."""
    total = sum(p.numel() for p in model.parameters())
    return dict(total=total, without_word_embeddings=total - model.encoder.word_embeddings.weight.numel())
