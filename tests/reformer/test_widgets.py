"""course_lib.reformer.widgets: the LSH explorer's pattern is what the library's LSH attention computes."""
from __future__ import annotations

from itertools import combinations

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from course_lib.attention.widgets import Explorer
from course_lib.reformer import LSHSelfAttention, random_rotations
from course_lib.reformer.widgets import clustered_vectors, lsh_explorer, lsh_pattern, spelling_vectors


def _library_output(vectors, num_buckets, num_hashes, chunk_length, seed):
    """LSHSelfAttention with the identity as shared QK projection: its queries are ``vectors``."""
    torch.manual_seed(seed)
    dim = vectors.shape[1]
    layer = LSHSelfAttention(dim, 1, dim, chunk_length, num_buckets, num_hashes=num_hashes)
    with torch.no_grad():
        layer.query_key.weight.copy_(torch.eye(dim))
        rotations = random_rotations(1, dim, num_hashes, num_buckets, seed=seed)
        return layer(vectors[None], rotations=rotations)[0], layer.value(vectors)


@pytest.mark.parametrize("num_buckets,num_hashes,chunk_length", [(8, 1, 4), (4, 2, 8), (16, 3, 4), (2, 4, 2)])
def test_lsh_weights_times_values_equal_the_library_layer(num_buckets, num_hashes, chunk_length):
    vectors, _ = clustered_vectors(32, 12, 5, seed=3)
    pattern = lsh_pattern(vectors, num_buckets, num_hashes, chunk_length, seed=7)
    expected, values = _library_output(vectors, num_buckets, num_hashes, chunk_length, seed=7)
    torch.testing.assert_close(pattern.lsh_weights @ values, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pattern.lsh_weights.sum(-1), torch.ones(32))


