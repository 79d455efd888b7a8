"""Ingest's record builder under hostile topics and payloads: one dead letter per message, a topic
cache bounded in bytes, nothing over the limits cached."""

from __future__ import annotations

from dataflows.ingest import TOPIC_CACHE_BYTES, RecordBuilder
from schemas.records import RawMessage

GOOD = "tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1"


def test_ingest_topic_cache_stays_within_its_bytes_under_topic_churn() -> None:
    builder = RecordBuilder("raw", "dlq")
    for n in range(30_000):
        topic = f"tele/f2-0d{n:010x}/sensor-mode/J1/sensor-1/" + "t" * 200  # ~250 bytes, bad
        (record,) = builder([RawMessage(topic, b"{}")])
        assert record.topic == "dlq"
    assert builder._topics.used_bytes <= TOPIC_CACHE_BYTES
    huge = "tele/f2-0d0000000001/sensor-mode/J1/sensor-1/" + "x" * 70_000
    size_before = len(builder._topics)
    (record,) = builder([RawMessage(huge, b"{}")])
    assert dict(record.headers)["reason"] == b"bad_topic"
    assert huge not in builder._topics and len(builder._topics) == size_before + 0


def test_a_payload_over_the_limit_is_one_dead_letter_at_ingest() -> None:
    builder = RecordBuilder("raw", "dlq")
    big, good = RawMessage(GOOD, b"x" * 65537), RawMessage(GOOD, b"x" * 65536)
    dead, kept = builder([big, good])
    assert dead.topic == "dlq" and dict(dead.headers)["reason"] == b"bad_payload"
    assert dict(dead.headers)["stage"] == b"ingest" and dead.value == big.payload
    assert kept.topic == "raw" and kept.key == b"e4fd45f654be"
