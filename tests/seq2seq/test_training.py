"""The seq2seq training loop, and greedy decoding of both models through ``generate``, on a tiny copy task
both models can learn in seconds."""
from __future__ import annotations

import io
import time

import pytest
import torch
import torch.nn.functional as F
from tqdm.std import tqdm

from course_lib.decoding import RNNStepper, generate, greedy_search
from course_lib.seq2seq.rnn import RNNSeq2Seq
from course_lib.seq2seq import training
from course_lib.seq2seq.training import evaluate, sequence_loss, teacher_forcing_logits, train_seq2seq
from course_lib.seq2seq.transformer import Transformer
from tests.conftest import available_devices

PAD, BOS, EOS, VOCAB = 0, 1, 2, 10
DEVICES = available_devices()


def copy_batches(count: int, batch: int = 32, max_len: int = 6, seed: int = 0):
    """``(src, tgt)`` pairs where tgt = BOS + src + EOS; lengths vary, so there is padding."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        lengths = torch.randint(2, max_len + 1, (batch,), generator=generator)
        src = torch.full((batch, max_len), PAD)
        tgt = torch.full((batch, max_len + 2), PAD)
        for b, length in enumerate(lengths.tolist()):
            tokens = torch.randint(3, VOCAB, (length,), generator=generator)
            src[b, :length] = tokens
            tgt[b, : length + 2] = torch.cat([torch.tensor([BOS]), tokens, torch.tensor([EOS])])
        batches.append((src, tgt))
    return batches


def tiny_transformer():
    torch.manual_seed(0)
    return Transformer(VOCAB, VOCAB, dim=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, ffn_dim=64,
                       dropout=0.0, max_len=16, norm_first=True)


def tiny_rnn():
    torch.manual_seed(0)
    return RNNSeq2Seq(VOCAB, VOCAB, embed_dim=16, hidden_dim=32, dropout=0.0, max_len=16)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_the_formula(epsilon):
    """loss = (1-ε)·(-log p_y) + ε·mean_c(-log p_c), averaged over the non-padding targets."""
    logits = torch.randn(3, 5, 7)
    targets = torch.randint(1, 7, (3, 5))
    targets[0, 3:] = PAD
    targets[2, 1:] = PAD
    log_p = F.log_softmax(logits, dim=-1)
    per_token = (1 - epsilon) * -log_p.gather(-1, targets[..., None])[..., 0] + epsilon * -log_p.mean(-1)
    expected = per_token[targets != PAD].mean()
    torch.testing.assert_close(sequence_loss(logits, targets, PAD, epsilon), expected)


def test_teacher_forcing_shifts_the_target_and_masks_padding():
    seen = {}

    def spy(src, tgt_in, src_key_padding_mask, tgt_key_padding_mask):
        seen.update(src=src, tgt_in=tgt_in, src_keep=src_key_padding_mask, tgt_keep=tgt_key_padding_mask)
        return torch.zeros(*tgt_in.shape, VOCAB)

    src = torch.tensor([[5, 6, 0], [7, 0, 0]])
    tgt = torch.tensor([[BOS, 5, 6, EOS], [BOS, 7, EOS, PAD]])
    _, expected = teacher_forcing_logits(spy, src, tgt, PAD)
    assert seen["tgt_in"].tolist() == [[BOS, 5, 6], [BOS, 7, EOS]]
    assert expected.tolist() == [[5, 6, EOS], [7, EOS, PAD]]
    assert seen["src_keep"].tolist() == [[True, True, False], [True, False, False]]
    assert seen["tgt_keep"].tolist() == [[True, True, True], [True, True, True]]
    with pytest.raises(ValueError, match="BOS ... EOS"):
        teacher_forcing_logits(spy, src, tgt[:, :1], PAD)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make_model", [tiny_transformer, tiny_rnn], ids=["transformer", "rnn"])
def test_loss_falls_on_the_copy_task(device, make_model):
    model = make_model()
    train, valid = copy_batches(20), copy_batches(2, seed=1)
    before = evaluate(model.to(device), valid, PAD)
    history = train_seq2seq(model, train, pad_id=PAD, valid_batches=valid, epochs=2, lr=3e-3, warmup_steps=10,
                            validate_every=15, device=device, progress=False)
    assert history["device"].startswith(device)
    assert history["valid_step"] == [15, 20, 30, 40]  # every 15 steps and at each epoch's end
    assert len(history["train_loss"]) == 40 and history["seconds"] > 0  # (no time limit: machines differ)
    assert history["valid_loss"][-1] < 0.75 * before  # cross-entropy fell by more than a quarter
    assert sum(history["train_loss"][-10:]) < sum(history["train_loss"][:10])
    assert history["lr"][0] == pytest.approx(3e-4) and history["lr"][9] == pytest.approx(3e-3)  # warm-up
    assert history["lr"][-1] == pytest.approx(3e-3 * (10 / 40) ** 0.5)  # then 1/√step decay
    assert not model.training


def test_max_steps_and_empty_input_stop_training():
    history = train_seq2seq(tiny_rnn(), copy_batches(5, batch=4), pad_id=PAD, epochs=3, max_steps=7, progress=False)
    assert history["step"][-1] == 7 and history["valid_loss"] == []
    with pytest.raises(ValueError, match="no batch"):
        train_seq2seq(tiny_rnn(), [], pad_id=PAD, progress=False)


class RecordingBar(tqdm):
    """tqdm writing to a string, keeping (seconds, n, total, postfix) after every update."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "file": io.StringIO(), "mininterval": 0})
        self.records, self.created = [], time.perf_counter()

    def update(self, n=1):
        super().update(n)
        self.records.append((time.perf_counter() - self.created, self.n, self.total, self.postfix))


