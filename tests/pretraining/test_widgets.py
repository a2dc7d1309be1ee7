"""course_lib.pretraining.widgets: the objectives figure says what each objective trains, and the masking picture
reads back exactly what the library's masking did."""
from __future__ import annotations

import pytest
import torch

from course_lib.pretraining.masking import IGNORE_INDEX
from course_lib.pretraining.widgets import masking_outcome, objective_targets, plot_masking, plot_objectives

MASK = 4


def test_causal_targets_are_the_next_tokens_and_masked_targets_only_the_chosen_ones():
    tokens = ["<s>", "la", "suno", "brilas", "."]
    targets = objective_targets(tokens, chosen=[2])
    assert targets["causal"] == ["la", "suno", "brilas", ".", None]  # the last position has nothing to predict
    assert targets["masked"] == [None, None, "suno", None, None]


def test_objectives_figure_shows_a_causal_triangle_beside_a_full_grid():
    figure = plot_objectives(["a", "b", "c", "d"], chosen=[1])
    causal, masked = (ax.images[0].get_array() for ax in figure.axes)
    assert (causal == torch.ones(4, 4).tril().numpy()).all()
    assert (masked == 1).all()
    assert [t.get_text() for t in figure.axes[1].get_xticklabels()] == ["a", "<mask>", "c", "d"]
    assert [t.get_text() for t in figure.axes[1].texts] == ["no loss", "→ b", "no loss", "no loss"]


def test_objectives_refuse_positions_outside_the_sentence():
    with pytest.raises(ValueError, match="outside"):
        objective_targets(["a", "b"], chosen=[2])


def test_masking_outcome_names_every_kind_of_position():
    original = torch.tensor([0, 10, 11, 12, 13, 2])
    corrupted = torch.tensor([0, 10, MASK, 40, 13, 2])
    labels = torch.tensor([IGNORE_INDEX, IGNORE_INDEX, 11, 12, 13, IGNORE_INDEX])
    assert masking_outcome(original, corrupted, labels, MASK) == [
        "not chosen", "not chosen", "→ <mask>", "→ random token", "chosen, unchanged", "not chosen"]


@pytest.mark.parametrize("corrupted,labels,message", [
    ([5, 6], [IGNORE_INDEX, 7], "label must be the original"),  # a label that is not the original token
    ([9, 6], [IGNORE_INDEX, IGNORE_INDEX], "not chosen must keep"),  # a token changed without a label
])
def test_masking_outcome_refuses_an_output_no_masking_rule_can_give(corrupted, labels, message):
    with pytest.raises(ValueError, match=message):
        masking_outcome(torch.tensor([5, 6]), torch.tensor(corrupted), torch.tensor(labels), MASK)


def test_masking_picture_counts_what_it_draws():
    kinds = ["not chosen", "→ <mask>", "→ random token", "not chosen"]
    figure = plot_masking(["a", "b", "c", "d"], ["a", "<mask>", "x", "d"], kinds)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["not chosen: 2", "→ <mask>: 1", "→ random token: 1", "chosen, unchanged: 0"]
    assert "2 of 4 tokens chosen" in figure.axes[0].get_title()
