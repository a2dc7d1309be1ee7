"""The transfer-learning chapter's pictures: one pretrained body and its many heads, learning curves from a
record, and an explorer of what a fine-tuned sentence classifier says about a sentence typed in.

* :func:`plot_adaptation_map`: one pretrained encoder, reused by every adaptation the chapter measures (a
  sentence head, a tag per token, a smaller student, the encoder half of a translator).
* :func:`token_contributions`: for a classifier that mean-pools (:class:`~.heads.EncoderForSequenceClassification`
  with ``pooling="mean"``), the logits split *exactly* into one share per token. The head is linear and
  the pooled vector is the mean of the last hidden states ``h_t``, so ``logits = Σ_t W h_t / T + b``: token
  ``t``'s share is ``W h_t / T``. (Each ``h_t`` was computed from the whole sentence, so a share says where
  the evidence is read out, not which word alone caused it.) :func:`plot_prediction` draws the class
  probabilities and each token's push towards the positive or the negative class; :func:`sentiment_explorer`
  is the widget: type a sentence (in the static book: pick one of the examples).
* :func:`plot_learning_curves`: accuracy against training-set size per condition, mean ± standard deviation
  over seeds, from a summary ``{condition: {size: {mean, std, runs}}}`` (``sst2_learning_curves.json``).

Not covered: gradient-based attributions, attention as explanation, the training itself (:mod:`.finetuning`).
"""
from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from ..viz import Explorer, message_figure
from ..viz.plots import draw_boxes
from .datasets import SST2_LABELS
from .heads import EncoderForSequenceClassification

__all__ = ["plot_adaptation_map", "token_contributions", "plot_prediction", "sentiment_explorer",
           "plot_learning_curves"]


def plot_adaptation_map() -> Figure:
    """Pretraining once (left), adaptations many (right): each keeps the pretrained body and adds what it needs."""
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.set(xlim=(0, 10), ylim=(0, 4.2))
    ax.axis("off")
    boxes = [  # (x, y, width, height, text, colour)
        (0.1, 1.55, 2.1, 1.1, "unlabelled text (masked LM,\ndistilled), then 1 billion\nsentence pairs (which\nsentences go together)", "0.92"),
        (2.8, 1.55, 2.0, 1.1, "pretrained encoder\n(MiniLM: 6 layers,\n22.7 M weights)", "#c6dbef"),
        (5.6, 3.15, 2.1, 0.8, "+ pooling + linear:\na label per sentence", "#c7e9c0"),
        (5.6, 2.15, 2.1, 0.8, "+ linear per token:\na tag per word", "#c7e9c0"),
        (5.6, 1.15, 2.1, 0.8, "every other layer:\na smaller student", "#fdd0a2"),
        (5.6, 0.15, 2.1, 0.8, "+ decoder with new\ncross-attention", "#fdd0a2"),
    ]
    draw_boxes(ax, boxes, fontsize=8.2)
    arrow = {"arrowstyle": "->", "color": "0.3", "lw": 1.2}
    ax.annotate("", (2.75, 2.1), (2.25, 2.1), arrowprops=arrow)
    for y in (3.55, 2.55, 1.55, 0.55):
        ax.annotate("", (5.55, y), (4.85, 2.1), arrowprops=arrow)
    tasks = ["SST-2 sentiment (8.3, 8.4)", "POS tags on UD English (8.5)", "distillation (8.6)",
             "warm-started translator (8.7)"]
    for y, task in zip((3.55, 2.55, 1.55, 0.55), tasks):
        ax.text(7.85, y, task, fontsize=8.2, va="center")
    ax.text(1.15, 3.3, "1. pretrain once\n(someone else's GPUs)", fontsize=8.5, ha="center")
    ax.text(3.8, 3.3, "2. adapt, many times\n(here: a CPU, minutes)", fontsize=8.5, ha="center")
    return figure


@torch.no_grad()
def token_contributions(model: EncoderForSequenceClassification, input_ids: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                    torch.Tensor]:
    """``(logits (C,), shares (T, C))`` for one sentence's ``input_ids (T,)`` or ``(1, T)``, in eval mode:
    ``shares.sum(0) + model.classifier.bias == logits`` (module docstring). Mean pooling only."""
    if getattr(model, "pooling", None) != "mean":
        raise ValueError("token_contributions splits a mean-pooled classifier's logits; this model pools with "
                         f"{getattr(model, 'pooling', None)!r} (build it with pooling='mean')")
    ids = input_ids.reshape(1, -1) if input_ids.dim() == 1 else input_ids  # (1, T)
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] == 0:
        raise ValueError(f"give one sentence's ids, (T,) or (1, T) with T >= 1; got {tuple(input_ids.shape)}")
    was_training = model.training
    model.eval()
    hidden = model.encoder(ids).last_hidden_state[0]  # (T, D)
    shares = hidden @ model.classifier.weight.T / hidden.shape[0]  # (T, C)
    logits = model(ids)[0]  # (C,)
    model.train(was_training)
    return logits, shares


