"""librdkafka settings for every Kafka client of the project (consumers, admin, producers).

``F2_KAFKA_BOOTSTRAP`` gives ``bootstrap.servers``; any other librdkafka setting passes through as
``F2_KAFKA_<SETTING>`` (``F2_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` → ``security.protocol``, with
``…_FILE`` for secrets), so SASL/TLS reach real Kafka clusters from every client alike.
"""

from __future__ import annotations

from connectors.kafka_sink import env_config


def client_config(bootstrap: str, **extra: object) -> dict[str, object]:
    """Pass-through settings from the environment, the bootstrap servers, then ``extra`` (wins)."""
    return {**env_config(), "bootstrap.servers": bootstrap, **extra}