def test_one_chunk_is_full_attention_like_the_library():
    vectors, _ = clustered_vectors(16, 8, 3, seed=1)
    pattern = lsh_pattern(vectors, 4, 2, chunk_length=16)
    expected, values = _library_output(vectors, 4, 2, 16, seed=0)
    torch.testing.assert_close(pattern.full_weights @ values, expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(pattern.lsh_weights, pattern.full_weights)
    assert pattern.coverage == pytest.approx(1.0, abs=1e-5) and pattern.scored_pairs == 2 * 16 * 16


def _brute_force_allowed(buckets: torch.Tensor, chunk_length: int) -> set[tuple[int, int]]:
    """Sort each round's positions by (bucket, position) in plain Python, chain the rounds, cut into
    chunks; each query sees its chunk and the one before it (the first sees the very last)."""
    seq_len = buckets.shape[1]
    items = [p for r in range(buckets.shape[0]) for p in sorted(range(seq_len), key=lambda p: (int(buckets[r, p]), p))]
    chunks = [items[i:i + chunk_length] for i in range(0, len(items), chunk_length)]
    pairs = set()
    for n, chunk in enumerate(chunks):
        for query in chunk:
            pairs.update((query, key) for key in chunk + chunks[n - 1] if key != query)
    return pairs


@pytest.mark.parametrize("num_hashes", [1, 3])
def test_allowed_pairs_match_a_plain_python_sort_and_chunk(num_hashes):
    vectors, _ = clustered_vectors(24, 8, 4, seed=5)
    pattern = lsh_pattern(vectors, 6, num_hashes, 4, seed=2)
    got = {tuple(pair) for pair in pattern.allowed.nonzero().tolist()}
    assert got == _brute_force_allowed(pattern.buckets, 4)
    outside = pattern.lsh_weights[~pattern.allowed & ~torch.eye(24, dtype=torch.bool)]
    assert outside.abs().max() == 0  # no weight on keys no chunk brings together
    for r in range(num_hashes):  # sorted: buckets non-decreasing, positions increasing within a bucket
        keys = pattern.buckets[r][pattern.sorted_positions[r]] * 100 + pattern.sorted_positions[r]
        assert torch.all(keys[1:] > keys[:-1])


def test_more_hash_rounds_reach_more_keys_and_more_of_the_attention_mass():
    vectors, _ = clustered_vectors(64, 16, 6, seed=0)
    patterns = [lsh_pattern(vectors, 16, rounds, 4, seed=0) for rounds in (1, 4)]
    assert patterns[1].allowed.sum() > patterns[0].allowed.sum()
    assert patterns[1].coverage > patterns[0].coverage
    assert patterns[0].scored_pairs == 64 * 8 and patterns[1].scored_pairs == 4 * 64 * 8


def test_spelling_vectors_give_repeated_words_one_vector_and_one_bucket():
    words = ["the", "cat", "and", "the", "hat", "and", "the", "bat"]
    vectors = spelling_vectors(words)
    assert torch.equal(vectors[0], vectors[3]) and not torch.equal(vectors[0], vectors[1])
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(vectors[1], vectors[4], dim=0) > cosine(vectors[1], vectors[2], dim=0)  # cat~hat > cat~and
    buckets = lsh_pattern(vectors, 4, 2, 4).buckets
    assert torch.equal(buckets[:, 0], buckets[:, 3]) and torch.equal(buckets[:, 0], buckets[:, 6])


@pytest.mark.parametrize("kwargs,message", [
    ({"chunk_length": 5}, "not a multiple of the chunk length 5"),
    ({"num_buckets": 5}, "num_buckets must be even"),
])
def test_bad_settings_get_clear_errors(kwargs, message):
    vectors, _ = clustered_vectors(32)
    with pytest.raises(ValueError, match=message):
        lsh_pattern(vectors, **{"num_buckets": 4, "chunk_length": 4, **kwargs})


def test_explorer_draws_every_setting_and_rejects_a_chunk_length_that_does_not_divide():
    explorer = lsh_explorer()
    assert isinstance(explorer, Explorer) and explorer.png()[:4] == b"\x89PNG"
    explorer.controls["num_hashes"].value = 3
    explorer.controls["chunk_length"].value = 8
    assert len(explorer.figure().axes) >= 3
    with pytest.raises(ValueError, match="must divide"):
        lsh_explorer(chunk_length=5)


def _labels_clear(figure, dpi: float = 90) -> list[str]:
    """Every pair of labels whose boxes overlap, and every strip label that touches a chunk line, as drawn at ``dpi``
    (the explorer's PNG is 90 dpi): the boxes come from matplotlib's own renderer."""
    figure.set_dpi(dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    clashes = []
    for ax in figure.axes:
        labels = [t for t in ax.texts + ax.get_xticklabels() + ax.get_yticklabels() if t.get_visible() and t.get_text()]
        boxes = [(t.get_text(), t.get_window_extent(renderer).padded(0.5)) for t in labels]
        clashes += [f"{a} / {b}" for (a, box_a), (b, box_b) in combinations(boxes, 2) if box_a.overlaps(box_b)]
        for line in ax.lines:  # the chunk borders, horizontal lines across the strip
            y = ax.transData.transform((0, line.get_ydata()[0]))[1]
            half_width = line.get_linewidth() * dpi / 72 / 2
            clashes += [f"{t.get_text()} / line at {y:.0f}" for t in ax.texts
                        if t.get_window_extent(renderer).y0 - half_width < y < t.get_window_extent(renderer).y1 + half_width]
    return clashes


@pytest.mark.parametrize("settings", [{}, {"num_hashes": 4}, {"num_hashes": 4, "chunk_length": 8},
                                      {"num_buckets": 16, "num_hashes": 2, "chunk_length": 2}])
def test_explorer_labels_do_not_overlap(settings):
    """The 32 default tokens are each labelled in the sorted strip: no label may run into another or into a chunk line."""
    explorer = lsh_explorer()
    for name, value in settings.items():
        explorer.controls[name].value = value
    figure = explorer.figure()
    assert len(figure.axes[0].texts) == 32 * explorer.controls["num_hashes"].value
    assert _labels_clear(figure) == []


def test_sentence_explorer_labels_do_not_overlap():
    words = "the cat sat on the mat the dog sat on the log the cat saw dogs".split()
    explorer = lsh_explorer(spelling_vectors(words), words, num_buckets=4, num_hashes=2, chunk_length=4)
    assert _labels_clear(explorer.figure()) == []
