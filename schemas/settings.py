"""Connection settings shared by every process of the pipeline.

Each setting comes from an ``F2_*`` environment variable. Any variable may instead be given as
``<NAME>_FILE`` naming a file that holds the value (secrets from files, e.g. Kubernetes/compose
secrets). When neither is set, the value of the local stack is used: ``f2 stack up`` writes
``stack.json`` (ports and generated credentials) into the stack directory, and programs started on
the same machine find it without any configuration.

This module reads the environment and at most two small files, once, at process start; it does no
other I/O and imports nothing of the project.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

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
PARAMS_DB = "f2_params"
TIMESERIES_DB = "f2_timeseries"
PIPELINE_MQTT_USER = "f2-pipeline"
SIM_MQTT_USER = "f2-sim"
DB_USER = "f2"
PIPELINE_DB_ROLE = "f2_pipeline"
READER_DB_ROLE = "f2_reader"

RAW_TOPIC = "raw_iot_data"
DECODED_TOPIC = "decoded_iot_data"
DLQ_TOPIC = "dlq_iot_data"


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


class Settings(msgspec.Struct, frozen=True):
    """Where the services are and how to log in. Read once at start with :func:`load_settings`."""

    mqtt_host: str
    mqtt_port: int
    mqtt_username: str
    mqtt_password: str
    sim_username: str
    sim_password: str
    kafka_bootstrap: str
    params_dsn: str
    timeseries_dsn: str
    redis_url: str
    raw_topic: str = RAW_TOPIC
    decoded_topic: str = DECODED_TOPIC
    dlq_topic: str = DLQ_TOPIC
    stack_dir: str = ""


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


def env_value(environ: Mapping[str, str], name: str, default: str) -> str:
    """``name`` from the environment, else the content of the file named by ``name_FILE``."""
    if name in environ:
        return environ[name]
    file_name = environ.get(f"{name}_FILE")
    if file_name:
        return Path(file_name).read_text().strip()
    return default


def local_dsn(
    info: StackInfo, database: str, user: str = DB_USER, password: str | None = None
) -> str:
    """A libpq DSN for one database of the local stack (as its owner, or as ``user``)."""
    secret = info.db_password if password is None else password
    return (
        f"postgresql://{user}:{secret}@127.0.0.1:{info.postgres_port}/{database}?connect_timeout=5"
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment, with the local stack's values as defaults."""
    env = os.environ if environ is None else environ
    directory = stack_dir(env)
    info = read_stack_info(directory)
    redis_auth = f"default:{info.redis_password}@" if info.redis_password else ""

    def get(name: str, default: str) -> str:
        return env_value(env, name, default)

    return Settings(
        mqtt_host=get("F2_MQTT_HOST", "127.0.0.1"),
        mqtt_port=int(get("F2_MQTT_PORT", str(info.mosquitto_port))),
        mqtt_username=get("F2_MQTT_USERNAME", PIPELINE_MQTT_USER),
        mqtt_password=get("F2_MQTT_PASSWORD", info.pipeline_mqtt_password),
        sim_username=get("F2_SIM_USERNAME", SIM_MQTT_USER),
        sim_password=get("F2_SIM_PASSWORD", info.sim_mqtt_password),
        kafka_bootstrap=get("F2_KAFKA_BOOTSTRAP", f"127.0.0.1:{info.kafka_port}"),
        params_dsn=get("F2_PARAMS_DSN", local_dsn(info, PARAMS_DB)),
        timeseries_dsn=get("F2_TIMESERIES_DSN", local_dsn(info, TIMESERIES_DB)),
        redis_url=get("F2_REDIS_URL", f"redis://{redis_auth}127.0.0.1:{info.redis_port}/0"),
        raw_topic=get("F2_TOPIC_RAW", RAW_TOPIC),
        decoded_topic=get("F2_TOPIC_DECODED", DECODED_TOPIC),
        dlq_topic=get("F2_TOPIC_DLQ", DLQ_TOPIC),
        stack_dir=str(directory),
    )
