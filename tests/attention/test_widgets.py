"""course_lib.attention.widgets: the explorers compute real attention and build (and redraw) headless."""
from __future__ import annotations

import math

import ipywidgets
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from course_lib import causal_mask, padding_mask, scaled_dot_product_attention
from course_lib.attention.widgets import (
    TOY_KEY_LABELS, TOY_KEYS, Explorer, attention_explorer, mask_explorer, masked_self_attention,
    random_dot_product_attention, scaling_explorer, toy_query_attention,
)

# ---------------------------------------------------------------- pure compute functions


@pytest.mark.parametrize(("angle", "length", "scale"), [(0, 1.0, 1.0), (135, 2.5, 0.3), (270, 6.0, 1 / math.sqrt(2))])
def test_toy_query_weights_are_library_attention(angle, length, scale):
    result = toy_query_attention(angle, length, scale)
    query = length * torch.tensor([[math.cos(math.radians(angle)), math.sin(math.radians(angle))]])  # (1, 2)
    expected_out, expected_weights = scaled_dot_product_attention(query, TOY_KEYS, TOY_KEYS, scale=scale)
    torch.testing.assert_close(result.query, query[0])
    torch.testing.assert_close(result.weights, expected_weights[0])
    torch.testing.assert_close(result.output, expected_out[0])
    torch.testing.assert_close(result.scores, TOY_KEYS @ query[0] * scale)
    torch.testing.assert_close(result.weights, torch.softmax(result.scores, dim=0))


def test_toy_docstring_example_and_zero_query_attends_uniformly():
    two_keys = [[1.0, 0.0], [-1.0, 0.0]]
    result = toy_query_attention(0.0, 1.0, keys=two_keys)
    assert result.weights[0].item() == pytest.approx(math.e / (math.e + 1 / math.e))
    uniform = toy_query_attention(40.0, 0.0)
    torch.testing.assert_close(uniform.weights, torch.full((len(TOY_KEYS),), 1 / len(TOY_KEYS)))


def test_longer_queries_saturate_the_softmax_and_a_smaller_scale_undoes_it():
    # 160° points at "car", far from the other keys
    largest = [toy_query_attention(160, length, 1.0).weights.max().item() for length in (0.5, 1, 2, 4, 8)]
    assert largest == sorted(largest) and largest[-1] > 0.95 and largest[0] < 0.4
    soft_again = toy_query_attention(160, 8.0, scale=1 / 8).weights.max().item()
    assert soft_again == pytest.approx(toy_query_attention(160, 1.0, scale=1.0).weights.max().item())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": -1.0}, "length must be >= 0"),
        ({"length": float("nan")}, "length must be >= 0"),
        ({"scale": 0.0}, "scale must be > 0"),
        ({"keys": torch.rand(4, 3)}, r"keys must have shape \(num_keys, 2\)"),
    ],
)
def test_toy_rejects_bad_input(kwargs, message):
    arguments = {"angle_deg": 0.0, "length": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        toy_query_attention(**arguments)


def test_random_scores_spread_like_sqrt_d_unless_scaled():
    for dim in (16, 256):
        unscaled = random_dot_product_attention(dim, scaled=False)
        scaled = random_dot_product_attention(dim, scaled=True)
        assert unscaled.score_std == pytest.approx(math.sqrt(dim), rel=0.1)
        assert scaled.score_std == pytest.approx(1.0, rel=0.1)
        torch.testing.assert_close(scaled.scores, unscaled.scores / math.sqrt(dim))  # same vectors
        for result in (scaled, unscaled):
            torch.testing.assert_close(result.weights, torch.softmax(result.scores, dim=0))
    assert random_dot_product_attention(1024, scaled=False).weights.max() > 0.99  # saturated
    assert random_dot_product_attention(1024, scaled=True).weights.max() < 0.9


def test_random_vectors_of_a_smaller_d_are_prefixes_of_the_larger_ones():
    # With one coordinate the score is q_0 * k_0; adding coordinates must keep that first term.
    one = random_dot_product_attention(1, scaled=False).scores
    two = random_dot_product_attention(2, scaled=False).scores
    assert not torch.allclose(one, two)
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 1024, generator=generator)
    keys = torch.randn(8, 1024, generator=generator)
    torch.testing.assert_close(one, keys[:, 0] * query[0, 0])
    torch.testing.assert_close(two, keys[:, :2] @ query[0, :2])


