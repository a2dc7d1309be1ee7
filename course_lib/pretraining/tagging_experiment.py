"""Does pretraining pay? UPOS tagging on UD Esperanto, cross-validated, pretrained vs from scratch.

The treebank is small (151 sentences), so one train/test split would say little: the sentences are
shuffled once (``split_seed``) and cut into ``k`` folds; each fold is the test set once and the rest the
training set. For every fold and every seed, each contender is built under ``torch.manual_seed(seed)``
(the pretrained one: a copy of the pretrained encoder and a fresh classifier; the baseline: the same
architecture entirely from random initialisation), then fine-tuned with the *same* steps, batches (drawn in
the same order: the batch generator is seeded with ``seed`` too; each epoch's batches group sentences of
similar length, to pad less), optimiser and schedule, and scored by UPOS
accuracy on the first sub-word of every word of the test fold. :func:`majority_baseline` (each word's most
frequent training tag; unseen words get the most frequent tag) gives the scale; :func:`paired_difference`
compares two contenders run by run (same fold, same seed). :func:`ngram_overlap` checks
how much of the treebank's text appears in the pretraining text (a leak would flatter the pretrained model).

Not covered: hyper-parameter search (both contenders get the same settings, chosen once), early stopping.
"""
from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .masking import IGNORE_INDEX
from .tagging import TaggedSentence, encode_sentence, token_classification_loss
from .training import length_bucketed_batches

__all__ = ["FineTuneSettings", "collate", "fine_tune", "evaluate", "kfold", "majority_baseline", "cross_validate",
           "paired_difference", "ngram_overlap"]


@dataclass
class FineTuneSettings:
    steps: int = 100  # ~13 epochs of a fold's ~120 training sentences; the whole 5x2 study stays ~10 CPU minutes
    batch_size: int = 16
    lr: float = 5e-4  # one setting for both contenders, fixed before any run (not tuned on the folds)
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # linear warm-up, then linear decay to 0

    def to_dict(self) -> dict:
        return asdict(self)


Example = tuple[list[int], list[int]]  # (input_ids, labels) of one sentence piece


def collate(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids (B, T)``, ``attention_mask (B, T)`` (1 = real) and ``labels (B, T)``."""
    length = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), length), pad_id)
    labels = torch.full((len(examples), length), IGNORE_INDEX)
    for row, (token_ids, token_labels) in enumerate(examples):
        ids[row, :len(token_ids)] = torch.tensor(token_ids)
        labels[row, :len(token_labels)] = torch.tensor(token_labels)
    mask = torch.zeros_like(ids)
    for row, (token_ids, _) in enumerate(examples):
        mask[row, :len(token_ids)] = 1
    return ids, mask, labels


def fine_tune(model: nn.Module, examples: Sequence[Example], settings: FineTuneSettings, seed: int,
              pad_id: int) -> list[float]:
    """Train ``model`` in place for ``settings.steps`` AdamW steps; returns the loss of every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(settings.warmup_fraction * settings.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (settings.steps - step) / max(1, settings.steps - warmup))))
    draws = torch.Generator().manual_seed(seed)  # the same batches, in the same order, for every contender
    queue: list[list[int]] = []
    losses = []
    model.train()
    for _ in range(settings.steps):
        if not queue:
            queue = length_bucketed_batches([len(ids) for ids, _ in examples], settings.batch_size, draws)
        ids, mask, labels = collate([examples[i] for i in queue.pop()], pad_id)
        loss = token_classification_loss(model(ids, mask), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, examples: Sequence[Example], pad_id: int, batch_size: int = 32) -> tuple[int, int]:
    """``(correct, scored)``: words whose first sub-word's top-scoring tag is the gold tag, and words scored."""
    model.eval()
    correct = total = 0
    for start in range(0, len(examples), batch_size):
        ids, mask, labels = collate(examples[start:start + batch_size], pad_id)
        predicted = model(ids, mask).argmax(-1)  # (B, T)
        scored = labels != IGNORE_INDEX
        correct += int((predicted[scored] == labels[scored]).sum())
        total += int(scored.sum())
    return correct, total


