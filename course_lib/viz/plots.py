"""Pictures for the chapters: attention heatmaps, grids of heads, the positional table.

* :func:`plot_attention` draws one ``(T_q, T_k)`` weight matrix: one row per query, one column
  per key, a colorbar, token labels, and the numbers themselves when the matrix is small.
* :func:`plot_heads` draws the ``(H, T_q, T_k)`` weights of every head of one layer side by side.
* :func:`plot_positional_encoding` draws a ``(T, D)`` positional table (positions down, features across).

Every plotting function takes a torch tensor, a NumPy array or nested lists, checks the shape,
and returns matplotlib objects so a chapter can add to them. Without an ``ax`` they draw on a new
pyplot figure, which a notebook shows once at the end of the cell (end the line with ``;`` to
hide the returned object's text). Not covered: interactive views (:mod:`course_lib.viz.explorer`
and each topic's ``widgets``), bertviz's HTML views (:mod:`course_lib.viz.bertviz_offline`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["draw_boxes", "plot_attention", "plot_heads", "plot_positional_encoding"]

ANNOTATE_UP_TO = 10  # annotate="auto" writes the numbers into cells when both sides are this short
MAX_INDEX_TICKS = 20  # without labels, longer axes get matplotlib's automatic (sparser) ticks


def _as_array(values, name: str, ndim: int) -> np.ndarray:
    """``values`` as a float NumPy array with exactly ``ndim`` axes (leading size-1 axes dropped)."""
    if hasattr(values, "detach"):  # a torch tensor, possibly on a GPU or requiring grad
        values = values.detach().float().cpu().numpy()
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a tensor, an array or nested lists of numbers: {error}") from None
    while array.ndim > ndim and array.shape[0] == 1:  # (1, 1, T, T) from a batch of one -> (T, T)
        array = array[0]
    if array.ndim != ndim or 0 in array.shape:
        raise ValueError(f"{name} must have {ndim} non-empty axes, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(
            f"{name} contains NaN or infinite values; plot the weights after the softmax, "
            "not masked scores (-inf), and check for rows whose keys are all masked"
        )
    return array


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot figure, so a notebook shows it once at the end of the cell (and closes it)."""
    import matplotlib.pyplot as plt  # imported late: importing pyplot picks a backend

    return plt.figure(figsize=figsize, layout="constrained")


def _validate_labels(labels: Sequence[str] | None, expected: int, name: str) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        raise TypeError(f"{name} must be a sequence of strings (one per token), not one string {labels!r}")
    labels = [str(label) for label in labels]
    if len(labels) != expected:
        raise ValueError(f"got {len(labels)} {name} for {expected} rows/columns; give one label per token")
    return labels


def plot_attention(
    weights,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    annotate: bool | str = "auto",
    colorbar: bool = True,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    xlabel: str = "key",
    ylabel: str = "query",
) -> Axes:
    """Heatmap of a ``(T_q, T_k)`` attention matrix; returns its Axes (``ax.figure`` is the Figure).

    Row ``i`` shows how query ``i`` spreads its attention over the keys. The colour scale is
    fixed to ``[0, 1]`` when every value lies there (weights), so two heatmaps compare at a glance;
    other matrices (scores, dot products) use their own range. ``annotate="auto"`` prints the
    values into the cells when the matrix is at most 10 x 10.

    >>> ax = plot_attention(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), ["a", "b"], ["a", "b"])
    >>> ax.images[0].get_array().tolist()
    [[1.0, 0.0], [0.5, 0.5]]
    """
    matrix = _as_array(weights, "weights", ndim=2)  # (T_q, T_k)
    num_queries, num_keys = matrix.shape
    query_labels = _validate_labels(query_labels, num_queries, "query_labels")
    key_labels = _validate_labels(key_labels, num_keys, "key_labels")
    if annotate not in (True, False, "auto"):
        raise ValueError(f"annotate must be True, False or 'auto', got {annotate!r}")
    if annotate == "auto":
        annotate = max(num_queries, num_keys) <= ANNOTATE_UP_TO

    if ax is None:
        side = min(0.45 * max(num_queries, num_keys) + 1.5, 7.0)
        figure = _new_figure(figsize=(side + 1.2, side))
        ax = figure.add_subplot()
    is_probability = matrix.min() >= 0.0 and matrix.max() <= 1.0
    vmin = (0.0 if is_probability else float(matrix.min())) if vmin is None else vmin
    vmax = (1.0 if is_probability else float(matrix.max())) if vmax is None else vmax
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")

    # Token labels on every row and column; bare indices only where they stay legible.
    if key_labels or num_keys <= MAX_INDEX_TICKS:
        ax.set_xticks(range(num_keys), key_labels if key_labels else range(num_keys))
    if query_labels or num_queries <= MAX_INDEX_TICKS:
        ax.set_yticks(range(num_queries), query_labels if query_labels else range(num_queries))
    if key_labels and (max(len(label) for label in key_labels) > 5 or num_keys > 12):
        ax.tick_params(axis="x", labelrotation=90)  # long labels would overlap side by side
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if annotate:
        middle = (vmin + vmax) / 2
        for i in range(num_queries):
            for j in range(num_keys):
                # dark text on the bright end of viridis, light text on the dark end
                colour = "black" if matrix[i, j] > middle else "white"
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8, color=colour)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    return ax


