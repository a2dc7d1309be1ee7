"""Lab 05 (decoding): what only its checks need; what every lab shares is in ``test_structure.py``.

The checks of ``course_lib.lab_checks.decoding`` against the library: its filters pass them, the
beam search the checks loop equals ``course_lib.generate(num_beams=K)``, the finished-score formula
picks the sequence the library's beam search returns; the beam-step checks see moved beams and
several prompts and judge the cache by the student's own rows only where those describe the step's own
choice; mistakes no fixture holds get their own message. Edge cases and answers in other forms:
``test_decoding_forms.py``. The known mistakes (``tests/fixtures/labs/decoding/``), the reference solution and the
notebooks: ``test_structure.py``; nbgrader: ``tests/grader/``.
"""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from course_lib.decoding import generate
from course_lib.decoding.processors import top_k_filter, top_p_filter
from course_lib.lab_checks.decoding import (
    beam_loop, beam_search as decoding_beam_search, beam_steps, finished_score as decoding_finished,
    sampling as decoding_sampling, top_p as decoding_top_p,
)
from course_lib.lab_checks.toolkit import CheckFailed, trials
from tests.labs.support import kernel
from tests.labtools import lab_files

FILES = lab_files("decoding")


@pytest.fixture(scope="module")
def solution() -> dict:
    """The source notebook's solution, run in one namespace as in a kernel."""
    return kernel(FILES)


# --- the references are the library's ---------------------------------------------------------------

def test_the_library_filters_pass_their_checks():
    decoding_sampling.check_top_k(top_k_filter)
    decoding_sampling.check_top_k_ties(top_k_filter)
    decoding_top_p.check_top_p(top_p_filter)


@pytest.mark.parametrize(("num_beams", "new_tokens", "seed"), [(2, 5, 0), (4, 12, 1), (5, 8, 2)])
def test_the_checks_beam_search_loop_gives_the_library_generate_ids(num_beams, new_tokens, seed):
    model = beam_loop.shakespeare_model()
    prompt = torch.randint(1, model.config.vocab_size, (1, 3 + seed), generator=torch.Generator().manual_seed(seed))
    ours = beam_loop.run_beam_search(beam_steps.reference_beam_step, model, prompt, num_beams, new_tokens)
    library = generate(model, prompt, max_new_tokens=new_tokens, num_beams=num_beams,
                       num_return_sequences=num_beams)
    assert torch.equal(ours, library)


class _Chain(nn.Module):
    """A fake encoder-decoder whose next-token distribution depends on the last token only.

    Tokens: 0 = EOS, 1 = BOS, 2 = a word. After BOS: EOS 0.4, word 0.6; after a word: EOS 0.6, word 0.4.
    Finished sequences (3 new tokens at most): [EOS] 0.4, [w, EOS] 0.36, [w, w, EOS] 0.144, [w, w, w] 0.096.
    """

    TABLE = torch.log(torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.4, 1e-9, 0.6, 1e-9],
                                    [0.6, 1e-9, 0.4, 1e-9], [0.25, 0.25, 0.25, 0.25]]))

    def encode(self, source, source_mask=None):
        return torch.zeros(len(source), 1, 1)

    def decode(self, target, memory, memory_key_padding_mask=None):
        return self.TABLE[target]  # (N, T, V)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_finished_score_ranks_as_the_library_beam_search(length_penalty):
    prompt_length = 2  # a two-token decoder prompt: counting it would change the winner for length_penalty=2
    hypotheses = {(0,): 0.4, (2, 0): 0.36, (2, 2, 0): 0.144, (2, 2, 2): 0.096}
    sums = torch.log(torch.tensor(list(hypotheses.values())))
    lengths = torch.tensor([prompt_length + len(h) for h in hypotheses])
    scores = decoding_finished.reference_finished_score(sums, lengths, prompt_length, length_penalty)
    winner = list(hypotheses)[int(scores.argmax())]
    ids = generate(_Chain(), torch.tensor([[1, 1]]), source=torch.zeros(1, 1, dtype=torch.long), max_new_tokens=3,
                   num_beams=2, eos_token_id=0, length_penalty=length_penalty)
    generated = ids[0, prompt_length:].tolist()
    assert generated == list(winner) + [0] * (len(generated) - len(winner))  # padded with EOS
    assert {0.0: (0,), 1.0: (2, 0), 2.0: (2, 2, 0)}[length_penalty] == winner  # three different winners


# --- the checks, called directly -----------------------------------------------------------------------

def test_known_mistakes_cover_the_issue():
    stems = {path.stem for path in FILES.mistakes}
    assert {"top_p_drops_crossing_token", "no_renormalization", "cache_not_reordered",
            "score_not_normalized", "score_normalized_by_total_length", "two_mistakes"} <= stems


def test_the_top_p_trials_vary_p():
    """Reproducible, varied shapes and the course's device are held for every check in test_structure.py."""
    seen = []

    def spy(logits, p):
        seen.append(p)
        return top_p_filter(logits, p)

    decoding_top_p.check_top_p(spy)
    assert len(set(seen)) > 1


