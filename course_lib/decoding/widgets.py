"""The decoding chapter's pictures: what temperature, top-k and top-p do to the next-token distribution,
and the tree a beam search explores.

* :func:`filtered_distribution` takes one row of next-token scores and the three sampling settings, and
  returns the distribution before filtering (after temperature), which tokens survive top-k and top-p,
  and the renormalised distribution that is actually sampled. It calls
  :func:`~course_lib.decoding.processors.sampling_logits`, the very function :func:`~course_lib.decoding.sample`
  calls: temperature, top-k, top-p, in ``generate``'s order.
* :func:`sampling_explorer` is the widget: sliders for the three settings and a seed; it redraws the
  most likely tokens (kept ones coloured, cut ones grey) and samples a continuation with
  :func:`~course_lib.decoding.generate` under the same settings.
* :func:`beam_tree` runs the library's readable :func:`~course_lib.decoding.search.beam_search` and
  keeps, from its ``trace``, the candidates each step scored and which ones survived; it has no loop of
  its own. :func:`plot_beam_tree` draws it. Without an end-of-text token the search is
  ``generate(num_beams=k)``'s (``tests/decoding/test_widgets.py`` checks that the best leaf is the
  sequence ``generate`` returns).

As in :mod:`course_lib.attention.widgets`, the explorer's figure is a plain image output, so a notebook executed
headless keeps a picture of the initial settings. Not covered: repetition penalties and n-gram
blocking (the chapter shows those on whole generations), length penalties in the tree.
"""
from __future__ import annotations

from typing import NamedTuple

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from ..viz import Explorer
from .generation import generate
from .processors import sampling_logits
from .search import BeamSearchStep, beam_search
from .steppers import CausalLMStepper

__all__ = [
    "BeamNode",
    "FilteredDistribution",
    "beam_tree",
    "best_leaf_ids",
    "filtered_distribution",
    "plot_beam_tree",
    "sampling_explorer",
]


class FilteredDistribution(NamedTuple):
    probs: torch.Tensor  # (V,) softmax(scores / temperature): before any filter
    kept: torch.Tensor  # (V,) bool, True where the token survives top-k and top-p
    sampled_probs: torch.Tensor  # (V,) renormalised over the kept tokens: what sampling draws from

    @property
    def kept_mass(self) -> float:
        """How much of the (tempered) probability the kept tokens held before renormalising."""
        return float(self.probs[self.kept].sum())


def filtered_distribution(scores: torch.Tensor, temperature_value: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None) -> FilteredDistribution:
    """The next-token distribution of one row of ``scores`` ``(V,)`` under the sampling settings.

    ``top_k=None`` and ``top_p=None`` (or 1.0) switch a filter off.

    >>> result = filtered_distribution(torch.log(torch.tensor([0.5, 0.3, 0.2])), top_p=0.6)
    >>> result.kept.tolist(), [round(p, 3) for p in result.sampled_probs.tolist()]
    ([True, True, False], [0.625, 0.375, 0.0])
    """
    scores = torch.as_tensor(scores, dtype=torch.float32)
    if scores.ndim != 1 or scores.numel() == 0:
        raise ValueError(f"scores must be one row of next-token scores, shape (V,), got {tuple(scores.shape)}")
    tempered = sampling_logits(scores[None, :], temperature_value)  # (1, V), no filter yet
    filtered = sampling_logits(scores[None, :], temperature_value, top_k, top_p)  # (1, V), what sample() draws from
    kept = torch.isfinite(filtered[0])
    return FilteredDistribution(tempered[0].softmax(-1), kept, filtered[0].softmax(-1))


def _token_label(tokenizer, token_id: int) -> str:
    text = tokenizer.decode([token_id])
    return repr(text)[1:-1].replace(" ", "␣") or "∅"


