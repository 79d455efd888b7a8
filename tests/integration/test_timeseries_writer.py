"""The storage writer against the stack's PostgreSQL: idempotent, isolates refused rows, and every
accepted event time finds a partition; each failure class gets its answer (a refused row is
dead-lettered, a setup fault holds the write visibly until fixed) and conflicting values are
counted."""

from __future__ import annotations

import random
import string
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql

from connectors.store_rows import RowBatch, event_row, reading_row
from connectors.timeseries_writer import StoreSettings, TimeseriesWriter
from ops.stack.procs import wait_until
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


# --- failure classes against the real database (connectors.failures) -------------------------


def gauge(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def blocked_codes() -> set[str]:
    return {
        sample.labels["code"]
        for metric in REGISTRY.collect()
        if metric.name == "f2_blocked_reason"
        for sample in metric.samples
        if sample.labels["dependency"] == "store" and sample.value > 0
    }


class Background:
    """``writer.write(batch)`` on a thread; its result or exception once it returns."""

    def __init__(self, writer: TimeseriesWriter, batch: RowBatch) -> None:
        self.result: list | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(writer, batch), daemon=True)
        self.thread.start()

    def _run(self, writer: TimeseriesWriter, batch: RowBatch) -> None:
        try:
            self.result = writer.write(batch)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout_s: float) -> list:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the write did not return"
        assert self.error is None, self.error
        return self.result


FAST = StoreSettings(blocked_retry_s=0.2, retry_max_s=0.2)


@contextmanager
def refusing_trigger(dsn: str, ident: int, errcode: str = "check_violation"):
    """A trigger that refuses every reading of sensor ``ident`` with ``errcode``."""
    name = sql.Identifier(f"f2_test_refuse_{ident}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = {}; END $$"
            ).format(name, sql.Literal(errcode))
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {} BEFORE INSERT ON readings FOR EACH ROW"
                " WHEN (NEW.sensor_id = {}) EXECUTE FUNCTION {}()"
            ).format(name, sql.Literal(ident), name)
        )
        drop = sql.SQL("DROP TRIGGER IF EXISTS {} ON readings").format(name)
        try:
            yield lambda: conn.execute(drop)
        finally:
            conn.execute(drop)
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(name))


def test_a_field_name_over_the_index_limit_is_rejected_with_its_sqlstate(stack, ids):
    """The index row of a 4,000-character field name exceeds PostgreSQL's btree limit (54000):
    that row is dead-lettered, the rest of the batch is stored."""
    t0 = datetime.now(UTC).replace(microsecond=0)
    name = "".join(random.choices(string.ascii_letters + string.digits, k=4000))
    batch = RowBatch(
        readings=readings(ids, [t0 + timedelta(seconds=i) for i in range(50)]),
        events=[event(ids, "status", True, t0), event(ids, name, 1.0, t0)],
    )
    writer = TimeseriesWriter(stack.timeseries_dsn, FAST)
    try:
        refused = writer.write(batch)
    finally:
        writer.close()
    assert [(r.label, r.table) for r in refused] == [(name, "device_events")]
    assert refused[0].detail.startswith("54000: index row")
    assert counts(stack.timeseries_dsn, ids) == (50, 1)


def test_rows_all_refused_with_one_sqlstate_hold_instead_of_dead_lettering(stack, ids):
    t0 = datetime.now(UTC).replace(microsecond=0)
    batch = RowBatch(
        readings=readings(ids, [t0 + timedelta(seconds=i) for i in range(200)]),
        events=[event(ids, "status", True, t0)],
    )
    writer = TimeseriesWriter(stack.timeseries_dsn, FAST)
    try:
        with refusing_trigger(stack.timeseries_dsn, ids) as fix:
            write = Background(writer, batch)
            assert wait_until(lambda: gauge("f2_store_blocked") >= 1, 30, 0.05)
            assert "23514" in blocked_codes()
            assert write.thread.is_alive()  # held: nothing dead-lettered, nothing dropped
            fix()
            assert write.join(30) == []
    finally:
        writer.close()
    assert counts(stack.timeseries_dsn, ids) == (200, 1)
    assert gauge("f2_store_blocked") == 0 and "23514" not in blocked_codes()
    assert writer.counts["readings"].rejected == 0


