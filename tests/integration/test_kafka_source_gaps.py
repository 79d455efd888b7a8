"""The raw source on the real local broker, across offsets that really are missing: a
transactional producer's commit markers take an offset each and are never delivered. The source
reads each gap again for its wait, then passes over it once, and delivers every record."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from connectors.kafka_source import OFFSET_GAPS, RawKafkaSource
from ops.stack.local import create_topics
from schemas.settings import Settings

pytestmark = pytest.mark.integration

TRANSACTIONS, PER_TRANSACTION = 3, 5


def test_real_gaps_are_waited_for_then_passed_over(stack: Settings) -> None:
    topic = f"gaps_{time.time_ns()}"
    create_topics(stack.kafka_bootstrap, [topic], 1)
    producer = Producer(
        {"bootstrap.servers": stack.kafka_bootstrap, "transactional.id": f"f2-test-{topic}"}
    )
    producer.init_transactions(15)
    for t in range(TRANSACTIONS):
        producer.begin_transaction()
        for i in range(PER_TRANSACTION):
            producer.produce(topic, f"{t}-{i}".encode(), partition=0)
        producer.commit_transaction(15)

    skipped = OFFSET_GAPS.labels("skipped")._value.get()
    wait_s = 0.5
    part = RawKafkaSource(stack.kafka_bootstrap, topic, gap_wait_s=wait_s).build_part(
        "raw", f"{topic}#0", None
    )
    read: list[int] = []
    started = time.monotonic()
    try:
        while len(read) < TRANSACTIONS * PER_TRANSACTION and time.monotonic() - started < 30:
            read += [r.source_offset for r in part.next_batch()]
            time.sleep(0.01)
    finally:
        part.close()
    took = time.monotonic() - started

    # A marker follows each transaction's records: offsets 0-4, 6-10, 12-16.
    step = PER_TRANSACTION + 1
    expected = [t * step + i for t in range(TRANSACTIONS) for i in range(PER_TRANSACTION)]
    assert read == expected
    assert part.snapshot() == expected[-1] + 1
    assert OFFSET_GAPS.labels("skipped")._value.get() == skipped + TRANSACTIONS - 1
    assert took >= (TRANSACTIONS - 1) * wait_s  # each gap was read again before it was passed
