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

:func:`build_flow` is the factory: ``build_flow(config, source=…, sink=…)`` with the MQTT source
and the Kafka sink injectable (tests use Bytewax's testing source and sink); ``build_flow()`` is the
entry point: it reads the settings once and sets up logging and the metrics API. Run (``f2 run
ingest`` does this, in the foreground, and prints ``ready``)::

    python -m bytewax.run "dataflows.ingest:build_flow()" -s 1

(``python -m bytewax.run dataflows.ingest`` works too.) Metrics: Bytewax's API server on
``F2_INGEST_METRICS_PORT`` (3031), ``/metrics``.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink
from prometheus_client import Counter

from connectors.kafka_config import client_config
from connectors.kafka_sink import CheckedKafkaSink, DeadLetters
from connectors.mqtt_source import MqttSource, source_settings
from dataflows.entry import flow_entry
from schemas.caches import ByteBoundedCache
from schemas.decode import topic_too_long
from schemas.limits import DEFAULT_LIMITS
from schemas.payloads import too_large
from schemas.reasons import BAD_PAYLOAD, BAD_TOPIC, UNDELIVERABLE
from schemas.records import DecodeError, RawMessage
from schemas.settings import Config, InputLimits
from schemas.topics import parse_topic
from schemas.wire import KafkaRecord, dead_letter, raw_record, topic_header

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


def build_flow(
    config: Config | None = None,
    source: Source[RawMessage] | None = None,
    sink: Sink[KafkaRecord] | None = None,
) -> Dataflow:
    """The ingest dataflow. Without ``config``: the entry point (settings from the environment,
    logging, metrics API); without ``source``/``sink``: the MQTT sessions and the checked Kafka
    sink of ``config``."""
    if config is None:
        config = flow_entry("ingest")
    s = config.connections
    if source is None:
        source = MqttSource(source_settings(s, config.ingest))
    if sink is None:
        dead_letters = DeadLetters(s.dlq_topic, STAGE, DEAD_LETTERED.labels(UNDELIVERABLE).inc)
        sink = CheckedKafkaSink(client_config(s.kafka_bootstrap, config.kafka_client), dead_letters)
    flow = Dataflow("f2_ingest")
    messages = op.input("mqtt", flow, source)
    records = op.flat_map_batch(
        "to_kafka", messages, RecordBuilder(s.raw_topic, s.dlq_topic, config.limits)
    )
    op.output("kafka", records, sink)
    return flow


def __getattr__(name: str) -> Dataflow:
    """``python -m bytewax.run dataflows.ingest`` reads ``flow``: built on first access, so
    importing this module has no side effects."""
    if name == "flow":
        return build_flow()
    raise AttributeError(name)
