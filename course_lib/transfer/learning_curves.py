"""Does pretraining buy accuracy with little data? Learning curves on SST-2, three conditions.

For every training-set size and seed: ``seed`` draws the subset (a random ``size`` of the 6,920 training
sentences: :func:`training_subset`), the new weights' initialisation and the batch order; the three
conditions share all three, so they differ only in what they start from and what trains:

* ``"full fine-tuning"`` — MiniLM's weights copied, a fresh classifier, every weight trained;
* ``"feature extraction"`` — MiniLM frozen; its pooled vectors computed once for all sentences; only a
  linear classifier trained on them;
* ``"random init"`` — the same architecture from its own random initialisation, trained like the first.

Each is scored by dev accuracy (872 sentences). :func:`run_condition` runs one (condition, size, seed);
:func:`planned_runs` orders a plan so that every cell gets its first seed before any gets its second (a run
cut short still covers every cell); :func:`summarise` gives mean ± sample standard deviation per cell.
:func:`majority_baseline` is the floor. The script ``scripts/sst2_learning_curves.py`` writes the record.
Not covered: choosing hyper-parameters per size (one recipe for all), other tasks.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from .finetuning import (
    ClassifierSettings, Example, evaluate_classifier, fine_tune_classifier, head_accuracy, train_head,
)
from .heads import EncoderForSequenceClassification

__all__ = ["CONDITIONS", "DEFAULT_PLAN", "training_subset", "planned_runs", "run_condition", "summarise",
           "majority_baseline"]

CONDITIONS = ("full fine-tuning", "feature extraction", "random init")
DEFAULT_PLAN = {100: 5, 500: 5, 2000: 3, 6920: 2}  # training-set size: seeds 0, 1, … (fewer where a run is long)


def training_subset(count: int, size: int, seed: int) -> list[int]:
    """``size`` distinct indices of ``count`` examples drawn with ``seed`` (all of them when size == count), sorted."""
    if not 1 <= size <= count:
        raise ValueError(f"size must be between 1 and {count}, got {size}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:size].tolist())


def planned_runs(plan: dict[int, int], conditions: Sequence[str] = CONDITIONS) -> list[tuple[str, int, int]]:
    """``(condition, size, seed)`` in running order: seed 0 of every cell (largest size first), then seed 1, …"""
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown condition(s) {sorted(unknown)}; known: {CONDITIONS}")
    return [(condition, size, seed) for seed in range(max(plan.values(), default=0))
            for size in sorted(plan, reverse=True) if seed < plan[size] for condition in conditions]


def run_condition(condition: str, pretrained: EncoderForSequenceClassification, train: Sequence[Example],
                  dev: Sequence[Example], settings: ClassifierSettings, seed: int, *,
                  features: tuple[torch.Tensor, torch.Tensor] | None = None, test: Sequence[Example] | None = None,
                  progress: bool = False) -> dict:
    """One run; returns ``steps``, ``seconds``, ``dev_accuracy`` (and ``test_accuracy`` when ``test`` is given).

    ``pretrained``: the model whose encoder is copied (its classifier is not used). Feature extraction
    needs ``features``: the pretrained pooled vectors of ``train`` and of ``dev``, in their order."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    torch.manual_seed(seed)  # the fresh classifier's (and the random model's) initialisation
    started = time.perf_counter()
    if condition == "feature extraction":
        if features is None or test is not None:
            raise ValueError("feature extraction needs features=(train vectors, dev vectors) and scores dev only")
        model = EncoderForSequenceClassification.from_encoder(pretrained.encoder, pretrained.num_labels,
                                                              settings.pooling, settings.dropout)
        train_features, dev_features = features
        losses = train_head(model, train_features, torch.tensor([e.label for e in train]), settings, seed,
                            progress=progress)
        dev_accuracy = head_accuracy(model, dev_features, torch.tensor([e.label for e in dev]))
        result = dict(steps=len(losses))
    else:
        if condition == "full fine-tuning":
            model = EncoderForSequenceClassification.from_encoder(pretrained.encoder, pretrained.num_labels,
                                                                  settings.pooling, settings.dropout)
        else:
            model = EncoderForSequenceClassification(pretrained.config, pretrained.num_labels, settings.pooling,
                                                     settings.dropout)
        losses = fine_tune_classifier(model, train, settings, seed, progress=progress)
        dev_accuracy = evaluate_classifier(model, dev)
        result = dict(steps=len(losses))
        if test is not None:
            result["test_accuracy"] = evaluate_classifier(model, test)
    result.update(first_loss=round(losses[0], 4), last_loss=round(losses[-1], 4), dev_accuracy=dev_accuracy,
                  seconds=round(time.perf_counter() - started, 1))
    return result


def summarise(runs: Sequence[dict]) -> dict:
    """``{condition: {size (str): {mean, std, runs}}}`` of dev accuracy; std is the sample std (0 for one run)."""
    summary: dict = {}
    for condition in CONDITIONS:
        sizes = sorted({r["size"] for r in runs if r["condition"] == condition})
        for size in sizes:
            scores = [r["dev_accuracy"] for r in runs if r["condition"] == condition and r["size"] == size]
            summary.setdefault(condition, {})[str(size)] = dict(
                mean=statistics.mean(scores), std=statistics.stdev(scores) if len(scores) > 1 else 0.0,
                runs=len(scores))
    return summary


def majority_baseline(train_labels: Sequence[int], dev_labels: Sequence[int]) -> dict:
    """Dev accuracy of always answering the commonest training label."""
    commonest = max(set(train_labels), key=list(train_labels).count)
    return dict(label=commonest, dev_accuracy=sum(label == commonest for label in dev_labels) / len(dev_labels))
