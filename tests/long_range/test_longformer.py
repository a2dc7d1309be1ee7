"""Our Longformer pinned to HF transformers' (tiny random config, eval mode, eager): the self-attention with
its separate global projections, fed exactly what HF's model feeds its own layer (captured with hooks), and the
whole ``LongformerModel`` end to end, within 1e-5, with and without global tokens and padding.

What HF (transformers 5.x) does, which these tests rely on: ``LongformerModel`` merges its two masks into one
code per token (``attention_mask * (global_attention_mask + 1)``: 0 = padding, 1 = local, 2 = global, so a
padding token is never global), pads the sequence with the padding id to a multiple of
``max(attention_window)`` (mask 0, token type 0), turns the code into an additive mask (padding: the dtype's
minimum, local: 0, global: the dtype's maximum), and cuts the added positions off its outputs. Its
``LongformerSelfAttention`` refuses a length that is not a multiple of ``attention_window``; ours takes any T.
"""
from __future__ import annotations

import pytest
import torch

from course_lib.long_range.longformer import LongformerEncoder, LongformerSelfAttention, from_hf
from course_lib.long_range.sliding_window import sliding_window_attention

transformers = pytest.importorskip("transformers")
from transformers.models.longformer import modeling_longformer as hf_longformer  # noqa: E402

ATOL = 1e-5


def hf_config(**overrides):
    settings = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    attention_window=[4, 8], max_position_embeddings=64, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, pad_token_id=1,
                    initializer_range=0.2)  # wider than 0.02, so the attention weights are far from uniform
    settings.update(overrides)
    config = transformers.LongformerConfig(**settings)
    config._attn_implementation = "eager"
    return config


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(1)
    return hf_longformer.LongformerModel(hf_config()).eval()