def test_a_small_batch_refused_like_its_canary_holds_and_bad_rows_do_not(stack, ids):
    t0 = datetime.now(UTC).replace(microsecond=0)
    writer = TimeseriesWriter(stack.timeseries_dsn, FAST)
    try:
        assert writer.write(RowBatch(readings=readings(ids, [t0]))) == []  # the canary
        small = RowBatch(readings=readings(ids, [t0 + timedelta(seconds=i) for i in (1, 2, 3)]))
        with refusing_trigger(stack.timeseries_dsn, ids) as fix:
            write = Background(writer, small)
            assert wait_until(lambda: gauge("f2_store_blocked") >= 1, 30, 0.05)
            fix()
            assert write.join(30) == []
        nul = [event(ids, "note", f"bad\x00{i}", t0) for i in range(3)]
        refused = writer.write(RowBatch(events=[event(ids, "status", True, t0)]))
        refused = writer.write(RowBatch(events=nul))  # the events canary is stored: bad data
    finally:
        writer.close()
    assert len(refused) == 3 and all(r.detail.startswith("22021") for r in refused)
    assert counts(stack.timeseries_dsn, ids) == (4, 1)


def test_a_revoked_insert_privilege_holds_until_granted_again(stack, ids):
    t0 = datetime.now(UTC).replace(microsecond=0)
    batch = RowBatch(readings=readings(ids, [t0 + timedelta(seconds=i) for i in range(20)]))
    writer = TimeseriesWriter(stack.timeseries_dsn, FAST)
    with psycopg.connect(stack.timeseries_dsn, autocommit=True) as owner:
        owner.execute("REVOKE INSERT ON readings FROM CURRENT_USER")
        try:
            write = Background(writer, batch)
            assert wait_until(lambda: "42501" in blocked_codes(), 30, 0.05)
            assert gauge("f2_store_blocked") >= 1
        finally:
            owner.execute("GRANT INSERT ON readings TO CURRENT_USER")
        assert write.join(30) == []
    writer.close()
    assert counts(stack.timeseries_dsn, ids) == (20, 0)
    assert "42501" not in blocked_codes()


def test_a_different_value_under_a_stored_key_is_a_counted_conflict(stack, ids):
    t0 = datetime.now(UTC).replace(microsecond=0)

    def reading(value: float, at: datetime) -> tuple:
        return reading_row(Reading("e4fd45f654be", "J1", 1, "T", value, "", at, ids, 1, 1), RAW)

    before = gauge("f2_store_conflicts_total", table="readings")
    writer = TimeseriesWriter(stack.timeseries_dsn, FAST)
    try:
        writer.write(RowBatch(readings=[reading(1.0, t0)]))
        writer.write(RowBatch(readings=[reading(1.0, t0)]))  # a replay: silent
        assert gauge("f2_store_conflicts_total", table="readings") == before
        writer.write(RowBatch(readings=[reading(2.0, t0)]))  # a stuck clock: counted
        assert gauge("f2_store_conflicts_total", table="readings") == before + 1
        t1 = t0 + timedelta(seconds=1)
        writer.write(RowBatch(readings=[reading(3.0, t1), reading(4.0, t1), reading(3.0, t1)]))
        assert gauge("f2_store_conflicts_total", table="readings") == before + 2
    finally:
        writer.close()
    with psycopg.connect(stack.timeseries_dsn) as conn:
        values = conn.execute(
            "SELECT value FROM readings WHERE sensor_id = %s ORDER BY time", (ids,)
        ).fetchall()
    assert values == [(1.0,), (3.0,)]  # the stored rows were kept
