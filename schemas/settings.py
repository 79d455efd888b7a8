"""Every setting of every process, read once at an entry point and passed down.

Each setting is a field of one of the section structs below, annotated with its ``F2_*``
variable and a description (``msgspec.Meta``); :func:`load_config` reads them all with one
generic loader (:func:`load_section`), and the README's configuration table is generated from
the same annotations (``tools/settings_table.py``). Any variable may instead be given as
``<NAME>_FILE`` naming a file that holds the value (secrets from files). Where a variable is unset,
the connection settings default to the local stack's: ``f2 stack up`` writes ``stack.json`` (ports
and generated credentials) into the stack directory, and programs on the same machine find it.

Only this module and the entry points (the flow factories' modules, ``f2``, the simulator's and
the benchmarks' ``main``) read the environment (``tests/test_layering.py`` checks it). A bad value
is a :class:`SettingsError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import msgspec

# Ports of the local stack. They are away from the services' usual ports so the project's own
# instances never fight system services.
DEFAULT_PORTS = {
    "postgres": 25432,
    "mosquitto": 21883,
    "kafka": 29092,
    "redis": 26379,
    "prometheus": 29090,
}
DEFAULT_HEALTH_PORT = 8000
DEFAULT_FLOW_PORTS = {"ingest": 3031, "decode": 3032}
PARAMS_DB = "f2_params"
TIMESERIES_DB = "f2_timeseries"
PIPELINE_MQTT_USER = "f2-pipeline"
SIM_MQTT_USER = "f2-sim"
OPERATOR_MQTT_USER = "f2-operator"
DB_USER = "f2"
PIPELINE_DB_ROLE = "f2_pipeline"
READER_DB_ROLE = "f2_reader"

RAW_TOPIC = "raw_iot_data"
DECODED_TOPIC = "decoded_iot_data"
DLQ_TOPIC = "dlq_iot_data"

KAFKA_PREFIX = "F2_KAFKA_"
PASS_THROUGH = (
    (
        "F2_KAFKA_<SETTING>",
        "—",
        "any librdkafka setting for every Kafka client, dots as underscores"
        " (`F2_KAFKA_SECURITY_PROTOCOL=SASL_SSL`, `F2_KAFKA_SASL_PASSWORD_FILE=…`)",
    ),
    (
        "F2_KAFKA_FETCH_WAIT_MAX_MS",
        "`100`",
        "decode's raw-topic consumer: longest a fetch waits at the broker for new data"
        " (librdkafka's own default, 500, adds up to half a second of latency on brokers that"
        " hold fetches; 25 cost the local broker twice the CPU at 5,000 msg/s for 25-30 ms lower"
        " p50). Set in the environment it also reaches the producers, which log that they"
        " ignore it",
    ),
)
"""Variables read by :func:`kafka_client_settings` rather than a section (for the table)."""

T = TypeVar("T")


class SettingsError(ValueError):
    """A variable holds a value its setting cannot take."""


def setting(
    env: str, description: str, default_text: str | None = None, **constraints: Any
) -> msgspec.Meta:
    """The annotation of one setting: its variable, what it means, and (for defaults computed at
    load time) how the configuration table shows the default."""
    extra = {"env": env}
    if default_text is not None:
        extra["default_text"] = default_text
    return msgspec.Meta(description=description, extra=extra, **constraints)


Positive = msgspec.Meta(gt=0)


# --- sections ---------------------------------------------------------------------------------

LOCAL = "the local stack's"


class Settings(msgspec.Struct, frozen=True):
    """Connections: where the services are, how to log in, and the topic names."""

    mqtt_host: Annotated[str, setting("F2_MQTT_HOST", "MQTT broker host")] = "127.0.0.1"
    mqtt_port: Annotated[int, setting("F2_MQTT_PORT", "MQTT broker port", LOCAL)] = 0
    mqtt_username: Annotated[str, setting("F2_MQTT_USERNAME", "the pipeline's MQTT user")] = (
        PIPELINE_MQTT_USER
    )
    mqtt_password: Annotated[str, setting("F2_MQTT_PASSWORD", "its password", LOCAL)] = ""
    mqtt_tls: Annotated[bool, setting("F2_MQTT_TLS", "`1`: connect to the broker with TLS")] = False
    mqtt_ca_file: Annotated[
        str, setting("F2_MQTT_CA_FILE", "CA certificate for that TLS connection", "—")
    ] = ""
    sim_username: Annotated[
        str, setting("F2_SIM_USERNAME", "the test rig's MQTT user (simulator, tests)")
    ] = SIM_MQTT_USER
    sim_password: Annotated[str, setting("F2_SIM_PASSWORD", "its password", LOCAL)] = ""
    kafka_bootstrap: Annotated[
        str, setting("F2_KAFKA_BOOTSTRAP", "Kafka bootstrap servers", LOCAL)
    ] = ""
    params_dsn: Annotated[
        str,
        setting(
            "F2_PARAMS_DSN",
            "registry database (libpq URL; add `sslmode=` for remote servers)",
            "local `f2_params` (the owner; the flows the stack starts: `f2_pipeline`)",
        ),
    ] = ""
    timeseries_dsn: Annotated[
        str, setting("F2_TIMESERIES_DSN", "time-series database", "local `f2_timeseries`")
    ] = ""
    redis_url: Annotated[str, setting("F2_REDIS_URL", "registry cache", "local Redis")] = ""
    raw_topic: Annotated[str, setting("F2_TOPIC_RAW", "raw topic")] = RAW_TOPIC
    decoded_topic: Annotated[str, setting("F2_TOPIC_DECODED", "decoded topic")] = DECODED_TOPIC
    dlq_topic: Annotated[str, setting("F2_TOPIC_DLQ", "dead-letter topic")] = DLQ_TOPIC
    stack_dir: Annotated[
        str,
        setting(
            "F2_STACK_DIR",
            "the local stack's directory",
            "`.stack` in the checkout",
        ),
    ] = ""
    log_level: Annotated[
        str, setting("F2_LOG_LEVEL", "log level (logs are JSON lines on stderr)")
    ] = "INFO"


class InputLimits(msgspec.Struct, frozen=True):
    """Input limits: the most one device message may hold (docs/PROTOCOL.md)."""

    payload_bytes: Annotated[
        int,
        Positive,
        setting("F2_LIMIT_PAYLOAD_BYTES", 'input limit: payload size (see "Failures and limits")'),
    ] = 65536
    topic_bytes: Annotated[
        int, Positive, setting("F2_LIMIT_TOPIC_BYTES", "input limit: topic length in UTF-8 bytes")
    ] = 256
    field_name_chars: Annotated[
        int,
        Positive,
        setting(
            "F2_LIMIT_FIELD_NAME_CHARS",
            "input limit: event field name length (characters of `[A-Za-z0-9_.-]`)",
        ),
    ] = 64
    event_fields: Annotated[
        int, Positive, setting("F2_LIMIT_EVENT_FIELDS", "input limit: event fields per message")
    ] = 32
    text_chars: Annotated[
        int, Positive, setting("F2_LIMIT_TEXT_CHARS", "input limit: text value length")
    ] = 1023


class IngestSettings(msgspec.Struct, frozen=True):
    """The ingest flow: its MQTT sessions and its memory budget."""

    partitions: Annotated[
        int, Positive, setting("F2_INGEST_PARTITIONS", "MQTT sessions (source partitions)")
    ] = 4
    share_group: Annotated[str, setting("F2_INGEST_SHARE_GROUP", "shared-subscription group")] = (
        "f2-ingest"
    )
    client_prefix: Annotated[
        str, setting("F2_INGEST_CLIENT_PREFIX", "client id prefix; sessions are `<prefix>-s<i>`")
    ] = "f2-ingest"
    topic_filters: Annotated[tuple[str, ...], setting("F2_INGEST_TOPICS", "topic filters")] = (
        "stat/#",
        "tele/#",
    )
    session_expiry_s: Annotated[
        int,
        setting(
            "F2_INGEST_SESSION_EXPIRY_S",
            "how long the broker keeps a session while the flow is down",
        ),
    ] = 7 * 24 * 3600
    receive_maximum: Annotated[
        int,
        Positive,
        setting(
            "F2_INGEST_RECEIVE_MAXIMUM",
            "unacknowledged messages per session (bounds the flow's memory)",
        ),
    ] = 20000
    batch_size: Annotated[
        int, Positive, setting("F2_INGEST_BATCH_SIZE", "maximum messages per source batch")
    ] = 2000
    batch_wait_ms: Annotated[
        int,
        msgspec.Meta(ge=0),
        setting(
            "F2_INGEST_BATCH_WAIT_MS",
            (
                "after a batch smaller than `F2_INGEST_BATCH_SIZE`, how long a session lets "
                "messages gather before the next (fewer, larger batches and Kafka produce "
                "requests: less CPU per message in ingest and in Kafka; adds at most this to "
                "latency); also its idle poll interval (10 ms at `0`)"
            ),
        ),
    ] = 50
    read_wait_ms: Annotated[
        int,
        msgspec.Meta(ge=0),
        setting(
            "F2_INGEST_READ_WAIT_MS",
            (
                "after a socket read that did not fill a 64 KiB chunk, how long a session waits "
                "before reading again, so that one wake-up of its thread serves more messages "
                "(less CPU per message; adds at most this to latency; `0`: read at once)"
            ),
        ),
    ] = 50
    keepalive_s: Annotated[int, Positive, setting("F2_INGEST_KEEPALIVE_S", "MQTT keepalive")] = 30
    max_buffer_bytes: Annotated[
        int,
        Positive,
        setting(
            "F2_INGEST_MAX_BUFFER_BYTES",
            (
                "payload bytes the process may hold (received, not yet acknowledged); "
                "above it every session stops reading from the broker until epochs "
                "complete"
            ),
        ),
    ] = 64 << 20
    state_dir: Annotated[
        str,
        setting(
            "F2_INGEST_STATE_DIR",
            (
                "where ingest keeps one marker per MQTT session it created, so a "
                "session the broker lost (answered as new) is an alarm also after a "
                "restart; give it a volume in a pod"
            ),
            "`<stack>/ingest-sessions`",
        ),
    ] = ""
    metrics_port: Annotated[
        int,
        setting(
            "F2_INGEST_METRICS_PORT", "metrics port used by `f2 run ingest` and the supervisor"
        ),
    ] = DEFAULT_FLOW_PORTS["ingest"]


class DecodeSettings(msgspec.Struct, frozen=True):
    """The decode flow: batches, recovery, the raw topic's reader."""

    batch_size: Annotated[
        int,
        Positive,
        setting(
            "F2_DECODE_BATCH_SIZE",
            (
                "most Kafka messages per poll (a poll returns what is there: small "
                "batches at low rates, no added latency); 5000 drained a backlog 30 % "
                "faster than 1000 (`bench.decode_flow`, side by side)"
            ),
        ),
    ] = 5000
    batch_wait_ms: Annotated[
        int,
        msgspec.Meta(ge=0),
        setting(
            "F2_DECODE_BATCH_WAIT_MS",
            (
                "after a poll that returned less than `F2_DECODE_BATCH_SIZE`, how long a raw "
                "partition lets records gather before the next (fewer, larger batches: less "
                "CPU per message; adds at most this to latency); also its idle poll interval "
                "(10 ms at `0`); at 5,000 msg/s 50 cost 62 µs/msg against 73-96 at 25, and "
                "75-100 cost more (docs/PERFORMANCE-LOG.md, 2026-12-07)"
            ),
        ),
    ] = 50
    recovery_parts: Annotated[
        int,
        Positive,
        setting(
            "F2_DECODE_RECOVERY_PARTS",
            "recovery partitions (the most workers decode may run with)",
        ),
    ] = 4
    kafka_parts: Annotated[
        int,
        setting(
            "F2_DECODE_KAFKA_PARTS",
            "partitions of decode's recovery-safe Kafka sink",
            "`F2_DECODE_RECOVERY_PARTS`",
        ),
    ] = 0
    gap_wait_ms: Annotated[
        int,
        setting(
            "F2_DECODE_GAP_WAIT_MS",
            (
                "how long the raw source reads a skipped offset again before it passes "
                "over it (a broker may make a later batch readable before an earlier "
                "one: the local Tansu does); see `f2_kafka_source_offset_gaps_total`"
            ),
        ),
    ] = 2000
    metrics_port: Annotated[
        int,
        setting(
            "F2_DECODE_METRICS_PORT", "metrics port used by `f2 run decode` and the supervisor"
        ),
    ] = DEFAULT_FLOW_PORTS["decode"]

    @property
    def sink_parts(self) -> int:
        return self.kafka_parts or self.recovery_parts


