"""A key/value cache with room reserved up front, for decoding many tokens fast.

The plain cache of :mod:`course_lib.models.gpt` is a tuple of ``(k, v)`` per layer, each
``(B, H, T_seen, D/H)``; every decoding step makes it one token longer with ``torch.cat``,
which copies everything cached so far into newly allocated memory. Beam search copies it once
more to reorder the beams. On a small model on a CPU those two copies cost more than the model's arithmetic.

:class:`LayerKVBuffer` keeps one layer's keys and values in buffers of a fixed ``capacity``
(the longest the sequences will get, known before decoding starts):

* :meth:`~LayerKVBuffer.append` copies what is cached into the other buffer, as a contiguous view
  one token longer, writes the new token's key and value at its end, and swaps the buffers: one
  copy, no allocation, and attention reads contiguous keys and values (strided ones are slower);
* :meth:`~LayerKVBuffer.reorder` (beam search) only records which rows survive: the next append
  gathers them in the copy it makes anyway, so reordering costs nothing extra.

It behaves like a ``(k, v)`` pair (``layer[0]``, ``layer[1]``, ``len(layer) == 2``), so code that
reads a plain cache reads this one too; :func:`preallocate` turns a plain cache into a tuple of them.
Used by :class:`course_lib.decoding.steppers.CausalLMStepper`. Not covered: paged or shared-prefix
caches, caches on another device than the model.
"""
from __future__ import annotations

import torch

__all__ = ["LayerKVBuffer", "preallocate"]


class LayerKVBuffer:
    """One layer's keys and values, ``(N, H, length, D/H)``, in two flat buffers with room for ``capacity`` tokens."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        rows, heads, length, _ = keys.shape
        if capacity < length:
            raise ValueError(f"capacity {capacity} is smaller than the {length} tokens already cached")
        self.capacity = capacity
        # Each buffer holds keys and values side by side; the filled part is always a contiguous view.
        size = rows * heads * capacity * (keys.shape[-1] + values.shape[-1])
        self._buffers = [keys.new_empty(size), keys.new_empty(size)]
        self._rows = None  # a pending reorder, applied by the next append's copy
        self._keys, self._values = self._views(0, rows, heads, length, keys.shape[-1], values.shape[-1])
        self._keys.copy_(keys)
        self._values.copy_(values)

    def _views(self, which, rows, heads, length, key_dim, value_dim):
        """Contiguous ``(N, H, length, d)`` views of the start of buffer ``which`` for keys and values."""
        flat = self._buffers[which]
        key_size = rows * heads * length * key_dim
        return (flat[:key_size].view(rows, heads, length, key_dim),
                flat[key_size:key_size + rows * heads * length * value_dim].view(rows, heads, length, value_dim))

    @property
    def length(self) -> int:
        return self._keys.shape[2]

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:  # (N, H, length, D/H), a pending reorder applied
        cached = (self._keys, self._values)[index]
        return cached if self._rows is None else cached.index_select(0, self._rows)

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add ``keys``/``values`` ``(N, H, T_new, D/H)`` after the cached ones; return all of them.

        One copy: the cached rows (reordered, if :meth:`reorder` asked for it) move into the other
        buffer's view one ``T_new`` longer, the new tokens go at its end, and the two buffers swap.
        """
        rows, heads, new, _ = keys.shape
        length = self.length + new
        if length > self.capacity:
            raise ValueError(f"the cache holds at most {self.capacity} tokens; {length} asked. "
                             "Give a larger capacity when decoding starts.")
        self._buffers.reverse()
        longer = self._views(0, rows, heads, length, keys.shape[-1], values.shape[-1])
        for old, grown, added in zip((self._keys, self._values), longer, (keys, values)):
            if self._rows is None:
                grown[:, :, :-new].copy_(old)
            else:  # beam search: gather each beam's parent row in the same copy
                torch.index_select(old, 0, self._rows, out=grown[:, :, :-new])
            grown[:, :, -new:] = added
        self._keys, self._values = longer
        self._rows = None
        return longer

    def reorder(self, rows: torch.Tensor) -> LayerKVBuffer:
        """Row ``i`` becomes old row ``rows[i]`` (repeats allowed, same number of rows). Lazy: the next
        :meth:`append` gathers the rows while it copies anyway."""
        if len(rows) != self._keys.shape[0]:
            raise ValueError(f"reorder keeps the number of rows ({self._keys.shape[0]}), got {len(rows)} rows")
        self._rows = rows if self._rows is None else self._rows[rows]
        return self


def preallocate(cache, capacity: int, rows: torch.Tensor | None = None) -> tuple[LayerKVBuffer, ...]:
    """A plain cache (per layer ``(k, v)``) copied into :class:`LayerKVBuffer` of ``capacity`` tokens,
    keeping batch rows ``rows`` (e.g. each prompt repeated once per beam) if given."""
    if rows is not None:
        cache = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache]
    return tuple(LayerKVBuffer(k, v, capacity) for k, v in cache)
