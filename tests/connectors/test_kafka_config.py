from connectors.kafka_config import client_config


def test_pass_through_settings_reach_every_client(monkeypatch, tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("F2_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("F2_KAFKA_SASL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("F2_KAFKA_RETENTION_MS", "1000")  # a topic setting, not librdkafka
    config = client_config("broker:9092", **{"group.id": "g"})
    assert config["bootstrap.servers"] == "broker:9092"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.password"] == "s3cret"
    assert config["group.id"] == "g"
    assert "retention.ms" not in config
