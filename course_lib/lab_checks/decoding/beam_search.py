"""The decoding lab's beam-search checks: one beam-search step with its cache, a finished hypothesis's score.

The references: :func:`reference_beam_step`, the selection step of :func:`course_lib.decoding.beam_search`
without an end token, and :func:`reference_finished_score`, HF's (and the library's) length-normalised
score. :func:`check_beam_scores` also loops the student's step on the course's Shakespeare GPT
(:func:`run_beam_search`), which with the reference step gives ``course_lib.decoding.generate(num_beams=K)``'s
token ids (pinned by ``tests/labs/test_decoding.py``).

Each classic mistake costs only its own cell: the three outputs of a step are checked apart, the
scores and tokens (parents inferred from them in the end-to-end run) by :func:`check_beam_scores`,
the source rows by :func:`check_beam_rows` (on steps where every beam of a prompt scores the same),
and the cache by :func:`check_beam_cache`, against the student's *own* rows; the wrong length
normalisations of a finished score are named by :func:`~course_lib.lab_checks.toolkit.diagnose`.

Not covered: EOS handling and the finished list (``course_lib.decoding.beam_search``), the rubric (:mod:`.decoding`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ...models.gpt import load_shakespeare_gpt
from ...models.kv_cache import reorder_cache
from ..toolkit import Trial, call_student, diagnose, expect_close, expect_results, expect_tensor, fail, is_close, trials

__all__ = [
    "check_beam_scores", "check_beam_rows", "check_beam_cache", "check_finished_score",
    "reference_beam_step", "reference_finished_score", "run_beam_search",
]

TRIALS = 8


# --- references ------------------------------------------------------------------------------------

def reference_beam_step(log_probs, beam_scores, cache, num_beams):
    """One step of :func:`course_lib.decoding.beam_search` without an end token.

    ``log_probs`` ``(B*K, V)``, ``beam_scores`` ``(B*K,)``; returns ``(scores, tokens, rows, cache)``,
    the K best continuations of each prompt, best first, ``rows`` indexing the old beams.
    """
    rows_in, vocab = log_probs.shape
    batch = rows_in // num_beams
    totals = (log_probs + beam_scores[:, None]).view(batch, num_beams * vocab)  # (B, K*V)
    scores, flat = torch.topk(totals, num_beams, dim=-1)  # (B, K), best first
    offset = torch.arange(batch, device=log_probs.device)[:, None] * num_beams
    rows = (flat // vocab + offset).flatten()
    return scores.flatten(), (flat % vocab).flatten(), rows, reorder_cache(cache, rows)


def reference_finished_score(sum_log_probs, sequence_length, prompt_length, length_penalty):
    """HF's (and :func:`course_lib.decoding.beam_search`'s) score of a finished hypothesis:
    ``sum log p / generated_length ** length_penalty``, EOS counted, the prompt not."""
    return sum_log_probs / (sequence_length - prompt_length) ** length_penalty


# --- one step ---------------------------------------------------------------------------------------

def _random_step(trial: Trial, *, equal_beam_scores: bool = False):
    """Inputs of one step: log_probs (B*K, V), beam_scores (B*K,), a cache of L layers, K; whose
    expected rows are not 0, 1, 2, ... (so a cache left as it was is caught). With
    ``equal_beam_scores`` all beams of a prompt score the same, so the choice does not depend on
    adding them (that is :func:`check_beam_scores`' business)."""
    batch = (1, 2, 3, 2)[trial.index % 4]
    beams, vocab, layers = trial.randint(2, 4), trial.randint(6, 15), trial.randint(1, 3)
    for _ in range(100):
        log_probs = torch.log_softmax(trial.randn(batch * beams, vocab) * 2, dim=-1)
        beam_scores = -(trial.randn(batch, beams).abs() * 3).sort(dim=-1).values.flatten()  # best first
        if equal_beam_scores:
            beam_scores = beam_scores.view(batch, beams)[:, :1].repeat_interleave(beams, dim=1).flatten()
        elif trial.index == 0:  # the first step: all beams are the prompt, only beam 0 may propose
            beam_scores = torch.tensor([0.0] + [-1e9] * (beams - 1), device=trial.device).repeat(batch)
        cache = tuple((trial.randn(batch * beams, 2, 3, 4), trial.randn(batch * beams, 2, 3, 4))
                      for _ in range(layers))
        expected = reference_beam_step(log_probs, beam_scores, cache, beams)
        if not torch.equal(expected[2].cpu(), torch.arange(batch * beams)):
            return (log_probs, beam_scores, cache, beams), expected
    raise RuntimeError("could not draw a beam step that reorders the beams")  # unreachable


def _step_context(log_probs, num_beams) -> str:
    return f"log_probs {tuple(log_probs.shape)}, num_beams={num_beams}, so {len(log_probs) // num_beams} prompt(s)"


def _call_step(step: Callable, inputs, context: str):
    result = call_student(step, *inputs, name="beam_search_step")  # log_probs, beam_scores, cache, num_beams
    return expect_results(result, ("scores", "tokens", "rows", "cache"), function="beam_search_step", context=context)


def _as_index(value, name: str, size: int, context: str) -> torch.Tensor:
    expect_tensor(value, name=name, shape=(size,), context=context)
    if value.dtype.is_floating_point or value.dtype == torch.bool:
        fail(f"{name} has dtype {value.dtype}, expected an integer dtype (on {context})",
             "token ids and row numbers are integers: use // and % on the topk indices (torch.long).")
    return value.detach().cpu().long()


def _step_scores(step: Callable, inputs, context: str):
    log_probs = inputs[0]
    scores, tokens = _call_step(step, inputs, context)[:2]
    size = len(log_probs)
    expect_tensor(scores, name="scores", shape=(size,), context=context)
    return scores.detach().to(log_probs.device).float(), _as_index(tokens, "tokens", size, context)


def check_beam_scores(step: Callable) -> None:
    """New beams: the K best continuations of each prompt over all its beams, best first, with their
    total log-probabilities; looped on the Shakespeare GPT they give the library's beams (:func:`run_beam_search`)."""
    for trial in trials(TRIALS, seed=1600):
        inputs, (exp_scores, exp_tokens, _, _) = _random_step(trial)
        log_probs, beam_scores, _, num_beams = inputs
        context = _step_context(log_probs, num_beams)
        scores, tokens = _step_scores(step, inputs, context)
        if is_close(scores, exp_scores) and torch.equal(tokens, exp_tokens.cpu()):
            continue
        batch = len(log_probs) // num_beams
        zero_scores = reference_beam_step(log_probs, torch.zeros_like(beam_scores), (), num_beams)
        if is_close(scores, zero_scores[0]):
            fail(f"the new scores ignore the beams' running scores (on {context})",
                 "a continuation's score is its beam's score plus the token's log-probability: "
                 "log_probs + beam_scores[:, None], before choosing.")
        per_beam = (log_probs + beam_scores[:, None]).max(-1)
        if is_close(scores, per_beam.values):
            fail(f"each beam took its own best token (on {context})",
                 "beams compete: choose the K best of all K × V continuations of a prompt "
                 "(view the totals as (B, K*V), then torch.topk), so a good beam may have several children.")
        totals = log_probs + beam_scores[:, None]
        if batch > 1 and is_close(scores, torch.topk(totals.flatten(), len(log_probs)).values):
            fail(f"the best continuations are chosen over all prompts together (on {context})",
                 "each prompt keeps its own K beams: view the totals as (B, K*V) and take the top K per row.")
        if is_close(scores.view(batch, -1).sort(-1, descending=True).values, exp_scores.view(batch, -1)):
            fail(f"the new beams are not ordered best first (on {context})",
                 "return each prompt's beams from best to worst (torch.topk sorts them for you).")
        if is_close(scores, exp_scores):
            fail(f"the scores are right but the tokens are not: got {tokens.tolist()}, expected "
                 f"{exp_tokens.tolist()} (on {context})",
                 "in the flattened (K*V) totals, index i is token i % V of beam i // V.")
        expect_close(scores, exp_scores, name="scores", context=context,
                     hint="score every continuation (beam score + log-probability) and keep the K best per prompt.")
    _check_against_beam_search(step)


@functools.lru_cache(maxsize=1)
def _shakespeare_model():
    return load_shakespeare_gpt()[0]


def run_beam_search(step: Callable, model, prompt: torch.Tensor, num_beams: int, max_new_tokens: int,
                    context: str = "") -> torch.Tensor:
    """Beam search without an end token around ``step`` (a student's or :func:`reference_beam_step`):
    ``(K, T + max_new_tokens)`` ids of the final beams, best first, for one prompt ``(1, T)``.

    Only the step's scores and tokens are used; each new beam's parent is the old beam whose score plus
    the token's log-probability gives the new score, and the cache is reordered here, so rows and
    cache mistakes (other cells) cannot change the result. With :func:`reference_beam_step` this gives
    ``generate(model, prompt, num_beams=K, num_return_sequences=K)``'s ids (``tests/labs/test_decoding.py``).
    """
    device = prompt.device
    sequences = prompt.repeat(num_beams, 1)  # (K, T)
    beam_scores = torch.tensor([0.0] + [-1e9] * (num_beams - 1), device=device)  # K copies of one prompt
    with torch.no_grad():
        logits, cache = model(prompt, use_cache=True)
        cache = reorder_cache(cache, torch.zeros(num_beams, dtype=torch.long, device=device))
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1).repeat(num_beams, 1)  # (K, V)
        for index in range(max_new_tokens):
            scores, tokens = _step_scores(step, (log_probs, beam_scores, tuple(map(tuple, cache)), num_beams), context)
            tokens = tokens.to(device)
            candidates = beam_scores[:, None] + log_probs[:, tokens]  # (K old, K new)
            parents = (candidates - scores[None, :]).abs().argmin(0)
            sequences = torch.cat([sequences[parents], tokens[:, None]], dim=1)
            beam_scores = scores
            if index + 1 < max_new_tokens:
                logits, cache = model(sequences[:, -1:], attention_mask=torch.ones_like(sequences),
                                      past_key_values=reorder_cache(cache, parents), use_cache=True)
                log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)
    return sequences