class StoreSettings(msgspec.Struct, frozen=True):
    """The timeseries writer."""

    batch_rows: Annotated[
        int, Positive, setting("F2_STORE_BATCH_ROWS", "the writer flushes at N rows …")
    ] = 5000
    batch_ms: Annotated[
        int,
        Positive,
        setting(
            "F2_STORE_BATCH_MS",
            (
                "… or T ms after the first buffered row (latency: 250 gave p99 1.9 s at"
                " 5,000 msg/s end to end, 100 gave 0.64 s)"
            ),
        ),
    ] = 100
    shards: Annotated[
        int,
        Positive,
        setting(
            "F2_STORE_SHARDS",
            (
                "batch buffers (keys Bytewax routes to the workers); each may have one "
                "write in flight, and a worker's writes run one after another on its "
                "writer connection. With 2 a flush queues behind the write in flight "
                "instead of stopping the flow until it ends: p99 at 5,000 msg/s end to "
                "end 470 ms against 570 with 1"
            ),
        ),
    ] = 2
    partitions_ahead_days: Annotated[
        int,
        setting(
            "F2_STORE_PARTITIONS_AHEAD_DAYS", "daily partitions created ahead (plain PostgreSQL)"
        ),
    ] = 3
    retry_max_s: Annotated[
        float,
        Positive,
        setting(
            "F2_STORE_RETRY_MAX_S", "backoff cap of the writer's retries after transient failures"
        ),
    ] = 10.0
    blocked_retry_s: Annotated[
        float,
        Positive,
        setting("F2_STORE_BLOCKED_RETRY_S", "how often a blocked writer tries again"),
    ] = 15.0
    event_retention_days: Annotated[
        int,
        msgspec.Meta(ge=0),
        setting("F2_EVENT_RETENTION_DAYS", "retention of events (`0`: forever)"),
    ] = 365


