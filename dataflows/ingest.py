"""dataflows.ingest: MQTT ``stat/#`` + ``tele/#`` → Kafka ``raw_iot_data`` (bad topics → DLQ).

    MQTT sessions s0..sK-1 (MqttSource, shared subscription, QoS 1, manual ack)
        │ RawMessage
    to_kafka (flat_map_batch): key = MAC from the topic, value = payload unchanged,
        │                     headers mqtt_topic, mqtt_qos, mqtt_retain, received_at (epoch ms);
        │                     a topic off the grammar or over F2_LIMIT_TOPIC_BYTES → dlq_iot_data,
        │                     bad_topic; a payload over F2_LIMIT_PAYLOAD_BYTES → bad_payload
    CheckedKafkaSink (returns only when Kafka stored the batch; the MQTT acks wait for it; a record
                      Kafka refuses for its size → dlq_iot_data, undeliverable, stage ingest)

Guarantee: at-least-once from the broker's PUBACK to Kafka (see ``connectors.mqtt_source`` and
``connectors.kafka_sink``). Run WITHOUT recovery: the flow is stateless; the broker's persistent
sessions are the buffer. Keep the epoch short (``-s 1``): a message is acknowledged after the epoch
it was emitted in completes.

Run (``f2 run ingest`` does this, in the foreground, and prints ``ready``)::

    python -m bytewax.run dataflows.ingest -s 1

Metrics on Bytewax's API server, port 3031 unless ``BYTEWAX_DATAFLOW_API_PORT`` says otherwise
(``BYTEWAX_DATAFLOW_API_ENABLED`` defaults to on; ``dataflow.json`` goes to the stack directory).
Configuration: ``schemas.settings`` (``F2_MQTT_*``, ``F2_KAFKA_BOOTSTRAP``, ``F2_TOPIC_*``),
``F2_INGEST_*`` (``connectors.mqtt_source``) and ``F2_KAFKA_*`` (``connectors.kafka_sink``).
"""

from __future__ import annotations

import os
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from prometheus_client import Counter

from connectors.kafka_sink import CheckedKafkaSink, DeadLetters
from connectors.logs import configure_logging
from connectors.mqtt_source import MqttSource, load_source_settings
from schemas.caches import ByteBoundedCache
from schemas.decode import topic_too_long
from schemas.limits import DEFAULT_LIMITS, InputLimits, load_input_limits
from schemas.payloads import too_large
from schemas.reasons import BAD_PAYLOAD, BAD_TOPIC, UNDELIVERABLE
from schemas.records import DecodeError, RawMessage
from schemas.settings import Settings, load_settings
from schemas.topics import parse_topic
from schemas.wire import KafkaRecord, dead_letter, raw_record, topic_header

METRICS_PORT = 3031
STAGE = "ingest"

DEAD_LETTERED = Counter(
    "f2_ingest_dead_lettered", "Messages sent to the dead-letter topic", ["reason"]
)
for _reason in (BAD_TOPIC, BAD_PAYLOAD, UNDELIVERABLE):
    DEAD_LETTERED.labels(_reason)


TOPIC_CACHE_BYTES = 16 << 20


class RecordBuilder:
    """Builds the Kafka records of a batch; the per-topic parts are computed once per topic.

    A fleet repeats a bounded set of topics, so the key and the ``mqtt_topic`` header of a topic
    are cached, in at most about ``TOPIC_CACHE_BYTES`` (topics over the length limit are never
    cached), so hostile topic churn cannot grow it; the ``mqtt_qos``/``mqtt_retain`` headers are
    constants. A message over the input limits (topic length, payload size) becomes one
    dead-letter record.
    """

    def __init__(
        self, raw_topic: str, dlq_topic: str, limits: InputLimits = DEFAULT_LIMITS
    ) -> None:
        self._raw_topic = raw_topic
        self._dlq_topic = dlq_topic
        self._max_payload = limits.payload_bytes
        self._limits = limits
        self._topics: ByteBoundedCache[str, tuple[bytes, tuple[str, bytes]] | DecodeError] = (
            ByteBoundedCache(TOPIC_CACHE_BYTES)
        )

    def _topic_parts(self, topic: str) -> tuple[bytes, tuple[str, bytes]] | DecodeError:
        too_long = topic_too_long(topic, self._limits)
        if too_long is not None:
            return too_long
        info = parse_topic(topic)
        parts: tuple[bytes, tuple[str, bytes]] | DecodeError = info
        if not isinstance(info, DecodeError):
            parts = (info.mac.encode(), topic_header(topic))
        return self._topics.put(topic, parts, 3 * len(topic))

    def __call__(self, batch: list[RawMessage]) -> list[KafkaRecord]:
        """The Kafka records of ``batch``: raw records keyed by MAC; bad topics as DLQ records."""
        out = []
        append = out.append
        topics = self._topics
        raw_topic = self._raw_topic
        max_payload = self._max_payload
        for msg in batch:
            parts = topics.get(msg.topic) or self._topic_parts(msg.topic)
            if isinstance(parts, DecodeError):
                append(refused(msg, parts, self._dlq_topic))
                continue
            if len(msg.payload) > max_payload:
                error = too_large(msg.payload, max_payload)
                append(refused(msg, error, self._dlq_topic))
                continue
            key, mqtt_topic = parts
            append(raw_record(msg, raw_topic, key, mqtt_topic))
        return out


def refused(msg: RawMessage, error: DecodeError, dlq_topic: str) -> KafkaRecord:
    """The dead letter of a message the ingest stage refused (its topic or its size)."""
    DEAD_LETTERED.labels(error.reason).inc()
    return dead_letter(msg, error.reason, error.detail, STAGE, dlq_topic)


def build_flow(settings: Settings | None = None) -> Dataflow:
    """The ingest dataflow for ``settings`` (default: from the environment)."""
    s = settings or load_settings()
    limits = load_input_limits()
    flow = Dataflow("f2_ingest")
    messages = op.input("mqtt", flow, MqttSource(load_source_settings(s)))
    records = op.flat_map_batch(
        "to_kafka", messages, RecordBuilder(s.raw_topic, s.dlq_topic, limits)
    )
    dead_letters = DeadLetters(s.dlq_topic, STAGE, DEAD_LETTERED.labels(UNDELIVERABLE).inc)
    op.output(
        "kafka", records, CheckedKafkaSink({"bootstrap.servers": s.kafka_bootstrap}, dead_letters)
    )
    return flow


def _api_defaults(settings: Settings) -> None:
    """Serve /metrics on :3031 by default, with Bytewax's dataflow.json in the stack directory."""
    os.environ.setdefault("BYTEWAX_DATAFLOW_API_ENABLED", "1")
    os.environ.setdefault("BYTEWAX_DATAFLOW_API_PORT", str(METRICS_PORT))
    if "BYTEWAX_DATAFLOW_API_CACHE_PATH" not in os.environ and settings.stack_dir:
        cache = Path(settings.stack_dir) / "run" / "ingest-api"
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = str(cache)


configure_logging()
_settings = load_settings()
_api_defaults(_settings)
flow = build_flow(_settings)