@pytest.fixture
def bars(monkeypatch):
    made = []

    def make(*args, **kwargs):
        made.append(RecordingBar(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(training, "tqdm", make)
    return made


def test_progress_of_a_time_limited_run_is_the_share_of_its_seconds(bars):
    """Chapter 3 trains for 60 s with epochs=100: the bar must not read 1% (steps of 100 epochs) when it stops."""
    history = train_seq2seq(tiny_rnn(), copy_batches(5, batch=4), pad_id=PAD, epochs=10_000, max_seconds=1.0)
    (bar,) = bars
    assert bar.desc == "training until 50,000 steps or 1 s" and bar.total == 100
    steps = history["step"][-1]
    assert steps < 50_000 and bar.n == pytest.approx(100)  # stopped by the clock: 100%, not steps/50,000
    assert f"step={steps}" in bar.postfix
    for seconds, shown, _, _ in bar.records:  # the share of the second used so far, as it went
        assert shown <= 100 and shown == pytest.approx(min(100 * seconds, 100), abs=10)
    assert bar.fp.getvalue().rsplit("\r", 1)[-1].startswith("training until 50,000 steps or 1 s: 100%|")


def test_progress_of_a_step_limited_run_counts_steps(bars):
    train_seq2seq(tiny_rnn(), copy_batches(5, batch=4), pad_id=PAD, epochs=3, max_steps=8, max_seconds=600)
    (bar,) = bars
    assert bar.desc == "training until 8 steps or 600 s"
    assert [round(n, 1) for _, n, _, _ in bar.records] == [round(100 * k / 8, 1) for k in range(1, 9)]
    assert training._Progress(15, None, None, disable=True).fraction(3, 100.0) == pytest.approx(0.2)
    assert training._Progress(None, None, 60, disable=True).fraction(10**6, 30.0) == pytest.approx(0.5)
    assert training._Progress(None, None, None, disable=True).fraction(3, 1.0) is None  # no budget: counts steps


def _rig_eos(model, output_layer, step_bias: float):
    """Bias the untrained model towards EOS so some rows finish early and some late."""
    with torch.no_grad():
        output_layer.bias[EOS] += step_bias
    return model.eval()


def greedy(model, src, max_new_tokens=10):
    """Generated ids ``(B, L)`` after BOS: EOS, then padding."""
    start = torch.full((len(src), 1), BOS)
    return generate(model, start, source=src, source_mask=src != PAD, max_new_tokens=max_new_tokens,
                    eos_token_id=EOS, pad_token_id=PAD)[:, 1:]


def test_greedy_transformer_output_is_its_own_argmax_and_stops_at_eos():
    model = tiny_transformer()
    _rig_eos(model, model.generator, 1.5)
    src = copy_batches(1, batch=8, seed=3)[0][0]
    out = greedy(model, src)
    _check_greedy(out, lambda prefix: model(src, prefix, src_key_padding_mask=src != PAD))


def test_greedy_rnn_output_is_its_own_argmax_and_the_stepper_records_its_attention():
    model = tiny_rnn().eval()  # untrained, it already ends some rows at once and others later
    src = copy_batches(1, batch=8, seed=3)[0][0]
    out = greedy(model, src)
    _check_greedy(out, lambda prefix: model(src, prefix, src_key_padding_mask=src != PAD))
    stepper, start = RNNStepper(model, src, src != PAD), torch.full((8, 1), BOS)
    with torch.no_grad():
        assert torch.equal(greedy_search(stepper, start, torch.ones_like(start), 10, EOS, PAD)[:, 1:], out)
    attention = stepper.attention  # (B, L, S): one row per generated token
    assert attention.shape == (*out.shape, src.shape[1])
    assert (attention.masked_select((src == PAD)[:, None, :].expand_as(attention)) == 0).all()
    with torch.no_grad():  # the same weights as teacher forcing on the generated prefix
        prefix = torch.cat([start, out[:, :-1]], dim=1)
        _, forced = model(src, prefix, src_key_padding_mask=src != PAD, return_attention=True)
    torch.testing.assert_close(attention, forced, atol=1e-6, rtol=1e-5)
    model.decoder.use_attention = False  # same weights, bottleneck path: no alignment to record
    stepper = RNNStepper(model, src, src != PAD)
    with torch.no_grad():
        greedy_search(stepper, start, torch.ones_like(start), 3, EOS, PAD)
    assert stepper.attention is None


def _check_greedy(out, teacher_forced):
    """Each generated token is the argmax given the tokens before it; after EOS only padding."""
    finished_early = 0
    for row in out:
        ends = (row == EOS).nonzero()
        stop = int(ends[0]) + 1 if len(ends) else len(row)
        assert (row[stop:] == PAD).all()
        finished_early += stop < len(row)
    assert 0 < finished_early  # the EOS stopping rule was exercised
    prefix = torch.cat([torch.full((out.shape[0], 1), BOS), out[:, :-1]], dim=1)
    with torch.no_grad():
        best = teacher_forced(prefix).argmax(-1)  # (B, L)
    generated = torch.ones_like(out, dtype=torch.bool)
    for b, row in enumerate(out):
        ends = (row == EOS).nonzero()
        if len(ends):
            generated[b, int(ends[0]) + 1:] = False
    assert (best[generated] == out[generated]).all()


@pytest.mark.slow
def test_trained_transformer_copies_exactly_with_greedy_decoding():
    model = tiny_transformer()
    train_seq2seq(model, copy_batches(50), pad_id=PAD, epochs=3, lr=5e-3, warmup_steps=20, label_smoothing=0.0,
                  progress=False, device="cpu")
    src, tgt = copy_batches(1, batch=64, seed=9)[0]
    out, expected = greedy(model, src, max_new_tokens=model.max_len - 1), tgt[:, 1:]
    width = max(out.shape[1], expected.shape[1])  # both are padded after EOS; compare whole rows
    out, expected = F.pad(out, (0, width - out.shape[1]), value=PAD), F.pad(expected, (0, width - expected.shape[1]), value=PAD)
    assert (out == expected).all(dim=1).float().mean() > 0.85