def _check_against_beam_search(step: Callable) -> None:
    """The student's step, looped on the course's GPT, gives the reference step's (= generate's) beams."""
    for trial in trials(2, seed=1750):
        model = _shakespeare_model().to(trial.device)
        num_beams, new_tokens = (3, 4)[trial.index], (6, 5)[trial.index]
        prompt = torch.randint(1, model.config.vocab_size, (1, trial.randint(2, 5)), generator=trial.generator)
        prompt = prompt.to(trial.device)
        context = f"the Shakespeare GPT, prompt {prompt.cpu().tolist()}, num_beams={num_beams}"
        expected = run_beam_search(reference_beam_step, model, prompt, num_beams, new_tokens)
        got = run_beam_search(step, model, prompt, num_beams, new_tokens, context)
        if not torch.equal(got.cpu(), expected.cpu()):
            fail(f"looped on {context}, your beams are {got[:, prompt.shape[1]:].cpu().tolist()}, "
                 f"course_lib's beam search gives {expected[:, prompt.shape[1]:].cpu().tolist()}",
                 "choose the K best continuations over all beams at every step, each scored by its beam's score "
                 "plus the token's log-probability.")


def check_beam_rows(step: Callable) -> None:
    """``rows[i]`` is the index, in the input's B*K rows, of the beam that new beam i continues
    (on steps where all beams of a prompt have the same score)."""
    for trial in trials(TRIALS, seed=1650):
        inputs, (_, _, exp_rows, _) = _random_step(trial, equal_beam_scores=True)
        log_probs, _, _, num_beams = inputs
        context = _step_context(log_probs, num_beams)
        rows = _as_index(_call_step(step, inputs, context)[2], "rows", len(log_probs), context)
        exp_rows = exp_rows.cpu()
        if torch.equal(rows, exp_rows):
            continue
        if torch.equal(rows, exp_rows % num_beams):
            fail(f"rows {rows.tolist()} count the beams within each prompt, expected rows of the whole batch "
                 f"{exp_rows.tolist()} (on {context})",
                 "prompt b's beams are rows b*K ... b*K + K-1 of log_probs and of the cache: add b * num_beams "
                 "to the beam index (torch.arange(B)[:, None] * num_beams).")
        if torch.equal(rows, torch.arange(len(rows))):
            fail(f"rows is 0, 1, 2, ... but the new beams continue beams {exp_rows.tolist()} (on {context})",
                 "rows says which old beam each new beam extends: the topk index over the (K*V) totals "
                 "divided by V (integer division).")
        fail(f"rows is {rows.tolist()}, expected {exp_rows.tolist()} (on {context})",
             "new beam i extends old beam (index // V) of its prompt; in the batch that is row b*K + index // V.")