class RegistrySettings(msgspec.Struct, frozen=True):
    """The registry lookups of the decode flow (per-thread cache, Redis, PostgreSQL)."""

    ttl_s: Annotated[
        float, setting("F2_REGISTRY_TTL_S", "lifetime of a worker's cached registry entry")
    ] = 300.0
    redis_ttl_s: Annotated[
        int, setting("F2_REGISTRY_REDIS_TTL_S", "lifetime of a Redis registry entry")
    ] = 3600
    redis_timeout_s: Annotated[
        float, Positive, setting("F2_REGISTRY_REDIS_TIMEOUT_S", "Redis socket timeout")
    ] = 0.5
    redis_backoff_s: Annotated[
        float, setting("F2_REGISTRY_REDIS_BACKOFF_S", "how long Redis is skipped after a failure")
    ] = 5.0
    retry_max_s: Annotated[
        float,
        Positive,
        setting("F2_REGISTRY_RETRY_MAX_S", "backoff cap of registry database lookups"),
    ] = 10.0
    blocked_retry_s: Annotated[
        float,
        Positive,
        setting("F2_REGISTRY_BLOCKED_RETRY_S", "how often a blocked registry lookup tries again"),
    ] = 15.0
    cache_bytes: Annotated[
        int,
        Positive,
        setting(
            "F2_REGISTRY_CACHE_BYTES",
            (
                "bound of a worker's registry cache (an entry counts 8 × its msgpack "
                "size); when full it is emptied and refills from Redis"
            ),
        ),
    ] = 256 << 20


