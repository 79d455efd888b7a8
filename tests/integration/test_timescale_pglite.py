"""TimescaleDB path, tier A: real TimescaleDB 2.23 with compression, continuous aggregates and
policies (PGlite + TimescaleDB over TCP, installed by ``npm ci``). One connection at a time and no
``COPY FROM STDIN`` there, so rows go through the test-only ``unnest`` writer mode; the production
COPY writer runs on tier B (test_timescale_chroot.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
import pytest

from connectors.store_rows import RowBatch, event_row
from ops.storage.backend import configure_timescale
from ops.storage.migrate import migrate
from schemas.records import Event
from schemas.settings import TimescaleSettings
from tests.integration.tsdb_support import (
    RAW,
    UnnestWriter,
    connect,
    day_of_readings,
    fleet_entry,
    free_port,
    require_tier,
    slot_free,
)
from tools.pglite_tsdb import PgliteServer

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


class Tsdb(msgspec.Struct):
    dsn: str
    applied: list[str]


@pytest.fixture(scope="module")
def tsdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsdb]:
    """A fresh PGlite+TimescaleDB server with the timeseries migrations applied."""
    require_tier("pglite")
    server = PgliteServer(free_port(55441), tmp_path_factory.mktemp("pglite"))
    dsn = server.start()
    try:
        yield Tsdb(dsn, migrate(dsn, "timeseries"))
        assert server.alive(), "the PGlite server died during the tests"
    finally:
        server.stop()


def job_id(conn: psycopg.Connection, proc: str, table: str) -> int:
    return conn.execute(
        "SELECT job_id FROM timescaledb_information.jobs"
        " WHERE proc_name = %s AND hypertable_name = %s",
        (proc, table),
    ).fetchone()[0]


def compressed(conn: psycopg.Connection, table: str) -> dict[str, bool]:
    rows = conn.execute(
        "SELECT chunk_name, is_compressed FROM timescaledb_information.chunks"
        " WHERE hypertable_name = %s",
        (table,),
    )
    return dict(rows.fetchall())


def count(conn: psycopg.Connection, sql: str, *params: object) -> int:
    return conn.execute(sql, params).fetchone()[0]


def write(dsn: str, *batches: RowBatch) -> list[float]:
    """Write each batch with a fresh test-mode writer; return each write's seconds."""
    writer = UnnestWriter(dsn)
    took = []
    try:
        for batch in batches:
            started = time.perf_counter()
            assert writer.write(batch) == []
            took.append(time.perf_counter() - started)
    finally:
        writer.close()
    return took


def door_events(end: datetime, value: bool) -> list[tuple]:
    """50 door events of controller 13, one a minute up to ``end``."""
    times = [end - timedelta(minutes=m) for m in range(50)]
    return [
        event_row(Event("aa0000000013", "J3", "door-1", "status", value, t, 13, 1), RAW)
        for t in times
    ]


def test_migrations_take_the_timescale_path(tsdb: Tsdb) -> None:
    assert "002_facts_timescale.sql" in tsdb.applied
    assert not [name for name in tsdb.applied if name.endswith("_plain.sql")]
    with connect(tsdb.dsn) as conn:
        assert (
            conn.execute("SELECT f2_storage_backend()").fetchone()[0].startswith("timescaledb 2.23")
        )
        hypertables = conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = 'public' ORDER BY 1"
        ).fetchall()
        assert hypertables == [("device_events", True), ("readings", True)]
        segments = conn.execute(
            "SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings"
            " WHERE hypertable = 'readings'::regclass"
        ).fetchone()
        assert segments == ("sensor_id,datapoint_id", '"time" DESC')
        jobs = conn.execute(
            "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs"
            " WHERE hypertable_name IS NOT NULL ORDER BY 1, 2"
        ).fetchall()
        assert jobs == [
            ("policy_compression", "device_events"),
            ("policy_compression", "readings"),
            ("policy_refresh_continuous_aggregate", "readings_hourly"),
            ("policy_retention", "device_events"),
            ("policy_retention", "readings"),
        ]
        cagg = conn.execute(
            "SELECT materialized_only FROM timescaledb_information.continuous_aggregates"
            " WHERE view_name = 'readings_hourly'"
        ).fetchone()
        assert cagg == (False,)
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'readings_hourly' ORDER BY ordinal_position"
        ).fetchall()
        assert [c[0] for c in columns] == [
            "bucket", "sensor_id", "datapoint_id", "avg", "min", "max", "count",
        ]  # fmt: skip
        assert configure_timescale(conn, TimescaleSettings()) == "unchanged"
        changed = configure_timescale(conn, TimescaleSettings(compress_after="3 days"))
        assert "readings: compress after 3 days" in changed
        configure_timescale(conn, TimescaleSettings())
    slot_free()
    assert migrate(tsdb.dsn, "timeseries") == []


