"""The raw topic as a Bytewax source of :class:`~schemas.records.RawMessage`, resumable by offset.

Delivery guarantee: exactly-once *input* under Bytewax recovery. One source partition per Kafka
partition, read with ``Consumer.assign`` (no group join, no commits: Tansu's group joins can hang,
and offsets belong to the flow, not to a consumer group). The partition's resume state is the next
offset to read; Bytewax stores it in the recovery snapshot of each epoch and hands it back on
restart, so the flow resumes exactly where its last committed epoch ended (the outputs of the
epoch in flight are replayed; the sinks are idempotent or at-least-once). Without recovery a
restart re-reads from the beginning. Consumer errors are counted and logged, never emitted: the
offset only advances past delivered messages, and librdkafka reconnects by itself. An offset that
no longer exists (a recreated topic) restarts at the earliest available offset.

Headers written by the ingest flow (``mqtt_topic``, ``mqtt_qos``, ``mqtt_retain``, ``received_at``)
become the RawMessage's fields; ``received_at`` falls back to the Kafka record timestamp.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter

from connectors.consumer_lag import LagReporter
from connectors.kafka_config import client_config
from schemas.records import RawMessage

log = logging.getLogger("f2.decode")

SOURCE_ERRORS = Counter("f2_kafka_source_errors", "Kafka consumer errors (retried)", ["reason"])
OFFSET_GAPS = Counter(
    "f2_kafka_source_offset_gaps",
    "Records read whose offset was not the one after the previous record (skipped offsets; normal"
    " only on compacted or transactional topics)",
)
_IDLE = timedelta(milliseconds=10)
FETCH_WAIT_MAX_MS = 100
"""librdkafka's default is 500 ms. A broker may hold a fetch that long when the partition had no
new data at the time of the request (the local stack's Tansu does: decode latency p50 was 300 ms
at 2,000 msg/s with 500 ms); Apache Kafka answers as soon as data arrives. Shorter is not free on
Tansu: while it holds a fetch it polls its storage, listing every stored batch of the partition
each round, so 25 ms cost it twice the CPU of 100 ms at 5,000 msg/s (0.39-0.45 against 0.22 of a
core, ``bench.e2e`` steps side by side) for 25-30 ms lower p50 at 2,000 msg/s (123-134 against
154-160 ms). An idle consumer asks up to 10 times a second. ``F2_KAFKA_FETCH_WAIT_MAX_MS``
overrides it."""


_QOS = {b"0": 0, b"1": 1, b"2": 2}
_TRUE = (b"1", b"true", b"True")
_TOPIC_TEXT: dict[bytes, str] = {}
TOPIC_CACHE_SIZE = 65536


def raw_message(msg: object, topic: str, partition: int) -> RawMessage:
    """A consumed raw-topic record as a :class:`RawMessage`.

    Runs once per consumed record, so the header values a fleet repeats (topics, QoS) are looked
    up rather than parsed.
    """
    headers = dict(msg.headers() or ())  # type: ignore[attr-defined]
    received = headers.get("received_at")
    try:
        received_ms = int(received) if received else msg.timestamp()[1]  # type: ignore[attr-defined]
    except ValueError:
        received_ms = msg.timestamp()[1]  # type: ignore[attr-defined]
    mqtt_topic = headers.get("mqtt_topic") or b""
    text = _TOPIC_TEXT.get(mqtt_topic)
    if text is None:
        if len(_TOPIC_TEXT) >= TOPIC_CACHE_SIZE:
            _TOPIC_TEXT.clear()
        text = _TOPIC_TEXT[mqtt_topic] = mqtt_topic.decode("utf-8", "replace")
    qos_text = headers.get("mqtt_qos")
    qos = _QOS.get(qos_text)  # type: ignore[arg-type]
    if qos is None:
        qos = int(qos_text or 1)
    return RawMessage(
        text,
        msg.value() or b"",  # type: ignore[attr-defined]
        received_ms if received_ms > 0 else 0,
        qos,
        headers.get("mqtt_retain") in _TRUE,
        topic,
        partition,
        msg.offset(),  # type: ignore[attr-defined]
    )


class _RawPartition(StatefulSourcePartition[RawMessage, int]):
    def __init__(self, config: dict, topic: str, partition: int, offset: int, batch: int) -> None:
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic, self._partition, self._offset, self._batch = topic, partition, offset, batch
        self._idle = False
        self._lag = LagReporter(topic, partition)

    def next_batch(self) -> list[RawMessage]:
        out = []
        topic, partition = self._topic, self._partition
        expected = self._offset
        for msg in self._consumer.consume(self._batch, 0):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    SOURCE_ERRORS.labels(error.name()).inc()
                    log.warning(
                        "kafka consumer error",
                        extra={"stage": "decode", "reason": error.name(), "detail": str(error)},
                    )
                continue
            record = raw_message(msg, topic, partition)
            if record.source_offset != expected and expected >= 0:
                OFFSET_GAPS.inc()
            expected = record.source_offset + 1
            out.append(record)
        if out:
            self._offset = expected
        self._idle = not out
        self._lag.update(self._consumer, self._offset)
        return out

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + _IDLE if self._idle else None

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class RawKafkaSource(FixedPartitionedSource[RawMessage, int]):
    """Every partition of ``topic``, from the resume offset (else the beginning)."""

    def __init__(
        self, bootstrap: str, topic: str, batch_size: int = 1000, group_id: str = "f2-decode"
    ) -> None:
        self._bootstrap, self._topic, self._batch, self._group = (
            bootstrap,
            topic,
            batch_size,
            group_id,
        )

    def list_parts(self) -> list[str]:
        admin = AdminClient(client_config(self._bootstrap))
        meta = admin.list_topics(self._topic, timeout=30).topics[self._topic]
        if meta.error is not None:
            raise RuntimeError(f"kafka topic {self._topic}: {meta.error}")
        return [f"{self._topic}#{p}" for p in sorted(meta.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _RawPartition:
        topic, _, partition = for_part.rpartition("#")
        config = {"fetch.wait.max.ms": FETCH_WAIT_MAX_MS} | client_config(
            self._bootstrap,
            **{
                "group.id": self._group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            },
        )
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _RawPartition(config, topic, int(partition), offset, self._batch)