def _cache_layers(cache) -> list[tuple] | None:
    """``[(k, v), ...]`` of a cache laid out like the input, or of any iterable whose layers unpack into
    ``k, v`` (the library's cache objects); ``None`` for anything else, e.g. a tuple of tensors."""
    def unpackable(value) -> bool:
        return hasattr(value, "__iter__") and not isinstance(value, (torch.Tensor, str, dict))

    layers = list(cache) if unpackable(cache) else []
    if not layers or not all(unpackable(layer) for layer in layers):
        return None
    layers = [tuple(layer) for layer in layers]
    return layers if all(len(layer) == 2 for layer in layers) else None


def check_beam_cache(step: Callable) -> None:
    """The returned cache holds, for each new beam, the keys and values of the old beam it continues
    (judged against the student's own ``rows`` when they are valid row numbers)."""
    for trial in trials(TRIALS, seed=1700):
        inputs, (_, _, exp_rows, _) = _random_step(trial)
        log_probs, _, cache, num_beams = inputs
        context = f"{_step_context(log_probs, num_beams)}, a cache of {len(cache)} layer(s)"
        result = _call_step(step, inputs, context)
        rows, new_cache = result[2], result[3]
        if isinstance(rows, torch.Tensor) and rows.shape == exp_rows.shape and not rows.dtype.is_floating_point \
                and bool(((rows >= 0) & (rows < len(log_probs))).all()):
            exp_rows = rows.to(log_probs.device).long()  # your rows: a wrong choice is another cell's business
        expected = reorder_cache(cache, exp_rows)
        layers = _cache_layers(new_cache)
        if layers is None or len(layers) != len(cache):
            fail(f"the returned cache should be a tuple of {len(cache)} (k, v) pairs like the input (on {context})",
                 "return the cache in the same layout: tuple((k[rows], v[rows]) for k, v in cache).")
        for layer, ((k, v), (exp_k, exp_v), (old_k, old_v)) in enumerate(zip(layers, expected, cache)):
            for name, got, want, old in (("k", k, exp_k, old_k), ("v", v, exp_v, old_v)):
                label = f"cache[{layer}] {name}"
                expect_tensor(got, name=label, shape=tuple(want.shape), context=context)
                if is_close(got, want):
                    continue
                if is_close(got, old):
                    fail(f"{label} was not reordered: it is the input cache, but the new beams continue rows "
                         f"{exp_rows.tolist()} (on {context})",
                         "beams are not reordered with their cache: each new beam must carry the keys and values "
                         "of the beam it extends, or its next token is computed from another beam's history: "
                         "tuple((k[rows], v[rows]) for k, v in cache).")
                fail(f"{label} does not hold rows {exp_rows.tolist()} of the input cache (on {context})",
                     "select along the first (batch) axis with the same rows you return: k.index_select(0, rows); "
                     "reorder both k and v of every layer.")