def test_rewrites_leave_one_copy(tsdb: Tsdb) -> None:
    entry = fleet_entry(11, "aa0000000011", sensors=4)
    readings = list(day_of_readings(entry, NOW - timedelta(hours=2), hours=2))
    events = [
        event_row(Event(entry.mac, "J3", "door-1", "status", i % 2 == 0, NOW, 11, 1), RAW)
        for i in range(3)
    ] + [event_row(Event(entry.mac, "J3", "reader-1", "data", "04A1B2", NOW, 11, 1), RAW)]
    batch = RowBatch(readings=readings, events=events, entries=[entry])
    write(tsdb.dsn, batch, batch)
    with connect(tsdb.dsn) as conn:
        assert count(conn, "SELECT count(*) FROM readings WHERE sensor_id / 100 = 11") == len(
            readings
        )
        assert count(conn, "SELECT count(*) FROM device_events WHERE controller_id = 11") == 2
        named = conn.execute(
            "SELECT mac, connector, pin, label, unit FROM readings_named"
            " WHERE sensor_id = 1101 AND datapoint_id = 201 LIMIT 1"
        ).fetchone()
        assert named == ("aa0000000011", "J1", 2, "Voltage", "V")


def test_policies_compress_refresh_and_drop(tsdb: Tsdb) -> None:
    entry = fleet_entry(12, "aa0000000012", sensors=4)
    old = RowBatch(readings=list(day_of_readings(entry, NOW - timedelta(days=400), hours=3)))
    recent = RowBatch(
        readings=list(day_of_readings(entry, NOW - timedelta(days=5), hours=5 * 24, step_s=600)),
        entries=[entry],
    )
    write(tsdb.dsn, old, recent)
    with connect(tsdb.dsn) as conn:
        before = count(conn, "SELECT count(*) FROM readings WHERE sensor_id / 100 = 12")
        conn.execute("CALL run_job(%s)", (job_id(conn, "policy_retention", "readings"),))
        after_retention = count(conn, "SELECT count(*) FROM readings WHERE sensor_id / 100 = 12")
        assert before - after_retention == len(old.readings)
        conn.execute("CALL run_job(%s)", (job_id(conn, "policy_compression", "readings"),))
        chunks = conn.execute(
            "SELECT range_end < now() - interval '2 days', is_compressed"
            " FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'"
        ).fetchall()
        assert {old_enough for old_enough, _ in chunks} == {True, False}
        assert all(old_enough == done for old_enough, done in chunks)
        assert count(conn, "SELECT count(*) FROM readings WHERE sensor_id / 100 = 12") == len(
            recent.readings
        )
        conn.execute(
            "CALL run_job(%s)",
            (job_id(conn, "policy_refresh_continuous_aggregate", "readings_hourly"),),
        )
        mismatches = count(
            conn,
            "SELECT count(*) FROM readings_hourly h FULL JOIN ("
            "  SELECT time_bucket('1 hour', time) AS bucket, sensor_id, datapoint_id,"
            "         avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS n"
            "  FROM readings WHERE sensor_id / 100 = 12 GROUP BY 1, 2, 3) r"
            " USING (bucket, sensor_id, datapoint_id)"
            " WHERE (h.sensor_id / 100 = 12 OR r.sensor_id IS NOT NULL)"
            "   AND (h.count IS DISTINCT FROM r.n OR abs(h.avg - r.avg) > 1e-9"
            "        OR h.min IS DISTINCT FROM r.min OR h.max IS DISTINCT FROM r.max)",
        )
        assert mismatches == 0
        materialized = conn.execute(
            "SELECT format('%I.%I', materialization_hypertable_schema,"
            " materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates"
            " WHERE view_name = 'readings_hourly'"
        ).fetchone()[0]
        assert count(conn, f"SELECT count(*) FROM {materialized}") > 0
        named = conn.execute(
            "SELECT mac, label, unit, count FROM readings_hourly_named"
            " WHERE sensor_id = 1200 AND datapoint_id = 101 AND bucket = %s",
            (NOW - timedelta(days=4),),
        ).fetchone()
        assert named == ("aa0000000012", "Temperature", "°C", 6)


