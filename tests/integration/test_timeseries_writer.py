"""The storage writer against the stack's PostgreSQL: idempotent, isolates refused rows, and every
accepted event time finds a partition."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from connectors.store_rows import RowBatch, event_row, reading_row
from connectors.timeseries_writer import StoreSettings, TimeseriesWriter
from schemas.records import Event, RawMessage, Reading

pytestmark = pytest.mark.integration

RAW = RawMessage("stat/f2-e4fd45f654be/access-control-mode/J3/strike-1", b'{"status": true}')


@pytest.fixture
def ids(stack):
    """A fresh sensor/controller id; its rows are removed afterwards."""
    ident = random.randint(10**8, 2 * 10**9)
    yield ident
    with psycopg.connect(stack.timeseries_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id = %s", (ident,))
        conn.execute("DELETE FROM device_events WHERE controller_id = %s", (ident,))


def readings(ident: int, times: list[datetime]) -> list[tuple]:
    return [
        reading_row(Reading("e4fd45f654be", "J1", 1, "T", float(i), "", t, ident, 1, 1), RAW)
        for i, t in enumerate(times)
    ]


def event(ident: int, field: str, value, time: datetime) -> tuple:
    return event_row(Event("e4fd45f654be", "J3", "strike-1", field, value, time, ident, 1), RAW)


def counts(dsn: str, ident: int) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        r = conn.execute("SELECT count(*) FROM readings WHERE sensor_id = %s", (ident,)).fetchone()
        e = conn.execute(
            "SELECT count(*) FROM device_events WHERE controller_id = %s", (ident,)
        ).fetchone()
    return r[0], e[0]


def test_same_batch_twice_leaves_one_copy(stack, ids):
    t0 = datetime.now(UTC).replace(microsecond=0)
    batch = RowBatch(
        readings=readings(ids, [t0 + timedelta(seconds=i) for i in range(500)]),
        events=[event(ids, "status", True, t0), event(ids, "voltage", 12.5, t0)],
    )
    writer = TimeseriesWriter(stack.timeseries_dsn)
    try:
        assert writer.write(batch) == []
        assert writer.write(batch) == []
    finally:
        writer.close()
    assert counts(stack.timeseries_dsn, ids) == (500, 2)


def test_refused_row_is_isolated_and_the_rest_stored(stack, ids):
    t0 = datetime.now(UTC).replace(microsecond=0)
    batch = RowBatch(
        readings=readings(ids, [t0 + timedelta(seconds=i) for i in range(1000)]),
        events=[
            event(ids, "status", True, t0),
            event(ids, "bad\x00field", "x", t0),
            event(ids, "data", "a\x00b", t0),
            event(ids, "volume", 3, t0),
        ],
    )
    writer = TimeseriesWriter(stack.timeseries_dsn)
    try:
        refused = writer.write(batch)
    finally:
        writer.close()
    assert sorted(r.label for r in refused) == ["bad\x00field", "data"]
    assert all(r.table == "device_events" and r.raw == RAW for r in refused)
    assert "0x00" in refused[0].detail
    assert counts(stack.timeseries_dsn, ids) == (1000, 2)


def test_every_accepted_time_finds_a_partition(stack, ids):
    now = datetime.now(UTC)
    edges = [
        datetime(2000, 1, 1, tzinfo=UTC),
        now - timedelta(days=400),
        now,
        now + timedelta(days=1),
        now + timedelta(days=1, minutes=5),
        now + timedelta(days=30),
    ]
    writer = TimeseriesWriter(stack.timeseries_dsn)
    try:
        assert writer.write(RowBatch(readings=readings(ids, edges))) == []
        assert writer.write(RowBatch(events=[event(ids, "status", True, t) for t in edges])) == []
    finally:
        writer.close()
    assert counts(stack.timeseries_dsn, ids) == (len(edges), len(edges))
    with psycopg.connect(stack.timeseries_dsn) as conn:
        part = conn.execute(
            "SELECT tableoid::regclass::text FROM readings WHERE sensor_id = %s AND time = %s",
            (ids, edges[3]),
        ).fetchone()[0]
    assert part == "readings_p" + edges[3].strftime("%Y%m%d")  # created ahead, not the default


def test_events_past_their_retention_are_expired(stack, ids):
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=400), now - timedelta(days=1)
    writer = TimeseriesWriter(stack.timeseries_dsn, StoreSettings(event_retention_days=365))
    try:
        rows = [event(ids, "status", True, t) for t in (old, recent)]
        assert writer.write(RowBatch(events=rows)) == []
        assert counts(stack.timeseries_dsn, ids) == (0, 2)
        assert writer.expire_events() >= 1
    finally:
        writer.close()
    with psycopg.connect(stack.timeseries_dsn) as conn:
        left = conn.execute(
            "SELECT time FROM device_events WHERE controller_id = %s", (ids,)
        ).fetchall()
    assert [row[0] for row in left] == [recent]


def test_zero_retention_keeps_every_event(stack, ids):
    old = datetime.now(UTC) - timedelta(days=4000)
    writer = TimeseriesWriter(stack.timeseries_dsn, StoreSettings(event_retention_days=0))
    try:
        writer.write(RowBatch(events=[event(ids, "status", True, old)]))
        assert writer.expire_events() == 0
    finally:
        writer.close()
    assert counts(stack.timeseries_dsn, ids) == (0, 1)
