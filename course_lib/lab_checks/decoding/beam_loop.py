"""The beam-step check's end-to-end part: the student's step looped into a whole beam search on the course's GPT.

:func:`run_beam_search` is beam search without an end token around any step function; with
:func:`~.beam_steps.reference_beam_step` it gives ``course_lib.decoding.generate(num_beams=K)``'s token ids
(pinned by ``tests/labs/test_decoding.py``). :func:`check_against_beam_search` runs it with the student's step
on the Shakespeare GPT and compares with the reference's beams; :func:`~.beam_search.check_beam_scores` calls it
after its single-step trials. Only the step's scores and tokens are used, so a mistake in its rows or cache
(other cells) cannot change the result.

Not covered: EOS handling and the finished list (``course_lib.decoding.beam_search``), single steps (:mod:`.beam_search`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ...models.gpt import load_shakespeare_gpt
from ...models.kv_cache import reorder_cache
from ..toolkit import fail, trials
from .beam_steps import reference_beam_step, step_scores

__all__ = ["check_against_beam_search", "run_beam_search", "shakespeare_model"]


@functools.lru_cache(maxsize=1)
def shakespeare_model():
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
            scores, tokens = step_scores(step, (log_probs, beam_scores, tuple(map(tuple, cache)), num_beams), context)
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


def check_against_beam_search(step: Callable) -> None:
    """The student's step, looped on the course's GPT, gives the reference step's (= generate's) beams."""
    for trial in trials(2, seed=1750):
        model = shakespeare_model().to(trial.device)
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
