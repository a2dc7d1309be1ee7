"""course_lib.viz: the figures show exactly the numbers they are given, and bad input is refused."""
from __future__ import annotations

import inspect

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from IPython.display import Code

import course_lib.attention
from course_lib import scaled_dot_product_attention, sinusoidal_positional_encoding
from course_lib.viz import plot_attention, plot_heads, plot_positional_encoding, show_source


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _weights(*shape: int) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape), dim=-1)


def _tick_texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


# ---------------------------------------------------------------- plot_attention


def test_heatmap_pixels_are_the_weights_rows_queries_columns_keys():
    weights = _weights(3, 5)  # 3 queries, 5 keys: not square, so a transpose would show
    ax = plot_attention(weights)
    image = ax.images[0].get_array()
    assert image.shape == (3, 5)
    np.testing.assert_allclose(image, weights.numpy(), rtol=1e-6)
    assert ax.get_xlabel() == "key" and ax.get_ylabel() == "query"


def test_heatmap_accepts_numpy_lists_and_a_batch_of_one():
    weights = _weights(1, 1, 4, 4)  # (B=1, H=1, T, T) straight from a model
    for given in (weights, weights.numpy(), weights.tolist()):
        ax = plot_attention(given)
        np.testing.assert_allclose(ax.images[0].get_array(), weights[0, 0].numpy(), rtol=1e-6)


def test_heatmap_token_labels_title_and_colorbar():
    queries, keys = ["le", "chat"], ["the", "cat", "sat"]
    ax = plot_attention(_weights(2, 3), queries, keys, title="cross-attention")
    assert _tick_texts(ax.get_yticklabels()) == queries
    assert _tick_texts(ax.get_xticklabels()) == keys
    assert ax.get_title() == "cross-attention"
    assert len(ax.figure.axes) == 2  # the heatmap and its colorbar
    assert ax.images[0].get_clim() == (0.0, 1.0)  # weights share one fixed scale


def test_heatmap_of_scores_uses_their_own_range():
    scores = torch.tensor([[-3.0, 2.0], [0.5, 7.0]])
    ax = plot_attention(scores, colorbar=False)
    assert ax.images[0].get_clim() == (-3.0, 7.0)
    assert len(ax.figure.axes) == 1


def test_small_heatmaps_are_annotated_with_their_values_large_ones_are_not():
    weights = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    ax = plot_attention(weights)
    assert sorted(text.get_text() for text in ax.texts) == ["0.00", "0.25", "0.75", "1.00"]
    assert len(plot_attention(_weights(12, 12)).texts) == 0
    assert len(plot_attention(weights, annotate=False).texts) == 0


def test_heatmap_draws_into_a_given_axes():
    figure, (left, right) = plt.subplots(1, 2)
    returned = plot_attention(_weights(2, 2), ax=right, colorbar=False)
    assert returned is right and len(right.images) == 1 and len(left.images) == 0


@pytest.mark.parametrize(
    ("weights", "kwargs", "error", "message"),
    [
        (torch.rand(4), {}, ValueError, "2 non-empty axes"),
        (torch.rand(2, 3, 3), {}, ValueError, "2 non-empty axes"),
        (torch.rand(0, 3), {}, ValueError, "non-empty"),
        (torch.tensor([[0.5, float("nan")]]), {}, ValueError, "NaN"),
        (torch.tensor([[0.0, float("-inf")]]), {}, ValueError, "masked scores"),
        ([["a", "b"]], {}, TypeError, "numbers"),
        (torch.rand(2, 3), {"key_labels": ["a", "b"]}, ValueError, "2 key_labels for 3"),
        (torch.rand(2, 3), {"query_labels": "ab"}, TypeError, "not one string"),
        (torch.rand(2, 3), {"annotate": "yes"}, ValueError, "annotate"),
    ],
)
def test_heatmap_rejects_bad_input_with_a_clear_message(weights, kwargs, error, message):
    with pytest.raises(error, match=message):
        plot_attention(weights, **kwargs)