def test_late_rows_into_compressed_chunks(tsdb: Tsdb, capsys: pytest.CaptureFixture) -> None:
    """Rows for already-compressed chunks are stored once: duplicates ignored, new rows added,
    the chunk stays compressed (partially), and the aggregate picks the new rows up."""
    entry = fleet_entry(13, "aa0000000013", sensors=4)
    start = NOW - timedelta(days=3, hours=12)
    day = list(day_of_readings(entry, start, hours=6, step_s=60))
    old_events = door_events(NOW - timedelta(days=20), True)
    write(tsdb.dsn, RowBatch(readings=day, events=old_events))
    with connect(tsdb.dsn) as conn:
        for table in ("readings", "device_events"):
            for (chunk,) in conn.execute(
                "SELECT show_chunks(%s, older_than => now() - interval '2 days')", (table,)
            ).fetchall():
                conn.execute("SELECT compress_chunk(%s, if_not_compressed => true)", (chunk,))
        chunk_of_late = conn.execute(
            "SELECT chunk_name FROM timescaledb_information.chunks WHERE hypertable_name ="
            " 'readings' AND range_start <= %s AND range_end > %s",
            (start, start),
        ).fetchone()[0]
        assert compressed(conn, "readings")[chunk_of_late]
        with pytest.raises(psycopg.errors.UniqueViolation):  # the key holds in compressed data
            conn.execute("INSERT INTO readings VALUES (%s, 1300, 101, 0, 0)", (start,))
    duplicates = day[: len(day) // 2]
    late = list(day_of_readings(entry, start + timedelta(seconds=30), hours=6, step_s=60))
    late_events = door_events(NOW - timedelta(days=20, seconds=30), False)
    fresh = list(day_of_readings(entry, NOW - timedelta(hours=6), hours=6, step_s=60))
    took = write(
        tsdb.dsn,
        RowBatch(readings=duplicates),
        RowBatch(readings=late, events=old_events + late_events),
        RowBatch(readings=late),
        RowBatch(readings=fresh),
    )
    with capsys.disabled():
        print(
            f"\nlate data: {len(duplicates)} duplicates into a compressed chunk {took[0]:.2f}s;"
            f" {len(late)} new rows into it {took[1]:.2f}s, their replay {took[2]:.2f}s;"
            f" {len(fresh)} rows into an uncompressed chunk {took[3]:.2f}s"
        )
    with connect(tsdb.dsn) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (sensor_id, datapoint_id, time)) FROM readings"
            " WHERE sensor_id / 100 = 13"
        ).fetchone()
        assert total == distinct == len(day) + len(late) + len(fresh)
        assert count(conn, "SELECT count(*) FROM device_events WHERE controller_id = 13") == 100
        assert compressed(conn, "readings")[chunk_of_late]
        conn.execute(
            "CALL run_job(%s)",
            (job_id(conn, "policy_refresh_continuous_aggregate", "readings_hourly"),),
        )
        hour = start.replace(minute=0) + timedelta(hours=1)
        assert conn.execute(
            "SELECT count FROM readings_hourly WHERE sensor_id = 1300 AND datapoint_id = 101"
            " AND bucket = %s",
            (hour,),
        ).fetchone() == (120,)
        conn.execute("CALL run_job(%s)", (job_id(conn, "policy_compression", "readings"),))
        status = conn.execute(
            "SELECT c.status FROM _timescaledb_catalog.chunk c WHERE c.table_name = %s",
            (chunk_of_late,),
        ).fetchone()[0]
        assert status & 8 == 0, "the compression policy recompresses a partial chunk"