def test_random_rejects_bad_dim():
    with pytest.raises(ValueError, match="dim must be an integer"):
        random_dot_product_attention(0, scaled=True)
    with pytest.raises(ValueError, match="dim must be an integer"):
        random_dot_product_attention(2048, scaled=True)


@pytest.mark.parametrize(("causal", "valid_length"), [(True, 8), (False, 5), (True, 3)])
def test_masked_self_attention_uses_the_course_masks(causal, valid_length):
    mask, weights = masked_self_attention(8, causal, valid_length)
    expected_mask = padding_mask([valid_length], max_len=8)[0].expand(8, 8)
    if causal:
        expected_mask = expected_mask & causal_mask(8)
    assert torch.equal(mask, expected_mask)
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(8))
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))  # the documented random tokens
    torch.testing.assert_close(weights, scaled_dot_product_attention(x, x, x, mask)[1])
    expected = torch.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=mask)
    torch.testing.assert_close(weights @ x, expected)


def test_masked_self_attention_rejects_bad_lengths():
    with pytest.raises(ValueError, match="valid_length"):
        masked_self_attention(4, causal=True, valid_length=0)
    with pytest.raises(ValueError, match="valid_length"):
        masked_self_attention(4, causal=True, valid_length=5)


# ---------------------------------------------------------------- the widgets, headless




def test_attention_explorer_builds_headless_and_draws_the_library_weights():
    explorer = attention_explorer()
    assert isinstance(explorer.widget, ipywidgets.VBox)
    assert set(explorer.controls) == {"angle_deg", "length", "scale"}
    assert all(control in explorer.widget.children for control in explorer.controls.values())
    explorer.controls["angle_deg"].value = 200
    explorer.controls["length"].value = 3.0
    figure = explorer.figure()
    assert isinstance(figure, Figure)
    bars = figure.axes[1].patches
    expected = toy_query_attention(200, 3.0, explorer.controls["scale"].value).weights
    np.testing.assert_allclose([bar.get_height() for bar in bars], expected.numpy(), rtol=1e-6)
    assert [label.get_text() for label in figure.axes[1].get_xticklabels()] == list(TOY_KEY_LABELS)


def test_explorer_shows_a_picture_and_redraws_it_when_a_control_moves(displayed):
    calls, handle = displayed
    explorer = scaling_explorer()
    explorer._ipython_display_()
    (controls, no_id), (picture, display_id) = calls
    assert controls is explorer.widget and no_id is None
    assert display_id is True and picture.data.startswith(b"\x89PNG")  # a real image: a notebook run headless keeps it
    explorer.controls["scaled"].value = True
    explorer.controls["dim"].value = 1024
    assert len(handle.updates) == 2
    assert handle.updates[-1].data.startswith(b"\x89PNG") and handle.updates[-1].data != picture.data


def test_scaling_explorer_figure_follows_its_controls():
    explorer = scaling_explorer()
    explorer.controls["dim"].value = 256
    explorer.controls["scaled"].value = False
    figure = explorer.figure()
    expected = random_dot_product_attention(256, scaled=False)
    np.testing.assert_allclose([bar.get_height() for bar in figure.axes[0].patches], expected.weights.numpy(), rtol=1e-6)
    assert "d = 256, not scaled" in figure.get_suptitle()


def test_mask_explorer_heatmap_is_the_masked_weights():
    explorer = mask_explorer(tokens=["a", "b", "c", "d"])
    explorer.controls["causal"].value = False
    explorer.controls["valid_length"].value = 2
    ax = explorer.figure().axes[0]
    _, weights = masked_self_attention(4, causal=False, valid_length=2)
    np.testing.assert_allclose(ax.images[0].get_array(), weights.numpy(), rtol=1e-6)
    assert [label.get_text() for label in ax.get_xticklabels()] == ["a", "b", "<pad>", "<pad>"]
    assert len(ax.patches) == 8  # the hatched masked cells: 4 queries x 2 padding keys


def test_explorers_reject_bad_arguments():
    with pytest.raises(ValueError, match="N labels"):
        attention_explorer(keys=torch.rand(3, 2), key_labels=["a", "b"])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        mask_explorer(tokens=["alone"])


def test_explorer_passes_control_values_by_name():
    seen = []
    explorer = Explorer("t", {"n": ipywidgets.IntSlider(3)}, lambda n: seen.append(n) or Figure())
    explorer.figure()
    assert seen == [3]