class FreshnessSettings(msgspec.Struct, frozen=True):
    """Device freshness metrics."""

    silent_after_s: Annotated[
        float,
        setting(
            "F2_SILENT_AFTER_S",
            ("seconds without a message before a controller or sensor counts as silent"),
        ),
    ] = 300.0
    top_n: Annotated[
        int,
        setting("F2_FRESHNESS_TOP_N", "stalest devices exported with labels, per decode process"),
    ] = 20


MIN_KEY_BYTES = 16


class PrivacySettings(msgspec.Struct, frozen=True):
    """Reader values (card ids): stored and published as their keyed hash when a key is set."""

    reader_hash_key: Annotated[
        str,
        setting(
            "F2_READER_HASH_KEY",
            (
                "when set (at least 16 bytes; better as `_FILE`), reader card ids are "
                "stored and published as HMAC-SHA256 with this key"
            ),
            "—",
        ),
    ] = ""

    @property
    def key(self) -> bytes | None:
        return self.reader_hash_key.encode("utf-8") if self.reader_hash_key else None

    def __post_init__(self) -> None:
        if self.reader_hash_key and len(self.reader_hash_key.encode()) < MIN_KEY_BYTES:
            raise SettingsError(f"F2_READER_HASH_KEY must be at least {MIN_KEY_BYTES} bytes")