def sampling_explorer(model, tokenizer, prompt: str, *, shown: int = 25, max_new_tokens: int = 30,
                      temperature_value: float = 1.0, top_k: int = 0, top_p: float = 0.9) -> Explorer:
    """Sliders for temperature, top-k (0 = off) and top-p, and a seed: move the seed to resample."""
    ids = torch.tensor([tokenizer.encode(prompt)])  # (1, T)
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token")
    with torch.no_grad():
        next_scores = model.eval()(ids).logits[0, -1]  # (V,)
    style = {"style": {"description_width": "110px"}, "layout": widgets.Layout(width="460px")}
    controls = {
        "temperature_value": widgets.FloatLogSlider(temperature_value, base=10, min=-1, max=0.5, step=0.05,
                                                    description="temperature", continuous_update=False, **style),
        "top_k": widgets.IntSlider(top_k, min=0, max=100, description="top-k (0 = off)", continuous_update=False, **style),
        "top_p": widgets.FloatSlider(top_p, min=0.05, max=1.0, step=0.05, description="top-p",
                                     continuous_update=False, **style),
        "seed": widgets.IntSlider(0, min=0, max=99, description="seed (resample)", continuous_update=False, **style),
    }

    def draw(temperature_value: float, top_k: int, top_p: float, seed: int) -> Figure:
        top_k = top_k or None
        result = filtered_distribution(next_scores, temperature_value, top_k, top_p)
        order = torch.argsort(result.probs, descending=True)[:shown]
        continuation = generate(model, ids, max_new_tokens=max_new_tokens, do_sample=True,
                                temperature=temperature_value, top_k=top_k, top_p=top_p, seed=seed)
        text = tokenizer.decode(continuation[0, ids.shape[1]:].tolist())

        figure = Figure(figsize=(10, 6.2), layout="constrained")
        bars, words = figure.subplots(2, 1, height_ratios=[3, 2])
        positions = range(len(order))
        colours = ["C0" if result.kept[i] else "0.8" for i in order.tolist()]
        bars.bar(positions, result.probs[order].tolist(), color=colours, label="before filtering")
        bars.plot(positions, result.sampled_probs[order].tolist(), "o", color="crimson", ms=5,
                  label="sampled from (renormalised)")
        bars.set_xticks(list(positions), [_token_label(tokenizer, i) for i in order.tolist()], rotation=60,
                        fontsize=8, family="monospace")
        bars.set(ylabel="probability", ylim=(0, max(1e-3, float(result.sampled_probs.max())) * 1.12))
        bars.legend(loc="upper right", fontsize=8)
        bars.set_title(f"next token after {prompt[-30:]!r}: {int(result.kept.sum())} of {result.kept.numel()} "
                       f"tokens kept (blue), holding {result.kept_mass:.0%} of the tempered probability",
                       fontsize=10)
        words.axis("off")
        words.text(0, 1, f"sample (seed {seed}):\n{prompt}▌{text}", va="top", ha="left", family="monospace",
                   fontsize=9, wrap=True, transform=words.transAxes)
        return figure

    return Explorer("Temperature, top-k and top-p", controls, draw)


class BeamNode(NamedTuple):
    step: int  # 1 for the first generated token
    token: int
    parent: int | None  # index of the parent node in the list, None under the prompt
    score: float  # total log-probability of the sequence ending here
    kept: bool  # True if this candidate became one of the next step's beams


