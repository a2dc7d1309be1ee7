"""course_lib.decoding.steppers: one protocol for a GPT, the Transformer and the RNNs, chosen by duck typing."""
from __future__ import annotations

import torch

from course_lib.decoding import CausalLMStepper, RNNStepper, Seq2SeqStepper, stepper_for
from course_lib.models.gpt import GPT, GPTConfig
from course_lib.seq2seq.rnn import RNNSeq2Seq
from course_lib.seq2seq.transformer import Transformer


def _rnn(use_attention=True):
    torch.manual_seed(0)
    return RNNSeq2Seq(9, 7, embed_dim=8, hidden_dim=8, use_attention=use_attention, dropout=0.0).eval()


def test_stepper_for_picks_by_what_the_model_can_do():
    source = torch.tensor([[3, 4, 5]])
    gpt = GPT(GPTConfig(vocab_size=9, context_length=8, dim=8, num_layers=1, num_heads=2))
    transformer = Transformer(9, 7, dim=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, ffn_dim=8).eval()
    assert type(stepper_for(gpt)) is CausalLMStepper
    assert type(stepper_for(transformer, source)) is Seq2SeqStepper  # encode/decode, no decoder.step
    assert type(stepper_for(_rnn(), source)) is RNNStepper  # its decoder steps with a state


def test_rnn_stepper_reorders_its_state_and_attention_with_the_beams():
    model = _rnn()
    source = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    keep = source != 0
    stepper = RNNStepper(model, source, keep)
    with torch.no_grad():
        stepper.start(torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1))  # (2, V) after <bos> (id 1)
        stepper.expand(2)  # rows 0, 1 are source 0's beams, rows 2, 3 source 1's
        stepper.step(torch.tensor([4, 5, 4, 6]))
        rows = torch.tensor([1, 1, 3, 2])  # beam search keeps beam 1 twice, swaps source 1's beams
        stepper.reorder(rows)
        scores = stepper.step(torch.tensor([2, 3, 4, 5]))
        # Each row now holds the sequence <bos>, (token of its parent), (its own token): teacher-force it.
        targets = torch.tensor([[1, 5, 2], [1, 5, 3], [1, 6, 4], [1, 4, 5]])
        sources = source[torch.tensor([0, 0, 1, 1])]
        logits, weights = model(sources, targets, src_key_padding_mask=sources != 0, return_attention=True)
    torch.testing.assert_close(scores, logits[:, -1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(stepper.attention, weights, atol=1e-6, rtol=1e-5)  # (N, 3, S), reordered
    assert (stepper.attention[2:, :, 2:] == 0).all()  # source 1's padding, in every row that reads it
    assert stepper.state["memory"].shape[0] == 4 and stepper.state["projected_keys"].shape[0] == 4


def test_rnn_stepper_reads_a_longer_decoder_prompt_one_token_at_a_time():
    model = _rnn(use_attention=False)
    source = torch.tensor([[3, 4, 5]])
    prompt = torch.tensor([[1, 4, 6]])
    stepper = RNNStepper(model, source)
    with torch.no_grad():
        scores = stepper.start(prompt, torch.ones_like(prompt))
        expected = model(source, prompt)[:, -1]
    torch.testing.assert_close(scores, expected)
    assert stepper.attention is None  # the bottleneck model has no attention to record


def test_decoding_imports_no_model():
    """generate tells the models apart by what they can do, so decoding sits above models and seq2seq."""
    import pathlib

    import course_lib.decoding

    for path in pathlib.Path(course_lib.decoding.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "from ..models" not in text and "from ..seq2seq" not in text, path.name
