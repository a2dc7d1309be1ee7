"""The efficient-attention chapter's explorer: LSH buckets, sorted and chunked, against full attention.

* :func:`lsh_pattern` is the pure compute function: hash ``T`` shared query-key vectors into
  buckets (:func:`~course_lib.reformer.hash_vectors`), sort by bucket and position
  (:func:`~course_lib.reformer.sort_by_bucket`), cut into chunks that also see the chunk before
  them (:func:`~course_lib.reformer.look_adjacent`) and return which keys each query can see and
  the attention weights LSH self-attention gives them, beside the full attention weights.
* :func:`clustered_vectors` draws random vectors around a few directions (something to find);
  :func:`spelling_vectors` turns the words of a sentence into vectors by their letters, so that
  repeated and similar words point the same way (a stand-in for a trained model's queries).
* :func:`lsh_explorer` is the widget: sliders for the number of buckets, hash rounds and the
  chunk length.

How the weights are read off the library: :func:`~course_lib.reformer.local_attention.attend_in_chunks`
is run with the one-hot vectors of the positions as *values*, so each query's output is its row
of attention weights over the positions (a key seen twice gets both weights, exactly as the
library's output does). Rounds are combined by their softmax normalisers as in
:class:`~course_lib.reformer.LSHSelfAttention`; ``tests/reformer/test_widgets.py`` checks that
``weights @ values`` equals that layer's output. As in :mod:`course_lib.attention.widgets`, the figure is a
plain image output. Not covered: causal masking, padding, multiple heads (one head, bidirectional).
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from ..viz import Explorer
from . import hash_vectors, look_adjacent, normalise_keys, random_rotations, sort_by_bucket, total_buckets
from .local_attention import SELF_MASK_VALUE, attend_in_chunks, validate_chunking

__all__ = ["LSHPattern", "clustered_vectors", "lsh_explorer", "lsh_pattern", "spelling_vectors"]


class LSHPattern(NamedTuple):
    buckets: torch.Tensor  # (R, T) bucket of each position in each hash round
    sorted_positions: torch.Tensor  # (R, T) positions of round r in sorted order (bucket, then position)
    allowed: torch.Tensor  # (T, T) bool: key j sits in query i's chunk or the one before, in some round (i ≠ j)
    full_weights: torch.Tensor  # (T, T) shared-QK softmax over all keys (a token attends to itself only as last resort)
    lsh_weights: torch.Tensor  # (T, T) what LSH self-attention gives each key, rounds combined
    coverage: float  # mean over queries of the full attention mass that falls on allowed keys
    scored_pairs: int  # query-key scores LSH computes (R·T·2c) ...
    full_pairs: int  # ... against T·T for full attention


def _validate_vectors(vectors: torch.Tensor) -> torch.Tensor:
    vectors = torch.as_tensor(vectors, dtype=torch.float32)
    if vectors.ndim != 2 or vectors.shape[0] < 2:
        raise ValueError(f"vectors must have shape (T, d) with T >= 2, got {tuple(vectors.shape)}")
    return vectors


def _full_shared_qk_weights(vectors: torch.Tensor) -> torch.Tensor:
    scores = vectors @ normalise_keys(vectors).T  # (T, T) shared QK: keys are the normalised queries
    scores.fill_diagonal_(SELF_MASK_VALUE)  # as in the library: itself only if nothing else is allowed
    return torch.softmax(scores, dim=-1)


def lsh_pattern(
    vectors: torch.Tensor,
    num_buckets: int = 8,
    num_hashes: int = 1,
    chunk_length: int = 8,
    *,
    seed: int = 0,
    rotations: torch.Tensor | None = None,
) -> LSHPattern:
    """Hash, sort and chunk ``vectors (T, d)`` as LSH self-attention does (one head, one chunk of look-back).

    ``rotations (1, d, num_hashes, num_buckets/2)`` default to :func:`~course_lib.reformer.random_rotations`
    drawn from ``seed``. ``T`` must be a multiple of ``chunk_length``; with ``T <= chunk_length``
    everything is one chunk and LSH attention is full attention, as in the library.
    """
    vectors = _validate_vectors(vectors)
    seq_len, dim = vectors.shape
    num_chunks = validate_chunking(seq_len, chunk_length)
    if rotations is None:
        rotations = random_rotations(1, dim, num_hashes, num_buckets, seed=seed)
    qk = vectors[None, None]  # (1, 1, T, d)
    buckets = hash_vectors(qk, rotations, num_buckets)  # (1, 1, R, T)
    rounds = buckets.shape[2]
    order, _ = sort_by_bucket(buckets, total_buckets(num_buckets))  # (1, 1, R·T)
    sorted_positions = order % seq_len  # (1, 1, R·T)
    full = _full_shared_qk_weights(vectors)

    if num_chunks == 1:  # one chunk: the library skips hashing and attends to everything
        allowed = ~torch.eye(seq_len, dtype=torch.bool)
        lsh = full.clone()
    else:
        query_positions = sorted_positions.reshape(1, 1, -1, chunk_length)  # (1, 1, N', c)
        key_positions = look_adjacent(query_positions, 1, 0)  # (1, 1, N', 2c)
        one_hot = torch.eye(seq_len)  # values = one-hot positions, so outputs are weight rows

        def gather(table, positions):  # (T, e) -> (1, 1, N', k, e)
            return table[positions]

        out, log_normaliser = attend_in_chunks(
            gather(vectors, query_positions), gather(normalise_keys(vectors), key_positions),
            gather(one_hot, key_positions), query_positions, key_positions, mask_self=True,
        )  # (1, 1, N', c, T), (1, 1, N', c)
        per_item = torch.zeros(rounds * seq_len, seq_len)  # rows in sorted order: weights over positions
        per_item[torch.arange(rounds * seq_len)] = out.reshape(-1, seq_len)
        normaliser = log_normaliser.reshape(-1)
        round_of_item = torch.arange(rounds * seq_len) // seq_len
        position_of_item = sorted_positions.reshape(-1)
        weights = torch.zeros(rounds, seq_len, seq_len)  # (R, T, T)
        log_z = torch.zeros(rounds, seq_len)  # (R, T)
        weights[round_of_item, position_of_item] = per_item
        log_z[round_of_item, position_of_item] = normaliser
        round_weights = torch.softmax(log_z, dim=0)  # (R, T): rounds combined by their normalisers
        lsh = (weights * round_weights[..., None]).sum(0)

        allowed = torch.zeros(seq_len, seq_len, dtype=torch.bool)
        queries = query_positions[0, 0, :, :, None].expand(-1, -1, key_positions.shape[-1])  # (N', c, 2c)
        keys = key_positions[0, 0, :, None, :].expand_as(queries)
        allowed[queries.reshape(-1), keys.reshape(-1)] = True
        allowed.fill_diagonal_(False)

    coverage = float((full * allowed).sum(-1).mean())
    scored = rounds * seq_len * (2 * chunk_length if num_chunks > 1 else seq_len)
    return LSHPattern(buckets[0, 0], sorted_positions.reshape(rounds, seq_len), allowed, full, lsh,
                      coverage, scored, seq_len * seq_len)


def clustered_vectors(num_tokens: int = 32, dim: int = 16, num_clusters: int = 4, *, spread: float = 0.3,
                      length: float = 6.0, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """``num_tokens`` random vectors around ``num_clusters`` random directions, and labels ``"A3"`` (cluster, index).

    The cluster centres have norm ``length``; with shared QK the scores scale with it, so long vectors give
    peaked attention (mostly inside a cluster), short ones flat attention. ``spread`` is the noise relative to it.
    """
    if num_tokens < 2 or dim < 2 or num_clusters < 1:
        raise ValueError("need num_tokens >= 2, dim >= 2 and num_clusters >= 1")
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_clusters, dim, generator=generator), dim=-1) * length
    cluster = torch.randint(0, num_clusters, (num_tokens,), generator=generator)
    vectors = centres[cluster] + spread * length * torch.randn(num_tokens, dim, generator=generator) / dim**0.5
    return vectors, [f"{chr(65 + int(c))}{i}" for i, c in enumerate(cluster)]


def spelling_vectors(words: list[str], dim: int = 16) -> torch.Tensor:
    """One vector per word: the sum of fixed pseudo-random vectors of its letter trigrams (``#th``, ``the``, ``he#``).

    The same word always gets the same vector and words sharing letters point in similar directions;
    no model is involved, so this only stands in for the queries a trained model would compute.
    """
    if not words:
        raise ValueError("need at least one word")
    rows = []
    for word in words:
        padded = f"#{word.lower()}#"
        total = torch.zeros(dim)
        for i in range(max(len(padded) - 2, 1)):
            digest = hashlib.sha256(padded[i:i + 3].encode()).digest()
            seed = int.from_bytes(digest[:8], "little")
            total += torch.randn(dim, generator=torch.Generator().manual_seed(seed))
        rows.append(total / total.norm().clamp_min(1e-6) * 3)
    return torch.stack(rows)  # (T, d)


def _draw(figure: Figure, pattern: LSHPattern, labels: list[str], chunk_length: int, num_buckets: int) -> None:
    strips, full_ax, lsh_ax = figure.subplots(1, 3, width_ratios=[1.1, 1, 1])
    rounds, seq_len = pattern.buckets.shape
    cmap = "tab20" if num_buckets > 10 else "tab10"
    # left: per round, the positions in sorted order coloured by bucket; chunk borders as lines
    sorted_buckets = torch.stack([pattern.buckets[r][pattern.sorted_positions[r]] for r in range(rounds)])
    strips.imshow(sorted_buckets.T.numpy(), aspect="auto", cmap=cmap, vmin=0, vmax=max(num_buckets - 1, 1),
                  interpolation="nearest")
    for r in range(rounds):
        for i, position in enumerate(pattern.sorted_positions[r].tolist()):
            strips.text(r, i, labels[position], ha="center", va="center", fontsize=6)
    for border in range(chunk_length, seq_len, chunk_length):
        strips.axhline(border - 0.5, color="black", lw=1.2)
    strips.set(xticks=range(rounds), xticklabels=[f"round {r + 1}" for r in range(rounds)], yticks=[],
               title="sorted by bucket (colour),\nthen position; lines = chunks")
    strips.title.set_fontsize(9)
    top = float(torch.maximum(pattern.full_weights.max(), pattern.lsh_weights.max()))
    for ax, weights, title in ((full_ax, pattern.full_weights, f"full attention: {pattern.full_pairs:,} scores"),
                               (lsh_ax, pattern.lsh_weights, f"LSH attention: {pattern.scored_pairs:,} scores")):
        ax.imshow(weights.numpy(), cmap="Blues", vmin=0, vmax=top)  # one colour scale for both panels
        ax.set(xlabel="key", ylabel="query", title=title)
        ax.title.set_fontsize(9)
        step = max(seq_len // 16, 1)
        ax.set_xticks(range(0, seq_len, step), [labels[i] for i in range(0, seq_len, step)], fontsize=6, rotation=90)
        ax.set_yticks(range(0, seq_len, step), [labels[i] for i in range(0, seq_len, step)], fontsize=6)
    hidden = (~pattern.allowed).float().numpy()
    lsh_ax.imshow(hidden, cmap="Greys", alpha=0.15 * hidden, vmin=0, vmax=1)  # grey: keys out of reach
    figure.suptitle(f"{pattern.coverage:.0%} of the full attention mass falls on keys LSH lets each query see",
                    fontsize=10)


def figure_height(seq_len: int) -> float:
    """Inches: the sorted strip labels every token on its own row, so rows need room for a 6-point label
    clear of its neighbours and of the chunk lines (``tests/reformer/test_widgets.py`` measures the boxes)."""
    return max(4.4, 2.0 + 0.11 * seq_len)


def lsh_explorer(vectors: torch.Tensor | None = None, labels: list[str] | None = None, *, num_buckets: int = 4,
                 num_hashes: int = 1, chunk_length: int = 4) -> Explorer:
    """Sliders for buckets, hash rounds and chunk length over ``vectors (T, d)`` (default: 32 clustered vectors)."""
    if vectors is None:
        vectors, default_labels = clustered_vectors()
        labels = labels or default_labels
    vectors = _validate_vectors(vectors)
    seq_len = vectors.shape[0]
    labels = [str(i) for i in range(seq_len)] if labels is None else list(labels)
    if len(labels) != seq_len:
        raise ValueError(f"got {len(labels)} labels for {seq_len} vectors")
    lengths = [c for c in range(2, seq_len + 1) if seq_len % c == 0]
    if chunk_length not in lengths:
        raise ValueError(f"chunk_length must divide the {seq_len} tokens: one of {lengths}")
    style = {"style": {"description_width": "110px"}, "layout": widgets.Layout(width="420px"), "continuous_update": False}
    controls = {
        "num_buckets": widgets.IntSlider(num_buckets, min=2, max=16, step=2, description="buckets", **style),
        "num_hashes": widgets.IntSlider(num_hashes, min=1, max=4, description="hash rounds", **style),
        "chunk_length": widgets.SelectionSlider(options=lengths, value=chunk_length, description="chunk length",
                                                **style),
        "seed": widgets.IntSlider(0, min=0, max=20, description="rotation seed", **style),
    }

    def draw(num_buckets: int, num_hashes: int, chunk_length: int, seed: int) -> Figure:
        pattern = lsh_pattern(vectors, num_buckets, num_hashes, chunk_length, seed=seed)
        figure = Figure(figsize=(12, figure_height(seq_len)), layout="constrained")
        _draw(figure, pattern, labels, chunk_length, num_buckets)
        return figure

    return Explorer("LSH attention: hash, sort, chunk", controls, draw)
