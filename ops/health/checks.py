"""One check per dependency of the pipeline, each bounded by a timeout and timed.

A check returns a :class:`Component`: ``status`` ``ok``, ``degraded`` or ``down``, how long it
took and a human detail. Checks never raise: an exception is a ``down`` with its message. What a
component's outage means for the whole pipeline is :data:`SEVERITY` (Redis is a cache: degraded).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from schemas.settings import Config

OK, DEGRADED, DOWN = "ok", "degraded", "down"
# What a component that is down does to the overall status.
SEVERITY = {
    "mqtt": DOWN,
    "kafka": DOWN,
    "params_db": DOWN,
    "timeseries_db": DOWN,
    "redis": DEGRADED,
    "ingest": DOWN,
    "decode": DOWN,
}


class Component(msgspec.Struct):
    """The state of one component as ``/health`` reports it."""

    status: str
    latency_ms: float
    detail: str


def timed(check: Callable[[], tuple[str, str]]) -> Component:
    """Run ``check`` (returns status and detail), timing it; an exception means ``down``."""
    started = time.perf_counter()
    try:
        status, detail = check()
    except Exception as exc:  # any failure of a dependency is reported, not raised
        status, detail = DOWN, f"{type(exc).__name__}: {str(exc).strip()[:300]}"
    return Component(status, round((time.perf_counter() - started) * 1000, 1), detail)


def check_mqtt(config: Config, timeout_s: float) -> tuple[str, str]:
    """Log in to the broker with the pipeline's credentials (CONNACK success)."""
    from ops.security import mqtt_probe

    settings = config.connections
    probe, code = mqtt_probe.connect(
        settings.mqtt_host,
        settings.mqtt_port,
        settings.mqtt_username or None,
        settings.mqtt_password,
        ca_file=(settings.mqtt_ca_file or None) if settings.mqtt_tls else None,
    )
    if probe is None:
        return DOWN, f"{settings.mqtt_host}:{settings.mqtt_port} refused the login (CONNACK {code})"
    probe.close()
    return OK, f"{settings.mqtt_host}:{settings.mqtt_port} login as {settings.mqtt_username}"


def check_kafka(config: Config, timeout_s: float) -> tuple[str, str]:
    """Metadata of the three topics: each exists and has partitions with a leader."""
    from confluent_kafka.admin import AdminClient

    from connectors.kafka_config import client_config

    settings = config.connections
    admin = AdminClient(client_config(settings.kafka_bootstrap, config.kafka_client))
    topics = admin.list_topics(timeout=timeout_s).topics
    parts = []
    for name in (settings.raw_topic, settings.decoded_topic, settings.dlq_topic):
        meta = topics.get(name)
        if meta is None or meta.error is not None or not meta.partitions:
            return DOWN, f"topic {name} missing or unavailable"
        leaderless = [p for p, info in meta.partitions.items() if info.leader < 0]
        if leaderless:
            return DOWN, f"topic {name}: partitions {leaderless} have no leader"
        parts.append(f"{name}:{len(meta.partitions)}")
    return OK, "topics " + ", ".join(parts)


def check_postgres(dsn: str, timeout_s: float, query: str = "SELECT 1") -> tuple[str, str]:
    """Connect and run ``query``; the detail is its first value."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=max(1, int(timeout_s)), autocommit=True) as conn:
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)", (str(int(timeout_s * 1000)),)
        )
        value = conn.execute(query).fetchone()[0]
    return OK, str(value)


def check_params_db(config: Config, timeout_s: float) -> tuple[str, str]:
    """The registry database answers; the detail counts its controllers."""
    _, count = check_postgres(
        config.connections.params_dsn, timeout_s, 'SELECT count(*) FROM "Device"'
    )
    return OK, f"{count} devices registered"


def check_timeseries_db(config: Config, timeout_s: float) -> tuple[str, str]:
    """The timeseries database answers; the detail names its backend (``f2_storage_backend()``)."""
    _, backend = check_postgres(
        config.connections.timeseries_dsn, timeout_s, "SELECT f2_storage_backend()"
    )
    return OK, f"backend {backend}"


def check_redis(config: Config, timeout_s: float) -> tuple[str, str]:
    """PING the registry cache."""
    import redis

    client = redis.Redis.from_url(
        config.connections.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        client.ping()
    finally:
        client.close()
    return OK, "PING ok"


DEPENDENCY_CHECKS: dict[str, Callable[[Config, float], tuple[str, str]]] = {
    "mqtt": check_mqtt,
    "kafka": check_kafka,
    "params_db": check_params_db,
    "timeseries_db": check_timeseries_db,
    "redis": check_redis,
}


def overall(components: dict[str, Component]) -> str:
    """The pipeline's status: ``down`` if a critical component is down, else ``degraded`` if any
    component is not ok, else ``ok``."""
    worst = OK
    for name, component in components.items():
        effect = component.status
        if effect == DOWN:
            effect = SEVERITY.get(name, DOWN)
        if effect == DOWN:
            return DOWN
        if effect == DEGRADED:
            worst = DEGRADED
    return worst
