"""course_lib.seq2seq.widgets: the explorer draws align()'s weights and translate()'s text, survives bad input."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from course_lib.data import load_multi30k
from course_lib.seq2seq import translation as tr
from course_lib.seq2seq.alignment import align, translation_attention
from course_lib.seq2seq.widgets import (
    ALIGNED_MODELS, example_sentences, plot_alignment, translation_alignment, translation_explorer,
)
from course_lib.viz.static_explorer import choose_stops


@pytest.fixture(scope="module")
def models():
    return {name: tr.load_translation_model(name) for name in ALIGNED_MODELS}


@pytest.fixture(scope="module")
def sentences():
    return example_sentences(count=2, max_chars=40)




def test_examples_are_the_first_short_test2016_sentences():
    german = [de for de, _ in load_multi30k("test_2016_flickr")]
    picked = example_sentences(count=3, max_chars=40)
    assert picked == [de for de in german if len(de) <= 40][:3]
    with pytest.raises(ValueError, match="at most 5 characters"):
        example_sentences(count=3, max_chars=5)


def test_compute_function_is_align_for_the_rnn_ignoring_layer_and_head(models, sentences):
    rnn = translation_alignment(models, "rnn_attention", sentences[0], layer=2, head=1)  # they do not apply
    expected = align(models["rnn_attention"], sentences[0])
    np.testing.assert_allclose(rnn.weights.numpy(), expected.weights.numpy())
    assert rnn.target_tokens == expected.target_tokens and rnn.source_tokens == expected.source_tokens
    assert rnn.translation == tr.translate(models["rnn_attention"], [sentences[0]])[0]


@pytest.mark.slow  # three Transformer translations: ~3-6 s on a busy 2-core CPU
def test_compute_function_is_align_for_the_transformer_layer_and_head(models, sentences):
    sentence, model = sentences[0], models["transformer"]
    recorded = translation_attention(model, sentence)
    mean = translation_alignment(models, "transformer", sentence, layer=1, head="mean")
    np.testing.assert_allclose(mean.weights.numpy(), recorded.cross_heads(1).mean(0).numpy())
    assert mean.translation == recorded.translation == tr.translate(model, [sentence])[0]
    assert mean.target_tokens == recorded.decoder_tokens[1:] and mean.source_tokens == recorded.source_tokens
    one_head = translation_alignment(models, "transformer", sentence, layer=0, head=3)
    np.testing.assert_allclose(one_head.weights.numpy(), recorded.cross_heads(0)[3].numpy())


def test_compute_function_rejects_unknown_settings(models, sentences):
    with pytest.raises(ValueError, match="unknown model"):
        translation_alignment(models, "rnn_plain", sentences[0])
    with pytest.raises(ValueError, match="head must be"):
        translation_alignment(models, "transformer", sentences[0], head="max")


def test_plot_shows_the_weights_tokens_and_translation(models, sentences):
    result = translation_alignment(models, "rnn_attention", sentences[1])
    figure = plot_alignment(result, "rnn: ")
    ax = figure.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), result.weights.numpy(), rtol=1e-6)
    assert [t.get_text() for t in ax.get_xticklabels()] == result.source_tokens
    assert [t.get_text() for t in ax.get_yticklabels()] == result.target_tokens
    assert result.translation in ax.get_title().replace("\n", " ")


@pytest.mark.slow  # two Transformer translations: ~2-5 s on a busy 2-core CPU
def test_explorer_draws_the_chosen_layer_and_head(models, sentences):
    explorer = translation_explorer(models, sentences)
    assert set(explorer.controls) == {"text", "model_name", "layer", "head"}
    assert explorer.controls["model_name"].value == "transformer" and explorer.controls["layer"].value == 2
    explorer.controls["layer"].value = 0
    explorer.controls["head"].value = 1
    figure = explorer.figure()
    expected = translation_attention(models["transformer"], sentences[0]).cross_heads(0)[1]
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(), expected.numpy(), rtol=1e-6)
    assert "layer 0, head 1" in figure.axes[0].get_title()


def test_explorer_redraws_on_every_control_and_shows_a_message_for_bad_text(models, sentences, displayed):
    calls, handle = displayed
    # the RNN first: its translations are quick, so every redraw below is cheap
    explorer = translation_explorer({"rnn_attention": models["rnn_attention"], "transformer": models["transformer"]},
                                    sentences)
    assert explorer.example in explorer.widget.children and explorer.controls["layer"].disabled
    explorer._ipython_display_()
    (controls, _), (picture, display_id) = calls
    assert controls is explorer.widget and display_id is True and picture.data.startswith(b"\x89PNG")
    in_book = choose_stops({**explorer.controls, **explorer.book_controls})  # the book: a menu of the examples
    assert in_book["text"] == [(s, s) for s in sentences] and len(in_book["model_name"]) == 2
    assert len(in_book["layer"]) == len(in_book["head"]) == 1  # disabled: they do not apply to the RNN shown first

    explorer.example.value = sentences[1]  # copies the sentence into the text box: one redraw, not two
    assert explorer.controls["text"].value == sentences[1] and len(handle.updates) == 1
    figure = explorer.figure()
    expected = align(models["rnn_attention"], sentences[1])
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(), expected.weights.numpy(), rtol=1e-6)
    explorer.controls["head"].value = 2
    explorer.controls["text"].value = "   "
    explorer.controls["model_name"].value = "transformer"  # empty text: a message, no translation
    assert not explorer.controls["layer"].disabled
    assert len(handle.updates) == 4
    assert all(update.data.startswith(b"\x89PNG") for update in handle.updates)
    message = explorer.figure()
    assert isinstance(message, Figure) and not message.axes[0].images
    assert "empty" in " ".join(text.get_text() for text in message.axes[0].texts)
    explorer.controls["text"].value = "Hund " * 200
    assert "at most 128" in " ".join(text.get_text() for text in explorer.figure().axes[0].texts).replace("\n", " ")