def inputs(seq_len=13, lengths=(13, 8), globals_=None):
    """ids, attention_mask (1 = real) and global_attention_mask (1 = global) in HF's conventions."""
    ids = torch.randint(3, 99, (len(lengths), seq_len))
    mask = torch.zeros(len(lengths), seq_len, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    ids = ids.masked_fill(mask == 0, 1)  # the padding id
    if globals_ is None:
        return ids, mask, None
    global_mask = torch.zeros_like(mask)
    for row, positions in enumerate(globals_):
        global_mask[row, positions] = 1
    return ids, mask, global_mask


# --- the self-attention, fed what HF's model feeds it -----------------------------------------------

def captured_self_attention(hf_model, layer, ids, mask, global_mask):
    """HF's ``LongformerSelfAttention`` of one layer during a real forward: its input, its output, and the
    padded masks (HF's own padding and merging, not ours)."""
    module = hf_model.encoder.layer[layer].attention.self
    seen = {}
    handles = [module.register_forward_pre_hook(lambda m, args, kwargs: seen.update(args=args, kwargs=kwargs),
                                                with_kwargs=True),
               module.register_forward_hook(lambda m, args, output: seen.update(output=output[0]))]
    try:
        with torch.no_grad():
            hf_model(ids, attention_mask=mask, global_attention_mask=global_mask)
    finally:
        for handle in handles:
            handle.remove()
    additive = seen["kwargs"]["attention_mask"]  # (B, T_padded): min = padding, 0 = local, max = global
    return seen["args"][0], seen["output"], additive == 0, additive > 0


SELF_ATTENTION_CASES = {  # name: (layer, seq_len, lengths, global positions per row)
    "local only, no padding": (0, 16, (16, 16), None),
    "local only, padding": (1, 13, (13, 5), None),
    "one global token per row": (0, 13, (13, 8), ([0], [0])),
    "globals differing per row, padding": (1, 21, (21, 9), ([0, 3, 20], [2])),
    "a global asked for at a padding position": (0, 12, (12, 6), ([1], [0, 9])),
}


@pytest.mark.parametrize("layer, seq_len, lengths, globals_", SELF_ATTENTION_CASES.values(),
                         ids=SELF_ATTENTION_CASES.keys())
def test_self_attention_equals_hf(hf_model, layer, seq_len, lengths, globals_):
    hidden, theirs, local_or_global, is_global = captured_self_attention(
        hf_model, layer, *inputs(seq_len, lengths, globals_))
    real = local_or_global | is_global
    assert hidden.shape[1] % hf_model.config.attention_window[layer] == 0  # HF padded it
    with torch.no_grad():
        ours = LongformerSelfAttention.from_hf(hf_model.encoder.layer[layer].attention.self)(hidden, real, is_global)
    torch.testing.assert_close(ours[~is_global], theirs[~is_global], atol=ATOL, rtol=0)  # local rows (padding: 0)
    torch.testing.assert_close(ours[is_global], theirs[is_global], atol=ATOL, rtol=0)  # global rows
    assert not ours[~real].any()  # padding tokens attend to nothing, as in HF


def test_global_rows_use_the_global_projections(hf_model):
    hidden, theirs, _, is_global = captured_self_attention(hf_model, 0, *inputs(16, (16, 16), ([0], [4])))
    ours = LongformerSelfAttention.from_hf(hf_model.encoder.layer[0].attention.self)
    for name in ("query", "key", "value"):  # the mistake: global rows through the local projections
        setattr(ours, f"{name}_global", getattr(ours, name))
    with torch.no_grad():
        wrong = ours(hidden, None, is_global)
    assert (wrong[is_global] - theirs[is_global]).abs().max() > 1e-3
    torch.testing.assert_close(wrong[~is_global], theirs[~is_global], atol=ATOL, rtol=0)


def test_with_one_set_of_projections_the_layer_is_sliding_window_attention():
    attention = LongformerSelfAttention(dim=16, num_heads=2, window=3)
    for name in ("query", "key", "value"):  # global projections = local ones: the plain function's case
        getattr(attention, f"{name}_global").load_state_dict(getattr(attention, name).state_dict())
    x = torch.randn(2, 11, 16)
    real = torch.ones(2, 11, dtype=torch.bool)
    real[1, 7:] = False
    is_global = torch.zeros(2, 11, dtype=torch.bool)
    is_global[:, 5] = True
    heads = [layer(x).view(2, 11, 2, 8).transpose(1, 2) for layer in (attention.query, attention.key, attention.value)]
    expected = sliding_window_attention(*heads, 3, is_global, real).masked_fill(~real[:, None, :, None], 0.0)
    torch.testing.assert_close(attention(x, real, is_global), expected.transpose(1, 2).reshape(2, 11, 16),
                               atol=ATOL, rtol=0)


# --- the whole model --------------------------------------------------------------------------------

MODEL_CASES = {  # name: (seq_len, lengths, global positions per row)
    "no globals, no padding, T a multiple of the window": (16, (16, 16), None),
    "no globals, padding, T not a multiple": (13, (13, 8), None),
    "a global [CLS] per row": (13, (13, 8), ([0], [0])),
    "question-like globals differing per row, padding": (27, (27, 15), ([0, 1, 2, 3], [0, 14])),
}


@pytest.mark.parametrize("seq_len, lengths, globals_", MODEL_CASES.values(), ids=MODEL_CASES.keys())
def test_model_equals_hf(hf_model, seq_len, lengths, globals_):
    ids, mask, global_mask = inputs(seq_len, lengths, globals_)
    ours = from_hf(hf_model)
    assert isinstance(ours, LongformerEncoder) and not ours.training and ours.config.windows == (2, 4)
    with torch.no_grad():
        theirs = hf_model(ids, attention_mask=mask, global_attention_mask=global_mask, output_hidden_states=True)
        mine = ours(ids, mask, global_mask)
    assert mine.last_hidden_state.shape == (len(lengths), seq_len, 32)  # HF's padding to the window is cut off
    torch.testing.assert_close(mine.last_hidden_state, theirs.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(mine.pooler_output, theirs.pooler_output, atol=ATOL, rtol=0)
    for layer, (a, b) in enumerate(zip(mine.hidden_states, theirs.hidden_states)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=f"hidden state {layer}")


def test_globals_change_the_output_far_away(hf_model):
    """One layer of window 2 and one of 4: without globals, token 0 cannot reach token 26; with token 0 global
    it can (a test that would pass if globals were ignored would not be a test)."""
    ids, mask, global_mask = inputs(27, (27,), ([0],))
    changed = ids.clone()
    changed[0, 26] = 50 if ids[0, 26] != 50 else 51
    ours = from_hf(hf_model)
    with torch.no_grad():
        local = [ours(x, mask).last_hidden_state[0, 0] for x in (ids, changed)]
        reaching = [ours(x, mask, global_mask).last_hidden_state[0, 0] for x in (ids, changed)]
    assert torch.equal(local[0], local[1]) and (reaching[0] - reaching[1]).abs().max() > 1e-4


# --- bad input ----------------------------------------------------------------------------------------

def test_from_hf_refuses_what_it_cannot_copy():
    with pytest.raises(ValueError, match="only exact GELU"):
        from_hf(hf_longformer.LongformerModel(hf_config(hidden_act="relu")))
    with pytest.raises(ValueError, match="copies Longformer models"):
        from_hf(transformers.BertModel(transformers.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)))


@pytest.mark.parametrize("global_mask, message", [
    (torch.ones(2, 12, dtype=torch.long), "must have the shape of input_ids"),
    (torch.full((2, 13), 2), "only 1 .global token. and 0"),
])
def test_bad_global_mask_is_named(hf_model, global_mask, message):
    ids, mask, _ = inputs()
    with pytest.raises(ValueError, match=message):
        from_hf(hf_model)(ids, mask, global_mask)


def test_bad_self_attention_masks_and_config_are_named():
    attention = LongformerSelfAttention(dim=16, num_heads=2, window=3)
    with pytest.raises(ValueError, match="padding_mask must be a boolean"):
        attention(torch.randn(2, 5, 16), torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"x must be \(batch, seq_len, dim\)"):
        attention(torch.randn(5, 16))
    with pytest.raises(ValueError, match="windows must be one int ≥ 0 or one per layer"):
        LongformerEncoder(num_layers=2, windows=(2, 2, 2), dim=16, num_heads=2, vocab_size=20)