# ---------------------------------------------------------------- plot_heads


def test_heads_grid_has_one_heatmap_per_head_in_order():
    q, k, v = torch.randn(3, 4, 8), torch.randn(3, 6, 8), torch.randn(3, 6, 8)
    _, weights = scaled_dot_product_attention(q, k, v)  # (H=3, T_q=4, T_k=6)
    figure = plot_heads(weights, list("abcd"), list("uvwxyz"), ncols=2, title="layer 0")
    head_axes, colorbar = figure.axes[:-1], figure.axes[-1]
    assert len(head_axes) == 3  # the empty fourth panel of the 2 x 2 grid is gone
    for h, ax in enumerate(head_axes):
        np.testing.assert_allclose(ax.images[0].get_array(), weights[h].numpy(), rtol=1e-6)
        assert ax.get_title() == f"head {h}"
        assert _tick_texts(ax.get_xticklabels()) == list("uvwxyz")
        assert ax.images[0].get_clim() == (0.0, 1.0)  # one scale for every head
    assert colorbar.get_ylabel() == "attention weight"
    assert figure.get_suptitle() == "layer 0"


def test_heads_accepts_bertviz_layer_shape_and_custom_titles():
    weights = _weights(1, 2, 3, 3)  # one layer in bertviz's format: (1, H, T, T)
    figure = plot_heads(weights, head_titles=["previous token", "first token"])
    assert [ax.get_title() for ax in figure.axes[:-1]] == ["previous token", "first token"]
    np.testing.assert_allclose(figure.axes[1].images[0].get_array(), weights[0, 1].numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("weights", "kwargs", "message"),
    [
        (torch.rand(3, 3), {}, "3 non-empty axes"),
        (torch.rand(2, 3, 3), {"head_titles": ["only one"]}, "1 head_titles for 2 heads"),
        (torch.rand(2, 3, 3), {"ncols": 0}, "ncols"),
        (torch.rand(2, 3, 3), {"query_labels": ["a"]}, "1 query_labels for 3"),
    ],
)
def test_heads_rejects_bad_input(weights, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_heads(weights, **kwargs)


# ---------------------------------------------------------------- plot_positional_encoding


def test_positional_table_is_drawn_as_is_on_a_symmetric_scale():
    table = sinusoidal_positional_encoding(20, 16)
    ax = plot_positional_encoding(table)
    np.testing.assert_allclose(ax.images[0].get_array(), table.numpy(), rtol=1e-6)
    assert ax.images[0].get_clim() == (-1.0, 1.0)
    assert ax.get_ylabel() == "position t" and ax.get_xlabel() == "feature i"
    assert "20 positions x 16 features" in ax.get_title()


def test_positional_table_must_be_two_dimensional():
    with pytest.raises(ValueError, match="table must have 2"):
        plot_positional_encoding(torch.rand(2, 3, 4))


# ---------------------------------------------------------------- show_source


def test_show_source_shows_the_installed_code_and_where_it_lives():
    shown = show_source(scaled_dot_product_attention)
    assert isinstance(shown, Code)
    header, _, body = shown.data.partition("\n")
    assert body == inspect.getsource(scaled_dot_product_attention)
    start, end = (int(n) for n in header.rsplit("lines ", 1)[1].split("-"))
    file_lines = inspect.getsource(course_lib.attention.scaled_dot_product).splitlines(keepends=True)
    assert "".join(file_lines[start - 1 : end]) == body  # the header's line numbers are right
    assert header.startswith("# course_lib/attention/scaled_dot_product.py, lines ")
    html = shown._repr_html_()  # what a notebook shows: pygments-highlighted spans
    assert "<span" in html and "scaled_dot_product_attention" in html


def test_show_source_without_header_and_of_a_module():
    assert show_source(course_lib.attention, header=False).data == inspect.getsource(course_lib.attention)


def test_show_source_refuses_objects_without_python_source():
    with pytest.raises(TypeError, match="cannot show the source"):
        show_source(len)
