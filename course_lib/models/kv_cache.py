"""Key/value caches: what a decoder keeps of the tokens it has read, so each step feeds only the new one.

Generating token ``t+1`` needs the keys and values of tokens ``0..t`` in every layer; they do not
change once computed, so a cache keeps them. Every cache here speaks one protocol, per layer:

* ``append(keys, values) → (keys, values)``: add the new tokens' keys and values ``(N, H, T_new, D/H)``
  and return all of them so far ``(N, H, length, D/H)``, what attention reads;
* ``reorder(rows)``: row ``i`` continues old row ``rows[i]`` (beam search; repeats allowed);
* ``length``: how many tokens it holds; and ``keys, values = layer`` reads them.

:class:`LayerKVCache` is the plain one, the one to read: ``torch.cat`` to grow, ``index_select`` to
reorder. :class:`LayerKVBuffer` is its optimisation for long beam searches. ``torch.cat`` copies
everything cached into new memory at every step and the reorder copies it once more; on a small model
on a CPU those copies cost more than the arithmetic. The buffer reserves room for ``capacity`` tokens
up front, and each append makes *one* copy into the other of two buffers, gathering the surviving
beams' rows on the way, so a reorder costs nothing by itself.

:class:`KVCache` holds one of them per layer: it is what :class:`~course_lib.models.gpt.GPT` takes as
``past_key_values`` and returns, with ``length``, ``reorder(rows)`` and :meth:`KVCache.buffered` (a
copy in buffers, for beam search). :meth:`KVCache.wrap` also accepts a plain tuple of ``(k, v)`` per
layer, the layout the decoding lab's beam step returns. Not covered: paged or shared-prefix caches,
quantised caches, caches on another device than the model.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

__all__ = ["KVCache", "LayerKVBuffer", "LayerKVCache", "reorder_cache"]


class LayerKVCache:
    """One layer's keys and values ``(N, H, length, D/H)``, grown by concatenation."""

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        self.keys, self.values = keys, values  # None until the first append

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is not None:  # what earlier calls computed comes first, along the token axis
            keys, values = torch.cat([self.keys, keys], dim=2), torch.cat([self.values, values], dim=2)
        self.keys, self.values = keys, values
        return keys, values

    def reorder(self, rows: torch.Tensor) -> LayerKVCache:
        self.keys, self.values = self.keys.index_select(0, rows), self.values.index_select(0, rows)
        return self

    def __iter__(self) -> Iterator[torch.Tensor]:  # keys, values = layer
        return iter((self.keys, self.values))


class LayerKVBuffer:
    """:class:`LayerKVCache`'s protocol on two flat buffers with room for ``capacity`` tokens."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        rows, heads, length, _ = keys.shape
        if capacity < length:
            raise ValueError(f"capacity {capacity} is smaller than the {length} tokens already cached")
        self.capacity = capacity
        # Each buffer holds keys and values side by side; the filled part is always a contiguous view
        # (attention reads contiguous keys and values faster than strided ones).
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

    @property
    def keys(self) -> torch.Tensor:  # (N, H, length, D/H), a pending reorder applied
        return self._keys if self._rows is None else self._keys.index_select(0, self._rows)

    @property
    def values(self) -> torch.Tensor:
        return self._values if self._rows is None else self._values.index_select(0, self._rows)

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One copy: the cached rows (reordered, if :meth:`reorder` asked for it) move into the other
        buffer's view ``T_new`` longer, the new tokens go at its end, and the two buffers swap."""
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
        """Lazy: only remember the rows; the next :meth:`append` gathers them while it copies anyway."""
        if len(rows) != self._keys.shape[0]:
            raise ValueError(f"reorder keeps the number of rows ({self._keys.shape[0]}), got {len(rows)} rows")
        self._rows = rows if self._rows is None else self._rows[rows]
        return self

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.keys, self.values))


class KVCache:
    """One layer cache per layer of a model; ``for keys, values in cache`` reads them."""

    def __init__(self, layers: Iterable):
        self.layers = list(layers)

    @classmethod
    def wrap(cls, past, num_layers: int) -> KVCache:
        """``past_key_values`` as a model receives it: ``None`` (an empty plain cache of ``num_layers``),
        a :class:`KVCache` (itself), or a tuple of ``(k, v)`` per layer (a plain cache holding them)."""
        if past is None:
            return cls(LayerKVCache() for _ in range(num_layers))
        return past if isinstance(past, KVCache) else cls(LayerKVCache(k, v) for k, v in past)

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def reorder(self, rows: torch.Tensor) -> KVCache:
        """Row ``i`` of every layer continues old row ``rows[i]`` (in place)."""
        for layer in self.layers:
            layer.reorder(rows)
        return self

    def buffered(self, capacity: int, rows: torch.Tensor | None = None) -> KVCache:
        """A copy in :class:`LayerKVBuffer` layers with room for ``capacity`` tokens, keeping rows ``rows``
        if given (e.g. each prompt once per beam: the rows may be more than the cache has)."""
        layers = []
        for keys, values in self.layers:
            if rows is not None:
                keys, values = keys.index_select(0, rows), values.index_select(0, rows)
            layers.append(LayerKVBuffer(keys, values, capacity))
        return KVCache(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int):
        return self.layers[index]

    def __iter__(self) -> Iterator:
        return iter(self.layers)


def reorder_cache(cache, rows: torch.Tensor) -> KVCache:
    """A reordered *copy* of ``cache`` (a :class:`KVCache` or a tuple of ``(k, v)`` per layer): row ``i``
    is old row ``rows[i]``, and ``cache`` itself stays as it was (for code that compares the two)."""
    return KVCache(LayerKVCache(k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache)