class HealthSettings(msgspec.Struct, frozen=True):
    """The health API."""

    host: Annotated[str, setting("F2_HEALTH_HOST", "health API bind address")] = "127.0.0.1"
    port: Annotated[int, setting("F2_HEALTH_PORT", "health API port", "8000 + port offset")] = 0
    ingest_metrics_url: Annotated[
        str,
        setting(
            "F2_INGEST_METRICS_URL",
            "where the health API reads ingest's metrics",
            "the local ingest flow's",
        ),
    ] = ""
    decode_metrics_url: Annotated[
        str,
        setting(
            "F2_DECODE_METRICS_URL",
            "where the health API reads decode's metrics",
            "the local decode flow's",
        ),
    ] = ""
    stuck_after_s: Annotated[
        float,
        setting(
            "F2_HEALTH_STUCK_AFTER_S", "input waiting with no progress this long → flow `degraded`"
        ),
    ] = 60.0
    interval_s: Annotated[
        float, Positive, setting("F2_HEALTH_INTERVAL_S", "background check interval")
    ] = 5.0
    timeout_s: Annotated[
        float, Positive, setting("F2_HEALTH_TIMEOUT_S", "timeout of each check")
    ] = 3.0
    window_s: Annotated[
        float, setting("F2_HEALTH_STATUS_WINDOW_S", "window of the rates in `/status`")
    ] = 60.0


class ReplaySettings(msgspec.Struct, frozen=True):
    """``f2 replay`` and ``f2 dlq redrive``."""

    batch_rows: Annotated[
        int, Positive, setting("F2_REPLAY_BATCH_ROWS", "rows per storage write of replay/redrive")
    ] = 5000
    progress_s: Annotated[
        float, setting("F2_REPLAY_PROGRESS_S", "seconds between progress lines")
    ] = 5.0
    progress_records: Annotated[
        int, setting("F2_REPLAY_PROGRESS_RECORDS", "records between progress lines")
    ] = 50000
    idle_s: Annotated[
        float,
        Positive,
        setting("F2_REPLAY_IDLE_S", "a partition silent this long is reported unfinished"),
    ] = 10.0
    margin_s: Annotated[float, setting("F2_REPLAY_MARGIN_S", "read this far past `--until`")] = 60.0
    metrics_port: Annotated[
        int, setting("F2_REPLAY_METRICS_PORT", "serve `/metrics` while replay/redrive runs")
    ] = 0


class TimescaleSettings(msgspec.Struct, frozen=True):
    """Storage backend and TimescaleDB policies (PostgreSQL interval strings)."""

    backend: Annotated[
        Literal["auto", "postgres", "timescaledb"],
        setting(
            "F2_STORAGE_BACKEND",
            "`auto`, `timescaledb` or `postgres`, for a new timeseries database",
        ),
    ] = "auto"
    chunk_interval: Annotated[
        str, setting("F2_TSDB_CHUNK_INTERVAL", "readings hypertable chunk interval")
    ] = "1 day"
    events_chunk_interval: Annotated[
        str, setting("F2_TSDB_EVENTS_CHUNK_INTERVAL", "events hypertable chunk interval")
    ] = "7 days"
    compress_after: Annotated[str, setting("F2_TSDB_COMPRESS_AFTER", "compression policy age")] = (
        "2 days"
    )
    retention: Annotated[str, setting("F2_TSDB_RETENTION", "retention policy (`off`: none)")] = (
        "365 days"
    )
    refresh_start: Annotated[
        str, setting("F2_TSDB_REFRESH_START", "`readings_hourly`: start of the refresh window")
    ] = "7 days"
    refresh_end: Annotated[
        str, setting("F2_TSDB_REFRESH_END", "`readings_hourly`: end of the refresh window")
    ] = "1 hour"
    refresh_every: Annotated[
        str, setting("F2_TSDB_REFRESH_EVERY", "`readings_hourly`: refresh schedule")
    ] = "30 minutes"


class MigrateSettings(msgspec.Struct, frozen=True):
    """``f2 migrate``: where the migrations are, and the login roles' passwords."""

    migrations_dir: Annotated[
        str,
        setting(
            "F2_MIGRATIONS_DIR", "where the SQL migrations are", "`migrations/` of the checkout"
        ),
    ] = ""
    db_pipeline_password: Annotated[
        str,
        setting(
            "F2_DB_PIPELINE_PASSWORD",
            "`f2 migrate`: the password it sets for the login role `f2_pipeline`",
            "— (the local stack generates it)",
        ),
    ] = ""
    db_reader_password: Annotated[
        str,
        setting(
            "F2_DB_READER_PASSWORD",
            "`f2 migrate`: the password it sets for the login role `f2_reader`",
            "— (the local stack generates it)",
        ),
    ] = ""