def test_the_beam_step_checks_see_moved_beams_and_several_prompts():
    for check_seed, equal in ((1600, False), (1650, True), (1700, False)):
        steps = [beam_steps.random_step(trial, equal_beam_scores=equal)
                 for trial in trials(decoding_beam_search.TRIALS, seed=check_seed)]
        assert all(not torch.equal(rows.cpu(), torch.arange(len(rows))) for _, (_, _, rows, _) in steps)
        assert max(len(inputs[0]) // inputs[3] for inputs, _ in steps) > 1  # some trials batch several prompts


def _step_then(solution, change):
    """The solution's step with ``change(scores, tokens, rows, cache, inputs)`` applied to its results."""
    def step(log_probs, beam_scores, cache, num_beams):
        results = solution["beam_search_step"](log_probs, beam_scores, cache, num_beams)
        return change(*results, (log_probs, beam_scores, cache, num_beams))
    return step


def _follows(rows, cache):
    return tuple((k[rows], v[rows]) for k, v in cache)


def _worst_first(scores, tokens, rows, cache, inputs):  # every output in the same wrong order: a scores mistake
    order = torch.arange(len(rows)).view(-1, inputs[3]).flip(-1).flatten()
    return scores[order], tokens[order], rows[order], _follows(rows[order], inputs[2])


def _rows_within_prompts(scores, tokens, rows, cache, inputs):  # the rows mistake, the cache following it
    rows = rows % inputs[3]
    return scores, tokens, rows, _follows(rows, inputs[2])


def _own_best(scores, tokens, rows, cache, inputs):  # each beam its own best token: a wrong choice, consistent
    totals = inputs[0] + inputs[1][:, None]
    best, tokens = totals.max(-1)
    rows = torch.arange(len(rows))
    return best, tokens, rows, _follows(rows, inputs[2])


def _zero_rows(scores, tokens, rows, cache, inputs):  # rows naming beams the step did not choose
    rows = torch.zeros_like(rows)
    return scores, tokens, rows, _follows(rows, inputs[2])


def _flipped_rows(scores, tokens, rows, cache, inputs):
    rows = rows.flip(0)
    return scores, tokens, rows, _follows(rows, inputs[2])


@pytest.mark.parametrize(("change", "lost"), [
    (_worst_first, {"test_beam_scores"}),
    (_rows_within_prompts, {"test_beam_rows"}),
    (_own_best, {"test_beam_scores", "test_beam_rows"}),
    (_zero_rows, {"test_beam_rows", "test_beam_cache"}),
    (_flipped_rows, {"test_beam_rows", "test_beam_cache"}),
])
def test_the_cache_follows_the_students_rows_only_where_they_describe_its_own_choice(solution, change, lost):
    """A cache that follows rows costs only the cells of their mistake when the rows name the beams the step chose
    (in another order, counted within each prompt, or a wrong choice that fits the inputs); rows naming other beams
    (all zeros, another prompt's beams) cost the cache cell too, so no all-zero answer passes it."""
    step = _step_then(solution, change)
    failed = set()
    for grade_id, check in (("test_beam_scores", decoding_beam_search.check_beam_scores),
                            ("test_beam_rows", decoding_beam_search.check_beam_rows),
                            ("test_beam_cache", decoding_beam_search.check_beam_cache)):
        try:
            check(step)
        except CheckFailed:
            failed.add(grade_id)
    assert failed == lost


class _Layers:
    """A cache object that is no tuple but whose layers unpack into (k, v), like the library's."""

    def __init__(self, layers):
        self.layers = [list(layer) for layer in layers]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)


@pytest.mark.parametrize(("layout", "accepted"), [
    (lambda cache: [list(layer) for layer in cache], True),
    (_Layers, True),
    (lambda cache: tuple(k for k, _ in cache), False),  # keys only: a tuple of tensors
])
def test_the_cache_check_accepts_any_layers_of_k_v_pairs(solution, layout, accepted):
    def step(log_probs, beam_scores, cache, num_beams):
        scores, tokens, rows, new_cache = solution["beam_search_step"](log_probs, beam_scores, cache, num_beams)
        return scores, tokens, rows, layout(new_cache)

    if accepted:
        decoding_beam_search.check_beam_cache(step)
    else:
        with pytest.raises(CheckFailed, match=r"the returned cache should be a tuple of \d \(k, v\) pairs"):
            decoding_beam_search.check_beam_cache(step)


@pytest.mark.parametrize(("check", "wrong", "message"), [
    (decoding_sampling.check_top_k, lambda logits, k: logits.masked_fill(logits < logits.topk(k).values[..., -1:], 0.0),
     "sets removed tokens to 0 instead of -inf"),
    (decoding_sampling.check_top_k, lambda logits, k: logits.masked_fill(logits < logits.topk(k).values[..., -1:], -torch.inf),
     "k may exceed the vocabulary size"),
    (decoding_top_p.check_top_p, lambda logits, p: logits.masked_fill(top_p_filter(-logits, p).isinf(), -torch.inf),
     "keeps the least likely tokens"),
    (decoding_sampling.check_distribution_filters,
     lambda logits, t, k, p: decoding_sampling.reference_distribution(logits * t * t, t, k, p),
     "the logits are multiplied by the temperature"),
    (decoding_beam_search.check_beam_scores, lambda lp, s, c, k: (s, s, s, c), "has dtype torch.float32"),
    (decoding_finished.check_finished_score, lambda s, n, p, lp: s / (n - p - 1) ** lp, "without the EOS token"),
])
def test_other_mistakes_get_their_own_message(check, wrong, message):
    with pytest.raises(CheckFailed, match=re.escape(message)) as failure:
        check(wrong)
    assert failure.value.hint

