"""A dict bounded by an estimate of the bytes it holds, for caches keyed by device input.

A fleet repeats a bounded set of topics, so per-topic work is cached; but a topic is chosen by the
device, so a cache keyed by it must be bounded in bytes, not only in entries (10,000 entries of
256-byte topics weigh a hundred times 10,000 entries of 2-byte ones). :class:`ByteBoundedCache`
is a plain ``dict`` (lookups stay C-speed ``get`` calls) whose :meth:`~ByteBoundedCache.put`
counts an estimated size per entry and empties the cache when the next entry would pass
``max_bytes``: the working set of a fleet refills it in one pass.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

ENTRY_OVERHEAD_BYTES = 240
"""What an entry costs besides its key's characters: the dict slot, the key and value objects."""


class ByteBoundedCache(dict, Generic[K, V]):
    """A dict that holds at most about ``max_bytes`` (key sizes plus a fixed overhead per entry)."""

    __slots__ = ("max_bytes", "used_bytes")

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.used_bytes = 0

    def put(self, key: K, value: V, size: int) -> V:
        """Store ``value`` under ``key``, counting ``size`` bytes plus the entry overhead;
        returns ``value``."""
        cost = size + ENTRY_OVERHEAD_BYTES
        if self.used_bytes + cost > self.max_bytes:
            self.clear()
        self[key] = value
        self.used_bytes += cost
        return value

    def clear(self) -> None:
        """Empty the cache (and its byte count)."""
        super().clear()
        self.used_bytes = 0