class DeviceAdminSettings(msgspec.Struct, frozen=True):
    """``f2 devices``: the broker's admin channel and the operator's device material."""

    host: Annotated[
        str,
        setting(
            "F2_MQTT_ADMIN_HOST",
            (
                "the broker whose device identities `f2 devices` manages (its dynamic-"
                "security admin channel)"
            ),
            "the local stack's broker",
        ),
    ] = ""
    port: Annotated[
        int, setting("F2_MQTT_ADMIN_PORT", "its admin channel's port", "the local stack's broker")
    ] = 0
    username: Annotated[
        str, setting("F2_MQTT_ADMIN_USERNAME", "the operator identity on that admin channel")
    ] = OPERATOR_MQTT_USER
    password: Annotated[
        str, setting("F2_MQTT_ADMIN_PASSWORD", "its password", "the local operator's")
    ] = ""
    ca_file: Annotated[
        str, setting("F2_MQTT_ADMIN_CA_FILE", "the CA for TLS to the admin channel", "—")
    ] = ""
    device_secrets_dir: Annotated[
        str,
        setting(
            "F2_DEVICE_SECRETS_DIR",
            "the operator's copy of each device's password and certificate",
            "`<secrets>/devices`",
        ),
    ] = ""
    ca_dir: Annotated[
        str,
        setting(
            "F2_MQTT_CA_DIR",
            "the CA that signs and revokes device certificates",
            "`<secrets>/tls`",
        ),
    ] = ""

    @property
    def remote(self) -> bool:
        return bool(self.host)


class StackSettings(msgspec.Struct, frozen=True):
    """The local stack (``f2 stack``) and the operator's tools around it."""

    port_offset: Annotated[
        int,
        setting(
            "F2_STACK_PORT_OFFSET", "added to every local stack port when a stack is first created"
        ),
    ] = 0
    kafka_partitions: Annotated[
        int,
        Positive,
        setting("F2_KAFKA_PARTITIONS", "partitions of each topic the local stack creates"),
    ] = 4
    kafka_retention_ms: Annotated[
        int, setting("F2_KAFKA_RETENTION_MS", "`retention.ms` of those topics (the replay horizon)")
    ] = 7 * 24 * 3600 * 1000
    kafka_retention_bytes: Annotated[
        int,
        setting("F2_KAFKA_RETENTION_BYTES", "`retention.bytes` (per partition) of those topics"),
    ] = 256 * 1024 * 1024
    mqtt_tls_port: Annotated[
        int, setting("F2_MQTT_TLS_PORT", "the local broker's TLS listener", "MQTT port + 1")
    ] = 0
    mqtt_mtls_port: Annotated[
        int, setting("F2_MQTT_MTLS_PORT", "the local broker's mTLS listener", "MQTT port + 2")
    ] = 0
    mqtt_autosave_changes: Annotated[
        int,
        setting(
            "F2_MQTT_AUTOSAVE_CHANGES",
            "local Mosquitto saves its persistence after this many changes",
        ),
    ] = 10000
    mqtt_max_queued_messages: Annotated[
        int,
        setting(
            "F2_MQTT_MAX_QUEUED_MESSAGES",
            "local Mosquitto's queue limit per offline session (messages)",
        ),
    ] = 3_000_000
    mqtt_max_queued_bytes: Annotated[
        int, setting("F2_MQTT_MAX_QUEUED_BYTES", "the same limit in bytes")
    ] = 1 << 30
    secrets_dir: Annotated[
        str, setting("F2_SECRETS_DIR", "secrets folder (0700, files 0600)", "`<stack>/secrets`")
    ] = ""
    backup_dir: Annotated[
        str, setting("F2_BACKUP_DIR", "where `f2 backup` writes", "`backups/` of the checkout")
    ] = ""
    pg_bin: Annotated[
        str, setting("F2_PG_BIN", "`pg_dump`, `pg_restore`, `psql`", "`/usr/lib/postgresql/15/bin`")
    ] = ""
    prometheus_url: Annotated[
        str, setting("F2_PROMETHEUS_URL", "where `f2 performance` queries", LOCAL)
    ] = ""


class Config(msgspec.Struct, frozen=True):
    """Every section, as :func:`load_config` read them."""

    connections: Settings
    limits: InputLimits
    ingest: IngestSettings
    decode: DecodeSettings
    store: StoreSettings
    registry: RegistrySettings
    freshness: FreshnessSettings
    privacy: PrivacySettings
    health: HealthSettings
    replay: ReplaySettings
    timescale: TimescaleSettings
    migrate: MigrateSettings
    devices: DeviceAdminSettings
    stack: StackSettings
    kafka_client: dict[str, str]
    """librdkafka settings of every Kafka client: ``F2_KAFKA_<SETTING>`` (dots as underscores)."""


