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

Skipped offsets are read again before they are passed over (:class:`OffsetOrder`): on a gap the
partition is read again from the missing offset until the records appear (``outcome="filled"``)
or ``F2_DECODE_GAP_WAIT_MS`` has passed (``"skipped"``); the records past the gap wait meanwhile.
Apache Kafka has gaps only on compacted or transactional topics; the local broker can make a later
batch readable before an earlier one (docs/ARCHITECTURE.md, D11).

A record becomes a :class:`RawMessage` through :func:`schemas.wire.raw_message` (the headers ingest
wrote, read in place; ``received_at`` falls back to the Kafka record timestamp).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter

from connectors.consumer_lag import LagReporter
from connectors.kafka_config import client_config
from schemas.caches import ByteBoundedCache
from schemas.records import RawMessage
from schemas.wire import raw_message as wire_raw_message

log = logging.getLogger("f2.decode")

SOURCE_ERRORS = Counter("f2_kafka_source_errors", "Kafka consumer errors (retried)", ["reason"])
OFFSET_GAPS = Counter(
    "f2_kafka_source_offset_gaps",
    "Records read whose offset was not the one after the previous record, by outcome: filled (read"
    " again, the missing records arrived), skipped (still missing after the wait: normal only on"
    " compacted or transactional topics), rewound (the offset went back: a reset to the earliest)",
    ["outcome"],
)
_IDLE = timedelta(milliseconds=10)
GAP_RETRY = timedelta(milliseconds=50)
GAP_WAIT_S = 2.0
"""How long a partition reads a skipped offset again (``F2_DECODE_GAP_WAIT_MS``)."""
FETCH_WAIT_MAX_MS = 100
"""librdkafka's ``fetch.wait.max.ms`` for the raw topic (default 500; why 100: docs/ARCHITECTURE.md,
D10). ``F2_KAFKA_FETCH_WAIT_MAX_MS`` overrides it."""
BATCH_BYTES = 4 << 20
"""A partition's batch asks for fewer records than ``F2_DECODE_BATCH_SIZE`` when the last one
averaged large payloads, about this many bytes at most: 1,000 records of 64 KiB would put 64 MiB
per partition into one step of the flow."""
PREFETCH_KBYTES = 16384
"""librdkafka's ``queued.max.messages.kbytes`` per raw partition (default 65536): each partition
has its own consumer, so the default let four of them prefetch 256 MB of 64 KiB payloads and
decode's peak RSS reach 525 MiB under ``bench.memory``'s flood (247 MiB with this).
``F2_KAFKA_QUEUED_MAX_MESSAGES_KBYTES`` overrides it."""


TOPIC_CACHE_BYTES = 16 << 20
_PAYLOAD = attrgetter("payload")
_TOPIC_TEXT: ByteBoundedCache[bytes, str] = ByteBoundedCache(TOPIC_CACHE_BYTES)


def _topic_text(mqtt_topic: bytes) -> str:
    """The topic header as text; a fleet repeats its topics, so they are looked up, not decoded."""
    text = _TOPIC_TEXT.get(mqtt_topic)
    if text is None:
        text = mqtt_topic.decode("utf-8", "replace")
        _TOPIC_TEXT.put(mqtt_topic, text, 2 * len(mqtt_topic))
    return text


def raw_message(msg: Message, topic: str, partition: int) -> RawMessage:
    """A consumed raw-topic record as a :class:`RawMessage` (:func:`schemas.wire.raw_message`)."""
    return wire_raw_message(
        msg.headers(),
        msg.value(),
        msg.timestamp()[1],
        topic,
        partition,
        msg.offset(),
        _topic_text,
    )


class OffsetOrder:
    """Which records of a partition may be emitted so that none is passed over unseen.

    ``next_offset`` is the offset the partition expects next (negative: from wherever the log
    starts). :meth:`admit` takes the offsets of a consumed batch and returns how many of them, from
    the front, follow on without a gap, and whether to read again from ``next_offset``: at a
    forward gap that has not yet lasted ``wait_s``. Past that, the gap is passed over.
    """

    def __init__(self, next_offset: int, wait_s: float) -> None:
        self.next_offset = next_offset
        self._wait_s = wait_s
        self._gap_at: int | None = None  # the missing offset being read again, since when,
        self._gap_since = 0.0
        self._gap_past = 0  # and the first offset fetched past it

    def admit(self, offsets: Sequence[int], now: float) -> tuple[int, bool]:
        expected = self.next_offset
        for count, offset in enumerate(offsets):
            if offset == expected:
                if self._gap_at == offset:
                    self._close_gap("filled", self._gap_past, now)
            elif expected >= 0:
                if offset < expected:
                    OFFSET_GAPS.labels("rewound").inc()
                    self._gap_at = None
                else:
                    if self._gap_at != expected:
                        self._gap_at, self._gap_past, self._gap_since = expected, offset, now
                    if now - self._gap_since < self._wait_s:
                        self.next_offset = expected
                        return count, True
                    self._close_gap("skipped", offset, now)
            expected = offset + 1
        self.next_offset = expected
        return len(offsets), False

    def _close_gap(self, outcome: str, past: int, now: float) -> None:
        """Count and log the gap being tracked (up to offset ``past``) as filled or skipped."""
        first = self._gap_at
        assert first is not None
        OFFSET_GAPS.labels(outcome).inc()
        message, level, reason = _GAP_LOG[outcome]
        log.log(
            level,
            message,
            extra={
                "stage": "decode",
                "reason": reason,
                "records": past - first,
                "detail": f"{first}..{past - 1} after {now - self._gap_since:.3f} s",
            },
        )
        self._gap_at = None


