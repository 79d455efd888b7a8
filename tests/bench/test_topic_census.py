"""The benchmark's count of what a raw topic holds (``bench.e2e.topic_census``), which tells a
step with rows missing whether the broker still had them: gap arithmetic, and a count against the
real local broker."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from bench.e2e import OffsetCensus, topic_census
from ops.stack.local import create_topics
from schemas.settings import Settings


def test_census_counts_gaps_per_partition() -> None:
    census = OffsetCensus()
    for partition, offset in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 5), (1, 2), (0, 6), (0, 3)]:
        census.add(partition, offset)
    assert census.records == 8
    assert census.gaps == 2  # partition 0: 1 → 5, and 6 → 3 (went back); partition 1 contiguous


def test_census_reads_every_record_of_a_topic(stack: Settings) -> None:
    topic = f"census_{time.time_ns()}"
    create_topics(stack.kafka_bootstrap, [topic], 3)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "linger.ms": 5})
    sent = {0: 700, 1: 0, 2: 1301}
    for partition, count in sent.items():
        for i in range(count):
            producer.produce(topic, f"{partition}-{i}".encode(), partition=partition)
            if i % 500 == 0:
                producer.poll(0)
    assert producer.flush(30) == 0
    census = topic_census(stack, topic, idle_s=1.0)
    assert (census.records, census.gaps) == (sum(sent.values()), 0)
