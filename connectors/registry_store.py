"""Registry entries for decoding: a worker-local cache over Redis over PostgreSQL, versioned.

Delivery guarantee: every lookup returns the controller's entry as PostgreSQL had it at some
registry version no older than the last change notification this store applied for that
controller; a lookup never fails. Redis is only a cache: any Redis error is counted
(``f2_registry_failures_total{backend="redis"}``), Redis is skipped for a short back-off and
entries come from PostgreSQL. A PostgreSQL failure makes the lookup wait, by its class
(``connectors.failures``): a transient one is retried with capped exponential backoff, forever;
a blocked one (permission denied, a missing table; a row-class error here is a registry setup
fault too) is retried every ``F2_REGISTRY_BLOCKED_RETRY_S`` with ``f2_registry_blocked`` at 1.
Either way the worker stalls (so the source is not polled) and nothing is dropped.

Freshness: a change feed (``connectors.registry_feed``) delivers :class:`RegistryChange` items
(``<version>:<mac>`` or ``<version>:*``) that :meth:`RegistryStore.apply` turns into an eviction of
the local entry, a delete of the Redis key, and a floor on the version a Redis entry must have to
be trusted (so a racing stale refill is ignored). A new store starts with that floor at the
registry's current version, so Redis entries written before the last registry change (possibly
stale: no decode process was running to delete them) are reloaded from PostgreSQL. Entries also
expire locally after ``F2_REGISTRY_TTL_S`` as a safety net for missed notifications, and in Redis
after ``F2_REGISTRY_REDIS_TTL_S``. Controllers that are not registered are cached as absent the
same way. The worker's cache is bounded in bytes (``F2_REGISTRY_CACHE_BYTES``, 256 MiB; an entry
counts eight times its msgpack size, about what its Python objects take), so messages from many
distinct unregistered MACs cannot grow it: when full it is emptied and refills from Redis.

Entries are read with ``connectors.registry_pg.load_controller`` and the registry version
(``f2_registry_version``, migration params/004) in one REPEATABLE READ snapshot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import msgspec
import psycopg
import redis
from prometheus_client import Counter, Gauge

from connectors.failures import BLOCKED, ROW, Failure, Hold, RetryPolicy, db_failure, retry
from connectors.per_thread import PerThread
from connectors.registry_pg import load_controller
from schemas.caches import ByteBoundedCache
from schemas.records import ControllerEntry
from schemas.settings import RegistrySettings

log = logging.getLogger("f2.registry")

LOOKUPS = Counter("f2_registry_lookups", "Registry cache lookups", ["result"])
LOADS = Counter("f2_registry_loads", "Registry entries loaded on a cache miss", ["source"])
REFRESHES = Counter("f2_registry_refreshes", "Registry change notifications applied", ["scope"])
FAILURES = Counter(
    "f2_registry_failures",
    "Registry backend failures (Redis: fell back to PostgreSQL)",
    ["backend"],
)
REGISTRY_BLOCKED = Gauge(
    "f2_registry_blocked",
    "1 while the registry database refuses this process's reads (failure class blocked): decode"
    " holds; f2_blocked_reason says why",
)
_HIT, _MISS = LOOKUPS.labels("hit"), LOOKUPS.labels("miss")

ALL = "*"
REDIS_PREFIX = "f2:registry:v1:"


def registry_failure(exc: BaseException) -> Failure | None:
    """The failure class of a registry read: a row-class error is a registry setup fault."""
    failure = db_failure(exc)
    return BLOCKED if failure is ROW else failure


class RegistryChange(msgspec.Struct, frozen=True):
    """One change notification: controller ``mac`` (or ``*`` = all) changed at ``version``."""

    mac: str
    version: int


def parse_change(payload: str) -> RegistryChange | None:
    """A ``<version>:<mac>`` notification payload as a change; None if malformed."""
    version, sep, mac = payload.partition(":")
    if not sep or not mac or not version.isdigit():
        return None
    return RegistryChange(mac.lower(), int(version))


T = TypeVar("T")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ControllerEntry)


class RegistryStore:
    """Looks up controller entries: local dict, then Redis, then PostgreSQL (one per thread)."""

    def __init__(
        self,
        params_dsn: str,
        redis_url: str,
        settings: RegistrySettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._dsn = params_dsn
        self._settings = s = settings or RegistrySettings()
        self._clock = clock
        self._sleep = sleep
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=s.redis_timeout_s, socket_connect_timeout=s.redis_timeout_s
        )
        self._redis_skip_until = 0.0
        self._pg: psycopg.Connection | None = None
        self._cache: ByteBoundedCache[str, tuple[ControllerEntry | None, float]] = ByteBoundedCache(
            s.cache_bytes
        )
        self._floor: dict[str, int] = {}
        self._floor_all: int | None = None
        self._policy = RetryPolicy(max_s=s.retry_max_s, blocked_s=s.blocked_retry_s)
        self._hold = Hold("registry", REGISTRY_BLOCKED)

    def lookup(self, mac: str) -> tuple[ControllerEntry | None, bool]:
        """The entry of ``mac`` (None if not registered), and whether it was just loaded."""
        cached = self._cache.get(mac)
        now = self._clock()
        if cached is not None and cached[1] > now:
            _HIT.inc()
            return cached[0], False
        _MISS.inc()
        if self._floor_all is None:
            self._floor_all = self._postgres(_read_version)
        entry = self._from_redis(mac)
        if entry is None:
            entry = self._postgres(lambda conn: _read_entry(conn, mac))
            LOADS.labels("postgres").inc()
            if entry is not None:
                self._to_redis(entry)
        size = len(mac) + (8 * len(_encoder.encode(entry)) if entry is not None else 0)
        self._cache.put(mac, (entry, now + self._settings.ttl_s), size)
        return entry, True

    def apply(self, change: RegistryChange) -> None:
        """Forget what ``change`` made stale (locally and in Redis)."""
        if change.mac == ALL:
            REFRESHES.labels("all").inc()
            self._cache.clear()
            self._floor_all = max(self._floor_all or 0, change.version)
            return
        REFRESHES.labels("controller").inc()
        self._cache.pop(change.mac, None)
        self._floor[change.mac] = max(self._floor.get(change.mac, 0), change.version)
        self._redis_call(lambda: self._redis.delete(REDIS_PREFIX + change.mac))

    def close(self) -> None:
        """Close the connections."""
        if self._pg is not None:
            self._pg.close()
            self._pg = None
        self._redis.close()

    def _floor_of(self, mac: str) -> int:
        return max(self._floor.get(mac, 0), self._floor_all or 0)

    def _from_redis(self, mac: str) -> ControllerEntry | None:
        data = self._redis_call(lambda: self._redis.get(REDIS_PREFIX + mac))
        if not data:
            return None
        try:
            entry = _decoder.decode(data)
        except msgspec.DecodeError:
            return None
        if entry.version < self._floor_of(mac):
            return None
        LOADS.labels("redis").inc()
        return entry

    def _to_redis(self, entry: ControllerEntry) -> None:
        key, data = REDIS_PREFIX + entry.mac, _encoder.encode(entry)
        self._redis_call(lambda: self._redis.set(key, data, ex=self._settings.redis_ttl_s))

    def _redis_call(self, call: Callable[[], object]) -> object:
        """Run one Redis command; on failure count it, skip Redis for a while, return None."""
        if self._clock() < self._redis_skip_until:
            return None
        try:
            return call()
        except redis.RedisError as exc:
            FAILURES.labels("redis").inc()
            self._redis_skip_until = self._clock() + self._settings.redis_backoff_s
            log.warning(
                "redis unavailable; using PostgreSQL",
                extra={"stage": "decode", "reason": type(exc).__name__, "detail": str(exc)[:200]},
            )
            return None

    def _postgres(self, read: Callable[[psycopg.Connection], T]) -> T:
        """``read`` in one REPEATABLE READ transaction, retried until PostgreSQL answers."""
        attempt = partial(self._read_once, read)
        return retry(attempt, registry_failure, "registry", self._policy, self._hold, self._sleep)

    def _read_once(self, read: Callable[[psycopg.Connection], T]) -> T:
        try:
            if self._pg is None or self._pg.closed:
                self._pg = psycopg.connect(self._dsn, autocommit=True)
                self._pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with self._pg.transaction():
                return read(self._pg)
        except Exception:
            FAILURES.labels("postgres").inc()
            if self._pg is not None:
                self._pg.close()
                self._pg = None
            raise


def _read_version(conn: psycopg.Connection) -> int:
    """The registry's current version (migration params/004)."""
    row = conn.execute("SELECT version FROM f2_registry_version").fetchone()
    return int(row[0]) if row else 0


def _read_entry(conn: psycopg.Connection, mac: str) -> ControllerEntry | None:
    """``mac``'s entry stamped with the version of the same snapshot."""
    entry = load_controller(conn, mac)
    if entry is None:
        return None
    return msgspec.structs.replace(entry, version=_read_version(conn))


_stores: PerThread[RegistryStore] = PerThread()


def thread_store(params_dsn: str, redis_url: str, settings: RegistrySettings) -> RegistryStore:
    """This worker thread's store: its own cache and connections, built on first use and kept
    for the thread's life (:mod:`connectors.per_thread`; the decode step asks for it per batch)."""
    return _stores.get(
        (params_dsn, redis_url, settings),
        lambda: RegistryStore(params_dsn, redis_url, settings),
    )
