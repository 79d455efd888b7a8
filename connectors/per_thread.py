"""Values built once per Bytewax worker thread (connections, caches, writer threads).

Why not ``threading.local``: outside ``-w 1`` (``-w 2``, or several processes with ``-i``/``-a``),
Bytewax runs each worker on a thread it spawned in Rust, which enters Python through PyO3's
``with_gil`` for every operator call. Such a thread has no Python thread state of its own between
calls, so every call gets a fresh one, and with it an empty ``threading.local``. Measured on
bytewax 0.21.1: a value cached in a ``threading.local`` inside a ``flat_map_batch`` was rebuilt on
every batch with ``-w 2`` and with two processes, and built once with ``-w 1`` (where the worker
is the main thread). The OS thread id (``threading.get_ident``) stays the same, so values are
kept by thread id here.

Values are kept for the life of the process (a worker thread lives as long as its flow). A thread
id reused by a later thread hands that thread the earlier value, which suits what is kept here:
objects used by one thread at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerThread(Generic[T]):
    """One value per (OS thread, key), built by ``factory`` on the thread's first ``get``."""

    def __init__(self) -> None:
        self._values: dict[tuple[int, Hashable], T] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, factory: Callable[[], T]) -> T:
        """This thread's value for ``key`` (``factory()`` the first time)."""
        slot = (threading.get_ident(), key)
        value = self._values.get(slot)
        if value is None:
            with self._lock:
                value = self._values.get(slot)
                if value is None:
                    value = self._values[slot] = factory()
        return value

    def __len__(self) -> int:
        return len(self._values)