def test_event_retention_drops_expired_chunks_and_rows(tsdb: Tsdb) -> None:
    """f2_expire_events (F2_EVENT_RETENTION_DAYS) on a hypertable: expired events go."""

    def controller_events(controller: int, end: datetime) -> list[tuple]:
        mac = f"aa00000000{controller}"
        return [
            event_row(Event(mac, "J3", "reader-1", "data", "04A1B2", end - timedelta(hours=h),
                            controller, 1), RAW)
            for h in range(30)
        ]  # fmt: skip

    write(tsdb.dsn, RowBatch(events=controller_events(21, NOW - timedelta(days=500))))
    write(tsdb.dsn, RowBatch(events=controller_events(22, NOW - timedelta(days=2))))
    with connect(tsdb.dsn) as conn:
        conn.execute("SELECT f2_expire_events(interval '365 days')")
        assert count(conn, "SELECT count(*) FROM device_events WHERE controller_id = 21") == 0
        assert count(conn, "SELECT count(*) FROM device_events WHERE controller_id = 22") == 30


def test_least_privilege_roles_with_compression_and_aggregates(tsdb: Tsdb) -> None:
    """The flows' role (f2_pipeline) adds rows to a compressed chunk and to a new chunk; the reader
    role (f2_reader) reads the real-time aggregate's view and nothing it is not granted. PGlite
    serves one session, so each role is taken with ``SET LOCAL ROLE`` in a transaction."""
    entry = fleet_entry(14, "aa0000000014", sensors=2)
    start = NOW - timedelta(days=4)
    day = list(day_of_readings(entry, start, hours=2, step_s=60))
    write(tsdb.dsn, RowBatch(readings=day, entries=[entry]))
    late = list(day_of_readings(entry, start + timedelta(seconds=30), hours=2, step_s=60))
    older = list(day_of_readings(entry, NOW - timedelta(days=90), hours=1, step_s=60))
    insert = (
        "INSERT INTO readings (time, sensor_id, datapoint_id, value, registry_version)"
        " SELECT * FROM unnest(%s::timestamptz[], %s::int4[], %s::int4[], %s::float8[],"
        " %s::int8[]) ON CONFLICT DO NOTHING"
    )
    with connect(tsdb.dsn) as conn:
        for (chunk,) in conn.execute(
            "SELECT show_chunks('readings', older_than => now() - interval '2 days')"
        ).fetchall():
            conn.execute("SELECT compress_chunk(%s, if_not_compressed => true)", (chunk,))
        chunks_before = count(conn, "SELECT count(*) FROM show_chunks('readings')")
        with conn.transaction():
            conn.execute("SET LOCAL ROLE f2_pipeline")
            for rows in (late, day, older):
                columns = [list(col) for col in zip(*(r.columns() for r in rows), strict=True)]
                conn.execute(insert, columns)
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute("ALTER TABLE readings SET (timescaledb.compress = false)")
        assert count(conn, "SELECT count(*) FROM show_chunks('readings')") > chunks_before
        conn.execute(
            "CALL run_job(%s)",
            (job_id(conn, "policy_refresh_continuous_aggregate", "readings_hourly"),),
        )
        with conn.transaction():
            conn.execute("SET LOCAL ROLE f2_reader")
            hourly = count(  # the refresh window (7 days) holds the compressed chunk's rows
                conn,
                "SELECT sum(count) FROM readings_hourly_named WHERE mac = 'aa0000000014'"
                " AND bucket > now() - interval '7 days'",
            )
            assert hourly == len(day) + len(late)
            assert count(
                conn,
                "SELECT count(*) FROM readings_named WHERE mac = 'aa0000000014'"
                " AND time < now() - interval '30 days'",
            ) == len(older)
            for forbidden in ("SELECT count(*) FROM device_events", "DELETE FROM readings"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                    conn.execute(forbidden)
