"""Bounded reads of a whole Kafka topic (the raw archive, the DLQ) for ``f2 replay`` and re-drive.

Delivery guarantee: read-only, and complete up to its bound or it says so. Every partition is read
from its oldest record (``Consumer.assign``: no consumer-group join, nothing committed, so reading
never disturbs the pipeline; the group id is a throw-away string) until either the broker reports
the partition's end (``enable.partition.eof``: the end is found by reading, not from watermarks, as
the local broker's are unreliable) or a record newer than ``stop_after_ms`` appears (records are
appended in about time order, so a topic the live pipeline keeps writing still ends). A partition
that neither ends nor delivers anything for ``idle_s`` is left unfinished and listed in
:attr:`TopicReader.unfinished`; the caller reports the read as incomplete.

Each record's time is its ``received_at`` header (epoch ms, written by ingest), else its Kafka
timestamp. :attr:`TopicReader.oldest_ms` is the oldest time among the first records of the
partitions: the start of what the topic still holds (its retention is the replay horizon).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from connectors.kafka_config import client_config
from schemas.wire import RECEIVED_AT


def record_time_ms(msg: Message) -> int:
    """``received_at`` (epoch ms) of a record, else its Kafka timestamp."""
    for name, value in msg.headers() or ():
        if name == RECEIVED_AT and value:
            try:
                return int(value)
            except ValueError:
                break
    return msg.timestamp()[1]


def header(msg: Message, name: str) -> bytes | None:
    """The first header ``name`` of a record, or None."""
    for key, value in msg.headers() or ():
        if key == name:
            return value
    return None


class TopicReader:
    """Reads every partition of ``topic`` from the beginning up to ``stop_after_ms``, in batches."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        stop_after_ms: int,
        idle_s: float = 10.0,
        batch: int = 2000,
        client: Mapping[str, str] | None = None,
    ) -> None:
        self.topic = topic
        self._stop_after = stop_after_ms
        self._idle_s = idle_s
        self._batch = batch
        self._bootstrap = bootstrap
        self._client = client or {}
        self.records = 0
        self.oldest_ms: int | None = None
        self.unfinished: list[int] = []
        self._next: dict[int, int] = {}
        self._consumer: Consumer | None = None

    def batches(self) -> Iterator[list[Message]]:
        """Batches of records within the bound, in partition order within each batch."""
        consumer = Consumer(
            client_config(
                self._bootstrap,
                self._client,
                **{
                    "group.id": f"f2-replay-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                },
            )
        )
        try:
            meta = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
            if meta.error is not None:
                raise RuntimeError(f"kafka topic {self.topic}: {meta.error}")
            open_parts = set(meta.partitions)
            self._next = dict.fromkeys(open_parts, 0)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in open_parts])
            self._consumer = consumer
            seen_first: set[int] = set()
            last_activity = time.monotonic()
            while open_parts:
                out: list[Message] = []
                messages = consumer.consume(self._batch, 0.5)
                if messages:
                    last_activity = time.monotonic()
                for msg in messages:
                    part = msg.partition()
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            open_parts.discard(part)
                        continue
                    if part not in open_parts:
                        continue
                    at = record_time_ms(msg)
                    if part not in seen_first:
                        seen_first.add(part)
                        self.oldest_ms = at if self.oldest_ms is None else min(self.oldest_ms, at)
                    self._next[part] = msg.offset() + 1
                    if at > self._stop_after:
                        open_parts.discard(part)
                        continue
                    self.records += 1
                    out.append(msg)
                if out:
                    yield out
                if open_parts and time.monotonic() - last_activity > self._idle_s:
                    self.unfinished = sorted(open_parts)
                    break
        finally:
            self._consumer = None
            consumer.close()

    def remaining(self) -> int | None:
        """Records left to read, from the watermarks cached by the last fetches (display only)."""
        consumer = self._consumer
        if consumer is None:
            return None
        left = 0
        for part, offset in self._next.items():
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, part), cached=True
                )
            except Exception:  # a display hint only
                return None
            if high < 0:
                return None
            left += max(high - offset, 0)
        return left


def retention_ms(bootstrap: str, topic: str, client: Mapping[str, str] | None = None) -> int | None:
    """The topic's ``retention.ms`` as the broker reports it (None: unknown or unlimited)."""
    admin = AdminClient(client_config(bootstrap, client))
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        futures = admin.describe_configs([resource], request_timeout=5)
        config = futures[resource].result(timeout=10)
        value = int(config["retention.ms"].value)
    except Exception:  # brokers without DescribeConfigs: unknown
        return None
    return value if value >= 0 else None
