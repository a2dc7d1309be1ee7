"""The fast path of beam search: :func:`~course_lib.decoding.search.beam_search` on tensors, all prompts at once.

:func:`batched_beam_search` is what :func:`course_lib.decoding.generate` runs for ``num_beams > 1``. It
makes the same choices as the readable :func:`~course_lib.decoding.search.beam_search` (whose docstring
states HF ``generate``'s rules) and takes its candidates from the same
:func:`~course_lib.decoding.search.beam_step`; ``tests/decoding/test_search.py`` pins the two together token
for token, and both to HF ``generate``. What changes is the bookkeeping: the finished hypotheses of every
prompt live in ``(B, K, L)`` tensors, and a candidate that must not join them (it did not end, it is not among
the first ``K``, its prompt is closed) is pushed out of a ``topk`` by a score of ``-1e9``, HF's own device.

Why it is fast (``scripts/bench_decoding.py``: well under HF ``generate``'s time on a small model): each
step is one model call and a few tensor operations, no Python loop over prompts or candidates, no
logits-processor or stopping-criteria objects; it reads each prompt once and copies its cache into the beams;
it skips the finished-hypotheses merge on steps where no candidate ends; and the stepper keeps the beams'
cache in buffers reserved once (:mod:`course_lib.models.kv_cache`), where one copy per step both grows the
cache and reorders the beams. Not covered: what :mod:`course_lib.decoding.search` does not cover either.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .search import beam_step

__all__ = ["batched_beam_search"]


def _take(tensor, index):  # tensor (B, K, ...) rows picked by index (B, K')
    return torch.take_along_dim(tensor, index.view(*index.shape, *([1] * (tensor.ndim - 2))), dim=1)


def _merge_finished(done, done_scores, done_lengths, is_done, candidates, cand_scores, just_ended, can_improve,
                    generated, length_penalty, early_stopping):
    """Keep the K best of the finished sequences and the candidates that just ended (HF's merge, its -1e9
    additions in its order, so that near-ties round as HF's do)."""
    normalized = cand_scores / (generated ** length_penalty)
    normalized += (is_done.all(dim=-1, keepdim=True) & (early_stopping is True)).float() * -1e9  # prompt full
    normalized += (~can_improve).float() * -1e9  # prompt closed by the early-stop heuristic
    normalized += (~just_ended) * -1e9  # not ended, or not among the first K candidates
    pool_scores = torch.cat([done_scores, normalized], dim=1)  # (B, 3K)
    top = torch.topk(pool_scores, done.shape[1]).indices
    new_lengths = torch.full_like(just_ended, generated, dtype=torch.long)
    merged = (torch.cat([done, candidates], dim=1), pool_scores, torch.cat([done_lengths, new_lengths], dim=1),
              torch.cat([is_done, just_ended], dim=1))
    return tuple(_take(t, top) for t in merged)


def batched_beam_search(stepper, ids, mask, max_new_tokens, num_beams, eos_token_id=None, pad_token_id=0,
                        penalties=None, *, length_penalty=1.0, early_stopping=False, num_return_sequences=1):
    """:func:`~course_lib.decoding.search.beam_search`'s arguments and result, computed on tensors."""
    batch, prompt_len = ids.shape
    max_length, kept = prompt_len + max_new_tokens, 2 * num_beams  # candidates per step: 2 per beam
    penalties = penalties or (lambda s, _: s)
    fill = -1 if eos_token_id is None else (pad_token_id or eos_token_id)  # HF's filler after a sequence's end
    running = ids.new_full((batch, num_beams, max_length), fill)  # (B, K, L) running sequences
    running[:, :, :prompt_len] = ids[:, None]
    running_scores = torch.zeros(batch, num_beams, device=ids.device)
    running_scores[:, 1:] = -1e9  # all beams start identical: let only the first one propose tokens
    done = running.clone()  # (B, K, L) finished sequences, their scores, lengths and flags
    done_scores = torch.full((batch, num_beams), -1e9, device=ids.device)
    done_lengths = torch.zeros(batch, num_beams, dtype=torch.long, device=ids.device)
    is_done = torch.zeros(batch, num_beams, dtype=torch.bool, device=ids.device)
    can_improve = torch.ones(batch, 1, dtype=torch.bool, device=ids.device)  # (B, 1) the prompt is still open
    first_k = torch.arange(kept, device=ids.device) < num_beams  # (2K,)
    row_offset = torch.arange(batch, device=ids.device)[:, None] * num_beams  # (B, 1)

    scores = stepper.start(ids, mask, max_length)  # (B, V): read each prompt once, then copy it into K beams
    stepper.expand(num_beams)
    scores = scores.repeat_interleave(num_beams, dim=0)  # (B*K, V)
    for length in range(prompt_len, max_length):
        log_probs = penalties(F.log_softmax(scores, dim=-1), running[:, :, :length].flatten(0, 1))  # (B*K, V)
        cand_scores, token, parent = beam_step(log_probs, running_scores.flatten(), num_beams, kept)  # (B, 2K)
        candidates = _take(running, parent)  # (B, 2K, L)
        candidates[:, :, length] = token
        ends = torch.full_like(token, length + 1 >= max_length, dtype=torch.bool)
        if eos_token_id is not None:
            ends |= token == eos_token_id

        # Running beams: the best K candidates that did not just end.
        live_scores = cand_scores + ends.float() * -1e9
        best = torch.topk(live_scores, num_beams).indices  # (B, K)
        running, running_scores, parent = _take(candidates, best), _take(live_scores, best), _take(parent, best)

        # Finished beams: the K best of (already finished, candidates ending now among the first K).
        just_ended = ends & first_k
        if just_ended.any():  # (otherwise the merge would change nothing: skip its dozen operations)
            done, done_scores, done_lengths, is_done = _merge_finished(
                done, done_scores, done_lengths, is_done, candidates, cand_scores, just_ended, can_improve,
                length + 1 - prompt_len, length_penalty, early_stopping)
        if is_done.any():  # could a running beam still beat the worst finished one?
            best_length = (max_length if early_stopping == "never" and length_penalty > 0 else length + 1) - prompt_len
            best_possible = running_scores[:, :1] / (best_length ** length_penalty)
            worst_done = torch.where(is_done, done_scores.min(dim=1, keepdim=True).values, -1e9)
            can_improve = can_improve & (best_possible > worst_done).any(dim=-1, keepdim=True)
        all_done = early_stopping is True and bool(is_done.all())
        if not can_improve.any() or all_done or ends.all():
            break
        stepper.reorder((parent + row_offset).flatten())  # each surviving beam takes its parent's cache
        scores = stepper.step(running[:, :, length].flatten())

    returned = done[:, :num_return_sequences].flatten(0, 1)  # (B*R, L), best first
    longest = int(done_lengths[:, :num_return_sequences].max())
    return returned[:, :prompt_len + longest]
