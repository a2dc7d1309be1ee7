"""Decoding: turn a language model's next-token scores into text, one token at a time.

:func:`generate` is the front door (its arguments are HF ``generate``'s); it calls

* :func:`greedy_search`: always the most likely token (``do_sample=False, num_beams=1``);
* :func:`sample`: draw from the (filtered) distribution; temperature, top-k, top-p combine;
* :func:`beam_search`: keep the ``num_beams`` most likely sequences so far, with a length penalty,
  early stopping and several returned sequences;
* :func:`course_lib.decoding.constrained.constrained_beam_search` for ``force_words_ids``.

They work on any model behind a stepper (:mod:`course_lib.decoding.steppers`):
:class:`CausalLMStepper` for a decoder-only model (our :class:`~course_lib.models.gpt.GPT` or HF's GPT-2,
with the key/value cache and left-padded batches: the cache holds every earlier token, so each
step feeds one new token per row) and :class:`Seq2SeqStepper` for the encoder-decoder
:class:`~course_lib.seq2seq.transformer.Transformer` (encode once, then re-decode the target prefix
at each step: that model has no cache).

Beam search follows HF ``generate`` (transformers 5.x) step for step, so both return the same token
ids: candidates are the best ``2 × num_beams`` continuations over all beams; a candidate ending
with EOS (or at ``max_length``) joins the finished list with score ``log p / generated_length **
length_penalty`` only if it ranks among the first ``num_beams``; the best ``num_beams`` unfinished
ones go on. ``early_stopping``: ``True`` stops once ``num_beams`` sequences are finished; ``False``
stops when the best running beam, scored at its current length, cannot beat the worst finished
one; ``"never"`` assumes (for ``length_penalty > 0``) it could still grow to ``max_length``.
Two HF details kept for identical outputs: positions past a beam's end hold the pad id, or EOS
when the pad id is 0; n-gram blocking also sees the prompt's left padding.

Why this is faster than HF ``generate`` on a small model (``scripts/bench_decoding.py``): each step
is one model call plus a few tensor operations, with no logits-processor or stopping-criteria
objects, no cache object or 4-D mask rebuilt per step (a one-token step needs only the padding
mask, or none); it runs under ``torch.inference_mode`` (no autograd bookkeeping per operation);
beam search reads each prompt once and copies its cache into the beams, skips the finished-beam
merge on steps where no beam ends, and keeps the beams' cache in buffers reserved once
(:mod:`course_lib.models.kv_cache`), where one copy per step both grows the cache and reorders the beams
(HF concatenates and reorders: two copies).
Not covered: group/diverse beam search, beam sampling, contrastive search, assisted decoding, streaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .processors import no_repeat_ngram_mask, repetition_penalty, sampling_logits, validate_sampling_args
from .steppers import CausalLMStepper, Seq2SeqStepper, Stepper, stepper_for

__all__ = ["generate", "greedy_search", "sample", "beam_search", "Stepper", "CausalLMStepper", "Seq2SeqStepper"]


def _penalties(scores, sequences, prompt_padding, repetition, ngram):
    """The processors that also apply to greedy and beam search (HF's order)."""
    if repetition is not None and repetition != 1.0:
        ignore = None
        if prompt_padding is not None:  # HF does not penalise the prompt's left padding
            ignore = torch.zeros_like(sequences, dtype=torch.bool)
            ignore[:, :prompt_padding.shape[1]] = prompt_padding
        scores = repetition_penalty(scores, sequences, repetition, ignore)
    if ngram:
        scores = scores.masked_fill(no_repeat_ngram_mask(sequences, ngram, scores.shape[-1]), float("-inf"))
    return scores


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
    """The most likely next token at every step."""
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


def _take(tensor, index):  # tensor (B, K, ...) rows picked by index (B, K')
    return torch.take_along_dim(tensor, index.view(*index.shape, *([1] * (tensor.ndim - 2))), dim=1)


def _merge_finished(done, done_scores, done_lengths, is_done, candidates, cand_scores, just_ended, can_improve,
                    generated, length_penalty, early_stopping):
    """Keep the K best of the finished sequences and the candidates that just ended (HF's rules)."""
    normalized = cand_scores / (generated ** length_penalty)
    normalized += (is_done.all(dim=-1, keepdim=True) & (early_stopping is True)).float() * -1e9
    normalized += (~can_improve).float() * -1e9
    normalized += (~just_ended) * -1e9
    pool_scores = torch.cat([done_scores, normalized], dim=1)  # (B, 3K)
    top = torch.topk(pool_scores, done.shape[1]).indices
    new_lengths = torch.full_like(just_ended, generated, dtype=torch.long)
    merged = (torch.cat([done, candidates], dim=1), pool_scores, torch.cat([done_lengths, new_lengths], dim=1),
              torch.cat([is_done, just_ended], dim=1))
    return tuple(_take(t, top) for t in merged)


def beam_search(stepper, ids, mask, max_new_tokens, num_beams, eos_token_id=None, pad_token_id=0, penalties=None,
                *, length_penalty=1.0, early_stopping=False, num_return_sequences=1):
    """Beam search, HF ``generate``'s semantics; returns ``(B * num_return_sequences, T + generated)``."""
    batch, prompt_len = ids.shape
    max_length, kept = prompt_len + max_new_tokens, 2 * num_beams  # candidates per step: 2 per beam
    penalties = penalties or (lambda s, _: s)
    # HF fills unused positions with the pad id, but with EOS if the pad id is 0 (falsy), -1 without EOS.
    fill = -1 if eos_token_id is None else (pad_token_id or eos_token_id)
    running = ids.new_full((batch, num_beams, max_length), fill)  # (B, K, L) running sequences
    running[:, :, :prompt_len] = ids[:, None]
    running_scores = torch.zeros(batch, num_beams, device=ids.device)
    running_scores[:, 1:] = -1e9  # all beams start identical: let only the first one propose tokens
    done = running.clone()  # (B, K, L) finished sequences, their scores, lengths and flags
    done_scores = torch.full((batch, num_beams), -1e9, device=ids.device)
    done_lengths = torch.zeros(batch, num_beams, dtype=torch.long, device=ids.device)
    is_done = torch.zeros(batch, num_beams, dtype=torch.bool, device=ids.device)
    can_improve = torch.ones(batch, 1, dtype=torch.bool, device=ids.device)
    first_k = torch.arange(kept, device=ids.device) < num_beams  # (2K,)
    row_offset = torch.arange(batch, device=ids.device)[:, None] * num_beams  # (B, 1)

    scores = stepper.start(ids, mask, max_length)  # (B, V): read each prompt once, then copy it into K beams
    stepper.expand(num_beams)
    scores = scores.repeat_interleave(num_beams, dim=0)  # (B*K, V)
    for length in range(prompt_len, max_length):
        log_probs = penalties(F.log_softmax(scores, dim=-1), running[:, :, :length].flatten(0, 1))  # (B*K, V)
        vocab = log_probs.shape[-1]
        totals = (log_probs.view(batch, num_beams, vocab) + running_scores[:, :, None]).view(batch, -1)
        cand_scores, flat = torch.topk(totals, kept)  # (B, 2K), over all beams' continuations
        parent, token = flat // vocab, flat % vocab
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
        if just_ended.any():  # (otherwise the merge below would change nothing: skip its dozen ops)
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


def generate(model, input_ids, attention_mask=None, *, max_new_tokens=20, do_sample=False, num_beams=1,
             temperature=1.0, top_k=None, top_p=None, repetition_penalty=None, no_repeat_ngram_size=0,
             length_penalty=1.0, early_stopping=False, num_return_sequences=1, force_words_ids=None,
             eos_token_id=None, pad_token_id=None, seed=None, source=None, source_mask=None):
    """Continue ``input_ids`` ``(B, T)`` (left-padded, ``attention_mask`` 1 at real tokens).

    For an encoder-decoder pass ``source`` ``(B, S)`` (and ``source_mask``, True at real tokens);
    ``input_ids`` is then the decoder prompt (e.g. a BOS column). Returns ``(B * num_return_sequences,
    T + generated)`` token ids, prompt included, finished rows padded with ``pad_token_id`` (default:
    ``eos_token_id``). ``seed`` makes sampling reproducible without touching the global generator.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        raise ValueError("input_ids must be a (batch, prompt_len) tensor of token ids")
    if input_ids.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token (e.g. a BOS or end-of-text id)")
    if attention_mask is not None and (attention_mask.sum(dim=1) == 0).any():
        raise ValueError("a prompt in the batch is empty (its attention_mask is all 0)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if not isinstance(num_return_sequences, int) or num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be an integer >= 1, got {num_return_sequences!r}")
    if num_return_sequences > num_beams and not do_sample:
        raise ValueError(f"num_return_sequences ({num_return_sequences}) cannot exceed num_beams ({num_beams}): "
                         "beam search only keeps num_beams sequences")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if do_sample:
        validate_sampling_args(temperature, top_k, top_p)
        if num_beams > 1:
            raise NotImplementedError("beam sampling is not covered; use num_beams=1 with do_sample=True")
    pad_token_id = eos_token_id if pad_token_id is None else pad_token_id
    pad_token_id = 0 if pad_token_id is None else pad_token_id
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    padding = None if bool(attention_mask.all()) else attention_mask == 0

    def penalties(scores, sequences):  # beams share their prompt's padding
        rows = padding if padding is None or len(sequences) == len(padding) else \
            padding.repeat_interleave(len(sequences) // len(padding), dim=0)
        return _penalties(scores, sequences, rows, repetition_penalty, no_repeat_ngram_size)

    def decode():  # in eval and inference mode: an encoder-decoder's stepper encodes the source right away
        stepper = stepper_for(model, source, source_mask)
        args = (stepper, input_ids, attention_mask, max_new_tokens)
        if force_words_ids is not None:
            from .constrained import constrained_beam_search
            return constrained_beam_search(*args, num_beams, force_words_ids, eos_token_id, pad_token_id,
                                           penalties, length_penalty=length_penalty,
                                           num_return_sequences=num_return_sequences)
        if num_beams > 1:
            return beam_search(*args, num_beams, eos_token_id, pad_token_id, penalties, length_penalty=length_penalty,
                               early_stopping=early_stopping, num_return_sequences=num_return_sequences)
        if do_sample:
            generator = None if seed is None else torch.Generator(input_ids.device).manual_seed(seed)
            if num_return_sequences > 1:
                return sample(stepper, input_ids.repeat_interleave(num_return_sequences, 0),
                              attention_mask.repeat_interleave(num_return_sequences, 0), max_new_tokens,
                              eos_token_id, pad_token_id, penalties, temperature_value=temperature,
                              top_k=top_k, top_p=top_p, generator=generator)
            return sample(*args, eos_token_id, pad_token_id, penalties, temperature_value=temperature,
                          top_k=top_k, top_p=top_p, generator=generator)
        return greedy_search(*args, eos_token_id, pad_token_id, penalties)

    was_training = model.training
    model.eval()
    try:
        # inference_mode rather than no_grad: it also skips autograd's version counters, a measurable
        # part of each step on small tensors. The ids are cloned out of it, so callers get normal tensors.
        with torch.inference_mode():
            ids = decode()
    finally:
        model.train(was_training)
    return ids.clone()