def kfold(count: int, folds: int, seed: int) -> list[list[int]]:
    """Indices ``0..count-1`` shuffled once with ``seed`` and dealt into ``folds`` near-equal test folds."""
    if not 2 <= folds <= count:
        raise ValueError(f"need 2 <= folds <= {count} items, got folds={folds}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return [sorted(order[i::folds]) for i in range(folds)]


def majority_baseline(train: Sequence[TaggedSentence], test: Sequence[TaggedSentence]) -> tuple[int, int]:
    """``(correct, total)`` of tagging each test word with its most frequent training tag (unseen: the commonest)."""
    per_word: dict[str, Counter] = {}
    for sentence in train:
        for word, tag in zip(sentence.words, sentence.tags):
            per_word.setdefault(word.lower(), Counter())[tag] += 1
    commonest = Counter(tag for s in train for tag in s.tags).most_common(1)[0][0]
    guesses = [(per_word[w.lower()].most_common(1)[0][0] if w.lower() in per_word else commonest, tag)
               for s in test for w, tag in zip(s.words, s.tags)]
    return sum(guess == tag for guess, tag in guesses), len(guesses)


def cross_validate(sentences: Sequence[TaggedSentence], contenders: dict[str, Callable[[], nn.Module]],
                   encode: Callable[[str], list[int]], bos_id: int, eos_id: int, pad_id: int, max_length: int,
                   settings: FineTuneSettings, folds: int = 5, seeds: Sequence[int] = (0, 1), split_seed: int = 0,
                   log: Callable[[str], None] = print) -> dict:
    """Every contender fine-tuned and scored on every (fold, seed); the runs, and per contender the
    accuracy's mean and sample standard deviation over all runs and its mean per fold."""
    encoded = [encode_sentence(s, encode, bos_id, eos_id, max_length) for s in sentences]
    test_folds = kfold(len(sentences), folds, split_seed)
    runs = []
    for fold, test_indices in enumerate(test_folds):
        held_out = set(test_indices)
        train = [piece for i, pieces in enumerate(encoded) if i not in held_out for piece in pieces]
        test = [piece for i in test_indices for piece in encoded[i]]
        correct, total = majority_baseline([s for i, s in enumerate(sentences) if i not in held_out],
                                           [sentences[i] for i in test_indices])
        runs.append(dict(model="majority tag per word", fold=fold, seed=None, correct=correct, words=total,
                         accuracy=correct / total))
        for seed in seeds:
            for name, build in contenders.items():
                torch.manual_seed(seed)
                model, started = build(), time.perf_counter()
                losses = fine_tune(model, train, settings, seed, pad_id)
                correct, total = evaluate(model, test, pad_id)
                runs.append(dict(model=name, fold=fold, seed=seed, correct=correct, words=total,
                                 accuracy=correct / total, first_loss=losses[0], last_loss=losses[-1],
                                 seconds=round(time.perf_counter() - started, 1)))
                log(f"fold {fold} seed {seed} {name}: accuracy {correct / total:.4f} ({correct}/{total}), "
                    f"loss {losses[0]:.3f} → {losses[-1]:.3f}, {runs[-1]['seconds']} s")
    summary = {}
    for name in ["majority tag per word", *contenders]:
        mine = [r for r in runs if r["model"] == name]
        accuracies = [r["accuracy"] for r in mine]
        summary[name] = dict(
            mean=statistics.mean(accuracies), std=statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            runs=len(accuracies),
            per_fold=[statistics.mean(r["accuracy"] for r in mine if r["fold"] == f) for f in range(folds)])
    first, *others = contenders
    paired = {f"{first} minus {other}": paired_difference(runs, first, other) for other in others}
    return dict(folds=folds, seeds=list(seeds), split_seed=split_seed, fold_sizes=[len(f) for f in test_folds],
                settings=settings.to_dict(), runs=runs, summary=summary, paired=paired)


def paired_difference(runs: Sequence[dict], first: str, second: str) -> dict:
    """``first``'s accuracy minus ``second``'s on the same (fold, seed): the same test words, initial
    classifier seed and batches, so the fold-to-fold spread both share cancels out. Mean, sample standard
    deviation, and how many runs ``first`` won, tied and lost."""
    accuracy = {(r["model"], r["fold"], r["seed"]): r["accuracy"] for r in runs}
    keys = sorted((fold, seed) for model, fold, seed in accuracy if model == first)
    differences = [accuracy[(first, *key)] - accuracy[(second, *key)] for key in keys]
    return dict(mean=statistics.mean(differences),
                std=statistics.stdev(differences) if len(differences) > 1 else 0.0,
                wins=sum(d > 0 for d in differences), ties=sum(d == 0 for d in differences),
                losses=sum(d < 0 for d in differences), differences=differences)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def ngram_overlap(sentences: Sequence[TaggedSentence], corpus: str, n: int = 8) -> dict:
    """How much of the sentences' text is in ``corpus``: sentences found whole (as a run of words), and
    sentences sharing at least one run of ``n`` words with it (word runs, case and punctuation ignored)."""
    words = _words(corpus)
    runs = {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
    joined = " " + " ".join(words) + " "
    whole, shared = [], []
    for sentence in sentences:
        mine = _words(sentence.text)
        if len(mine) >= 3 and f" {' '.join(mine)} " in joined:
            whole.append(sentence.sent_id)
        if any(tuple(mine[i:i + n]) in runs for i in range(len(mine) - n + 1)):
            shared.append(sentence.sent_id)
    return dict(n=n, sentences=len(sentences), found_whole=whole, sharing_an_ngram=shared)