SECTIONS: tuple[type, ...] = (
    Settings,
    InputLimits,
    IngestSettings,
    DecodeSettings,
    StoreSettings,
    RegistrySettings,
    FreshnessSettings,
    PrivacySettings,
    HealthSettings,
    ReplaySettings,
    TimescaleSettings,
    MigrateSettings,
    DeviceAdminSettings,
    StackSettings,
)


# --- the generic loader -----------------------------------------------------------------------


class Variable(msgspec.Struct, frozen=True):
    """One setting as the loader and the configuration table see it."""

    section: str
    field: str
    env: str
    description: str
    default: Any
    default_text: str | None
    type: Any


def variables(cls: type) -> list[Variable]:
    """The settings of section ``cls``, in field order."""
    hints = get_type_hints(cls, include_extras=True)
    out = []
    for field in msgspec.structs.fields(cls):
        hint = hints[field.name]
        metas = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, msgspec.Meta)]
        named = [m for m in metas if m.extra and "env" in m.extra]
        if not named:
            continue
        meta = named[0]
        default = None if field.default is msgspec.NODEFAULT else field.default
        out.append(
            Variable(
                cls.__name__,
                field.name,
                meta.extra["env"],  # type: ignore[index]
                meta.description or "",
                default,
                meta.extra.get("default_text"),  # type: ignore[union-attr]
                get_args(hint)[0] if metas else hint,
            )
        )
    return out


def env_value(environ: Mapping[str, str], name: str, default: str) -> str:
    """``name`` from the environment, else the content of the file named by ``name_FILE``."""
    if name in environ:
        return environ[name]
    file_name = environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE: cannot read {file_name}: {exc}") from exc
    return default


_UNSET = object()


def _raw(environ: Mapping[str, str], name: str) -> str | object:
    """The variable's text; unset or empty: :data:`_UNSET` (the default applies)."""
    value = env_value(environ, name, "")
    return value if value != "" else _UNSET


def _convert(variable: Variable, text: str) -> Any:
    """``text`` as the setting's type: booleans parsed, lists split on commas (msgspec converts
    and checks the rest)."""
    if variable.type is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{variable.env}: expected a boolean (1/0, true/false), got {text!r}")
    if get_origin(variable.type) is tuple:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def load_section(
    cls: type[T], environ: Mapping[str, str] | None = None, defaults: Mapping[str, Any] = {}
) -> T:
    """Section ``cls`` from ``environ`` (default: the process environment): each field from its
    variable (or ``<VARIABLE>_FILE``), else from ``defaults``, else the field's default. Values
    are converted and checked by msgspec; a bad one raises :class:`SettingsError` naming its
    variable."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = dict(defaults)
    given: dict[str, str] = {}
    for variable in variables(cls):
        raw = _raw(env, variable.env)
        if raw is _UNSET:
            continue
        given[variable.field] = raw  # type: ignore[assignment]
        values[variable.field] = _convert(variable, raw)  # type: ignore[arg-type]
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_named(cls, str(exc), given)) from exc


def _named(cls: type, message: str, given: Mapping[str, str]) -> str:
    """msgspec's ``... - at `$.field``` as ``VARIABLE='value': ...``."""
    for variable in variables(cls):
        marker = f"`$.{variable.field}`"
        if marker in message:
            shown = f"{variable.env}={given.get(variable.field, '')!r}"
            return f"{shown}: {message.replace(' - at ' + marker, '')}"
    return message


# --- the local stack --------------------------------------------------------------------------


class StackInfo(msgspec.Struct, frozen=True):
    """What ``f2 stack up`` records about the local stack in ``<stack dir>/stack.json``."""

    postgres_port: int = DEFAULT_PORTS["postgres"]
    mosquitto_port: int = DEFAULT_PORTS["mosquitto"]
    kafka_port: int = DEFAULT_PORTS["kafka"]
    redis_port: int = DEFAULT_PORTS["redis"]
    db_password: str = ""
    pipeline_mqtt_password: str = ""
    sim_mqtt_password: str = ""
    redis_password: str = ""
    db_pipeline_password: str = ""
    db_reader_password: str = ""

    @property
    def port_offset(self) -> int:
        return self.postgres_port - DEFAULT_PORTS["postgres"]


def project_root() -> Path | None:
    """The source checkout this package runs from, if it runs from one."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def stack_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The local stack's directory: ``F2_STACK_DIR``, else ``.stack`` in the checkout."""
    env = os.environ if environ is None else environ
    if env.get("F2_STACK_DIR"):
        return Path(env["F2_STACK_DIR"]).resolve()
    root = project_root()
    if root is not None:
        return root / ".stack"
    return Path.home() / ".local" / "share" / "f2-stack"


