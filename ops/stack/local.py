"""The local stack: ``f2 stack up | down | status | env | logs | start | stop``.

Everything lives under one directory (``F2_STACK_DIR``, default ``.stack/`` in the checkout):
``stack.json`` (ports and generated credentials, mode 0600), one folder per service, ``logs/`` and
``run/`` (pid files). ``up`` is idempotent; ``down`` stops only what ``up`` started and keeps the
data unless ``--purge``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import msgspec

from ops.stack import flows, monitoring, packages, procs
from ops.stack.services import SERVICE_CLASSES, Service, ServiceError
from ops.storage.migrate import migrate, set_role_passwords
from schemas.settings import (
    DEFAULT_PORTS,
    PARAMS_DB,
    PIPELINE_DB_ROLE,
    READER_DB_ROLE,
    TIMESERIES_DB,
    Config,
    StackInfo,
    StackSettings,
    load_config,
    load_settings,
    local_dsn,
)

SERVICE_ORDER = ("postgres", "mosquitto", "kafka", "redis")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_or_create_info(root: Path, offset: int = 0) -> StackInfo:
    """The stack's ports and credentials; generated (random secrets) on the first ``up``.

    Ports are the defaults plus ``offset`` (``F2_STACK_PORT_OFFSET``: a second, isolated stack can
    run beside the first, e.g. for fault tests or a CI check in another checkout).
    """
    path = root / "stack.json"
    if path.exists():
        info = msgspec.json.decode(path.read_bytes(), type=StackInfo)
        if info.db_pipeline_password and info.db_reader_password:
            return info
        info = msgspec.structs.replace(  # a stack made before the database roles
            info,
            db_pipeline_password=secrets.token_urlsafe(18),
            db_reader_password=secrets.token_urlsafe(18),
        )
        path.write_bytes(msgspec.json.format(msgspec.json.encode(info)))
        os.chmod(path, 0o600)
        return info
    root.mkdir(parents=True, exist_ok=True)
    info = StackInfo(
        postgres_port=DEFAULT_PORTS["postgres"] + offset,
        mosquitto_port=DEFAULT_PORTS["mosquitto"] + offset,
        kafka_port=DEFAULT_PORTS["kafka"] + offset,
        redis_port=DEFAULT_PORTS["redis"] + offset,
        db_password=secrets.token_urlsafe(18),
        pipeline_mqtt_password=secrets.token_urlsafe(18),
        sim_mqtt_password=secrets.token_urlsafe(18),
        redis_password=secrets.token_urlsafe(18),
        db_pipeline_password=secrets.token_urlsafe(18),
        db_reader_password=secrets.token_urlsafe(18),
    )
    path.write_bytes(msgspec.json.format(msgspec.json.encode(info)))
    os.chmod(path, 0o600)
    return info


def services(root: Path, info: StackInfo, settings: StackSettings) -> dict[str, Service]:
    return {name: SERVICE_CLASSES[name](root, info, settings) for name in SERVICE_ORDER}


def topic_config(settings: StackSettings) -> dict[str, str]:
    """Retention of the pipeline's topics (Apache Kafka honours it; Tansu ignores it)."""
    return {
        "retention.ms": str(settings.kafka_retention_ms),
        "retention.bytes": str(settings.kafka_retention_bytes),
    }


