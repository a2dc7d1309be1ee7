"""Steppers: what decoding needs from a model, for decoder-only models and both kinds of encoder-decoder.

:mod:`course_lib.decoding` never calls a model directly. It calls a stepper:

* ``start(ids (N, T), mask (N, T), capacity) → scores (N, V)``: read the prompts, return the
  next-token scores (``capacity``, the longest the sequences will get, lets a stepper preallocate);
* ``step(tokens (N,)) → scores (N, V)``: append one token per row, return the next scores;
* ``reorder(rows)`` (beam search: row ``i`` continues from old row ``rows[i]``) and ``expand(k)``
  (each row becomes ``k`` identical beams).

:class:`CausalLMStepper` keeps the key/value cache, the attention mask and the position of each row
(left padding: positions count real tokens only). It calls only the cache protocol of
:mod:`course_lib.models.kv_cache` (``reorder``, ``buffered``): for beam search the beams' cache moves
into buffers reserved once, where each step's one copy also reorders the beams (greedy search and
sampling keep the plain cache: with nothing to reorder it is as fast). :class:`Seq2SeqStepper` encodes
the source once and re-decodes the target prefix at each step (the course's Transformer has no cache).
:class:`RNNStepper` encodes the source once and carries the RNN decoder's state from step to step,
recording each step's attention over the source.

:func:`stepper_for` picks one by duck typing, so this package imports no model. Not covered: HF models
(the course compares with HF through HF's own ``generate``), caches that live on another device.
"""
from __future__ import annotations

import torch

from ..attention.masks import positions_from_mask

__all__ = ["Stepper", "CausalLMStepper", "Seq2SeqStepper", "RNNStepper", "stepper_for"]


class Stepper:
    """What decoding needs from a model: ``start(ids (N, T), mask, capacity) → scores (N, V)`` for the next
    token, ``step(tokens (N,)) → scores (N, V)``, ``reorder(rows)`` (beam search) and ``expand(k)``."""

    def expand(self, k: int) -> None:  # every row becomes k identical rows (beams), after the prompt was read once
        self.reorder(torch.arange(self.rows, device=self.device).repeat_interleave(k))


class CausalLMStepper(Stepper):
    """A decoder-only model called as ``model(ids, attention_mask=, position_ids=, past_key_values=,
    use_cache=True)`` returning ``(logits (N, T, V), cache)``, the cache with :mod:`course_lib.models.kv_cache`'s
    protocol (our GPT)."""

    def __init__(self, model):
        self.model = model

    def _run(self, ids, positions):
        logits, self.cache = self.model(ids, attention_mask=self.mask, position_ids=positions,
                                        past_key_values=self.cache, use_cache=True)
        return logits[:, -1].float()  # (N, V), only the newest position matters

    def start(self, ids, mask, capacity=None):
        self.mask, self.cache, self.capacity = mask, None, capacity
        self.rows, self.device = len(ids), ids.device
        positions = positions_from_mask(mask)  # (N, T), padding on the left does not shift positions
        self.next_position = positions[:, -1:] + 1  # (N, 1)
        return self._run(ids, positions)

    def step(self, tokens):
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)  # (N, T + 1)
        positions, self.next_position = self.next_position, self.next_position + 1
        return self._run(tokens[:, None], positions)

    def reorder(self, rows):
        self.mask, self.next_position = self.mask[rows], self.next_position[rows]
        self.cache.reorder(rows)
        self.rows = len(rows)

    def expand(self, k):
        rows = torch.arange(self.rows, device=self.device).repeat_interleave(k)
        self.rows *= k
        self.mask, self.next_position = self.mask[rows], self.next_position[rows]
        # Beam search: each prompt's cache copied once per beam into buffers that last the whole search.
        self.cache = self.cache.reorder(rows) if self.capacity is None else self.cache.buffered(self.capacity, rows)


class Seq2SeqStepper(Stepper):
    """An encoder-decoder with ``encode(src, src_key_padding_mask)`` and ``decode(tgt, memory,
    memory_key_padding_mask=)`` (our Transformer); ``source`` is ``(N, S)``, its mask True at real tokens."""

    def __init__(self, model, source, source_mask=None):
        self.model, self.source_mask = model, source_mask
        self.memory = model.encode(source, source_mask)  # (N, S, D), computed once
        self.rows, self.device = len(source), source.device

    def _run(self):
        return self.model.decode(self.target, self.memory, memory_key_padding_mask=self.source_mask)[:, -1].float()

    def start(self, ids, mask, capacity=None):
        self.target = ids  # decoder prompt, usually one BOS column
        return self._run()

    def step(self, tokens):
        self.target = torch.cat([self.target, tokens[:, None]], dim=1)
        return self._run()

    def reorder(self, rows):
        self.target, self.memory = self.target[rows], self.memory[rows]
        self.source_mask = None if self.source_mask is None else self.source_mask[rows]
        self.rows = len(rows)


class RNNStepper(Stepper):
    """An RNN encoder-decoder: ``model.encode(src, src_mask) → state`` (a dict of tensors, or None values)
    and ``model.decoder.step(prev_tokens (N,), state) → (logits (N, V), state, weights (N, S) or None)``.

    ``attention`` is ``(N, fed, S)``: the weights of every step so far, one row per token fed (the decoder
    prompt's and the generated ones), reordered with the beams; None for a decoder without attention.
    With a one-token prompt (BOS), row ``t`` is the attention while the model chose generated token ``t``.
    """

    def __init__(self, model, source, source_mask=None):
        self.model = model
        self.state = model.encode(source, source_mask)  # the encoder runs once
        self.attention = None
        self.rows, self.device = len(source), source.device

    def _run(self, tokens):  # tokens (N,)
        logits, self.state, weights = self.model.decoder.step(tokens, self.state)
        if weights is not None:
            weights = weights[:, None, :]  # (N, 1, S)
            self.attention = weights if self.attention is None else torch.cat([self.attention, weights], dim=1)
        return logits.float()  # (N, V)

    def start(self, ids, mask, capacity=None):
        for column in ids[:, :-1].unbind(dim=1):  # a longer decoder prompt: read it one token at a time
            self._run(column)
        return self._run(ids[:, -1])

    def step(self, tokens):
        return self._run(tokens)

    def reorder(self, rows):  # every tensor of the state, and the attention so far, follow their rows
        self.state = {name: None if value is None else value.index_select(0, rows)
                      for name, value in self.state.items()}
        self.attention = None if self.attention is None else self.attention.index_select(0, rows)
        self.rows = len(rows)


def stepper_for(model, source=None, source_mask=None) -> Stepper:
    """The stepper for ``model``, by duck typing (so decoding imports no model). Without ``source``: a
    decoder-only model, :class:`CausalLMStepper`. With ``source`` ``(N, S)`` (``source_mask`` True at real
    tokens): a model whose ``decoder`` has a ``step`` method, one token at a time with a state (the
    course's RNNs), gets :class:`RNNStepper`; any other (``encode`` and ``decode``: the Transformer)
    gets :class:`Seq2SeqStepper`."""
    if source is None:
        return CausalLMStepper(model)
    if callable(getattr(getattr(model, "decoder", None), "step", None)):
        return RNNStepper(model, source, source_mask)
    return Seq2SeqStepper(model, source, source_mask)