def read_stack_info(directory: Path) -> StackInfo:
    """The local stack's ports and credentials, or the defaults if the stack was never started."""
    path = directory / "stack.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=StackInfo)
    except FileNotFoundError:
        return StackInfo()


def local_dsn(
    info: StackInfo, database: str, user: str = DB_USER, password: str | None = None
) -> str:
    """A libpq DSN for one database of the local stack (as its owner, or as ``user``)."""
    secret = info.db_password if password is None else password
    return (
        f"postgresql://{user}:{secret}@127.0.0.1:{info.postgres_port}/{database}?connect_timeout=5"
    )


def _connection_defaults(directory: Path, info: StackInfo) -> dict[str, Any]:
    redis_auth = f"default:{info.redis_password}@" if info.redis_password else ""
    return {
        "mqtt_port": info.mosquitto_port,
        "mqtt_password": info.pipeline_mqtt_password,
        "sim_password": info.sim_mqtt_password,
        "kafka_bootstrap": f"127.0.0.1:{info.kafka_port}",
        "params_dsn": local_dsn(info, PARAMS_DB),
        "timeseries_dsn": local_dsn(info, TIMESERIES_DB),
        "redis_url": f"redis://{redis_auth}127.0.0.1:{info.redis_port}/0",
        "stack_dir": str(directory),
    }


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The connection settings, with the local stack's values as defaults."""
    env = os.environ if environ is None else environ
    directory = stack_dir(env)
    defaults = _connection_defaults(directory, read_stack_info(directory))
    return msgspec.structs.replace(load_section(Settings, env, defaults), stack_dir=str(directory))


def kafka_client_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka settings from ``F2_KAFKA_<SETTING>`` variables (``F2_KAFKA_SASL_PASSWORD_FILE``
    reads the value from a file), without the project's own ``F2_KAFKA_*`` settings."""
    env = os.environ if environ is None else environ
    own = {v.env for section in SECTIONS for v in variables(section)}
    config: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(KAFKA_PREFIX) or name in own:
            continue
        if name.endswith("_FILE") and name[: -len("_FILE")] in own:
            continue
        setting_name = name[len(KAFKA_PREFIX) :]
        if setting_name.endswith("_FILE"):
            value = env_value(env, name[: -len("_FILE")], "")
            setting_name = setting_name[: -len("_FILE")]
        config[setting_name.lower().replace("_", ".")] = value
    return config


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Every setting, from ``environ`` (default: the process environment), read once."""
    env = os.environ if environ is None else environ
    connections = load_settings(env)
    stack = load_section(StackSettings, env)
    # The stack's offset as created; before it exists, the one it will be created with.
    created = (Path(connections.stack_dir) / "stack.json").exists()
    offset = read_stack_info(Path(connections.stack_dir)).port_offset if created else 0
    offset = offset if created else stack.port_offset
    ingest = load_section(
        IngestSettings,
        env,
        {"state_dir": str(Path(connections.stack_dir) / "ingest-sessions")},
    )
    decode = load_section(DecodeSettings, env)
    health = load_section(
        HealthSettings,
        env,
        {
            "port": DEFAULT_HEALTH_PORT + offset,
            "ingest_metrics_url": f"http://127.0.0.1:{ingest.metrics_port}/metrics",
            "decode_metrics_url": f"http://127.0.0.1:{decode.metrics_port}/metrics",
        },
    )
    return Config(
        connections=connections,
        limits=load_section(InputLimits, env),
        ingest=ingest,
        decode=decode,
        store=load_section(StoreSettings, env),
        registry=load_section(RegistrySettings, env),
        freshness=load_section(FreshnessSettings, env),
        privacy=load_section(PrivacySettings, env),
        health=health,
        replay=load_section(ReplaySettings, env),
        timescale=load_section(TimescaleSettings, env),
        migrate=load_section(MigrateSettings, env),
        devices=load_section(DeviceAdminSettings, env),
        stack=stack,
        kafka_client=kafka_client_settings(env),
    )


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: this one's, plus ``extra`` (wins)."""
    return {**os.environ, **(extra or {})}


def environment_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Secrets given to this process as ``F2_*PASSWORD*`` variables (``f2 security check``
    checks their strength too)."""
    env = os.environ if environ is None else environ
    return {
        k: v
        for k, v in env.items()
        if k.startswith("F2_") and "PASSWORD" in k and not k.endswith("_FILE")
    }
