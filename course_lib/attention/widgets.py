"""Interactive explorers for the attention chapter: move a control, watch the weights change.

* :func:`attention_explorer`: keys are fixed points in a plane; sliders turn and stretch the query
  and change the scale. Long queries (big dot products) make the softmax pick one key outright.
* :func:`scaling_explorer`: random queries and keys of size ``d``; without the ``1/√d`` scale the
  spread of the scores grows like ``√d`` and the softmax saturates.
* :func:`mask_explorer`: switch the causal mask and the padding on and off over a short sentence.

Each explorer is two parts. A **pure compute function** (:func:`toy_query_attention`,
:func:`random_dot_product_attention`, :func:`masked_self_attention`) calls the library's
:func:`~course_lib.attention.scaled_dot_product_attention` and returns tensors; the tests check
these. A :class:`~course_lib.viz.Explorer` wraps the controls and draws the result.
Not covered: attention of trained models (bertviz).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..viz import Explorer, plot_attention
from .masks import causal_mask, padding_mask
from .scaled_dot_product import scaled_dot_product_attention

__all__ = [
    "attention_explorer", "scaling_explorer", "mask_explorer",
    "toy_query_attention", "random_dot_product_attention", "masked_self_attention",
    "TOY_KEYS", "TOY_KEY_LABELS",
]

# Five keys in a 2-D "meaning" plane: two animals, two vehicles, one plant.
TOY_KEY_LABELS = ("cat", "dog", "car", "bus", "tree")
TOY_KEYS = torch.tensor([[1.0, 0.25], [0.75, 0.7], [-0.9, 0.35], [-0.65, -0.75], [0.1, -1.0]])  # (N, 2)
DEFAULT_TOKENS = ("the", "cat", "sat", "on", "the", "mat", "and", "slept")


class ToyAttention(NamedTuple):
    query: torch.Tensor  # (2,)
    scores: torch.Tensor  # (N,) the scaled dot products fed to the softmax
    weights: torch.Tensor  # (N,) sums to 1
    output: torch.Tensor  # (2,) weighted average of the values (here the values are the keys)


class RandomAttention(NamedTuple):
    scores: torch.Tensor  # (N,) one query against N keys
    weights: torch.Tensor  # (N,)
    score_std: float  # spread of the scores over many random query/key pairs


def toy_query_attention(
    angle_deg: float, length: float, scale: float = 1.0, keys: torch.Tensor | None = None
) -> ToyAttention:
    """One 2-D query ``length·(cos θ, sin θ)`` attending over ``keys`` (values = keys).

    >>> result = toy_query_attention(0.0, 1.0, keys=torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    >>> result.scores.tolist(), round(result.weights[0].item(), 3)
    ([1.0, -1.0], 0.881)
    """
    keys = TOY_KEYS if keys is None else torch.as_tensor(keys, dtype=torch.float32)
    if keys.ndim != 2 or keys.shape[1] != 2 or keys.shape[0] < 1:
        raise ValueError(f"keys must have shape (num_keys, 2), got {tuple(keys.shape)}")
    if not length >= 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    angle = math.radians(angle_deg)
    query = torch.tensor([math.cos(angle), math.sin(angle)]) * length  # (2,)
    # One query, the keys double as values: the output is a point in the same plane.
    output, weights = scaled_dot_product_attention(query[None, :], keys, keys, scale=scale)  # (1, 2), (1, N)
    scores = keys @ query * scale  # (N,)
    return ToyAttention(query, scores, weights[0], output[0])


def random_dot_product_attention(
    dim: int, scaled: bool, num_keys: int = 8, seed: int = 0, max_dim: int = 1024, num_pairs: int = 2048
) -> RandomAttention:
    """A random query against ``num_keys`` random keys, entries drawn from N(0, 1), of size ``dim``.

    The vectors for a smaller ``dim`` are the first coordinates of the ones for a larger ``dim``,
    so moving a ``dim`` slider grows the same vectors. ``score_std`` is measured on ``num_pairs``
    other random pairs: about ``√dim`` unscaled and about 1 with ``scaled=True`` (scale ``1/√dim``).
    """
    if not isinstance(dim, int) or not 1 <= dim <= max_dim:
        raise ValueError(f"dim must be an integer in [1, {max_dim}], got {dim!r}")
    if num_keys < 1:
        raise ValueError(f"num_keys must be >= 1, got {num_keys}")
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(1, max_dim, generator=generator)[:, :dim]  # (1, d)
    keys = torch.randn(num_keys, max_dim, generator=generator)[:, :dim]  # (N, d)
    scale = 1 / math.sqrt(dim) if scaled else 1.0
    _, weights = scaled_dot_product_attention(query, keys, keys, scale=scale)  # (1, N)
    scores = (keys @ query[0]) * scale  # (N,)
    pairs = torch.randn(2, num_pairs, max_dim, generator=generator)[..., :dim]  # (2, P, d)
    score_std = ((pairs[0] * pairs[1]).sum(-1) * scale).std().item()
    return RandomAttention(scores, weights[0], score_std)


def masked_self_attention(
    num_tokens: int, causal: bool, valid_length: int | None = None, seed: int = 0, dim: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention of ``num_tokens`` random vectors under a causal and/or padding mask.

    Returns ``(mask, weights)``, both ``(T, T)``; ``mask`` is True where a query may attend.
    Tokens ``valid_length..T-1`` are padding: no query may attend to them.
    """
    valid_length = num_tokens if valid_length is None else valid_length
    if not 1 <= valid_length <= num_tokens:
        raise ValueError(f"valid_length must be in [1, num_tokens={num_tokens}], got {valid_length}")
    mask = padding_mask([valid_length], max_len=num_tokens)[0][None, :]  # (1, T): keys that are real tokens
    if causal:
        mask = mask & causal_mask(num_tokens)  # (T, T)
    mask = mask.expand(num_tokens, num_tokens)  # (T, T)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_tokens, dim, generator=generator)  # (T, d) stands in for projected q = k = v
    _, weights = scaled_dot_product_attention(x, x, x, mask)  # (T, T)
    return mask, weights


def _slider_style() -> dict:
    return {"style": {"description_width": "110px"}, "layout": widgets.Layout(width="420px")}


def attention_explorer(keys: torch.Tensor | None = None, key_labels: Sequence[str] | None = None) -> Explorer:
    """Turn and stretch a 2-D query over fixed keys; watch the weights and the output move."""
    keys = TOY_KEYS if keys is None else torch.as_tensor(keys, dtype=torch.float32)
    key_labels = list(TOY_KEY_LABELS if key_labels is None else key_labels)
    if keys.ndim != 2 or keys.shape[1] != 2 or len(key_labels) != keys.shape[0]:
        raise ValueError(f"need keys of shape (N, 2) and N labels, got {tuple(keys.shape)} and {len(key_labels)}")
    controls = {
        "angle_deg": widgets.IntSlider(160, min=0, max=355, step=5, description="query angle (°)", **_slider_style()),
        "length": widgets.FloatSlider(1.0, min=0.0, max=8.0, step=0.25, description="query length", **_slider_style()),
        # d = 2 here, so the usual scale is 1/√2
        "scale": widgets.FloatLogSlider(1 / math.sqrt(2), base=10, min=-2, max=1, step=0.05,
                                        description="scale", **_slider_style()),
    }

    def draw(angle_deg: float, length: float, scale: float) -> Figure:
        result = toy_query_attention(angle_deg, length, scale, keys)
        figure = Figure(figsize=(9, 3.8), layout="constrained")
        plane, bars = figure.subplots(1, 2, width_ratios=[1, 1.2])
        limit = max(1.5, float(keys.abs().max()) + 0.5)
        plane.scatter(keys[:, 0], keys[:, 1], s=60, c=[f"C{i}" for i in range(len(keys))], zorder=3)
        for i, label in enumerate(key_labels):
            plane.annotate(label, keys[i].tolist(), textcoords="offset points", xytext=(6, 4))
        shown = result.query * min(1.0, (limit - 0.5) / max(length, 1e-9))  # keep long queries inside the box
        plane.annotate("", shown.tolist(), (0, 0), arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 2}, zorder=5)
        label = "q" if length <= limit - 0.5 else f"q (×{length:.1f})"
        plane.annotate(label, (shown * 0.5).tolist(), textcoords="offset points", xytext=(0, -16), fontsize=10)
        plane.scatter(*result.output.tolist(), marker="*", s=220, c="crimson", zorder=4, label="output Σ wᵢ·vᵢ")
        plane.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", title="keys (= values) and query")
        plane.axhline(0, color="0.85", lw=0.8)
        plane.axvline(0, color="0.85", lw=0.8)
        plane.legend(loc="lower left", fontsize=8)
        heights = result.weights.tolist()
        bars.bar(key_labels, heights, color=[f"C{i}" for i in range(len(keys))])
        for i, (height, score) in enumerate(zip(heights, result.scores.tolist())):
            bars.text(i, height + 0.02, f"{height:.2f}\n(score {score:+.1f})", ha="center", fontsize=8)
        bars.set(ylim=(0, 1.18), ylabel="attention weight")
        verdict = "nearly a hard lookup" if max(heights) > 0.9 else "a soft mix"
        bars.set_title(f"weights = softmax(scale · q·k)\nlargest {max(heights):.2f}: {verdict}")
        return figure

    return Explorer("Move the query; change the scale", controls, draw)


