"""course_lib.decoding.widgets: the explorer's distribution is the library's filters, the tree is generate's beam search."""
from __future__ import annotations

import pytest
import torch

from course_lib.attention.widgets import Explorer
from course_lib.decoding import generate
from course_lib.decoding.widgets import (
    beam_tree, best_leaf_ids, filtered_distribution, plot_beam_tree, sampling_explorer,
)
from course_lib.models.gpt import GPT, load_shakespeare_gpt


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    scores = torch.log(torch.tensor([0.1, 0.5, 0.25, 0.15]))
    result = filtered_distribution(scores, top_p=0.7)  # 0.5 alone < 0.7, 0.5 + 0.25 crosses it
    assert result.kept.tolist() == [False, True, True, False]
    assert result.kept_mass == pytest.approx(0.75)
    assert result.sampled_probs.tolist() == pytest.approx([0.0, 0.5 / 0.75, 0.25 / 0.75, 0.0])


def test_top_k_then_top_p_in_generate_order():
    scores = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    # top-k 3 renormalises to 4/9, 3/9, 2/9 before top-p: 4/9 + 3/9 = 0.78 >= 0.75 keeps two tokens
    result = filtered_distribution(scores, top_k=3, top_p=0.75)
    assert result.kept.tolist() == [True, True, False, False]
    assert result.sampled_probs.sum() == pytest.approx(1.0)


def test_temperature_sharpens_and_flattens():
    scores = torch.randn(50, generator=torch.Generator().manual_seed(0))
    cold, warm = filtered_distribution(scores, 0.5), filtered_distribution(scores, 2.0)
    assert cold.probs.max() > filtered_distribution(scores).probs.max() > warm.probs.max()
    assert torch.allclose(cold.probs, (scores / 0.5).softmax(-1))
    assert bool(cold.kept.all())  # no filter: everything kept, nothing renormalised
    assert torch.allclose(cold.sampled_probs, cold.probs)


@pytest.mark.parametrize("kwargs", [{"temperature_value": 0.0}, {"top_k": 0}, {"top_p": 1.5}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        filtered_distribution(torch.zeros(5), **kwargs)


def test_scores_must_be_one_row():
    with pytest.raises(ValueError, match="one row"):
        filtered_distribution(torch.zeros(2, 5))


@pytest.mark.parametrize("num_beams,steps", [(2, 4), (3, 5)])
def test_beam_tree_best_leaf_is_what_generate_returns(num_beams, steps):
    torch.manual_seed(0)
    model = GPT(vocab_size=40, context_length=32, dim=16, num_layers=2, num_heads=2, ffn_dim=32).eval()
    prompt = torch.tensor([[3, 7, 1]])
    nodes = beam_tree(model, prompt, num_beams=num_beams, steps=steps)
    expected = generate(model, prompt, max_new_tokens=steps, num_beams=num_beams)[0, 3:].tolist()
    assert best_leaf_ids(nodes) == expected
    for step in range(1, steps + 1):
        assert sum(node.kept for node in nodes if node.step == step) == num_beams
    kept_parents = {node.parent for node in nodes if node.step > 1}
    assert all(nodes[parent].kept for parent in kept_parents)  # only surviving beams are expanded


def test_explorer_and_tree_draw_with_the_shakespeare_gpt():
    model, tokenizer = load_shakespeare_gpt()
    explorer = sampling_explorer(model, tokenizer, "ROMEO:\nI will", max_new_tokens=5)
    assert isinstance(explorer, Explorer)
    explorer.controls["top_k"].value = 10
    assert explorer.png()[:4] == b"\x89PNG"
    nodes = beam_tree(model, torch.tensor([tokenizer.encode("ROMEO:")]), num_beams=2, steps=2)
    assert plot_beam_tree(nodes, tokenizer, "ROMEO:").axes
