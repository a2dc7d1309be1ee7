"""The long-documents chapter's attention-pattern explorer: which keys each query sees, and what it costs.

* :func:`block_sparse_pattern` is the pure compute function. Tokens are grouped in blocks of ``block_size``;
  a query block sees the key blocks within ``window`` blocks on each side, the ``global_blocks`` global blocks
  (taken from the two ends, first, last, second, …: BigBird's two are the first and the last) see and are seen
  by every block, and each other query block sees ``random_blocks`` key blocks drawn among those it does not
  already see. ``block_size = 1`` with no random blocks is Longformer's pattern, the library's
  :func:`~course_lib.long_range.sliding_window_mask`; ``window = 1``, two global blocks and ``r`` random blocks
  is BigBird's, :func:`~course_lib.long_range.bigbird.bigbird_block_layout` spread over the tokens
  (``tests/long_range/test_widgets.py`` pins both).
* :func:`layers_to_reach` counts how many layers it takes before a query's output depends on a given key's token
  (a breadth-first search over the pattern: information moves from a key to a query in one layer when the
  pattern allows that pair); :func:`plot_pattern` draws a pattern by kind (window, global, random).
* :func:`pattern_explorer` is the widget: sliders for the block size, the window, the global blocks and the random
  blocks; the picture, the fraction of the T² scores computed and the layers every token needs to hear the first
  token that is not global.

Not covered: the attention computations themselves (:mod:`.sliding_window`, :mod:`.bigbird`, :mod:`.tiled`),
HF's exact random-block plan (``bigbird.bigbird_random_blocks``; the explorer draws its own, one plain rule),
causal masking and padding.
"""
from __future__ import annotations

from typing import NamedTuple

import ipywidgets as widgets
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from ..viz import Explorer, message_figure

__all__ = ["PatternKind", "SparsePattern", "block_sparse_pattern", "global_block_indices", "layers_to_reach",
           "pattern_explorer", "plot_pattern"]


class PatternKind:
    """The codes of :attr:`SparsePattern.kind`: why a (query, key) pair is computed (a global pair wins)."""
    NONE, WINDOW, RANDOM, GLOBAL = 0, 1, 2, 3


class SparsePattern(NamedTuple):
    allowed: torch.Tensor  # (T, T) bool: query i scores key j
    kind: torch.Tensor  # (T, T) int8: PatternKind of each pair
    block_layout: torch.Tensor  # (nb, nb) bool: the same, one entry per (query block, key block)
    random_plan: torch.Tensor  # (nb, r) long: the random key blocks of each query block, −1 where none
    computed: int  # query-key scores computed (True entries of ``allowed``) ...
    full: int  # ... against T·T for full attention

    @property
    def fraction(self) -> float:
        return self.computed / self.full


def _positive_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int ≥ {minimum}, got {value!r}")
    return value


def global_block_indices(num_blocks: int, global_blocks: int) -> list[int]:
    """The global blocks, taken from the two ends in turn: 1 → [0], 2 → [0, nb−1], 3 → [0, nb−1, 1], …"""
    ends = [index for pair in zip(range(num_blocks), range(num_blocks - 1, -1, -1)) for index in pair]
    chosen: list[int] = []
    for index in ends:
        if len(chosen) == global_blocks:
            break
        if index not in chosen:
            chosen.append(index)
    return sorted(chosen)


def block_sparse_pattern(seq_len: int, block_size: int = 1, window: int = 1, global_blocks: int = 0,
                         random_blocks: int = 0, *, seed: int = 0) -> SparsePattern:
    """The pattern described in the module docstring for ``seq_len`` tokens (a multiple of ``block_size``).

    ``window`` counts blocks on *each* side (tokens when ``block_size = 1``, like ``sliding_window_mask``).
    Random blocks are drawn with a generator seeded by ``seed``, for query blocks that are not global, among the
    key blocks that query block does not see yet (fewer when fewer are left).
    """
    _positive_int("seq_len", seq_len, 1)
    _positive_int("block_size", block_size, 1)
    _positive_int("window", window, 0)
    _positive_int("global_blocks", global_blocks, 0)
    _positive_int("random_blocks", random_blocks, 0)
    if seq_len % block_size:
        raise ValueError(f"seq_len {seq_len} is not a multiple of the block size {block_size}")
    num_blocks = seq_len // block_size
    if global_blocks > num_blocks:
        raise ValueError(f"global_blocks {global_blocks} is more than the {num_blocks} blocks there are")

    block = torch.arange(num_blocks)
    in_window = (block[:, None] - block[None, :]).abs() <= window  # (nb, nb): the band of blocks
    is_global = torch.zeros(num_blocks, dtype=torch.bool)
    is_global[global_block_indices(num_blocks, global_blocks)] = True
    global_pair = is_global[:, None] | is_global[None, :]  # (nb, nb): global rows see all, global columns are seen

    generator = torch.Generator().manual_seed(seed)
    plan = torch.full((num_blocks, random_blocks), -1, dtype=torch.long)  # (nb, r)
    random_pair = torch.zeros(num_blocks, num_blocks, dtype=torch.bool)
    for query_block in range(num_blocks):
        if is_global[query_block] or random_blocks == 0:
            continue
        candidates = (~(in_window[query_block] | global_pair[query_block])).nonzero().flatten()  # not seen yet
        picked = candidates[torch.randperm(len(candidates), generator=generator)[:random_blocks]].sort().values
        plan[query_block, :len(picked)] = picked
        random_pair[query_block, picked] = True

    kind_blocks = torch.full((num_blocks, num_blocks), PatternKind.NONE, dtype=torch.int8)
    kind_blocks[random_pair] = PatternKind.RANDOM
    kind_blocks[in_window] = PatternKind.WINDOW
    kind_blocks[global_pair] = PatternKind.GLOBAL
    kind = kind_blocks.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)  # (T, T)
    allowed = kind != PatternKind.NONE
    return SparsePattern(allowed, kind, kind_blocks != PatternKind.NONE, plan, int(allowed.sum()), seq_len * seq_len)


