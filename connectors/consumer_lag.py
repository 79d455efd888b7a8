"""Kafka consumer lag of one assigned partition, from the consumer's own position.

Delivery guarantee: none (metrics only; it never touches the messages or the offsets). The lag is
``high watermark - next offset to read`` where the next offset is the position the source itself
keeps (the one it snapshots for recovery) and the high watermark is the one librdkafka cached from
the last fetch response (``get_watermark_offsets(cached=True)``): no extra request to the broker,
and correct on Tansu, whose ListOffsets answer (the uncached call) can be stale. Before the first
fetch response there is no cached watermark and nothing is reported. Updated at most every
``interval_s`` seconds per partition, so the hot path pays one clock read per batch.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Gauge

LAG = Gauge(
    "f2_kafka_consumer_lag",
    "Records in the partition after the consumer's position (high watermark - position)",
    ["topic", "partition"],
)
POSITION = Gauge(
    "f2_kafka_consumer_position", "Next offset the consumer reads", ["topic", "partition"]
)
HIGH_WATERMARK = Gauge(
    "f2_kafka_consumer_high_watermark",
    "High watermark of the partition from the last fetch response",
    ["topic", "partition"],
)


class LagReporter:
    """Sets the lag gauges of one partition from a consumer and the source's own position."""

    def __init__(self, topic: str, partition: int, interval_s: float = 1.0) -> None:
        labels = (topic, str(partition))
        self._tp = TopicPartition(topic, partition)
        self._lag = LAG.labels(*labels)
        self._position = POSITION.labels(*labels)
        self._high = HIGH_WATERMARK.labels(*labels)
        self._interval = interval_s
        self._next = 0.0

    def update(self, consumer: Consumer, position: int) -> None:
        """Report the lag at ``position`` (the next offset to read) if the interval passed."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        low, high = consumer.get_watermark_offsets(self._tp, cached=True)
        if high < 0:
            return
        if position < 0:  # nothing read yet (from the beginning): the log starts at ``low``
            position = max(low, 0)
        self._high.set(high)
        self._position.set(position)
        self._lag.set(max(high - position, 0))
