"""course_lib.pretraining.widgets: the objectives figure says what each objective trains, and the masking picture
reads back exactly what the library's masking did."""
from __future__ import annotations

import json

import pytest
import torch

from course_lib.pretraining.masking import IGNORE_INDEX, mask_tokens
from course_lib.pretraining.widgets import (
    fill_mask_explorer, mask_sentence, masking_explorer, masking_outcome, objective_targets, plot_masking,
    plot_objectives, plot_pretrain_adapt,
)
from course_lib.tokenization.widgets import readable_token

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
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ["not chosen: 2", "→ <mask>: 1", "→ random token: 1", "chosen, unchanged: 0"]
    assert "2 of 4 tokens chosen" in figure.axes[0].get_title()


class _Prediction:
    def __init__(self, token, probability):
        self.token, self.probability = token, probability


def _fake_fill(model, tokenizer, text, top_k):
    if text.count("<mask>") != 1:
        raise ValueError(f"fill_mask fills exactly one <mask>; the text has {text.count('<mask>')}")
    return [_Prediction(f" w{i}", 0.5 / (i + 1)) for i in range(top_k)]


def test_fill_mask_explorer_draws_what_fill_gives_most_probable_on_top():
    explorer = fill_mask_explorer(None, None, ["La suno <mask>."], fill=_fake_fill, top_k=3)
    ax = explorer.figure().axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == pytest.approx([0.5 / 3, 0.5 / 2, 0.5])  # bottom to top: the most probable drawn last, on top
    assert [t.get_text() for t in ax.get_yticklabels()] == ["' w2'", "' w1'", "' w0'"]


def test_fill_mask_explorer_shows_the_refusal_instead_of_a_traceback():
    explorer = fill_mask_explorer(None, None, ["La suno <mask>."], fill=_fake_fill)
    explorer.controls["text"].value = "no mask here"
    texts = [t.get_text() for t in explorer.figure().axes[0].texts]
    assert any("exactly one <mask>" in t for t in texts)


def test_fill_mask_explorer_in_the_book_switches_between_the_demo_sentences():
    sentences = ["La suno <mask>.", "Mi <mask> vin."]
    html = fill_mask_explorer(None, None, sentences, fill=_fake_fill).static_html()
    assert html.count("<option") == 2 and "La suno &lt;mask&gt;." in html
    assert '"states":[0,1]' in html  # one figure per sentence, and they differ


@pytest.fixture(scope="module")
def small_bpe():
    from course_lib.tokenization import train_bpe

    text = "la suno brilas super la ĝardeno kaj la infanoj ludas en la ĝardeno " * 20
    return train_bpe([text], vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])


def _ids(bpe):
    special = bpe.special_tokens
    return dict(mask_id=special["<mask>"], special_ids=list(special.values()), bos_id=special["<s>"],
                eos_id=special["</s>"])


def test_mask_sentence_is_the_librarys_masking_with_the_same_seed(small_bpe):
    ids = _ids(small_bpe)
    text = "la infanoj ludas en la ĝardeno kaj la suno brilas"
    tokens, shown, kinds = mask_sentence(small_bpe, text, mlm_probability=0.5, seed=3, **ids)
    encoded = torch.tensor([[ids["bos_id"], *small_bpe.encode(text), ids["eos_id"]]])
    corrupted, labels = mask_tokens(encoded, mask_id=ids["mask_id"], vocab_size=len(small_bpe),
                                    special_ids=ids["special_ids"], mlm_probability=0.5,
                                    generator=torch.Generator().manual_seed(3))
    assert kinds == masking_outcome(encoded[0], corrupted[0], labels[0], ids["mask_id"])
    readable = [readable_token(small_bpe.id_to_token[i], small_bpe) for i in corrupted[0].tolist()]
    assert all(token.isprintable() for token in shown)  # a control byte drawn at random is shown escaped
    assert [a for a, b in zip(shown, readable) if b.isprintable()] == [b for b in readable if b.isprintable()]
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and len(tokens) == encoded.shape[1]
    assert "not chosen" in kinds and len(set(kinds)) > 1  # half of the tokens chosen: both kinds occur


def test_with_probability_one_every_ordinary_token_is_chosen_and_no_special_one(small_bpe):
    _, _, kinds = mask_sentence(small_bpe, "la suno brilas super la ĝardeno", mlm_probability=1.0, seed=0,
                                **_ids(small_bpe))
    assert kinds[0] == kinds[-1] == "not chosen"  # <s> and </s>
    assert "not chosen" not in kinds[1:-1]


def test_masking_explorer_moves_in_the_book(small_bpe):
    explorer = masking_explorer(small_bpe, ["la suno brilas super la ĝardeno kaj la infanoj ludas"], **_ids(small_bpe))
    html = explorer.static_html()
    states = json.loads(html.split('<script type="application/json">')[1].split("</script>")[0])
    assert len(states["controls"]) >= 2 and len(set(states["states"])) > 1  # the seed and probability change the figure


def test_pretrain_adapt_picture_keeps_the_body_and_replaces_the_head():
    texts = [t.get_text() for t in plot_pretrain_adapt().axes[0].texts]
    assert "keep" in texts and "replace" in texts
    assert sum("body" in t for t in texts) == 2 and any("task head" in t for t in texts)