def beam_tree(model, input_ids: torch.Tensor, num_beams: int, steps: int, candidates_per_beam: int = 3
              ) -> list[BeamNode]:
    """Run ``steps`` steps of beam search on one prompt ``(1, T)`` and record the candidates it weighs.

    The search is :func:`~course_lib.decoding.search.beam_search` (no end-of-text token, no penalties), on a
    decoder-only model with the course's cache protocol (our GPT). From each step's trace the tree keeps
    every beam's ``candidates_per_beam`` best next tokens (only these are drawn; the search weighs all of
    them) and the candidates that survive: the next beams, and at the last step the finished sequences,
    the best of which ``generate(num_beams=num_beams)`` returns.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.shape[0] != 1 \
            or input_ids.shape[1] == 0:
        raise ValueError("input_ids must be one non-empty prompt, shape (1, T)")
    if num_beams < 1 or steps < 1 or candidates_per_beam < 1:
        raise ValueError("num_beams, steps and candidates_per_beam must be >= 1")
    nodes: list[BeamNode] = []
    node_of_beam: list[int | None] = [None] * num_beams  # each beam's node; None: the prompt itself

    def add_step(step: BeamSearchStep) -> None:
        totals = step.log_probs + step.beam_scores[:, None]  # (K, V): every continuation's score
        survivors = {(int(step.beams[0, rank]), int(step.tokens[0, rank])): rank  # (beam, token) -> candidate
                     for rank in step.running[0] + step.finished[0]}
        shown = set(survivors)
        for beam in range(num_beams):
            if step.beam_scores[beam] > float("-inf"):  # (before the first step only beam 0 is a sequence)
                best = torch.topk(totals[beam], min(candidates_per_beam, totals.shape[1])).indices
                shown |= {(beam, int(token)) for token in best}
        next_node = list(node_of_beam)
        for beam, token in sorted(shown, key=lambda candidate: -float(totals[candidate])):
            rank = survivors.get((beam, token))
            if rank in step.running[0]:
                next_node[step.running[0].index(rank)] = len(nodes)  # this candidate is that beam now
            nodes.append(BeamNode(step.length, token, node_of_beam[beam], float(totals[beam, token]), rank is not None))
        node_of_beam[:] = next_node

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            beam_search(CausalLMStepper(model), input_ids, torch.ones_like(input_ids), steps, num_beams, trace=add_step)
    finally:
        model.train(was_training)
    return nodes


def best_leaf_ids(nodes: list[BeamNode]) -> list[int]:
    """The generated tokens of the best sequence alive at the last step."""
    last = max(node.step for node in nodes)
    index = max((i for i, n in enumerate(nodes) if n.step == last and n.kept), key=lambda i: nodes[i].score)
    path = []
    while index is not None:
        path.append(nodes[index].token)
        index = nodes[index].parent
    return path[::-1]


def plot_beam_tree(nodes: list[BeamNode], tokenizer, prompt: str, ax=None) -> Figure:
    """Draw the tree: one column per step, kept beams in blue, pruned candidates grey, best path red.

    Draws into ``ax`` if given (e.g. from ``plt.subplots`` in a notebook), else into a new figure.
    """
    if ax is None:
        ax = Figure(figsize=(11, 6), layout="constrained").subplots()
    figure = ax.figure
    steps = max(node.step for node in nodes)
    y = {}
    for step in range(1, steps + 1):  # children sit in their parents' order, best first within a parent
        column = [i for i, n in enumerate(nodes) if n.step == step]
        column.sort(key=lambda i: (-y.get(nodes[i].parent, 0.0), -nodes[i].score))
        for rank, i in enumerate(column):
            y[i] = -rank * 10.0 / max(len(column) - 1, 1)
    best = set()
    last = [i for i, n in enumerate(nodes) if n.step == steps and n.kept]
    index = max(last, key=lambda i: nodes[i].score)
    while index is not None:
        best.add(index)
        index = nodes[index].parent
    root_y = -5.0
    ax.text(0, root_y, prompt[-18:].replace("\n", "↵"), ha="right", va="center", fontsize=9, family="monospace",
            bbox={"boxstyle": "round", "facecolor": "0.92"})
    for i, node in enumerate(nodes):
        x0, y0 = (0, root_y) if node.parent is None else (node.step - 1, y[node.parent])
        colour = "crimson" if i in best else ("C0" if node.kept else "0.75")
        ax.plot([x0 + 0.05, node.step - 0.05], [y0, y[i]], color=colour, lw=2 if i in best else 1, zorder=1)
        ax.text(node.step, y[i], f"{_token_label(tokenizer, node.token)}  {node.score:.1f}", ha="left", va="center",
                fontsize=8, family="monospace", color="black" if node.kept else "0.55",
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": colour})
    ax.set(xlim=(-1.2, steps + 0.9), ylim=(-10.8, 0.8), xticks=range(1, steps + 1), yticks=[],
           xlabel="step (label: token, total log-probability)")
    ax.set_title("beam search: kept beams (blue), pruned candidates (grey), the returned sequence (red)",
                 fontsize=10)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return figure