def scaling_explorer(num_keys: int = 8, seed: int = 0) -> Explorer:
    """Grow the vector size ``d`` with and without the ``1/√d`` scale; watch the softmax saturate."""
    dims = [2**k for k in range(11)]  # 1 ... 1024
    controls = {
        "dim": widgets.SelectionSlider(options=dims, value=64, description="vector size d", **_slider_style()),
        "scaled": widgets.Checkbox(value=False, description="divide scores by √d"),
    }

    def draw(dim: int, scaled: bool) -> Figure:
        result = random_dot_product_attention(dim, scaled, num_keys=num_keys, seed=seed)
        figure = Figure(figsize=(9, 3.4), layout="constrained")
        bars, spread = figure.subplots(1, 2)
        heights = result.weights.tolist()
        bars.bar([f"k{i}" for i in range(num_keys)], heights, color="C0")
        bars.set(ylim=(0, 1.05), ylabel="attention weight",
                 title=f"one query, {num_keys} keys: largest weight {max(heights):.2f}")
        spread.bar([f"k{i}" for i in range(num_keys)], result.scores.tolist(), color="C1")
        expected = 1.0 if scaled else math.sqrt(dim)
        spread.set(ylabel="score", title=f"scores: std {result.score_std:.1f} (theory {expected:.1f})")
        scaled_text = "scaled by 1/√d" if scaled else "not scaled"
        figure.suptitle(f"d = {dim}, {scaled_text}")
        return figure

    return Explorer("Why divide by √d?", controls, draw)


def mask_explorer(tokens: Sequence[str] = DEFAULT_TOKENS, seed: int = 0) -> Explorer:
    """Switch the causal mask and the amount of padding; masked cells get weight 0 (hatched)."""
    tokens = list(tokens)
    if len(tokens) < 2:
        raise ValueError(f"need at least 2 tokens, got {tokens!r}")
    controls = {
        "causal": widgets.Checkbox(value=True, description="causal mask"),
        "valid_length": widgets.IntSlider(len(tokens) - 2, min=1, max=len(tokens), description="real tokens",
                                          **_slider_style()),
    }

    def draw(causal: bool, valid_length: int) -> Figure:
        mask, weights = masked_self_attention(len(tokens), causal, valid_length, seed=seed)
        figure = Figure(figsize=(6.4, 5.2), layout="constrained")
        ax = figure.add_subplot()
        labels = [token if i < valid_length else "<pad>" for i, token in enumerate(tokens)]
        plot_attention(weights, labels, labels, ax=ax, title="True = may attend; hatched = masked")
        for i, j in (~mask).nonzero().tolist():
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.6", lw=0))
        return figure

    return Explorer("Causal and padding masks", controls, draw)
