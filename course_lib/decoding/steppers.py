"""Steppers: the three things decoding needs from a model, for decoder-only and encoder-decoder models.

:mod:`course_lib.decoding` never calls a model directly. It calls a stepper:

* ``start(ids (N, T), mask (N, T), capacity) → scores (N, V)``: read the prompts, return the
  next-token scores (``capacity``, the longest the sequences will get, lets a stepper preallocate);
* ``step(tokens (N,)) → scores (N, V)``: append one token per row, return the next scores;
* ``reorder(rows)`` (beam search: row ``i`` continues from old row ``rows[i]``) and ``expand(k)``
  (each row becomes ``k`` identical beams).

:class:`CausalLMStepper` keeps the key/value cache, the attention mask and the position of each
row (left padding: positions count real tokens only). For beam search on our GPT the beams' cache
lives in buffers reserved once (:mod:`course_lib.models.kv_cache`): each step's one copy also reorders the
beams (greedy search and sampling keep the plain cache: with nothing to reorder it is as fast).
:class:`Seq2SeqStepper` encodes the source once and re-decodes the target prefix at each step (the
course's Transformer has no cache).
Not covered: HF encoder-decoders (use their ``generate``), caches that live on another device.
"""
from __future__ import annotations

import torch

from ..models.gpt import positions_from_mask, reorder_cache
from ..models.kv_cache import LayerKVBuffer, preallocate

__all__ = ["Stepper", "CausalLMStepper", "Seq2SeqStepper"]


class Stepper:
    """What decoding needs from a model: ``start(ids (N, T), mask, capacity) → scores (N, V)`` for the next
    token, ``step(tokens (N,)) → scores (N, V)``, ``reorder(rows)`` (beam search) and ``expand(k)``."""


class CausalLMStepper(Stepper):
    """A decoder-only model called as ``model(ids, attention_mask=, position_ids=, past_key_values=,
    use_cache=True)`` returning ``(logits, past_key_values)`` (our GPT; HF models via ``.logits``)."""

    def __init__(self, model):
        self.model = model

    def _run(self, ids, positions):
        out = self.model(ids, attention_mask=self.mask, position_ids=positions,
                         past_key_values=self.past, use_cache=True)
        logits, self.past = (out.logits, out.past_key_values) if hasattr(out, "logits") else out
        return logits[:, -1].float()  # (N, V), only the newest position matters

    def start(self, ids, mask, capacity=None):
        self.mask, self.past, self.capacity = mask, None, capacity
        positions = positions_from_mask(mask)  # (N, T), padding on the left does not shift positions
        self.next_position = positions[:, -1:] + 1  # (N, 1)
        return self._run(ids, positions)

    def step(self, tokens):
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)  # (N, T + 1)
        positions, self.next_position = self.next_position, self.next_position + 1
        return self._run(tokens[:, None], positions)

    def reorder(self, rows):
        self.mask, self.next_position = self.mask[rows], self.next_position[rows]
        if isinstance(self.past, tuple):
            self.past = reorder_cache(self.past, rows)
        else:  # an HF Cache object
            self.past.reorder_cache(rows)

    def expand(self, k):  # every row becomes k identical rows (beams), after the prompt was read once
        rows = torch.arange(len(self.mask), device=self.mask.device).repeat_interleave(k)
        if self.capacity is not None and isinstance(self.past, tuple):  # our GPT: buffers for the beams
            self.mask, self.next_position = self.mask[rows], self.next_position[rows]
            self.past = preallocate(self.past, self.capacity, rows)
        else:
            self.reorder(rows)


class Seq2SeqStepper(Stepper):
    """An encoder-decoder with ``encode(src, src_key_padding_mask)`` and ``decode(tgt, memory,
    memory_key_padding_mask=)`` (our Transformer); ``source`` is ``(N, S)``, its mask True at real tokens."""

    def __init__(self, model, source, source_mask=None):
        self.model, self.source_mask = model, source_mask
        self.memory = model.encode(source, source_mask)  # (N, S, D), computed once

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

    def expand(self, k):
        self.reorder(torch.arange(len(self.target), device=self.target.device).repeat_interleave(k))