def plot_heads(
    weights,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    title: str | None = None,
    head_titles: Sequence[str] | None = None,
    annotate: bool | str = False,
    panel_size: float = 2.8,
) -> Figure:
    """One heatmap per head of a ``(H, T_q, T_k)`` (or ``(1, H, T_q, T_k)``) tensor; returns the Figure.

    All heads share one colour scale and one colorbar, so a sharp head and a diffuse head look
    different. ``figure.axes[h]`` is head ``h``'s Axes (the last Axes is the colorbar).
    """
    heads = _as_array(weights, "weights", ndim=3)  # (H, T_q, T_k)
    num_heads, num_queries, num_keys = heads.shape
    query_labels = _validate_labels(query_labels, num_queries, "query_labels")
    key_labels = _validate_labels(key_labels, num_keys, "key_labels")
    if head_titles is None:
        head_titles = [f"head {h}" for h in range(num_heads)]
    elif len(head_titles) != num_heads:
        raise ValueError(f"got {len(head_titles)} head_titles for {num_heads} heads")
    ncols = min(num_heads, 4) if ncols is None else ncols
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    nrows = math.ceil(num_heads / ncols)

    figure = _new_figure(figsize=(panel_size * ncols + 1.0, panel_size * nrows + 0.6))
    axes = figure.subplots(nrows, ncols, squeeze=False)
    low = min(0.0, float(heads.min()))
    high = max(1.0, float(heads.max()))
    for ax in axes.flat[num_heads:]:  # the empty panels of a last, incomplete row
        ax.remove()
    head_axes = list(axes.flat[:num_heads])
    for h, ax in enumerate(head_axes):
        row, col = divmod(h, ncols)
        plot_attention(
            heads[h], query_labels, key_labels, ax=ax, title=head_titles[h], annotate=annotate,
            colorbar=False, vmin=low, vmax=high,
            # axis names only on the outer panels: the grid stays readable
            xlabel="key" if row == nrows - 1 else "", ylabel="query" if col == 0 else "",
        )
    figure.colorbar(head_axes[0].images[0], ax=head_axes, fraction=0.03, pad=0.02, label="attention weight")
    if title:
        figure.suptitle(title)
    return figure


def plot_positional_encoding(table, *, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Heatmap of a ``(T, D)`` positional table: position ``t`` down, feature ``i`` across; returns the Axes.

    Sinusoidal tables lie in ``[-1, 1]``; a diverging colour map centred on 0 shows the fast
    clocks (left columns) and the slow ones (right columns).
    """
    matrix = _as_array(table, "table", ndim=2)  # (T, D)
    if ax is None:
        figure = _new_figure(figsize=(8, 4))
        ax = figure.add_subplot()
    limit = max(1.0, float(np.abs(matrix).max()))
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set_xlabel("feature i")
    ax.set_ylabel("position t")
    ax.set_title(title or f"positional encoding, {matrix.shape[0]} positions x {matrix.shape[1]} features")
    ax.figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    return ax


def draw_boxes(ax: Axes, boxes: Sequence[tuple], fontsize: float = 8.5) -> None:
    """Rounded, labelled boxes for the chapters' diagrams: each ``(x, y, width, height, text, colour)``."""
    from matplotlib.patches import FancyBboxPatch

    for x, y, width, height, text, colour in boxes:
        ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.05", facecolor=colour,
                                    edgecolor="0.4"))
        ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=fontsize)
