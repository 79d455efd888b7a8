"""Pure parts of ``f2 replay`` / ``f2 dlq redrive``: time arguments, windows, the horizon note,
and how dead-letter records are identified and turned back into messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ops.recovery.redrive import dlq_key, identity, raw_of
from ops.recovery.replay import TimeWindow, horizon_note, parse_when, window

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("90m", NOW - timedelta(minutes=90)),
        ("36h", NOW - timedelta(hours=36)),
        ("2d", NOW - timedelta(days=2)),
        ("2026-04-30T08:00:00Z", datetime(2026, 4, 30, 8, tzinfo=UTC)),
        ("2026-04-30 08:00", datetime(2026, 4, 30, 8, tzinfo=UTC)),
        ("2026-04-30T10:00:00+02:00", datetime(2026, 4, 30, 8, tzinfo=UTC)),
    ],
)
def test_time_arguments(text, expected):
    assert parse_when(text, NOW) == expected


def test_bad_time_and_reversed_window_are_refused():
    with pytest.raises(ValueError, match="not a time"):
        parse_when("yesterday", NOW)
    with pytest.raises(ValueError, match="before"):
        window(NOW, NOW - timedelta(seconds=1))


def test_window_bounds_are_inclusive_and_optional():
    span = window(NOW, NOW + timedelta(seconds=1))
    start = int(NOW.timestamp() * 1000)
    assert span.contains(start) and span.contains(start + 1000)
    assert not span.contains(start - 1) and not span.contains(start + 1001)
    assert TimeWindow(None, None).contains(0)


def test_horizon_note_only_when_the_range_starts_before_the_oldest_record():
    assert horizon_note("raw", 2000, 1000, 604800000) is None
    assert horizon_note("raw", None, 1000, None) is None
    note = horizon_note("raw", 500, 1000, 604800000)
    assert "before the oldest record in raw" in note and "retention.ms 604800000" in note
    assert "holds no records" in horizon_note("raw", 500, None, None)


def headers(**fields: str) -> dict[str, bytes]:
    return {k: v.encode() for k, v in fields.items()}


def test_records_of_one_message_share_its_identity():
    a = headers(
        mqtt_topic="t",
        reason="out_of_range",
        label="CO2",
        source_topic="raw_iot_data",
        source_partition="2",
        source_offset="41",
    )
    b = {**a, "reason": b"bad_value", "label": b"Humidity"}
    assert identity(a, b"x") == identity(b, b"y") == ("source", b"raw_iot_data", 2, 41)
    assert dlq_key(a, b"x") != dlq_key(b, b"x")
    # ingest-stage records without a raw-archive place: topic + value
    c = headers(
        mqtt_topic="bad/topic",
        reason="bad_topic",
        source_topic="mqtt",
        source_partition="0",
        source_offset="-1",
    )
    assert identity(c, b"v") == ("mqtt", b"bad/topic", b"v") != identity(c, b"w")


def test_raw_of_keeps_the_original_message_and_its_source():
    h = headers(
        mqtt_topic="tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1",
        received_at="1700",
        source_topic="raw_iot_data",
        source_partition="1",
        source_offset="7",
    )
    raw = raw_of(h, b"{}")
    assert (raw.topic, raw.payload, raw.received_at_ms) == (h["mqtt_topic"].decode(), b"{}", 1700)
    assert (raw.source_topic, raw.source_partition, raw.source_offset) == ("raw_iot_data", 1, 7)