_GAP_LOG = {
    "filled": ("kafka offsets arrived late", logging.INFO, "offset_gap_filled"),
    "skipped": ("kafka offsets skipped", logging.WARNING, "offset_gap"),
}


class _RawPartition(StatefulSourcePartition[RawMessage, int]):
    def __init__(
        self,
        config: dict,
        topic: str,
        partition: int,
        offset: int,
        batch: int,
        gap_wait_s: float,
        batch_wait_s: float = 0.0,
    ) -> None:
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic, self._partition, self._batch = topic, partition, batch
        self._ask = batch  # records the next consume asks for (fewer while payloads are large)
        self._order = OffsetOrder(offset, gap_wait_s)
        self._awake: timedelta | None = None
        self._window = timedelta(seconds=batch_wait_s)
        self._idle = self._window or _IDLE
        self._lag = LagReporter(topic, partition)

    def next_batch(self) -> list[RawMessage]:
        topic, partition = self._topic, self._partition
        messages = []
        for msg in self._consumer.consume(self._ask, 0):
            error = msg.error()
            if error is None:
                messages.append(msg)
            elif error.code() != KafkaError._PARTITION_EOF:
                SOURCE_ERRORS.labels(error.name()).inc()
                log.warning(
                    "kafka consumer error",
                    extra={"stage": "decode", "reason": error.name(), "detail": str(error)},
                )
        admitted, reread = self._order.admit([m.offset() for m in messages], time.monotonic())
        out = [raw_message(msg, topic, partition) for msg in messages[:admitted]]
        if out:
            size = sum(map(len, map(_PAYLOAD, out)))
            self._ask = max(1, min(self._batch, BATCH_BYTES * len(out) // max(size, 1)))
        if reread:
            # Drops what was fetched past the gap; the fetch starts again at the missing offset.
            self._consumer.assign([TopicPartition(topic, partition, self._order.next_offset)])
            self._awake = GAP_RETRY
        elif len(messages) >= self._ask:
            self._awake = None  # more may be waiting
        else:  # let records gather for the batch window (or poll idle at that pace)
            self._awake = (self._window or None) if out else self._idle
        self._lag.update(self._consumer, self._order.next_offset)
        return out

    def next_awake(self) -> datetime | None:
        return None if self._awake is None else datetime.now(UTC) + self._awake

    def snapshot(self) -> int:
        return self._order.next_offset

    def close(self) -> None:
        self._consumer.close()


class RawKafkaSource(FixedPartitionedSource[RawMessage, int]):
    """Every partition of ``topic``, from the resume offset (else the beginning)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        batch_size: int = 1000,
        group_id: str = "f2-decode",
        gap_wait_s: float = GAP_WAIT_S,
        client: Mapping[str, str] | None = None,
        batch_wait_s: float = 0.0,
    ) -> None:
        self._bootstrap, self._topic, self._batch, self._group = (
            bootstrap,
            topic,
            batch_size,
            group_id,
        )
        self._gap_wait_s = gap_wait_s
        self._batch_wait_s = batch_wait_s
        self._client = client or {}

    def list_parts(self) -> list[str]:
        admin = AdminClient(client_config(self._bootstrap, self._client))
        meta = admin.list_topics(self._topic, timeout=30).topics[self._topic]
        if meta.error is not None:
            raise RuntimeError(f"kafka topic {self._topic}: {meta.error}")
        return [f"{self._topic}#{p}" for p in sorted(meta.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _RawPartition:
        topic, _, partition = for_part.rpartition("#")
        defaults = {
            "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
            "queued.max.messages.kbytes": PREFETCH_KBYTES,
        }
        config = defaults | client_config(
            self._bootstrap,
            self._client,
            **{
                "group.id": self._group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            },
        )
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _RawPartition(
            config,
            topic,
            int(partition),
            offset,
            self._batch,
            self._gap_wait_s,
            self._batch_wait_s,
        )