def plot_prediction(tokens: Sequence[str], logits: torch.Tensor, shares: torch.Tensor,
                    labels: Sequence[str] = SST2_LABELS, title: str = "") -> Figure:
    """Left: the class probabilities. Right: each token's share of the margin ``logit[1] - logit[0]``
    (positive: pushes towards ``labels[1]``). Two classes."""
    if len(labels) != 2 or logits.shape != (2,) or shares.shape != (len(tokens), 2):
        raise ValueError(f"need two classes: logits (2,) and shares ({len(tokens)}, 2); got {tuple(logits.shape)}, "
                         f"{tuple(shares.shape)} and labels {list(labels)}")
    probabilities = logits.softmax(-1)
    margin = (shares[:, 1] - shares[:, 0]).tolist()  # (T,)
    figure = Figure(figsize=(max(7.0, 2.8 + 0.42 * len(tokens)), 3.3), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[1, max(2.0, 0.3 * len(tokens))])
    left.bar(list(labels), probabilities.tolist(), color=["#c44e52", "#4c72b0"])
    left.set(ylim=(0, 1), ylabel="probability", title=f"says: {labels[int(probabilities.argmax())]}")
    right.bar(range(len(tokens)), margin, color=["#4c72b0" if m > 0 else "#c44e52" for m in margin])
    right.axhline(0, color="0.3", lw=0.8)
    right.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right", fontsize=8)
    right.set(ylabel=f"share of logit({labels[1]}) − logit({labels[0]})",
              title=title or f"each token's push (blue: towards {labels[1]}, red: towards {labels[0]})")
    return figure


def sentiment_explorer(model: EncoderForSequenceClassification, tokenizer, examples: Sequence[str],
                       labels: Sequence[str] = SST2_LABELS, max_length: int = 64) -> Explorer:
    """Type a sentence: the mean-pooled classifier's probabilities and each token's push
    (:func:`token_contributions`). The book offers ``examples`` instead of a text box."""
    if not examples:
        raise ValueError("give at least one example sentence")
    if getattr(model, "pooling", None) != "mean":
        raise ValueError("sentiment_explorer needs a mean-pooled classifier (pooling='mean')")

    def draw(sentence: str) -> Figure:
        if not sentence.strip():
            return message_figure("Type a sentence (SST-2 is lower-cased film reviews: try 'a gripping , "
                                  "beautifully acted film .').")
        ids = tokenizer(sentence, truncation=True, max_length=max_length)["input_ids"]
        logits, shares = token_contributions(model, torch.tensor(ids))
        tokens = tokenizer.convert_ids_to_tokens(ids)
        return plot_prediction(tokens, logits, shares, labels, title="")

    return Explorer("What the fine-tuned classifier says, and where it reads it",
                    {"sentence": widgets.Text(value=examples[0], description="sentence", continuous_update=False,
                                              layout=widgets.Layout(width="95%"))},
                    draw, book_controls={"sentence": widgets.Dropdown(options=list(examples), value=examples[0],
                                                                      description="sentence")})


def plot_learning_curves(summary: dict, baseline: float | None = None, title: str = "") -> Figure:
    """Mean accuracy ± one standard deviation against training-set size (log scale), a line per condition;
    ``baseline`` (e.g. always the commonest class) as a dashed line."""
    if not summary:
        raise ValueError("the summary holds no condition")
    figure = Figure(figsize=(6.8, 3.6), layout="constrained")
    ax = figure.subplots()
    for condition, cells in summary.items():
        sizes = sorted(cells, key=float)
        if not sizes:
            continue
        means = [cells[s]["mean"] for s in sizes]
        spreads = [cells[s].get("std") or 0.0 for s in sizes]
        ax.errorbar([float(s) for s in sizes], means, yerr=spreads, marker="o", ms=4, capsize=3, label=condition)
    if baseline is not None:
        ax.axhline(baseline, color="0.5", ls="--", label="always the commonest class")
    ax.set_xscale("log")
    ax.set(xlabel="training sentences", ylabel="dev accuracy", title=title)
    ax.legend(fontsize=8)
    return figure