# --- finished hypotheses ----------------------------------------------------------------------------

def check_finished_score(finished_score: Callable) -> None:
    """``finished_score(sum_log_probs, sequence_length, prompt_length, length_penalty)`` =
    sum_log_probs / (sequence_length - prompt_length) ** length_penalty."""
    for trial, penalty in zip(trials(6, seed=1800), (1.0, 2.0, 0.5, 1.5, -0.5, 1.0)):
        count, prompt_length = trial.randint(2, 5), trial.randint(2, 6)
        generated = torch.randint(2, 12, (count,), generator=trial.generator).to(trial.device)
        sequence_length = prompt_length + generated
        sums = -(trial.randn(count).abs() * 4 + 0.5)
        context = (f"sum_log_probs {[round(s, 3) for s in sums.tolist()]}, sequence_length "
                   f"{sequence_length.tolist()}, prompt_length={prompt_length}, length_penalty={penalty}")
        got = call_student(finished_score, sums, sequence_length, prompt_length, penalty, name="finished_score")
        expect_tensor(got, name="finished_score(...)", shape=(count,), context=context)
        expected = reference_finished_score(sums, sequence_length, prompt_length, penalty)
        if is_close(got, expected):
            continue
        lengths = generated.float()
        diagnose(got, [
            (sums, "the score is not length-normalized",
             "divide by the generated length raised to length_penalty; without it, beam search prefers "
             "short hypotheses (every token adds a negative log-probability)."),
            (sums / sequence_length.float() ** penalty,
             "the score is divided by the whole sequence length, prompt included",
             "the length counts generated tokens only (EOS included, the prompt not): "
             "sequence_length - prompt_length, as in HF."),
            (sums / (lengths - 1) ** penalty, "the score is divided by the generated length without the EOS token",
             "the end token counts: generated length = sequence_length - prompt_length."),
            (sums / lengths, "length_penalty is ignored",
             "raise the length to the power length_penalty: length ** length_penalty "
             "(1 = average log-probability per token, 0 = no normalization)."),
            (sums * lengths ** penalty, "the score is multiplied by the length instead of divided",
             "divide: sum_log_probs / length ** length_penalty."),
        ], context=context)
        expect_close(got, expected, name="finished_score(...)", context=context,
                     hint="sum_log_probs / (sequence_length - prompt_length) ** length_penalty.")
