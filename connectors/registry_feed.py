"""Registry change feed: PostgreSQL ``LISTEN f2_registry`` as a Bytewax source.

Delivery guarantee: best effort per notification, complete by construction. NOTIFY is not
durable, so whenever the listening connection is (re)established the partition first emits a
``*`` change at the registry's current version (forget everything, distrust older Redis entries),
which covers any notification missed while it was down; local entries also expire after
``F2_REGISTRY_TTL_S``. The source is a ``DynamicSource``: one partition
per worker, each with its own connection, and its items stay on that worker, so every worker's
registry cache sees every change. A background thread blocks on the connection; ``next_batch``
only drains its queue and never blocks. No resume state (a restarted flow starts with empty
caches).
"""

from __future__ import annotations

import queue
import threading
from datetime import UTC, datetime, timedelta

import psycopg
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from prometheus_client import Counter
from psycopg import sql

from connectors.failures import RetryPolicy, retry
from connectors.registry_store import ALL, RegistryChange, parse_change, registry_failure

CHANNEL = "f2_registry"
FEED_ERRORS = Counter("f2_registry_feed_errors", "Change feed connection failures", ["reason"])
_IDLE = timedelta(milliseconds=50)


class _FeedPartition(StatelessSourcePartition[RegistryChange]):
    def __init__(self, dsn: str, channel: str, retry_max_s: float) -> None:
        self._dsn, self._channel, self._retry_max_s = dsn, channel, retry_max_s
        self._queue: queue.SimpleQueue[RegistryChange] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="f2-registry-feed", daemon=True)
        self._thread.start()

    def next_batch(self) -> list[RegistryChange]:
        batch = []
        try:
            while len(batch) < 10000:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def next_awake(self) -> datetime | None:
        return None if not self._queue.empty() else datetime.now(UTC) + _IDLE

    def close(self) -> None:
        self._stop.set()

    def _listen(self) -> None:
        """Listen until stopped, reconnecting by the failure's class (``connectors.failures``)."""
        policy = RetryPolicy(max_s=self._retry_max_s)
        try:
            retry(
                self._listen_once,
                registry_failure,
                "registry_feed",
                policy,
                sleep=self._stop.wait,
                stop=self._stop.is_set,
            )
        except psycopg.Error:
            pass  # stopped while disconnected

    def _listen_once(self) -> None:
        try:
            with psycopg.connect(self._dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                row = conn.execute("SELECT version FROM f2_registry_version").fetchone()
                self._queue.put(RegistryChange(ALL, int(row[0]) if row else 0))
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=1.0):
                        change = parse_change(note.payload)
                        if change is not None:
                            self._queue.put(change)
        except psycopg.Error as exc:
            FEED_ERRORS.labels(type(exc).__name__).inc()
            raise


class RegistryFeedSource(DynamicSource[RegistryChange]):
    """Registry changes from ``LISTEN`` on ``channel``, one listening partition per worker."""

    def __init__(self, dsn: str, channel: str = CHANNEL, retry_max_s: float = 10.0) -> None:
        self._dsn, self._channel, self._retry_max_s = dsn, channel, retry_max_s

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSourcePartition[RegistryChange]:
        return _FeedPartition(self._dsn, self._channel, self._retry_max_s)
