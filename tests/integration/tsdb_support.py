"""Helpers for the TimescaleDB tests: tier selection and the test-only writer mode for PGlite (no
``COPY FROM STDIN`` there); the realistic data and connections come from tools/tsdb_fixtures.py."""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from connectors.store_rows import EventRow, ReadingRow
from connectors.timeseries_writer import ROWS, TimeseriesWriter
from tools.tsdb_fixtures import (  # noqa: F401  (the tests import them from here)
    PORTS,
    RAW,
    TEMPLATES,
    connect,
    day_of_readings,
    fleet_entry,
    free_port,
)

TIERS_ENV = "F2_TIMESCALE_TIERS"


def require_tier(name: str) -> None:
    """Skip unless ``name`` is in ``F2_TIMESCALE_TIERS`` (default: every tier)."""
    wanted = os.environ.get(TIERS_ENV, "pglite,trixie")
    if name not in {part.strip() for part in wanted.split(",")}:
        pytest.skip(f"{TIERS_ENV}={wanted!r} leaves out the {name} tier")


def slot_free() -> None:
    """Give PGlite a moment to release its one connection slot after a client closed."""
    time.sleep(0.5)


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
