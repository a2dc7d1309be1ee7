"""course_lib.seq2seq.alignment: the alignment is the attention the shipped models really used, on translate()'s output."""
from __future__ import annotations

import pytest
import torch

from course_lib.attention.recorder import record_attention
from course_lib.data import load_multi30k
from course_lib.decoding import RNNStepper, generate, greedy_search
from course_lib.seq2seq import translation as tr
from course_lib.seq2seq.alignment import align, token_labels, translation_attention
from course_lib.seq2seq.transformer import attention_by_kind, attention_maps

# Short real test2016 sentences: each greedy translation costs about a second on a busy 2-core CPU.
SENTENCES = [de for de, _ in load_multi30k("test_2016_flickr")[:40] if len(de) < 45][:2]


@pytest.fixture(scope="module")
def tokenizers():
    return tr.load_tokenizers()


@pytest.fixture(scope="module")
def models():
    return {name: tr.load_translation_model(name) for name in tr.MODEL_NAMES}


@pytest.fixture(scope="module")
def transformer_alignments(models, tokenizers):
    return [align(models["transformer"], sentence, tokenizers) for sentence in SENTENCES]


def _greedy_ids(model, sentence, tokenizers):
    source = torch.tensor(tr._source_ids(tokenizers["de"], sentence))  # (S,)
    limit = min(model.max_len - 1, 2 * len(source) + 10)
    generated = generate(model, torch.tensor([[tr.BOS_ID]]), source=source[None], max_new_tokens=limit,
                         eos_token_id=tr.EOS_ID, pad_token_id=tr.PAD_ID)[0, 1:]  # (T_tgt,)
    return source, generated


def test_the_sentences_are_real_and_short():
    assert len(SENTENCES) == 2 and all(10 < len(s) < 45 for s in SENTENCES)


@pytest.mark.parametrize("name", ["transformer", "rnn_attention"])
def test_translation_is_what_translate_returns(models, tokenizers, transformer_alignments, name):
    model = models[name]
    for i, sentence in enumerate(SENTENCES):
        result = transformer_alignments[i] if name == "transformer" else align(model, sentence, tokenizers)
        assert result.translation == tr.translate(model, [sentence], tokenizers)[0]
        # the labels spell out the ids: the source exactly, the target up to its <eos>
        assert "".join(result.source_tokens[:-1]) == sentence and result.source_tokens[-1] == "<eos>"
        assert result.target_tokens[-1] == "<eos>"
        assert "".join(result.target_tokens[:-1]).strip() == result.translation


def test_transformer_weights_are_the_cross_attention_of_the_pair(models, tokenizers, transformer_alignments):
    model = models["transformer"]
    sentence, result = SENTENCES[0], transformer_alignments[0]
    source, generated = _greedy_ids(model, sentence, tokenizers)
    maps = attention_maps(model, source, torch.cat([torch.tensor([tr.BOS_ID]), generated]))
    length = len(generated)  # rows 0..T_tgt-1: decoder positions <bos>, y1, ... that produce y1, y2, ...
    assert result.weights.shape == (length, len(source))
    torch.testing.assert_close(result.weights, maps["cross_attention"][-1][0, :, :length].mean(0))
    head = align(model, sentence, tokenizers, layer=0, head=2)
    torch.testing.assert_close(head.weights, maps["cross_attention"][0][0, 2, :length])
    assert head.translation == result.translation


def test_rows_are_distributions_over_the_source(models, tokenizers, transformer_alignments):
    rnn = align(models["rnn_attention"], SENTENCES[0], tokenizers)
    for weights in [a.weights for a in transformer_alignments] + [rnn.weights]:
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]))


def test_re_reading_gives_the_attention_of_each_decoding_step(models, tokenizers):
    # The decoder is causal: position t of the re-read pair sees what decoding step t saw.
    model, sentence = models["transformer"], SENTENCES[1]
    with record_attention(model) as recorded:
        _, generated = _greedy_ids(model, sentence, tokenizers)
    layers = len(model.decoder.layers)
    steps = attention_by_kind(recorded)["cross_attention"]  # one (1, H, t, S) per layer per step, in call order
    assert len(steps) == layers * len(generated)
    re_read = translation_attention(model, sentence, tokenizers)
    for layer in range(layers):
        step_rows = torch.stack([steps[step * layers + layer][0, :, -1] for step in range(len(generated))], dim=1)
        torch.testing.assert_close(step_rows, re_read.cross_heads(layer), atol=1e-5, rtol=1e-4)


