from pathlib import Path

import msgspec

from schemas.settings import StackInfo, load_settings


def test_defaults_come_from_the_stack_file(tmp_path: Path) -> None:
    info = StackInfo(
        postgres_port=1111,
        mosquitto_port=2222,
        kafka_port=3333,
        redis_port=4444,
        db_password="dbpw",
        pipeline_mqtt_password="pipe",
        sim_mqtt_password="sim",
        redis_password="rpw",
    )
    (tmp_path / "stack.json").write_bytes(msgspec.json.encode(info))
    settings = load_settings({"F2_STACK_DIR": str(tmp_path)})
    assert settings.mqtt_port == 2222
    assert (settings.mqtt_password, settings.sim_password) == ("pipe", "sim")
    assert settings.kafka_bootstrap == "127.0.0.1:3333"
    assert settings.params_dsn.startswith("postgresql://f2:dbpw@127.0.0.1:1111/f2_params")
    assert settings.timeseries_dsn.startswith("postgresql://f2:dbpw@127.0.0.1:1111/f2_timeseries")
    assert settings.redis_url == "redis://default:rpw@127.0.0.1:4444/0"


def test_environment_wins_over_the_stack(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "F2_STACK_DIR": str(tmp_path),
            "F2_MQTT_HOST": "mqtt.example",
            "F2_MQTT_PORT": "8883",
            "F2_TOPIC_RAW": "raw2",
        }
    )
    assert (settings.mqtt_host, settings.mqtt_port, settings.raw_topic) == (
        "mqtt.example",
        8883,
        "raw2",
    )


def test_any_variable_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    settings = load_settings({"F2_STACK_DIR": str(tmp_path), "F2_MQTT_PASSWORD_FILE": str(secret)})
    assert settings.mqtt_password == "s3cret"


def test_missing_stack_file_gives_usable_defaults(tmp_path: Path) -> None:
    settings = load_settings({"F2_STACK_DIR": str(tmp_path / "none")})
    assert settings.mqtt_port == 21883 and settings.kafka_bootstrap == "127.0.0.1:29092"


def test_every_section_loads_with_its_types_and_names_a_bad_variable(tmp_path: Path) -> None:
    import pytest

    from schemas.settings import (
        IngestSettings,
        SettingsError,
        StoreSettings,
        TimescaleSettings,
        load_config,
        load_section,
    )

    environ = {
        "F2_STACK_DIR": str(tmp_path),
        "F2_STORE_BATCH_ROWS": "250",
        "F2_STORE_RETRY_MAX_S": "2.5",
        "F2_MQTT_TLS": "yes",
        "F2_INGEST_TOPICS": "tele/#, stat/#",
        "F2_HEALTH_PORT": "",  # empty: the default
    }
    config = load_config(environ)
    assert (config.store.batch_rows, config.store.retry_max_s) == (250, 2.5)
    assert config.connections.mqtt_tls and config.ingest.topic_filters == ("tele/#", "stat/#")
    assert config.health.port == 8000 and config.ingest.state_dir == f"{tmp_path}/ingest-sessions"
    for section, variable, value, message in [
        (StoreSettings, "F2_STORE_BATCH_ROWS", "many", "Expected `int`"),
        (StoreSettings, "F2_STORE_SHARDS", "0", ">= 1"),
        (IngestSettings, "F2_INGEST_KEEPALIVE_S", "-3", ">= 1"),
        (TimescaleSettings, "F2_STORAGE_BACKEND", "influx", "Invalid enum value"),
    ]:
        with pytest.raises(SettingsError) as raised:
            load_section(section, {variable: value})
        assert str(raised.value).startswith(f"{variable}={value!r}: ") and message in str(
            raised.value
        )
    with pytest.raises(SettingsError, match="F2_MQTT_TLS"):
        load_config({**environ, "F2_MQTT_TLS": "maybe"})
    with pytest.raises(SettingsError, match="F2_MQTT_PASSWORD_FILE"):
        load_config({**environ, "F2_MQTT_PASSWORD_FILE": str(tmp_path / "missing")})


def test_a_new_stack_gets_the_offset_it_will_be_created_with(tmp_path: Path) -> None:
    from schemas.settings import load_config

    fresh = load_config({"F2_STACK_DIR": str(tmp_path / "new"), "F2_STACK_PORT_OFFSET": "700"})
    assert fresh.health.port == 8700 and fresh.stack.port_offset == 700
    info = StackInfo(postgres_port=25432 + 300)
    (tmp_path / "stack.json").write_bytes(msgspec.json.encode(info))
    made = load_config({"F2_STACK_DIR": str(tmp_path), "F2_STACK_PORT_OFFSET": "700"})
    assert made.health.port == 8300  # the stack's own offset, as created


def test_kafka_client_settings_leave_out_the_projects_own() -> None:
    from schemas.settings import kafka_client_settings

    assert kafka_client_settings(
        {
            "F2_KAFKA_BOOTSTRAP": "b:9092",
            "F2_KAFKA_PARTITIONS": "4",
            "F2_KAFKA_RETENTION_BYTES": "1",
            "F2_KAFKA_LINGER_MS": "20",
        }
    ) == {"linger.ms": "20"}
