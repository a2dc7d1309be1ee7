"""The decoding lab's beam-step checks: the new beams' scores and tokens, their source rows, the reordered cache.

Every output is compared with the reference step's (:func:`~.beam_steps.reference_beam_step`, the selection step of
:func:`course_lib.decoding.beam_search`) on random steps whose beams move and on edge cases (K = 1 on several
prompts, fewer tokens than beams, identical beams whose candidates tie: :mod:`.beam_steps`);
:func:`check_beam_scores` also loops the student's step into a whole beam search on the course's GPT
(:mod:`.beam_loop`). Each classic mistake costs only its own cell:

* :func:`check_beam_scores` grades the scores and tokens; with the scores right, wrong tokens are named
  (beam numbers ``index // V`` or flat indices instead of ``index % V``) before the beams' order is;
* :func:`check_beam_rows` grades the rows on steps where every beam of a prompt scores the same, so the
  running scores do not matter; the rows follow the student's own order of the new beams, and beams with equal
  scores are interchangeable (:func:`~.beam_steps.rows_agree`);
* :func:`check_beam_cache` grades the cache against the reference's rows, or against the student's own rows
  only where those describe the beams the student's step chose: the reference's up to the order of the new
  beams and counting rows within each prompt (the rows cell's mistakes), or a wrong choice whose rows, tokens
  and scores fit the inputs (the scores cell's); never rows that name beams the step did not choose, so
  all-zero or unmoved rows (and a cache that follows them) fail unless the step really chose those beams.

Not covered: EOS handling and the finished list (``course_lib.decoding.beam_search``), finished scores
(:mod:`.finished_score`), the rubric (:mod:`.decoding`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...models.kv_cache import reorder_cache
from ..toolkit import diagnose, expect_close, expect_tensor, fail, is_close, trials
from .beam_loop import check_against_beam_search
from .beam_steps import (
    as_index, call_step, edge_steps, random_step, reference_beam_step, rows_agree, rows_follow_the_choice, step_context,
    step_scores,
)

__all__ = ["check_beam_scores", "check_beam_rows", "check_beam_cache"]

TRIALS = 8


def _steps(seed: int, *, equal_beam_scores: bool = False):
    """``(inputs, expected, context)``: TRIALS random steps, then the edge cases."""
    for trial in trials(TRIALS, seed=seed):
        inputs, expected = random_step(trial, equal_beam_scores=equal_beam_scores)
        yield inputs, expected, step_context(inputs[0], inputs[3])
    for inputs, expected, what in edge_steps(next(trials(1)).device, equal_beam_scores=equal_beam_scores):
        yield inputs, expected, step_context(inputs[0], inputs[3], what)


def _check_tokens(tokens, exp_tokens, exp_rows, num_beams: int, vocab: int, context: str) -> None:
    """The scores are right: name what the tokens are instead of ``index % V``."""
    beams = exp_rows.cpu() % num_beams  # each new beam's source beam within its prompt
    problem = (f"the scores are right but the tokens are not: got {tokens.tolist()}, expected "
               f"{exp_tokens.tolist()}")
    diagnose(tokens, [
        (beams, f"{problem}; yours are the source beams' numbers, index // V",
         "in a prompt's flattened (K*V) candidates, index i is token i % V of beam i // V: tokens = index % V."),
        (beams * vocab + exp_tokens.cpu(), f"{problem}; yours are indices into the K*V candidates",
         "index i of the flattened (K*V) candidates is token i % V of beam i // V: take index % V."),
    ], context=context, matches=torch.equal)
    fail(f"{problem} (on {context})", "in the flattened (K*V) totals, index i is token i % V of beam i // V.")


def check_beam_scores(step: Callable) -> None:
    """New beams: the K best continuations of each prompt over all its beams, best first, with their
    total log-probabilities; looped on the Shakespeare GPT they give the library's beams."""
    for inputs, (exp_scores, exp_tokens, exp_rows, _), context in _steps(1600):
        log_probs, beam_scores, _, num_beams = inputs
        scores, tokens = step_scores(step, inputs, context)
        if is_close(scores, exp_scores) and torch.equal(tokens, exp_tokens.cpu()):
            continue
        if is_close(scores, exp_scores):
            _check_tokens(tokens, exp_tokens.cpu(), exp_rows, num_beams, log_probs.shape[-1], context)
        batch = len(log_probs) // num_beams
        zero_scores = reference_beam_step(log_probs, torch.zeros_like(beam_scores), (), num_beams)
        if is_close(scores, zero_scores[0]):
            fail(f"the new scores ignore the beams' running scores (on {context})",
                 "a continuation's score is its beam's score plus the token's log-probability: "
                 "log_probs + beam_scores[:, None], before choosing.")
        totals = log_probs + beam_scores[:, None]
        if is_close(scores, totals.max(-1).values):
            fail(f"each beam took its own best token (on {context})",
                 "beams compete: choose the K best of all K × V continuations of a prompt "
                 "(view the totals as (B, K*V), then torch.topk), so a good beam may have several children.")
        if batch > 1 and is_close(scores, torch.topk(totals.flatten(), len(log_probs)).values):
            fail(f"the best continuations are chosen over all prompts together (on {context})",
                 "each prompt keeps its own K beams: view the totals as (B, K*V) and take the top K per row.")
        if is_close(scores.view(batch, -1).sort(-1, descending=True).values, exp_scores.view(batch, -1)):
            fail(f"the new beams are not ordered best first (on {context})",
                 "return each prompt's beams from best to worst (torch.topk sorts them for you).")
        expect_close(scores, exp_scores, name="scores", context=context,
                     hint="score every continuation (beam score + log-probability) and keep the K best per prompt.")
    check_against_beam_search(step)


