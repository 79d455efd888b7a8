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
