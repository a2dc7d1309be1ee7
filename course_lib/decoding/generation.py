"""``generate``: the front door of decoding, with HF ``generate``'s arguments.

:func:`generate` checks its arguments, builds the stepper for the model
(:func:`~course_lib.decoding.steppers.stepper_for`: a decoder-only model, or an encoder-decoder given
``source``, Transformer or RNN) and the penalties (:func:`decoding_penalties`), and runs, in eval and
inference mode:

* :func:`~course_lib.decoding.search.greedy_search` (``do_sample=False, num_beams=1``);
* :func:`~course_lib.decoding.search.sample` (``do_sample=True``), with a seed of its own;
* :func:`~course_lib.decoding.batched_beam_search.batched_beam_search` (``num_beams > 1``), the tensor
  version of the readable :func:`~course_lib.decoding.search.beam_search`, pinned to it and to HF;
* :func:`~course_lib.decoding.constrained.constrained_beam_search` (``force_words_ids``).

Why it is faster than HF ``generate`` on a small model: no logits-processor or stopping-criteria objects
and no 4-D mask rebuilt per step (a one-token step needs only the padding mask, or none), and
``torch.inference_mode`` (no autograd bookkeeping per operation); beam search is explained in
:mod:`~course_lib.decoding.batched_beam_search`. Not covered: HF models (use their own ``generate``), batched
prompts of encoder-decoders with a decoder prompt longer than one token per row and padding.
"""
from __future__ import annotations

import torch

from .batched_beam_search import batched_beam_search
from .processors import no_repeat_ngram_mask, repetition_penalty, validate_sampling_args
from .search import greedy_search, sample
from .steppers import stepper_for

__all__ = ["decoding_penalties", "generate"]


def decoding_penalties(attention_mask, repetition=None, ngram=0):
    """``penalties(scores (N, V), sequences (N, L)) → scores``: the processors that apply to every search,
    in HF's order (repetition penalty, then n-gram blocking). ``attention_mask`` ``(B, T)`` is the prompts'
    (beam search's rows are the prompts' repeated, each prompt's beams together)."""
    padding = None if bool(attention_mask.all()) else attention_mask == 0  # (B, T) the prompts' left padding

    def penalties(scores, sequences):
        if repetition is not None and repetition != 1.0:
            ignore = None
            if padding is not None:  # HF does not penalise the prompt's left padding
                ignore = torch.zeros_like(sequences, dtype=torch.bool)
                ignore[:, :padding.shape[1]] = padding.repeat_interleave(len(sequences) // len(padding), dim=0)
            scores = repetition_penalty(scores, sequences, repetition, ignore)
        if ngram:  # like HF, n-gram blocking also sees the prompt's left padding
            scores = scores.masked_fill(no_repeat_ngram_mask(sequences, ngram, scores.shape[-1]), float("-inf"))
        return scores

    return penalties


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
    penalties = decoding_penalties(attention_mask, repetition_penalty, no_repeat_ngram_size)

    def decode():  # in eval and inference mode: an encoder-decoder's stepper encodes the source right away
        stepper = stepper_for(model, source, source_mask)
        args = (stepper, input_ids, attention_mask, max_new_tokens)
        if force_words_ids is not None:
            from .constrained import constrained_beam_search
            return constrained_beam_search(*args, num_beams, force_words_ids, eos_token_id, pad_token_id,
                                           penalties, length_penalty=length_penalty,
                                           num_return_sequences=num_return_sequences)
        if num_beams > 1:
            return batched_beam_search(*args, num_beams, eos_token_id, pad_token_id, penalties,
                                       length_penalty=length_penalty, early_stopping=early_stopping,
                                       num_return_sequences=num_return_sequences)
        if do_sample:
            generator = None if seed is None else torch.Generator(input_ids.device).manual_seed(seed)
            copies = num_return_sequences  # several samples of a prompt: its rows repeated
            return sample(stepper, input_ids.repeat_interleave(copies, 0), attention_mask.repeat_interleave(copies, 0),
                          max_new_tokens, eos_token_id, pad_token_id, penalties, temperature_value=temperature,
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
