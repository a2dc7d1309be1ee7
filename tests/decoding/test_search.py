"""Decoding pinned to HF ``generate`` (transformers 5.x): same weights, same prompts, same token ids.

Beam search runs both ways: through ``generate`` (the batched fast path) and through the readable
``beam_search`` (``beam_path`` swaps it into ``generate``); the two are also pinned to each other on
settings drawn by hypothesis."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402
from transformers.generation.logits_process import (  # noqa: E402
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import course_lib.decoding.generation as generation  # noqa: E402
from course_lib.decoding import (  # noqa: E402
    CausalLMStepper,
    batched_beam_search,
    beam_search,
    beam_step,
    generate,
    stepper_for,
)
from course_lib.decoding.generation import decoding_penalties  # noqa: E402
from course_lib.decoding.processors import (  # noqa: E402
    no_repeat_ngram_mask,
    repetition_penalty,
    sampling_logits,
    temperature,
    top_k_filter,
    top_p_filter,
)
from course_lib.models.gpt import GPT  # noqa: E402
from course_lib.seq2seq.transformer import Transformer  # noqa: E402

VOCAB, EOS, PAD = 64, 2, 0


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # initializer_range 0.2 (GPT-2: 0.02) spreads the logits, so no near-tie can flip a choice.
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=2, n_head=4,
                                    initializer_range=0.2, bos_token_id=1, eos_token_id=EOS,
                                    pad_token_id=PAD)).eval()
    with torch.no_grad():  # a larger EOS embedding (tied to the output layer): some beams end, some run on
        hf.transformer.wte.weight[EOS] *= 2
    return hf, GPT.from_hf(hf).eval()


@pytest.fixture(scope="module")
def prompts():
    """Three prompts of 4, 6 and 7 tokens, left-padded into one batch."""
    ids = torch.randint(3, VOCAB, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3], mask[1, :1] = 0, 0
    return ids.masked_fill(mask == 0, PAD), mask


@pytest.fixture(params=["batched", "readable"])
def beam_path(request, monkeypatch):
    """Which beam search ``generate`` runs: its own (batched) or the readable one, swapped in."""
    if request.param == "readable":
        monkeypatch.setattr(generation, "batched_beam_search", beam_search)
    return request.param


def hf_generate(hf, ids, mask, **kwargs):
    with torch.no_grad():
        return hf.generate(ids, attention_mask=mask, do_sample=False, **kwargs)


def ours_generate(model, ids, mask, **kwargs):
    return generate(model, ids, mask, eos_token_id=EOS, pad_token_id=PAD, **kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(repetition_penalty=1.3),
    dict(no_repeat_ngram_size=2),
    dict(repetition_penalty=0.8, no_repeat_ngram_size=3),
], ids=str)
def test_greedy_equals_hf(models, prompts, kwargs):
    hf, ours = models
    expected = hf_generate(hf, *prompts, max_new_tokens=20, **kwargs)
    got = ours_generate(ours, *prompts, max_new_tokens=20, **kwargs)
    assert torch.equal(got, expected)


# (num_beams, length_penalty, no_repeat_ngram_size, early_stopping, num_return_sequences): each value
# of each setting appears at least twice; the full product (135 cases) also passed when this was written.
BEAM_SETTINGS = [
    (2, 1.0, 0, False, 1), (2, 0.5, 2, True, 2), (2, 2.0, 3, "never", 1), (2, 0.5, 0, False, 2),
    (4, 1.0, 2, False, 4), (4, 0.5, 0, "never", 2), (4, 2.0, 0, True, 1), (4, 1.0, 3, True, 4),
    (4, 2.0, 2, "never", 4), (4, 0.5, 3, False, 1), (2, 1.0, 0, "never", 2), (4, 2.0, 3, False, 2),
]


@pytest.mark.parametrize("num_beams,length_penalty,ngram,early_stopping,returned", BEAM_SETTINGS)
def test_beam_search_equals_hf(models, prompts, beam_path, num_beams, length_penalty, ngram, early_stopping,
                               returned):
    hf, ours = models
    kwargs = dict(max_new_tokens=12, num_beams=num_beams, length_penalty=length_penalty, no_repeat_ngram_size=ngram,
                  early_stopping=early_stopping, num_return_sequences=returned)
    expected = hf_generate(hf, *prompts, **kwargs)
    got = ours_generate(ours, *prompts, **kwargs)
    assert got.shape == expected.shape and torch.equal(got, expected)


def test_beam_settings_reach_finished_hypotheses(models, prompts, beam_path):
    """The settings above are only a test of the finished-beam logic if some beams end with EOS."""
    hf, ours = models
    got = ours_generate(ours, *prompts, max_new_tokens=12, num_beams=4, num_return_sequences=4)
    ended = (got[:, 7:] == EOS).any(dim=1)
    assert ended.any() and not ended.all()
    assert torch.equal(got, hf_generate(hf, *prompts, max_new_tokens=12, num_beams=4, num_return_sequences=4))


def test_beam_search_with_repetition_penalty_equals_hf(models, prompts, beam_path):
    hf, ours = models
    kwargs = dict(max_new_tokens=12, num_beams=3, repetition_penalty=1.5)
    assert torch.equal(ours_generate(ours, *prompts, **kwargs), hf_generate(hf, *prompts, **kwargs))


# --- the readable beam search and the batched one ---------------------------------------------------

def test_beam_step_takes_the_best_continuations_over_all_beams_of_each_prompt():
    log_probs = torch.log(torch.tensor([[0.5, 0.4, 0.1], [0.9, 0.05, 0.05],  # prompt 0: beams 0 and 1
                                        [0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]))  # prompt 1
    beam_scores = torch.log(torch.tensor([0.6, 0.4, 0.5, 0.5]))
    scores, tokens, beams = beam_step(log_probs, beam_scores, num_beams=2)
    assert torch.allclose(scores.exp(), torch.tensor([[0.36, 0.30], [0.35, 0.30]]))
    assert tokens.tolist() == [[0, 0], [0, 0]] and beams.tolist() == [[1, 0], [0, 1]]  # beams within the prompt
    scores, tokens, beams = beam_step(log_probs, beam_scores, 2, num_candidates=4)  # (B, C)
    assert scores.shape == (2, 4) and (scores[:, :-1] >= scores[:, 1:]).all()
    assert tokens[0].tolist() == [0, 0, 1, 2] and beams[0].tolist() == [1, 0, 0, 0]


def _both_beam_searches(model, ids, mask, new_tokens, num_beams, eos=EOS, repetition=None, ngram=0, **kwargs):
    penalties = decoding_penalties(mask, repetition, ngram)
    with torch.inference_mode():
        fast = batched_beam_search(CausalLMStepper(model), ids, mask, new_tokens, num_beams, eos, PAD, penalties,
                                   **kwargs)
        readable = beam_search(CausalLMStepper(model), ids, mask, new_tokens, num_beams, eos, PAD, penalties,
                               **kwargs)
    return fast, readable


@settings(max_examples=40, deadline=None)
@given(num_beams=st.integers(1, 5), length_penalty=st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]),
       early_stopping=st.sampled_from([True, False, "never"]), ngram=st.sampled_from([0, 2, 3]),
       repetition=st.sampled_from([None, 0.8, 1.3]), returned=st.integers(1, 5), new_tokens=st.integers(1, 10),
       lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3), eos=st.sampled_from([EOS, EOS, None]),
       seed=st.integers(0, 10_000))
def test_batched_beam_search_equals_the_readable_one(models, num_beams, length_penalty, early_stopping, ngram,
                                                     repetition, returned, new_tokens, lengths, eos, seed):
    hf, ours = models
    returned = min(returned, num_beams)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (len(lengths), max(lengths)), generator=generator)
    mask = (torch.arange(max(lengths)) >= max(lengths) - torch.tensor(lengths)[:, None]).long()  # left padding
    ids = ids.masked_fill(mask == 0, PAD)
    kwargs = dict(length_penalty=length_penalty, early_stopping=early_stopping, num_return_sequences=returned)
    fast, readable = _both_beam_searches(ours, ids, mask, new_tokens, num_beams, eos, repetition, ngram, **kwargs)
    assert torch.equal(fast, readable)
    if num_beams > 1 and eos is not None:  # (HF's num_beams=1 is greedy; without eos it takes the config's)
        expected = hf_generate(hf, ids, mask, max_new_tokens=new_tokens, num_beams=num_beams,
                               repetition_penalty=repetition, no_repeat_ngram_size=ngram, **kwargs)
        assert torch.equal(readable, expected)


@pytest.mark.parametrize("num_beams,early_stopping", [(2, False), (3, True), (4, "never")])
def test_both_beam_searches_agree_on_encoder_decoders(seq2seq, num_beams, early_stopping):
    from course_lib.seq2seq.rnn import RNNSeq2Seq

    transformer, source = seq2seq
    torch.manual_seed(1)
    rnn = RNNSeq2Seq(7, 6, embed_dim=8, hidden_dim=8, dropout=0.0).eval()
    bos = torch.zeros(2, 1, dtype=torch.long)
    for model in (transformer, rnn):
        got = {}
        with torch.inference_mode():
            for search in (batched_beam_search, beam_search):
                stepper = stepper_for(model, source, source != 1)
                got[search] = search(stepper, bos, torch.ones_like(bos), 6, num_beams, eos_token_id=2, pad_token_id=1,
                                     early_stopping=early_stopping, num_return_sequences=2)
        assert torch.equal(got[batched_beam_search], got[beam_search]), type(model).__name__


def test_readable_beam_search_works_with_only_num_beams_candidates(models, prompts):
    _, ours = models
    ids, mask = prompts
    only_k = lambda log_probs, beam_scores, num_beams, _: beam_step(log_probs, beam_scores, num_beams)  # noqa: E731
    with torch.inference_mode():
        # Without an end token no candidate ends before the last step: K candidates choose the same beams as 2K.
        plain = beam_search(CausalLMStepper(ours), ids, mask, 8, 3, num_return_sequences=3, step=only_k)
        assert torch.equal(plain, beam_search(CausalLMStepper(ours), ids, mask, 8, 3, num_return_sequences=3))
        # With one, beams that end leave fewer than K running: the search goes on with the others.
        got = beam_search(CausalLMStepper(ours), ids, mask, 12, 3, EOS, PAD, num_return_sequences=3, step=only_k)
    assert got.shape[0] == 9 and ((got[:, 7:] == EOS).any(dim=1)).any()
    scores = []
    for row in got[:3]:  # prompt 0's hypotheses, best first: score them with the model itself
        generated = row[7:]
        ends = (generated == EOS).nonzero()
        length = int(ends[0]) + 1 if len(ends) else len(generated)
        full = torch.cat([ids[0, 3:], generated[:length]])  # the prompt without its padding, then the tokens
        with torch.no_grad():
            log_probs = F.log_softmax(ours(full[None, :-1]).logits[0], dim=-1)
        scores.append(float(log_probs[3:].gather(-1, full[4:, None]).sum()) / length)  # length_penalty 1
    assert scores[0] >= scores[1] - 1e-4 and scores[1] >= scores[2] - 1e-4, scores


def test_trace_reports_every_step(models, prompts):
    _, ours = models
    ids, mask = prompts
    steps = []
    with torch.inference_mode():
        beam_search(CausalLMStepper(ours), ids, mask, 5, 3, trace=steps.append)
    assert [step.length for step in steps] == [1, 2, 3, 4, 5]
    first = steps[0]
    assert first.scores.shape == first.tokens.shape == first.beams.shape == (3, 6)  # B prompts, 2K candidates
    assert first.beams.max() == 0 and first.beam_scores.view(3, 3)[:, 1:].isinf().all()  # only beam 0 proposes
    assert all(len(running) == 3 and finished == [] for step in steps[:-1] for running, finished
               in zip(step.running, step.finished))
    assert steps[-1].running == [[], [], []] and steps[-1].finished == [[0, 1, 2]] * 3  # at max_length all end


# --- logits processors against HF's, on random scores ---------------------------------------------

@pytest.fixture
def scores():
    return torch.randn(6, 50, generator=torch.Generator().manual_seed(3)) * 3


@pytest.mark.parametrize("k", [1, 5, 49, 50, 80])
def test_top_k_equals_hf(scores, k):
    assert torch.equal(top_k_filter(scores, k), TopKLogitsWarper(k)(None, scores))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999, 1.0])
def test_top_p_equals_hf(scores, p):
    ours = top_p_filter(scores, p)
    assert torch.equal(ours, TopPLogitsWarper(p)(None, scores))
    kept = ours.isfinite()
    assert (scores.softmax(-1) * kept).sum(-1).min() >= p - 1e-6  # the crossing token is kept


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    assert top_p_filter(probs.log(), 0.6).isfinite().tolist() == [[True, True, False]]
    assert top_p_filter(probs.log(), 0.5).isfinite().tolist() == [[True, False, False]]


@pytest.mark.parametrize("value", [0.3, 1.0, 2.5])
def test_temperature_equals_hf(scores, value):
    assert torch.equal(temperature(scores, value), TemperatureLogitsWarper(value)(None, scores))


@pytest.mark.parametrize("penalty", [0.7, 1.2, 2.0])
def test_repetition_penalty_equals_hf(scores, penalty):
    previous = torch.randint(0, 50, (6, 12), generator=torch.Generator().manual_seed(4))
    expected = RepetitionPenaltyLogitsProcessor(penalty)(previous, scores)
    assert torch.equal(repetition_penalty(scores, previous, penalty), expected)
    ignore = torch.zeros_like(previous, dtype=torch.bool)
    ignore[:, :3] = True  # like HF's prompt_ignore_length
    expected = RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=torch.full((6,), 3))(previous, scores)
    assert torch.equal(repetition_penalty(scores, previous, penalty, ignore), expected)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_equals_hf(scores, n):
    previous = torch.randint(0, 5, (6, 15), generator=torch.Generator().manual_seed(5))  # 5 ids: many repeats
    banned = no_repeat_ngram_mask(previous, n, scores.shape[-1])
    expected = NoRepeatNGramLogitsProcessor(n)(previous, scores)
    assert torch.equal(scores.masked_fill(banned, float("-inf")), expected)
    assert banned.any()


@pytest.mark.parametrize("value,k,p", [(1.0, None, None), (0.7, 5, None), (1.5, None, 0.8), (0.8, 10, 0.9),
                                       (2.0, 3, 0.5), (1.0, 49, 0.999)])
def test_sampling_logits_equal_hf_warpers_in_generate_order(scores, value, k, p):
    expected = scores
    for warper in ([TemperatureLogitsWarper(value)] + ([TopKLogitsWarper(k)] if k else [])
                   + ([TopPLogitsWarper(p)] if p else [])):
        expected = warper(None, expected)
    assert torch.equal(sampling_logits(scores, value, k, p), expected)


def test_sample_and_the_explorer_share_one_sampling_pipeline(monkeypatch, models, prompts):
    """No second copy of the order: both call processors.sampling_logits."""
    import course_lib.decoding.search as search
    import course_lib.decoding.widgets as widgets

    calls = []

    def spy(*args, **kwargs):
        calls.append(args[1:])
        return sampling_logits(*args, **kwargs)

    monkeypatch.setattr(search, "sampling_logits", spy)
    monkeypatch.setattr(widgets, "sampling_logits", spy)
    _, ours = models
    ours_generate(ours, *prompts, max_new_tokens=2, do_sample=True, temperature=0.9, top_k=7, top_p=0.8, seed=0)
    assert calls == [(0.9, 7, 0.8)] * 2
    calls.clear()
    widgets.filtered_distribution(torch.zeros(5), 0.5, 3, 0.9)
    assert (0.5, 3, 0.9) in calls


# --- sampling ------------------------------------------------------------------------------------

def test_seeded_sampling_is_reproducible(models, prompts):
    _, ours = models
    kwargs = dict(max_new_tokens=15, do_sample=True, temperature=0.9, top_k=20, top_p=0.9)
    first = ours_generate(ours, *prompts, seed=7, **kwargs)
    assert torch.equal(first, ours_generate(ours, *prompts, seed=7, **kwargs))
    assert not torch.equal(first, ours_generate(ours, *prompts, seed=8, **kwargs))


def test_sampling_from_one_token_is_greedy(models, prompts):
    _, ours = models
    greedy = ours_generate(ours, *prompts, max_new_tokens=15)
    assert torch.equal(ours_generate(ours, *prompts, max_new_tokens=15, do_sample=True, top_k=1, seed=0), greedy)
    assert torch.equal(ours_generate(ours, *prompts, max_new_tokens=15, do_sample=True, top_p=1e-6, seed=0), greedy)


def test_sampling_frequencies_follow_the_filtered_distribution(models):
    _, ours = models
    prompt = torch.tensor([[5, 9, 11]])
    with torch.no_grad():
        logits = ours(prompt).logits[0, -1]
    expected = top_p_filter(top_k_filter(temperature(logits[None], 1.5), 10), 0.8).softmax(-1)[0]
    draws = generate(ours, prompt.repeat(2000, 1), max_new_tokens=1, do_sample=True, temperature=1.5, top_k=10,
                     top_p=0.8, seed=0)[:, -1]
    observed = torch.bincount(draws, minlength=VOCAB).float() / len(draws)
    assert observed[expected == 0].sum() == 0  # never a filtered token
    assert (observed - expected).abs().max() < 0.05


# --- constrained beam search ----------------------------------------------------------------------

def contains(row, word):
    return any(row[i:i + len(word)] == word for i in range(len(row) - len(word) + 1))


def test_constrained_beam_search_forces_the_words(models, prompts):
    _, ours = models
    ids, mask = prompts
    words = [[5, 6], [9]]
    plain = ours_generate(ours, ids, mask, max_new_tokens=10, num_beams=4)
    assert not all(contains(r[7:].tolist(), w) for r in plain for w in words)  # not there by chance
    got = ours_generate(ours, ids, mask, max_new_tokens=10, num_beams=4, force_words_ids=words,
                        num_return_sequences=2)
    assert got.shape[0] == 6
    for row in got:
        assert all(contains(row[7:].tolist(), w) for w in words), row


# --- the encoder-decoder Transformer --------------------------------------------------------------

@pytest.fixture(scope="module")
def seq2seq():
    torch.manual_seed(3)  # a seed where greedy misses the best 3-token continuation
    model = Transformer(7, 6, dim=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, ffn_dim=32,
                        dropout=0.0).eval()
    with torch.no_grad():
        model.generator.weight.mul_(2)  # sharper distributions: an exhaustive search has a clear winner
    return model, torch.tensor([[3, 4, 5, 6], [6, 2, 3, 1]])


def test_seq2seq_greedy_is_the_argmax_of_a_full_decode(seq2seq):
    model, source = seq2seq
    bos = torch.zeros(2, 1, dtype=torch.long)
    got = generate(model, bos, source=source, source_mask=source != 1, max_new_tokens=6, eos_token_id=2,
                   pad_token_id=1)
    with torch.no_grad():  # each token is the argmax after the tokens before it (until each row's EOS)
        best = model(source, got[:, :-1], src_key_padding_mask=source != 1).argmax(-1)  # (B, L)
    for row, expected in zip(got[:, 1:], best):
        ends = (row == 2).nonzero()
        length = int(ends[0]) + 1 if len(ends) else len(row)
        assert torch.equal(row[:length], expected[:length]) and (row[length:] == 1).all()


def test_seq2seq_wide_beam_search_is_exhaustive_search(seq2seq, beam_path):
    """With num_beams ≥ V², no EOS, no length penalty and early_stopping="never", beam search over
    3 tokens is exact: it must find the most likely of all V³ continuations."""
    model, source = seq2seq
    vocab = 6
    bos = torch.zeros(2, 1, dtype=torch.long)
    got = generate(model, bos, source=source, max_new_tokens=3, num_beams=vocab ** 2, length_penalty=0.0,
                   early_stopping="never")
    every = torch.tensor(list(itertools.product(range(vocab), repeat=3)))  # (V³, 3)
    for b in range(2):
        targets = torch.cat([torch.zeros(len(every), 1, dtype=torch.long), every], dim=1)
        with torch.no_grad():
            log_probs = F.log_softmax(model(source[b:b + 1].expand(len(every), -1), targets[:, :-1]), dim=-1)
        totals = log_probs.gather(-1, targets[:, 1:, None]).squeeze(-1).sum(-1)
        assert got[b, 1:].tolist() == every[totals.argmax()].tolist()
    greedy = generate(model, bos, source=source, max_new_tokens=3)
    assert not torch.equal(greedy, got)  # the search found something greedy missed


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(do_sample=True, temperature=0), "temperature must be a number > 0"),
    (dict(do_sample=True, temperature=-1.0), "temperature must be a number > 0"),
    (dict(do_sample=True, top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(do_sample=True, top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(do_sample=True, top_k=0), "top_k must be an integer >= 1"),
    (dict(num_beams=2, num_return_sequences=3), r"num_return_sequences \(3\) cannot exceed num_beams \(2\)"),
    (dict(early_stopping="sometimes"), "early_stopping must be"),
])
def test_bad_arguments_are_explained(models, kwargs, message):
    _, ours = models
    with pytest.raises(ValueError, match=message):
        generate(ours, torch.tensor([[3, 4]]), max_new_tokens=2, **kwargs)
    if "temperature" in kwargs or "top_p" in kwargs or "top_k" in kwargs:
        with pytest.raises(ValueError, match=message):  # the processors themselves check too
            value = next(iter(v for k, v in kwargs.items() if k != "do_sample"))
            {"temperature": lambda: temperature(torch.zeros(1, 3), value),
             "top_p": lambda: top_p_filter(torch.zeros(1, 3), value),
             "top_k": lambda: top_k_filter(torch.zeros(1, 3), value)}[next(k for k in kwargs if k != "do_sample")]()


def test_empty_prompts_are_explained(models):
    _, ours = models
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(ours, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="a prompt in the batch is empty"):
        generate(ours, torch.tensor([[0, 0], [3, 4]]), torch.tensor([[0, 0], [1, 1]]))
