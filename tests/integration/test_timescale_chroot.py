"""TimescaleDB path, tier B: Debian trixie's postgresql-17-timescaledb (Apache edition: hypertables,
no compression or continuous aggregates) in a debootstrap chroot built by the test tooling. Here
the production writer runs unchanged, COPY included: duplicate safety, refused rows, late rows,
any event time. Also: both backends produce the same tables and views."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from connectors.store_rows import ReadingRow, RowBatch, event_row
from connectors.timeseries_writer import TimeseriesWriter
from ops.security.checks import database_roles
from ops.storage.migrate import migrate
from schemas.records import Event
from schemas.settings import TimescaleSettings
from tests.integration.tsdb_support import (
    RAW,
    connect,
    day_of_readings,
    fleet_entry,
    free_port,
    require_tier,
)
from tools.trixie_tsdb import TrixiePostgres

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
RELATIONS = (
    "controllers", "sensors", "data_points", "readings", "device_events", "readings_named",
    "readings_hourly", "readings_hourly_named",
)  # fmt: skip


class Databases(msgspec.Struct):
    timescale: str
    plain: str
    applied_timescale: list[str]
    applied_plain: list[str]


@pytest.fixture(scope="module")
def dbs() -> Iterator[Databases]:
    """PG17 + TimescaleDB (Apache) in the chroot, with one database migrated on each path."""
    require_tier("trixie")
    server = TrixiePostgres(free_port(55451))
    admin = server.start()
    try:
        with connect(admin) as conn:
            conn.execute("CREATE DATABASE f2_ts")
            conn.execute("CREATE DATABASE f2_plain")
        ts, plain = (
            admin.replace("/postgres?", "/f2_ts?"),
            admin.replace("/postgres?", "/f2_plain?"),
        )
        applied_ts = migrate(ts, "timeseries")
        applied_plain = migrate(
            plain, "timeseries", timescale=TimescaleSettings(backend="postgres")
        )
        yield Databases(ts, plain, applied_ts, applied_plain)
    finally:
        server.stop()


def columns(dsn: str) -> list[tuple]:
    with connect(dsn) as conn:
        return conn.execute(
            "SELECT table_name, ordinal_position, column_name, data_type, is_nullable"
            " FROM information_schema.columns WHERE table_schema = 'public'"
            " AND table_name = ANY(%s) ORDER BY 1, 2",
            (list(RELATIONS),),
        ).fetchall()


def test_backend_choice_and_apache_limits(dbs: Databases) -> None:
    assert "002_facts_timescale.sql" in dbs.applied_timescale
    assert "002_facts_plain.sql" not in dbs.applied_timescale
    assert "002_facts_plain.sql" in dbs.applied_plain
    assert "002_facts_timescale.sql" not in dbs.applied_plain
    with connect(dbs.timescale) as conn:
        backend = conn.execute("SELECT f2_storage_backend()").fetchone()[0]
        assert backend.startswith("timescaledb 2.") and backend.endswith("(apache license)")
        assert conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            " ORDER BY 1"
        ).fetchall() == [("device_events", False), ("readings", False)]
        assert conn.execute(
            "SELECT count(*) FROM pg_views WHERE viewname = 'readings_hourly'"
        ).fetchone() == (1,)
        assert conn.execute("SELECT f2_ensure_partitions(3, 1)").fetchone() == (0,)
    with connect(dbs.plain) as conn:
        assert conn.execute("SELECT f2_storage_backend()").fetchone()[0].startswith("postgresql 17")
    assert migrate(dbs.timescale, "timeseries") == []


def test_same_tables_and_views_on_both_backends(dbs: Databases) -> None:
    on_timescale, on_plain = columns(dbs.timescale), columns(dbs.plain)
    assert {row[0] for row in on_plain} == set(RELATIONS)
    assert on_timescale == on_plain


def test_production_writer_on_hypertables(dbs: Databases) -> None:
    entry = fleet_entry(21, "aa0000000021", sensors=6)
    readings = list(day_of_readings(entry, NOW - timedelta(hours=3), hours=3))
    events = [
        event_row(Event(entry.mac, "J3", "strike-1", "status", True, NOW, 21, 1), RAW),
        event_row(Event(entry.mac, "J3", "strike-1", "bad\x00field", "x", NOW, 21, 1), RAW),
        event_row(Event(entry.mac, "J3", "reader-1", "data", "a\x00b", NOW, 21, 1), RAW),
    ]
    late = list(day_of_readings(entry, NOW - timedelta(days=30), hours=1))
    edges = [datetime(2000, 1, 1, tzinfo=UTC), NOW + timedelta(days=30)]
    odd = [ReadingRow(t, 2100, 101, 1.0, 1, RAW, "Temperature") for t in edges]
    writer = TimeseriesWriter(dbs.timescale)
    try:
        first = writer.write(RowBatch(readings=readings, events=events, entries=[entry]))
        assert sorted(r.label for r in first) == ["bad\x00field", "data"]
        again = writer.write(RowBatch(readings=readings, events=events))
        assert sorted(r.label for r in again) == ["bad\x00field", "data"]
        assert writer.write(RowBatch(readings=late + odd)) == []
        assert writer.write(RowBatch(readings=late[::2] + readings[::3])) == []
    finally:
        writer.close()
    with connect(dbs.timescale) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (sensor_id, datapoint_id, time)) FROM readings"
            " WHERE sensor_id / 100 = 21"
        ).fetchone()
        assert total == distinct == len(readings) + len(late) + len(odd)
        assert conn.execute(
            "SELECT count(*) FROM device_events WHERE controller_id = 21"
        ).fetchone() == (1,)
        assert conn.execute(
            "SELECT mac, connector, pin, label, unit FROM readings_named"
            " WHERE sensor_id = 2103 AND datapoint_id = 202 LIMIT 1"
        ).fetchone() == ("aa0000000021", "J1", 4, "Current", "A")
        assert conn.execute(
            "SELECT count FROM readings_hourly WHERE sensor_id = 2100 AND datapoint_id = 101"
            " AND bucket = %s",
            (NOW - timedelta(hours=2),),
        ).fetchone() == (120,)
        chunks = conn.execute("SELECT count(*) FROM show_chunks('readings')").fetchone()[0]
        assert chunks >= 4  # 2000-01-01, 30 days ago, today (and maybe yesterday), +30 days


def as_role(dsn: str, role: str) -> str:
    """``dsn`` with another user (the chroot's cluster trusts loopback logins)."""
    return dsn.replace("://postgres@", f"://{role}@")


def test_least_privilege_roles_on_hypertables(dbs: Databases) -> None:
    """The flows' role writes through the production writer on hypertables (new chunks, late
    rows, dimension upserts) yet changes no schema; the reader reads the views, nothing else."""
    assert "095_roles.sql" in dbs.applied_timescale
    registry = dbs.timescale.replace("/f2_ts?", "/f2_params_roles?")
    with connect(dbs.timescale) as conn:
        conn.execute("CREATE DATABASE f2_params_roles")
    migrate(registry, "params")
    writer_dsn, reader_dsn = (
        as_role(dbs.timescale, "f2_pipeline"),
        as_role(dbs.timescale, "f2_reader"),
    )

    entry = fleet_entry(23, "aa0000000023", sensors=2)
    readings = list(day_of_readings(entry, NOW - timedelta(days=40), hours=2))
    writer = TimeseriesWriter(writer_dsn)
    try:
        assert writer.write(RowBatch(readings=readings, entries=[entry])) == []
        assert writer.write(RowBatch(readings=readings)) == []  # replayed: nothing twice
    finally:
        writer.close()
    with connect(reader_dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM readings_named WHERE mac = 'aa0000000023'"
        ).fetchone() == (len(readings),)
        assert conn.execute("SELECT count(*) FROM readings_hourly_named").fetchone()[0] > 0

    check = database_roles(writer_dsn, reader_dsn, as_role(registry, "f2_pipeline"))
    assert check.ok, check.detail
    owner = database_roles(dbs.timescale, dbs.timescale, registry)  # control: the owner may
    assert not owner.ok and "DROP TABLE readings" in owner.detail