def check_beam_rows(step: Callable) -> None:
    """``rows[i]`` is the index, in the input's B*K rows, of the beam that new beam i continues
    (on steps where all beams of a prompt have the same score)."""
    for inputs, (exp_scores, _, exp_rows, _), context in _steps(1650, equal_beam_scores=True):
        log_probs, _, _, num_beams = inputs
        scores, _, rows, _ = call_step(step, inputs, context)
        rows = as_index(rows, "rows", len(log_probs), context)
        if rows_agree(rows, scores, exp_rows, exp_scores, num_beams):
            continue
        exp_rows = exp_rows.cpu()
        offsets = torch.arange(len(rows)) // num_beams * num_beams
        if len(rows) > num_beams and rows_agree(rows + offsets, scores, exp_rows, exp_scores, num_beams):
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


def _rows_for_the_cache(result, inputs, exp_rows, exp_scores) -> torch.Tensor:
    """The student's rows where they describe the beams the student's step chose (the reference's, up to their
    order and counting within each prompt; or any choice whose rows, tokens and scores fit the inputs: a wrong
    choice is the other cells' business), else the reference's. Rows naming beams the step did not choose, such
    as all zeros after another choice, are judged by the reference's rows."""
    scores, tokens, rows, _ = result
    num_beams = inputs[3]
    if isinstance(rows, torch.Tensor) and rows.shape == exp_rows.shape and not rows.dtype.is_floating_point \
            and rows.dtype != torch.bool and bool(((rows >= 0) & (rows < len(exp_rows))).all()):
        rows = rows.detach().cpu().long()
        for absolute in (rows, rows + torch.arange(len(rows)) // num_beams * num_beams):  # as given, or per prompt
            if bool((absolute < len(exp_rows)).all()) and (
                    rows_agree(absolute, scores, exp_rows, exp_scores, num_beams)
                    or rows_follow_the_choice(absolute, scores, tokens, inputs)):
                return rows.to(exp_rows.device)
    return exp_rows


def check_beam_cache(step: Callable) -> None:
    """The returned cache holds, for each new beam, the keys and values of the old beam it continues."""
    for inputs, (exp_scores, _, exp_rows, _), context in _steps(1700):
        cache = inputs[2]
        context = f"{context}, a cache of {len(cache)} layer(s)"
        result = call_step(step, inputs, context)
        rows, new_cache = _rows_for_the_cache(result, inputs, exp_rows, exp_scores), result[3]
        expected = reorder_cache(cache, rows)
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
                         f"{rows.tolist()} (on {context})",
                         "beams are not reordered with their cache: each new beam must carry the keys and values "
                         "of the beam it extends, or its next token is computed from another beam's history: "
                         "tuple((k[rows], v[rows]) for k, v in cache).")
                fail(f"{label} does not hold rows {rows.tolist()} of the input cache (on {context})",
                     "select along the first (batch) axis with the same rows you return: k.index_select(0, rows); "
                     "reorder both k and v of every layer.")