def create_topics(
    bootstrap: str, topics: list[str], partitions: int, config: dict[str, str] | None = None
) -> list[str]:
    """Create the pipeline's topics where missing (with the topic ``config``); the names created."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        for name in topics
        if name not in existing
    ]
    if not wanted:
        return []
    for name, future in admin.create_topics(wanted, request_timeout=15).items():
        try:
            future.result(timeout=20)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise ServiceError(f"kafka: could not create topic {name}: {exc}") from exc
    return [topic.topic for topic in wanted]


class Stack:
    """The local stack rooted at one directory."""

    def __init__(self, root: Path | None = None, config: Config | None = None) -> None:
        """The stack at ``root`` (default: the configured one). ``config``: the settings the
        entry point read (default: read them here, for tools and tests)."""
        self.config = config or load_config()
        self.settings = self.config.stack
        self.root = root or Path(self.config.connections.stack_dir)
        self.info = load_or_create_info(self.root, self.settings.port_offset)
        self.services = services(self.root, self.info, self.settings)

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise SystemExit(
                f"unknown service {name!r}; one of: {', '.join(SERVICE_ORDER)}"
            ) from None

    def up(self) -> None:
        packages.ensure()
        for name in SERVICE_ORDER:
            self.start(name)

    def start(self, name: str) -> None:
        """Start one service (no-op if running) and do what it needs after a start."""
        service = self.service(name)
        was_running = service.running()
        started = time.monotonic()
        service.start()
        if not was_running:
            _log(
                f"{name}: started on 127.0.0.1:{service.port} in {time.monotonic() - started:.1f}s"
            )
        if name == "postgres":
            for database in (PARAMS_DB, TIMESERIES_DB):
                folder = "params" if database == PARAMS_DB else "timeseries"
                dsn = local_dsn(self.info, database)
                applied = migrate(dsn, folder, self.config.migrate, self.config.timescale)
                if applied:
                    _log(f"postgres: {database}: applied {', '.join(applied)}")
            set_role_passwords(local_dsn(self.info, TIMESERIES_DB), self.role_passwords())
        if name == "kafka":
            if not was_running:
                self._reset_flow_state()
            c = self.config.connections
            topics = [c.raw_topic, c.decoded_topic, c.dlq_topic]
            partitions = self.settings.kafka_partitions
            bootstrap = f"127.0.0.1:{self.info.kafka_port}"
            created = create_topics(bootstrap, topics, partitions, topic_config(self.settings))
            if created:
                _log(f"kafka: created {', '.join(created)} ({partitions} partitions each)")

    def role_passwords(self) -> dict[str, str]:
        """The passwords of the database roles the flows and readers log in as."""
        return {
            PIPELINE_DB_ROLE: self.info.db_pipeline_password,
            READER_DB_ROLE: self.info.db_reader_password,
        }

    def _reset_flow_state(self) -> None:
        """A new in-memory broker has empty topics: resume offsets kept by the flows are void."""
        recovery = self.root / "recovery"
        if recovery.exists():
            shutil.rmtree(recovery)
            _log(f"kafka: new broker with empty topics; reset flow resume state in {recovery}")

    def stop(self, name: str) -> None:
        if self.service(name).stop():
            _log(f"{name}: stopped")

    def down(self, purge: bool = False) -> None:
        monitoring.stop(self)
        for name in flows.stop_supervised(self.root):
            _log(f"flow {name}: stopped")
        for name in reversed(SERVICE_ORDER):
            self.stop(name)
        if purge and self.root.exists():
            shutil.rmtree(self.root)
            _log(f"purged {self.root}")

    def status_rows(self) -> list[dict[str, object]]:
        rows = []
        for name, service in self.services.items():
            pid = service.pid()
            state = "down"
            if pid is not None:
                try:
                    state = "ready" if service.ready() else "starting"
                except Exception as exc:
                    state = f"not ready ({type(exc).__name__})"
            rows.append(
                {
                    "service": name,
                    "state": state,
                    "port": service.port,
                    "pid": pid,
                    "rss_mb": procs.rss_mb(pid) if pid else None,
                    "log": str(service.log_file),
                }
            )
        return rows + flows.status_rows(self.root, self.config) + monitoring.status_rows(self)

    def env_lines(self) -> list[str]:
        settings = load_settings({"F2_STACK_DIR": str(self.root)})
        values = {
            "F2_STACK_DIR": str(self.root),
            "F2_MQTT_HOST": settings.mqtt_host,
            "F2_MQTT_PORT": str(settings.mqtt_port),
            "F2_MQTT_USERNAME": settings.mqtt_username,
            "F2_MQTT_PASSWORD": settings.mqtt_password,
            "F2_SIM_USERNAME": settings.sim_username,
            "F2_SIM_PASSWORD": settings.sim_password,
            "F2_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "F2_PARAMS_DSN": settings.params_dsn,
            "F2_TIMESERIES_DSN": settings.timeseries_dsn,
            "F2_REDIS_URL": settings.redis_url,
        }
        return [f"export {key}={_shell_quote(value)}" for key, value in values.items()]


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"
