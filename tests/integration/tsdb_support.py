"""Helpers for the TimescaleDB tests: tier selection, ports, a realistic day of readings, and the
test-only writer mode for PGlite (no ``COPY FROM STDIN`` there)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import psycopg
import pytest

from connectors.store_rows import EventRow, ReadingRow
from connectors.timeseries_writer import ROWS, TimeseriesWriter
from ops.stack import procs
from schemas.records import ControllerEntry, DataPointDef, RawMessage, SensorEntry
from simulator.signals import SignalSource

PORTS = range(55440, 55461)
TIERS_ENV = "F2_TIMESCALE_TIERS"
RAW = RawMessage("tele/f2-e4fd45f654be/SENSOR", b"{}")

# (datapoint id, signal, decimals, unit) per template, as in the simulator's ENV-S1 and PM-100.
TEMPLATES = {
    1: (
        "ENV-S1",
        ((101, "temperature", 2, " °C"), (102, "humidity", 2, " %"), (103, "co2", 0, " ppm")),
    ),
    2: ("PM-100", ((201, "voltage", 1, " V"), (202, "current", 3, " A"))),
}


def require_tier(name: str) -> None:
    """Skip unless ``name`` is in ``F2_TIMESCALE_TIERS`` (default: every tier)."""
    wanted = os.environ.get(TIERS_ENV, "pglite,trixie")
    if name not in {part.strip() for part in wanted.split(",")}:
        pytest.skip(f"{TIERS_ENV}={wanted!r} leaves out the {name} tier")


def free_port(first: int) -> int:
    """The first port from ``first`` within the project's test range that nobody listens on."""
    for port in range(first, PORTS.stop):
        if not procs.port_open(port):
            return port
    raise RuntimeError(f"no free port in {first}..{PORTS.stop - 1}")


def connect(dsn: str, timeout_s: float = 10.0) -> psycopg.Connection:
    """Autocommit connection; retried, because PGlite refuses a new connection for a moment
    after the previous one closed. No server-side prepared statements: PGlite serves every
    connection from one backend session, so a later connection would collide with the names an
    earlier one prepared."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True, connect_timeout=5, prepare_threshold=None)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def slot_free() -> None:
    """Give PGlite a moment to release its one connection slot after a client closed."""
    time.sleep(0.5)


def fleet_entry(controller_id: int, mac: str, sensors: int) -> ControllerEntry:
    """A controller with ``sensors`` sensors, ENV-S1 and PM-100 in turn (ids controller*100+n)."""
    entries = {}
    for n in range(sensors):
        template_id = 1 + n % 2
        model, points = TEMPLATES[template_id]
        defs = tuple(
            DataPointDef(dp, signal.title(), "Uint16", 0, 2, dec, "ABCD", unit)
            for dp, signal, dec, unit in points
        )
        entries[f"{1 + n // 8}:{1 + n % 8}"] = SensorEntry(
            controller_id * 100 + n, template_id, model, "modbus-rtu", defs
        )
    return ControllerEntry(mac, controller_id, "UTC", 1, entries)


def day_of_readings(
    entry: ControllerEntry, start: datetime, hours: float = 24, step_s: int = 30
) -> Iterator[ReadingRow]:
    """A simulated stretch of readings of every sensor of ``entry``: one frame per ``step_s``
    (the simulator's default interval), values from the simulator's signal model, rounded to
    each data point's decimals as the decoder produces them."""
    sources = {s.sensor_id: SignalSource(str(s.sensor_id)) for s in entry.sensors.values()}
    base = start.timestamp()
    for i in range(int(hours * 3600 / step_s)):
        t = start + timedelta(seconds=i * step_s)
        for sensor in entry.sensors.values():
            values = sources[sensor.sensor_id].sample(base + i * step_s)
            _, points = TEMPLATES[sensor.template_id]
            for dp, signal, decimals, _ in points:
                value = round(values[signal], decimals)
                yield ReadingRow(t, sensor.sensor_id, dp, value, entry.version, RAW, signal)


class UnnestWriter(TimeseriesWriter):
    """Test-only writer mode for PGlite, which crashes on ``COPY FROM STDIN``: the same writer
    (retries, bisection, dimension upserts, ``ON CONFLICT DO NOTHING`` merge) with the rows sent
    as ``unnest`` arrays instead of COPY. The production writer is tested with COPY on tier B."""

    def _connection(self) -> psycopg.Connection:
        conn = super()._connection()
        conn.prepare_threshold = None  # see connect()
        return conn

    def _transaction(
        self, conn: psycopg.Connection, readings: list[ReadingRow], events: list[EventRow]
    ) -> None:
        with conn.transaction(), conn.cursor() as cur:
            inserted_r = inserted_e = 0
            if readings:
                cur.execute(
                    "INSERT INTO readings (time, sensor_id, datapoint_id, value, registry_version)"
                    " SELECT * FROM unnest(%s::timestamptz[], %s::int4[], %s::int4[],"
                    " %s::float8[], %s::int8[]) ON CONFLICT DO NOTHING",
                    [list(col) for col in zip(*(row.columns() for row in readings), strict=True)],
                )
                inserted_r = cur.rowcount
            if events:
                cur.execute(
                    "INSERT INTO device_events (time, controller_id, mac, connector, component,"
                    " field, value_bool, value_num, value_text, registry_version)"
                    " SELECT * FROM unnest(%s::timestamptz[], %s::int4[], %s::text[], %s::text[],"
                    " %s::text[], %s::text[], %s::bool[], %s::float8[], %s::text[], %s::int8[])"
                    " ON CONFLICT DO NOTHING",
                    [list(col) for col in zip(*(row.columns() for row in events), strict=True)],
                )
                inserted_e = cur.rowcount
        ROWS.labels("readings", "inserted").inc(inserted_r)
        ROWS.labels("device_events", "inserted").inc(inserted_e)