def layers_to_reach(allowed: torch.Tensor, source: int, max_layers: int | None = None) -> torch.Tensor:
    """``(T,)`` long: after how many layers each query's output depends on token ``source`` (−1: never).

    One layer carries information from key ``j`` to query ``i`` when ``allowed[i, j]``; a token always keeps its
    own (the residual stream), so what a position has heard it keeps. ``max_layers`` defaults to T (enough: the
    set of positions reached grows by at least one per layer until it stops growing).
    """
    if allowed.ndim != 2 or allowed.shape[0] != allowed.shape[1] or allowed.dtype != torch.bool:
        raise ValueError(f"allowed must be a square boolean (T, T) pattern, got {allowed.dtype} {tuple(allowed.shape)}")
    seq_len = allowed.shape[0]
    if not 0 <= source < seq_len:
        raise ValueError(f"source must lie in [0, {seq_len}), got {source}")
    layers = torch.full((seq_len,), -1, dtype=torch.long)
    layers[source] = 0
    heard = layers == 0  # (T,) positions whose state depends on the source
    links = allowed.float()
    for layer in range(1, (max_layers or seq_len) + 1):
        now = heard | ((links @ heard.float()) > 0)  # a query hears the source if any key it sees had heard it
        if torch.equal(now, heard):
            break
        layers[now & ~heard] = layer
        heard = now
    return layers


COLOURS = ListedColormap(["white", "#4c72b0", "#dd8452", "#55a868"])  # none, window, random, global


def plot_pattern(ax, pattern: SparsePattern, title: str | None = None) -> None:
    """The pattern on ``ax``: window pairs blue, random orange, global green, skipped pairs white."""
    ax.imshow(pattern.kind.numpy(), cmap=COLOURS, vmin=0, vmax=3, interpolation="nearest")
    ax.set(xlabel="key position", ylabel="query position",
           title=title or f"{pattern.computed:,} of {pattern.full:,} scores ({pattern.fraction:.0%})")
    ax.title.set_fontsize(9)


def _draw(seq_len: int, block_size: int, window: int, global_blocks: int, random_blocks: int, seed: int) -> Figure:
    if seq_len % block_size:
        return message_figure(f"{seq_len} tokens do not split into blocks of {block_size}")
    if global_blocks > seq_len // block_size:
        return message_figure(f"only {seq_len // block_size} blocks: fewer than {global_blocks} global blocks")
    pattern = block_sparse_pattern(seq_len, block_size, window, global_blocks, random_blocks, seed=seed)
    not_global = (pattern.kind.diagonal() != PatternKind.GLOBAL).nonzero().flatten()
    source = int(not_global[0]) if len(not_global) else 0  # the first token that is not global
    reach = layers_to_reach(pattern.allowed, source)
    figure = Figure(figsize=(9.5, 4.6), layout="constrained")
    picture, bars = figure.subplots(1, 2, width_ratios=[1.25, 1])
    plot_pattern(picture, pattern)
    counts = [int((pattern.kind == kind).sum()) for kind in (PatternKind.WINDOW, PatternKind.RANDOM, PatternKind.GLOBAL)]
    bars.barh(["window", "random", "global"], counts, color=COLOURS.colors[1:])
    bars.axvline(seq_len * seq_len, color="black", lw=1)
    bars.set(xlim=(0, seq_len * seq_len * 1.05), xlabel=f"scores computed (line: T² = {seq_len * seq_len:,})")
    deepest = int(reach.max())
    heard = f"every token hears token {source} within {deepest} layer{'s' * (deepest != 1)}" \
        if bool((reach >= 0).all()) else f"some tokens never hear token {source}"
    bars.set_title(f"{pattern.fraction:.1%} of the T² scores;\n{heard}", fontsize=9)
    return figure


def pattern_explorer(seq_len: int = 64, *, block_size: int = 4, window: int = 1, global_blocks: int = 2,
                     random_blocks: int = 1, seed: int = 0) -> Explorer:
    """Sliders for the block size, window, global and random blocks over ``seq_len`` tokens (defaults: BigBird's
    pattern on 16 blocks of 4)."""
    sizes = [b for b in (1, 2, 4, 8, 16) if seq_len % b == 0]
    if block_size not in sizes:
        raise ValueError(f"block_size must divide the {seq_len} tokens: one of {sizes}")
    block_sparse_pattern(seq_len, block_size, window, global_blocks, random_blocks, seed=seed)  # clear errors now
    style = {"style": {"description_width": "140px"}, "layout": widgets.Layout(width="440px"), "continuous_update": False}
    controls = {
        "block_size": widgets.SelectionSlider(options=sizes, value=block_size, description="block size", **style),
        "window": widgets.IntSlider(window, min=0, max=max(4, window), description="window (blocks each side)", **style),
        "global_blocks": widgets.IntSlider(global_blocks, min=0, max=max(4, global_blocks), description="global blocks",
                                           **style),
        "random_blocks": widgets.IntSlider(random_blocks, min=0, max=max(3, random_blocks), description="random blocks",
                                           **style),
        "seed": widgets.IntSlider(seed, min=0, max=20, description="random seed", **style),
    }

    def draw(**values) -> Figure:
        return _draw(seq_len, **values)

    return Explorer("Sparse attention patterns: window, global and random blocks", controls, draw)
