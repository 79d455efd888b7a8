from connectors.kafka_config import client_config
from schemas.settings import load_config


def test_pass_through_settings_reach_every_client(tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    environ = {
        "F2_STACK_DIR": str(tmp_path),
        "F2_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "F2_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "F2_KAFKA_RETENTION_MS": "1000",  # a topic setting of the local stack, not librdkafka
        "F2_KAFKA_BOOTSTRAP": "broker:9092",
    }
    loaded = load_config(environ)
    config = client_config(
        loaded.connections.kafka_bootstrap, loaded.kafka_client, **{"group.id": "g"}
    )
    assert config["bootstrap.servers"] == "broker:9092"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.password"] == "s3cret"
    assert config["group.id"] == "g"
    assert "retention.ms" not in config and loaded.stack.kafka_retention_ms == 1000
