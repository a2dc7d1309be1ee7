"""The encoder pinned to HF's BERT and RoBERTa (tiny random configs built offline, weights copied, fp32).

Compared at every real position of a padded batch: every layer's hidden states, every layer's attention
weights (HF's eager attention), the pooler and the MLM logits, within 1e-5. Padding positions are left
out of the comparison: they are computed (the padding token's embedding attending to the real tokens,
as in HF, so they happen to agree too) but no output should be read there; what matters about padding
is tested directly: a padded row gives the same real-position outputs as the same sentence alone.
Then the tie, gradients, the config's round trip and the errors.
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    BertConfig, BertForMaskedLM, BertModel, RobertaConfig, RobertaForMaskedLM, RobertaModel,
)

from course_lib.attention.recorder import record_attention  # noqa: E402
from course_lib.pretraining.encoder import (  # noqa: E402
    Encoder, EncoderConfig, EncoderForMaskedLM, attention_maps, from_hf, roberta_position_ids,
)

VOCAB, ATOL = 97, 1e-5
SIZES = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
             hidden_act="gelu", layer_norm_eps=1e-12, attn_implementation="eager")


def _perturbed(hf):
    """Biases and LayerNorms moved off their 0/1 initialisation, so that a swapped or skipped one shows."""
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return hf.eval()


def _bert_config():
    return BertConfig(**SIZES, max_position_embeddings=24, type_vocab_size=2, pad_token_id=0)


def _roberta_config():
    return RobertaConfig(**SIZES, max_position_embeddings=24 + 2, type_vocab_size=1, pad_token_id=1,
                         bos_token_id=0, eos_token_id=2)


BUILDERS = {
    "BertModel": lambda: BertModel(_bert_config()),
    "BertForMaskedLM": lambda: BertForMaskedLM(_bert_config()),
    "RobertaModel": lambda: RobertaModel(_roberta_config(), add_pooling_layer=True),
    "RobertaForMaskedLM": lambda: RobertaForMaskedLM(_roberta_config()),
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def pair(request):
    torch.manual_seed(3)
    hf = _perturbed(BUILDERS[request.param]())
    return request.param, hf, from_hf(hf).eval()


def padded_batch(pad_id: int, lengths=(11, 7, 4), seed=4):
    """Right-padded rows (BERT/RoBERTa's convention) of the given real lengths; ids avoid the specials 0-3."""
    ids = torch.randint(4, VOCAB, (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    return ids.masked_fill(mask == 0, pad_id), mask


def _ours_and_theirs(hf, ours, ids, mask, token_types=None):
    """Our (hidden states, attentions, pooled, logits) and HF's, for one batch."""
    encoder = ours.encoder if isinstance(ours, EncoderForMaskedLM) else ours
    with torch.no_grad(), record_attention(ours) as recorded:
        out = encoder(ids, mask, token_types)
        logits = ours(ids, mask, token_types) if isinstance(ours, EncoderForMaskedLM) else None
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=token_types, output_hidden_states=True,
                    output_attentions=True)
    attentions = [w for _, w in recorded[:len(encoder.layers)]]  # the first forward's layers
    return (out, attentions, logits), theirs


def test_every_layer_attentions_pooler_and_logits_equal_hf(pair):
    name, hf, ours = pair
    pad = hf.config.pad_token_id
    ids, mask = padded_batch(pad)
    (out, attentions, logits), theirs = _ours_and_theirs(hf, ours, ids, mask)
    real = mask.bool()
    assert len(out.hidden_states) == len(theirs.hidden_states) == hf.config.num_hidden_layers + 1
    for layer, (a, b) in enumerate(zip(out.hidden_states, theirs.hidden_states)):
        assert (a[real] - b[real]).abs().max() < ATOL, f"{name}: hidden states of layer {layer} differ"
    assert len(attentions) == len(theirs.attentions)
    for layer, (a, b) in enumerate(zip(attentions, theirs.attentions)):  # (B, H, T, T), real query rows
        assert (a.transpose(1, 2)[real] - b.transpose(1, 2)[real]).abs().max() < ATOL, f"{name}: attention {layer}"
        assert a[2, :, :, 4:].abs().max() == 0  # the 4-token row puts no weight on its padding keys
    if name.endswith("ForMaskedLM"):
        assert (logits[real] - theirs.logits[real]).abs().max() < ATOL
    else:
        assert (out.pooler_output - theirs.pooler_output).abs().max() < ATOL


@pytest.mark.parametrize("name", ["BertModel", "BertForMaskedLM"])  # RoBERTa has a single token type
def test_bert_token_types_are_read(name):
    torch.manual_seed(3)
    hf = _perturbed(BUILDERS[name]())
    ours = from_hf(hf).eval()
    ids, mask = padded_batch(0)
    segments = (torch.arange(ids.shape[1]) >= 3).long().expand_as(ids) * mask  # sentence A, then B
    (out, _, logits), theirs = _ours_and_theirs(hf, ours, ids, mask, segments)
    real = mask.bool()
    got, expected = (logits, theirs.logits) if logits is not None else (out.last_hidden_state, theirs.last_hidden_state)
    assert (got[real] - expected[real]).abs().max() < ATOL
    with torch.no_grad():  # and the segments matter: all-A gives other outputs
        all_a = ours(ids, mask)
    all_a = all_a if logits is not None else all_a.last_hidden_state
    assert (all_a[real] - got[real]).abs().max() > 1e-3


def test_roberta_positions_follow_hf_rule():
    """Real tokens count pad+1, pad+2, ...; padding (wherever it is) gets pad; HF's own function agrees."""
    ids = torch.tensor([[0, 7, 8, 2, 1, 1], [1, 1, 0, 7, 2, 1], [0, 5, 6, 7, 8, 2]])
    expected = torch.tensor([[2, 3, 4, 5, 1, 1], [1, 1, 2, 3, 4, 1], [2, 3, 4, 5, 6, 7]])
    assert torch.equal(roberta_position_ids(ids, pad_token_id=1), expected)
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    assert torch.equal(RobertaEmbeddings.create_position_ids_from_input_ids(ids, 1), expected)


def test_roberta_uses_the_padding_offset_and_the_full_table():
    """At the longest length RoBERTa allows (24 = 26 rows - pad 1 - 1), outputs still equal HF's; one more fails."""
    torch.manual_seed(5)
    hf = _perturbed(RobertaForMaskedLM(_roberta_config()))
    ours = from_hf(hf).eval()
    assert ours.config.padding_offset_positions and ours.config.max_length == 24
    ids, mask = padded_batch(1, lengths=(24, 10))
    with torch.no_grad():
        got, expected = ours(ids, mask), hf(input_ids=ids, attention_mask=mask).logits
    assert (got[mask.bool()] - expected[mask.bool()]).abs().max() < ATOL
    with pytest.raises(ValueError, match="longer than the 24 positions"):
        ours(torch.full((1, 25), 5))
    # positions come from the real tokens: a left-padded row reads like the sentence alone
    left = torch.cat([torch.ones(1, 3, dtype=torch.long), ids[1:, :10]], dim=1)
    with torch.no_grad():
        padded, alone = ours(left, (left != 1).long())[0, 3:], ours(ids[1:, :10])[0]
    assert (padded - alone).abs().max() < ATOL


@pytest.mark.parametrize("name", ["BertForMaskedLM", "RobertaForMaskedLM"])
def test_a_padded_row_equals_the_sentence_alone(name):
    torch.manual_seed(6)
    ours = from_hf(_perturbed(BUILDERS[name]())).eval()
    pad = ours.config.pad_token_id
    ids, mask = padded_batch(pad)
    with torch.no_grad():
        batched, alone = ours(ids, mask)[2, :4], ours(ids[2:, :4])[0]
    assert (batched - alone).abs().max() < ATOL


def test_the_head_is_tied_to_the_word_embeddings():
    torch.manual_seed(7)
    for ours in (EncoderForMaskedLM(EncoderConfig(vocab_size=50, dim=16, num_layers=1, num_heads=2, ffn_dim=32)),
                 from_hf(BertForMaskedLM(_bert_config())), from_hf(RobertaForMaskedLM(_roberta_config()))):
        assert ours.mlm_head.decoder.weight is ours.encoder.word_embeddings.weight
        names = [n for n, p in ours.named_parameters() if p is ours.encoder.word_embeddings.weight]
        assert names == ["encoder.word_embeddings.weight"]  # one tensor: listed (and trained) once
    with torch.no_grad():  # a change through one name is seen through the other
        ours.encoder.word_embeddings.weight[5].fill_(0.5)
    assert torch.all(ours.mlm_head.decoder.weight[5] == 0.5)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(8)
    config = EncoderConfig(vocab_size=VOCAB, dim=32, num_layers=2, num_heads=4, ffn_dim=48, max_positions=24,
                           type_vocab_size=2, dropout=0.1)
    model = EncoderForMaskedLM(config).train()
    ids, mask = padded_batch(0)
    logits = model(ids, mask, token_type_ids=(torch.arange(ids.shape[1]) >= 5).long().expand_as(ids))
    torch.nn.functional.cross_entropy(logits[mask.bool()], ids[mask.bool()]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    # the tied matrix gets both paths' gradients: the output one alone is not the whole of it
    output_only = torch.autograd.grad(
        torch.nn.functional.cross_entropy(
            (model.mlm_head.norm(torch.nn.functional.gelu(model.mlm_head.dense(
                model.encoder(ids, mask).last_hidden_state.detach()))) @ model.mlm_head.decoder.weight.T
             + model.mlm_head.bias)[mask.bool()], ids[mask.bool()]),
        model.mlm_head.decoder.weight)[0]
    assert not torch.allclose(output_only, model.encoder.word_embeddings.weight.grad)


def test_pooler_is_dense_tanh_on_the_first_token():
    torch.manual_seed(9)
    model = Encoder(EncoderConfig(vocab_size=VOCAB, dim=16, num_layers=1, num_heads=2, ffn_dim=32)).eval()
    ids, mask = padded_batch(0)
    out = model(ids, mask)
    assert torch.allclose(out.pooler_output, torch.tanh(model.pooler(out.last_hidden_state[:, 0])))
    assert Encoder(model.config, add_pooler=False)(ids, mask).pooler_output is None


def test_attention_maps_one_per_layer():
    torch.manual_seed(10)
    hf = _perturbed(BertModel(_bert_config()))
    ours = from_hf(hf)
    ids, mask = padded_batch(0)
    maps = attention_maps(ours, ids, mask)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    assert len(maps) == 3 and maps[0].shape == (3, 4, 11, 11)
    real = mask.bool()
    for a, b in zip(maps, expected):
        assert (a.transpose(1, 2)[real] - b.transpose(1, 2)[real]).abs().max() < ATOL


def test_config_round_trip_and_unknown_fields():
    config = EncoderConfig(vocab_size=52000, dim=256, num_layers=4, num_heads=4, ffn_dim=1024, max_positions=514,
                           type_vocab_size=1, pad_token_id=1, padding_offset_positions=True, layer_norm_eps=1e-5)
    assert EncoderConfig.from_dict(config.to_dict()) == config
    assert config.max_length == 512
    with pytest.raises(ValueError, match=r"unknown EncoderConfig field\(s\) \['hidden_size'\]"):
        EncoderConfig.from_dict({**config.to_dict(), "hidden_size": 256})
    with pytest.raises(ValueError, match="multiple of num_heads"):
        EncoderConfig(dim=30, num_heads=4)


def test_dropout_is_on_in_training_only():
    torch.manual_seed(11)
    model = EncoderForMaskedLM(EncoderConfig(vocab_size=VOCAB, dim=32, num_layers=2, num_heads=4, ffn_dim=48,
                                             max_positions=24, dropout=0.2))
    ids, mask = padded_batch(0)
    model.train()
    assert not torch.allclose(model(ids, mask), model(ids, mask))
    model.eval()
    assert torch.equal(model(ids, mask), model(ids, mask))


@pytest.fixture(scope="module")
def small():
    config = EncoderConfig(vocab_size=VOCAB, dim=16, num_layers=1, num_heads=2, ffn_dim=32, max_positions=12,
                           type_vocab_size=0)
    return Encoder(config).eval()


@pytest.mark.parametrize("args, error, message", [
    ((torch.tensor([[5, 6, VOCAB]]),), ValueError, rf"token id {VOCAB} is outside the vocabulary \[0, {VOCAB}\): "
                                                   "encode the text with this model's own tokenizer"),
    ((torch.tensor([[5, -1, 6]]),), ValueError, r"token id -1 is outside the vocabulary"),
    ((torch.full((1, 13), 5),), ValueError, "sequence length 13 is longer than the 12 positions the model has "
                                            "learned: truncate the input to 12 tokens"),
    ((torch.tensor([[5.0, 6.0]]),), TypeError, "input_ids must be an integer tensor"),
    ((torch.tensor([5, 6]),), ValueError, r"non-empty \(batch, seq_len\).*ids\[None\]"),
    ((torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1]])), ValueError,
     r"attention_mask must have the shape of input_ids \(1, 3\), got \(1, 2\)"),
    ((torch.tensor([[5, 6, 7]]), torch.tensor([1, 1, 1])), ValueError, "attention_mask must have the shape"),
    ((torch.tensor([[5, 6, 7]]), torch.tensor([[1.0, 0.5, 0.0]])), ValueError,
     r"only 1 \(real token\) and 0 \(padding\).*tokenizer's attention_mask"),
    ((torch.tensor([[5, 6, 7]]), torch.tensor([[0, 0, 0]])), ValueError, r"no real token in row\(s\) \[0\]"),
    ((torch.tensor([[5, 6, 7]]), None, torch.tensor([[0, 0, 1]])), ValueError,
     r"token_type_ids were given but this model has no token-type embeddings \(type_vocab_size=0\)"),
])
def test_bad_input_gets_a_clear_error(small, args, error, message):
    with pytest.raises(error, match=message):
        small(*args)


def test_bad_token_types_get_a_clear_error():
    model = Encoder(EncoderConfig(vocab_size=VOCAB, dim=16, num_layers=1, num_heads=2, ffn_dim=32, max_positions=12))
    with pytest.raises(ValueError, match=r"token_type_ids must be in \[0, 2\), got 0..2"):
        model(torch.tensor([[5, 6, 7]]), token_type_ids=torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"token_type_ids must have the shape of input_ids"):
        model(torch.tensor([[5, 6, 7]]), token_type_ids=torch.tensor([[0, 1]]))


def test_from_hf_refuses_what_it_cannot_copy():
    with pytest.raises(ValueError, match="exact GELU"):
        from_hf(BertModel(BertConfig(**{**SIZES, "hidden_act": "relu"})))
    with pytest.raises(ValueError, match="one dropout rate"):
        from_hf(BertModel(BertConfig(**SIZES, attention_probs_dropout_prob=0.0)))
    untied = BertForMaskedLM(BertConfig(**SIZES, tie_word_embeddings=False))
    with pytest.raises(ValueError, match="not tied"):
        from_hf(untied)