def test_rnn_weights_are_its_additive_attention_under_teacher_forcing(models, tokenizers):
    model, sentence = models["rnn_attention"], SENTENCES[0]
    result = align(model, sentence, tokenizers)
    source = torch.tensor([tr._source_ids(tokenizers["de"], sentence)])  # (1, S)
    stepper, bos = RNNStepper(model, source), torch.tensor([[tr.BOS_ID]])
    with torch.no_grad():
        generated = greedy_search(stepper, bos, torch.ones_like(bos), min(model.max_len - 1, 2 * source.shape[1] + 10),
                                  tr.EOS_ID, tr.PAD_ID)[:, 1:]  # (1, T_tgt)
    step_weights = stepper.attention  # (1, T_tgt, S): the stepper's record, one row per generated token
    torch.testing.assert_close(result.weights, step_weights[0], rtol=0, atol=0)
    target_in = torch.cat([torch.tensor([[tr.BOS_ID]]), generated[:, :-1]], dim=1)  # what each step read
    with torch.no_grad():
        logits, weights = model(source, target_in, return_attention=True)
    torch.testing.assert_close(result.weights, weights[0], atol=1e-5, rtol=1e-4)  # re-reading gives the same
    assert logits[0].argmax(-1).tolist() == generated[0].tolist()  # and re-predicts its own output


def test_bertviz_contract_of_the_recorded_attention(models, tokenizers):
    model, sentence = models["transformer"], SENTENCES[0]
    recorded = translation_attention(model, sentence, tokenizers)
    S, T = len(recorded.source_tokens), len(recorded.decoder_tokens)
    heads = model.config["num_heads"]
    assert recorded.decoder_tokens[0] == "<bos>"
    for kind, shape, layers in [("encoder_attention", (1, heads, S, S), "num_encoder_layers"),
                                ("decoder_attention", (1, heads, T, T), "num_decoder_layers"),
                                ("cross_attention", (1, heads, T, S), "num_decoder_layers")]:
        assert [tuple(w.shape) for w in recorded.maps[kind]] == [shape] * model.config[layers]
    assert torch.equal(recorded.maps["decoder_attention"][0][0].triu(1), torch.zeros(heads, T, T))  # causal


def test_token_labels_spell_words_and_name_special_tokens(tokenizers):
    ids = tokenizers["de"].encode("Fünf Mädchen") + [tr.EOS_ID]
    labels = token_labels(tokenizers["de"], ids)
    assert labels[-1] == "<eos>" and "".join(labels[:-1]) == "Fünf Mädchen"
    # a piece of a two-byte character is shown by its byte-level spelling, never as U+FFFD
    first_byte_of_u = tokenizers["de"].vocab["Ã"]
    assert token_labels(tokenizers["de"], [first_byte_of_u]) == ["Ã"]


def test_bad_input_gets_a_clear_error(models, tokenizers):
    with pytest.raises(ValueError, match="no attention"):
        align(models["rnn_plain"], SENTENCES[0], tokenizers)
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="empty"):
            align(models["transformer"], empty, tokenizers)
    with pytest.raises(TypeError, match="string"):
        align(models["transformer"], ["Ein Hund."], tokenizers)
    with pytest.raises(ValueError, match="at most 128"):
        align(models["rnn_attention"], "Hund " * 200, tokenizers)
    with pytest.raises(ValueError, match="no layers or heads"):
        align(models["rnn_attention"], "Ein Hund.", tokenizers, head=0)
    with pytest.raises(ValueError, match="layer must be in"):
        align(models["transformer"], "Ein Hund.", tokenizers, layer=3)
    with pytest.raises(ValueError, match="head must be in"):
        align(models["transformer"], "Ein Hund.", tokenizers, head=4)
    with pytest.raises(TypeError, match="Transformer"):
        translation_attention(models["rnn_attention"], "Ein Hund.", tokenizers)
