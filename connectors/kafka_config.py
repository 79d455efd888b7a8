"""librdkafka settings for every Kafka client of the project (consumers, admin, producers).

``bootstrap.servers`` comes from ``F2_KAFKA_BOOTSTRAP``; any other librdkafka setting passes
through as ``F2_KAFKA_<SETTING>`` (:func:`schemas.settings.kafka_client_settings`:
``F2_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` → ``security.protocol``, ``…_FILE`` for secrets), so
SASL/TLS reach real Kafka clusters from every client alike.
"""

from __future__ import annotations

from collections.abc import Mapping


def client_config(
    bootstrap: str, client: Mapping[str, str] | None = None, **extra: object
) -> dict[str, object]:
    """The pass-through ``client`` settings, the bootstrap servers, then ``extra`` (wins)."""
    return {**(client or {}), "bootstrap.servers": bootstrap, **extra}
