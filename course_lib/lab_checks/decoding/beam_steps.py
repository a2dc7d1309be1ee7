"""The beam-step checks' inputs and readers: the reference step, random and edge-case steps, calling a student's
step, and comparing source rows where beams are interchangeable.

* :func:`reference_beam_step`: the selection step of :func:`course_lib.decoding.beam_search` without an end token;
* :func:`random_step`: random inputs whose beams move (expected rows are not 0, 1, 2, ...);
  :func:`edge_steps`: fixed ones for K = 1 on several prompts, a vocabulary smaller than K, and identical
  beams (every candidate tied with its copies in the other beams);
* :func:`call_step`, :func:`step_scores`, :func:`as_index`: the student's step called through
  ``call_student`` and its results read (any integer dtype for tokens and rows, lists for tuples);
* :func:`rows_agree`: the student's rows equal the reference's up to what the rows cell does not grade:
  the order of the new beams (the scores cell's business: rows follow the student's own scores) and, among
  beams with equal scores, which is which; :func:`rows_follow_the_choice`: each row, with its token, is a
  candidate of the inputs whose score is the one the student returned (the cache cell's test that rows
  describe the student's own choice of beams, right or wrong: that is the other cells' business).

Not covered: the checks themselves (:mod:`.beam_search`), the whole beam search (:mod:`.beam_loop`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...models.kv_cache import reorder_cache
from ..toolkit import CheckFailed, Trial, call_student, expect_results, expect_tensor, fail

__all__ = ["reference_beam_step", "random_step", "edge_steps", "step_context", "call_step", "step_scores",
           "as_index", "rows_agree", "rows_follow_the_choice"]


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


def _step_inputs(generator, device, batch, beams, vocab, layers, *, identical=False, equal_beam_scores=False):
    log_probs = torch.log_softmax(torch.randn(batch * beams, vocab, generator=generator) * 2, dim=-1)
    beam_scores = -(torch.randn(batch, beams, generator=generator).abs() * 3).sort(dim=-1).values.flatten()
    if equal_beam_scores:
        beam_scores = beam_scores.view(batch, beams)[:, :1].expand(batch, beams).flatten()
    if identical:  # every beam of a prompt the same: each candidate ties with its copies
        log_probs = log_probs.view(batch, beams, vocab)[:, :1].expand(batch, beams, vocab).reshape(-1, vocab)
        beam_scores = beam_scores.view(batch, beams)[:, :1].expand(batch, beams).flatten()
    cache = tuple((torch.randn(batch * beams, 2, 3, 4, generator=generator).to(device),
                   torch.randn(batch * beams, 2, 3, 4, generator=generator).to(device)) for _ in range(layers))
    return log_probs.contiguous().to(device), beam_scores.contiguous().to(device), cache, beams


def random_step(trial: Trial, *, equal_beam_scores: bool = False):
    """Inputs of one step: log_probs (B*K, V), beam_scores (B*K,), a cache of L layers, K; whose
    expected rows are not 0, 1, 2, ... (so a cache left as it was is caught). With
    ``equal_beam_scores`` all beams of a prompt score the same, so the choice does not depend on
    adding them (that is the scores check's business)."""
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


def edge_steps(device: torch.device, *, equal_beam_scores: bool = False) -> list[tuple[tuple, tuple, str]]:
    """``(inputs, expected, what)`` for K = 1 on three prompts, V = 3 < K = 4 on two prompts, and identical beams
    (with ``equal_beam_scores``, every beam of a prompt scores the same in each)."""
    generator = torch.Generator().manual_seed(1690)
    cases = [((3, 1, 7, 2, False), "K = 1 (greedy) on 3 prompts"),
             ((2, 4, 3, 1, False), "a vocabulary of 3 tokens, smaller than K = 4"),
             ((2, 3, 6, 2, True), "the K beams of each prompt identical, so each candidate ties with its copies")]
    steps = []
    for (batch, beams, vocab, layers, identical), what in cases:
        inputs = _step_inputs(generator, device, batch, beams, vocab, layers, identical=identical,
                              equal_beam_scores=equal_beam_scores)
        steps.append((inputs, reference_beam_step(*inputs), what))
    return steps


def step_context(log_probs, num_beams, what: str = "") -> str:
    prompts = f"log_probs {tuple(log_probs.shape)}, num_beams={num_beams}, so {len(log_probs) // num_beams} prompt(s)"
    return f"{prompts}: {what}" if what else prompts


def call_step(step: Callable, inputs, context: str):
    """The student's ``(scores, tokens, rows, cache)``; a per-beam topk that cannot run when V < K is named."""
    log_probs, _, _, num_beams = inputs
    try:
        result = call_student(step, *inputs, name="beam_search_step")
    except CheckFailed as error:
        if log_probs.shape[-1] < num_beams and "out of range" in error.problem:
            fail(f"{error.problem} (on {context})",
                 f"with fewer tokens (V = {log_probs.shape[-1]}) than beams (K = {num_beams}), one beam's V "
                 "tokens cannot fill K places, so a torch.topk(..., K) over each beam's tokens fails: take the top "
                 "K of each prompt's K*V candidates at once (view the totals as (B, K*V)), or clamp a per-beam "
                 "top-k to min(K, V).")
        raise
    return expect_results(result, ("scores", "tokens", "rows", "cache"), function="beam_search_step", context=context)


def as_index(value, name: str, size: int, context: str) -> torch.Tensor:
    """An integer tensor ``(size,)`` of any integer dtype, as int64 on the CPU."""
    expect_tensor(value, name=name, shape=(size,), context=context)
    if value.dtype.is_floating_point or value.dtype == torch.bool:
        fail(f"{name} has dtype {value.dtype}, expected an integer dtype (on {context})",
             "token ids and row numbers are integers: use // and % on the topk indices (torch.long).")
    return value.detach().cpu().long()


def step_scores(step: Callable, inputs, context: str):
    """The student's scores (float, on the inputs' device) and tokens (int64, CPU) for one step."""
    log_probs = inputs[0]
    scores, tokens = call_step(step, inputs, context)[:2]
    size = len(log_probs)
    expect_tensor(scores, name="scores", shape=(size,), context=context)
    return scores.detach().to(log_probs.device).float(), as_index(tokens, "tokens", size, context)


def _interchangeable(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(n, n)``: beams whose scores are equal within the checks' tolerance."""
    return (a[:, None] - b[None, :]).abs() <= 1e-5 + 1e-4 * b[None, :].abs()


def rows_agree(rows: torch.Tensor, scores, exp_rows: torch.Tensor, exp_scores: torch.Tensor, num_beams: int) -> bool:
    """Whether ``rows`` name the reference's source beams, new beam by new beam, where new beam i is matched
    to the reference's beams of its prompt with the same score: by the student's ``scores`` when they are the
    reference's in another order, else by position (beams the reference scores equally stay interchangeable)."""
    rows, exp_rows, exp_scores = rows.cpu().long(), exp_rows.cpu().long(), exp_scores.detach().cpu().float()
    if isinstance(scores, torch.Tensor) and scores.shape == exp_scores.shape:
        scores = scores.detach().cpu().float()
    else:
        scores = exp_scores
    for start in range(0, len(rows), num_beams):
        part = slice(start, start + num_beams)
        mine, theirs, mine_scores, their_scores = rows[part], exp_rows[part], scores[part], exp_scores[part]
        same_scores = _interchangeable(mine_scores.sort().values, their_scores.sort().values).diagonal().all()
        match = _interchangeable(mine_scores if same_scores else their_scores, their_scores)  # (mine, theirs)
        if not torch.equal(mine.sort().values, theirs.sort().values):
            return False
        if not all(bool((theirs[match[i]] == mine[i]).any()) for i in range(num_beams)):
            return False
    return True


def rows_follow_the_choice(rows: torch.Tensor, scores, tokens, inputs) -> bool:
    """Whether every new beam's ``(rows[i], tokens[i])`` is a candidate of the inputs scoring ``scores[i]``: its
    beam's score plus the token's log-probability, or the log-probability alone (a scores mistake). ``rows`` are
    whole-batch rows (``0 <= rows < B*K``); a degenerate answer (all rows 0 after another choice) is not."""
    log_probs, beam_scores, _, _ = inputs
    if not (isinstance(scores, torch.Tensor) and isinstance(tokens, torch.Tensor)
            and scores.shape == tokens.shape == rows.shape and not tokens.dtype.is_floating_point):
        return False
    rows, tokens = rows.to(log_probs.device).long(), tokens.detach().to(log_probs.device).long()
    if not bool(((tokens >= 0) & (tokens < log_probs.shape[-1])).all()):
        return False
    chosen = log_probs[rows, tokens]
    scores = scores.detach().to(log_probs.device).float()
    return any(bool(torch.isclose(candidate, scores, atol=1e-5, rtol=1e-4).all())
               for candidate in (chosen + beam_scores[rows], chosen))
