"""Search: turn a model's next-token scores into text, one token at a time.

* :func:`greedy_search`: always the most likely token;
* :func:`sample`: draw from the distribution after temperature, top-k and top-p
  (:func:`~course_lib.decoding.processors.sampling_logits`);
* :func:`beam_step` and :func:`beam_search`: keep the ``num_beams`` most likely sequences so far,
  with HF ``generate``'s finished hypotheses, length penalty, early stopping and several returned
  sequences.

They work on any model behind a stepper (:mod:`course_lib.decoding.steppers`) and take ``penalties``
(repetition penalty, n-gram blocking), a function ``(scores, sequences) → scores`` that
:func:`course_lib.decoding.generate` builds. This :func:`beam_search` is written to be read: plain Python
per prompt for the finished hypotheses. ``generate`` runs
:func:`~course_lib.decoding.batched_beam_search.batched_beam_search`, the same search on tensors, faster;
the tests pin it to this one token for token, and both to HF ``generate``.

**Beam search, HF ``generate``'s rules** (transformers 5.x). Each step scores ``2 × num_beams``
candidates over all beams of a prompt. A candidate that ends (EOS, or the last position allowed)
joins the prompt's finished hypotheses, ranked by ``log p / generated_length ** length_penalty``, only
if it ranks among the first ``num_beams`` candidates; the best ``num_beams`` candidates that did not
end go on. The finished list keeps the ``num_beams`` best. A prompt stops taking hypotheses when
``early_stopping=True`` and its list is full, or when its best running beam can no longer beat the worst
finished one: scored at its current length (``early_stopping=False``), or, with ``"never"`` and a
positive length penalty, at ``max_length``, the best it could still reach. Positions past a returned
sequence's end hold the pad id, or EOS when the pad id is 0 (HF's rule). Not covered: group/diverse beam
search, beam sampling, contrastive search, assisted decoding, streaming.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .processors import sampling_logits, validate_sampling_args

__all__ = ["BeamSearchStep", "Hypothesis", "beam_search", "beam_step", "greedy_search", "sample"]


def _decode_one_by_one(stepper, ids, mask, max_new_tokens, eos_token_id, pad_token_id, choose, penalties):
    """Shared loop of greedy search and sampling: ``choose(scores, sequences) → tokens (N,)``."""
    rows, prompt_len = ids.shape
    sequences = ids.new_full((rows, prompt_len + max_new_tokens), pad_token_id)  # (N, T + new), filled as we go
    sequences[:, :prompt_len] = ids
    finished = torch.zeros(rows, dtype=torch.bool, device=ids.device)
    scores = stepper.start(ids, mask, prompt_len + max_new_tokens)
    for length in range(prompt_len, prompt_len + max_new_tokens):
        tokens = choose(penalties(scores, sequences[:, :length]), sequences[:, :length])  # (N,)
        if eos_token_id is not None:  # a finished row only grows padding
            tokens = torch.where(finished, pad_token_id, tokens)
            finished |= tokens == eos_token_id
        sequences[:, length] = tokens
        if finished.all() or length + 1 == prompt_len + max_new_tokens:
            return sequences[:, :length + 1]
        scores = stepper.step(tokens)
    return sequences


def greedy_search(stepper, ids, mask, max_new_tokens, eos_token_id=None, pad_token_id=0, penalties=None):
    """The most likely next token at every step; ``(N, T + generated)``, finished rows padded."""
    return _decode_one_by_one(stepper, ids, mask, max_new_tokens, eos_token_id, pad_token_id,
                              lambda scores, _: scores.argmax(dim=-1), penalties or (lambda s, _: s))


def sample(stepper, ids, mask, max_new_tokens, eos_token_id=None, pad_token_id=0, penalties=None, *,
           temperature_value=1.0, top_k=None, top_p=None, generator=None):
    """Draw each token from the distribution after temperature, then top-k, then top-p."""
    validate_sampling_args(temperature_value, top_k, top_p)

    def choose(scores, _):
        filtered = sampling_logits(scores, temperature_value, top_k, top_p)  # (N, V)
        return torch.multinomial(filtered.softmax(dim=-1), 1, generator=generator)[:, 0]

    return _decode_one_by_one(stepper, ids, mask, max_new_tokens, eos_token_id, pad_token_id, choose,
                              penalties or (lambda s, _: s))


def beam_step(log_probs: torch.Tensor, beam_scores: torch.Tensor, num_beams: int, num_candidates: int | None = None):
    """The ``C`` best continuations of each prompt over all its beams, best first (``C = num_beams`` by default).

    ``log_probs`` ``(B*K, V)``: rows ``b*K … b*K + K-1`` are prompt ``b``'s beams; ``beam_scores`` ``(B*K,)``
    their total log-probabilities. Returns ``scores (B, C)`` (beam score + token log-probability),
    ``tokens (B, C)`` and ``beams (B, C)``, each candidate's parent beam within its prompt (``0 … K-1``).
    """
    vocab = log_probs.shape[-1]
    totals = (log_probs + beam_scores[:, None]).view(-1, num_beams * vocab)  # (B, K*V): every continuation
    scores, flat = torch.topk(totals, num_candidates or num_beams, dim=-1)  # (B, C), best first
    return scores, flat % vocab, flat // vocab  # index i of a row is token i % V of beam i // V


class Hypothesis(NamedTuple):
    score: float  # log p / generated_length ** length_penalty: how finished sequences are ranked
    tokens: list[int]  # the prompt, then the generated tokens (EOS last if it ended on it)


class BeamSearchStep(NamedTuple):
    """What one step of :func:`beam_search` scored and chose (the ``trace`` argument receives one per step)."""

    length: int  # tokens generated per beam, this step's included
    beam_scores: torch.Tensor  # (B*K,) the beams' scores going in; -inf for a row that is no beam (yet)
    log_probs: torch.Tensor  # (B*K, V) next-token log-probabilities, penalties applied
    scores: torch.Tensor  # (B, C) the candidates ``step`` returned, best first,
    tokens: torch.Tensor  # (B, C)   their tokens
    beams: torch.Tensor  # (B, C)    and their parent beams within the prompt
    running: list[list[int]]  # per prompt, the candidates (indices into C) that are the next beams, in order
    finished: list[list[int]]  # per prompt, the candidates that joined the finished hypotheses


def beam_search(stepper, ids, mask, max_new_tokens, num_beams, eos_token_id=None, pad_token_id=0, penalties=None,
                *, length_penalty=1.0, early_stopping=False, num_return_sequences=1,
                step: Callable = beam_step, trace: Callable[[BeamSearchStep], None] | None = None):
    """Beam search with HF ``generate``'s rules; returns ``(B * num_return_sequences, T + generated)``, best first.

    ``step(log_probs, beam_scores, num_beams, 2 * num_beams)`` chooses the candidates (it may return
    fewer: with ``num_beams`` only those are considered); ``trace``, if given, sees every step.
    """
    batch, prompt_len = ids.shape
    max_length = prompt_len + max_new_tokens
    penalties = penalties or (lambda scores, _: scores)
    dead = float("-inf")  # the score of a row that is no beam: its continuations are never candidates
    sequences = ids.repeat_interleave(num_beams, dim=0)  # (B*K, T): K copies of each prompt, one column more per step
    beam_scores = torch.full((batch, num_beams), dead, device=ids.device)
    beam_scores[:, 0] = 0.0  # the copies are one sequence: only the first proposes the first token
    beam_scores = beam_scores.flatten()  # (B*K,)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]  # per prompt, best first, at most K
    open_prompts = [True] * batch  # may a prompt's finished list still change?

    scores = stepper.start(ids, mask, max_length)  # (B, V): read each prompt once, then copy it into K beams
    stepper.expand(num_beams)
    scores = scores.repeat_interleave(num_beams, dim=0)  # (B*K, V)
    for length in range(prompt_len, max_length):
        generated = length + 1 - prompt_len
        log_probs = penalties(F.log_softmax(scores, dim=-1), sequences)  # (B*K, V)
        cand_scores, cand_tokens, cand_beams = step(log_probs, beam_scores, num_beams, 2 * num_beams)  # (B, C)
        ranking = (cand_scores / generated ** length_penalty).tolist()  # the score a candidate finishes with
        next_beams, went_on, joined = [], [], []  # (score, token, parent row) of the B*K next beams
        for b in range(batch):
            candidates = list(zip(cand_scores[b].tolist(), cand_tokens[b].tolist(), cand_beams[b].tolist()))
            running, ended = [], []  # indices into candidates, best first
            for rank, (score, token, beam) in enumerate(candidates):
                if score == dead:  # a dead row's continuation, or a token a processor removed
                    continue
                if token == eos_token_id or length + 1 == max_length:  # this candidate ends here
                    if rank < num_beams and open_prompts[b]:  # HF: only among the first K candidates
                        ended.append(rank)
                elif len(running) < num_beams:
                    running.append(rank)
            for rank in ended:  # a finished hypothesis: its parent beam's tokens, then the token that ended it
                _, token, beam = candidates[rank]
                finished[b].append(Hypothesis(ranking[b][rank], sequences[b * num_beams + beam].tolist() + [token]))
            finished[b] = sorted(finished[b], key=lambda h: h.score, reverse=True)[:num_beams]
            # The next beams; if fewer than K candidates went on, dead rows (score -inf) fill the gap.
            going_on = [candidates[rank] for rank in running] + [(dead, pad_token_id, 0)] * (num_beams - len(running))
            next_beams += [(score, token, b * num_beams + beam) for score, token, beam in going_on]
            went_on.append(running)
            joined.append(ended)
        if trace is not None:
            trace(BeamSearchStep(generated, beam_scores, log_probs, cand_scores, cand_tokens, cand_beams,
                                 went_on, joined))

        next_scores, tokens, rows = zip(*next_beams)
        beam_scores = torch.tensor(next_scores, device=ids.device)  # (B*K,)
        # Could the best running beam still beat the worst finished hypothesis? (HF's early-stop heuristic)
        best_length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else generated
        best_possible = (beam_scores[::num_beams] / best_length ** length_penalty).tolist()  # (B,)
        for b in range(batch):
            full = len(finished[b]) == num_beams
            worst = finished[b][-1].score if full else dead
            open_prompts[b] &= best_possible[b] > worst and not (full and early_stopping is True)
        if not any(open_prompts) or length + 1 == max_length:
            break
        rows, tokens = torch.tensor(rows, device=ids.device), torch.tensor(tokens, device=ids.device)  # (B*K,)
        stepper.reorder(rows)  # each new beam continues its parent's state (key/value cache, ...)
        sequences = torch.cat([sequences[rows], tokens[:, None]], dim=1)
        scores = stepper.step(tokens)

    # The best num_return_sequences of each prompt (too few only with dead beams: then the prompt itself),
    # padded after their end with HF's filler: the pad id, EOS if the pad id is 0, -1 without EOS.
    returned = [hypothesis.tokens for b in range(batch)
                for hypothesis in (finished[b] + [Hypothesis(dead, ids[b].tolist())] * num_return_sequences)
                [:num_return_sequences]]
    fill = -1 if eos_token_id is None else (pad_token_id or eos_token_id)
    longest = max(map(len, returned))
    return torch.tensor([tokens + [fill] * (longest - len(tokens)) for tokens in returned], device=ids.device)
