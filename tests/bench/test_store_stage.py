"""``bench.store``'s timed paths against the session's real PostgreSQL: the writer and the
``executemany`` baseline store the same rows (a small run, so a change to the row types or the
writer breaks this test instead of ``make benchmarks``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from bench.store import batches, delete, make_rows, timed_executemany, timed_writer
from schemas.settings import Settings

pytestmark = pytest.mark.integration


def stored(dsn: str, window: tuple[datetime, datetime]) -> int:
    with psycopg.connect(dsn) as conn:
        return sum(
            conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE time >= %s AND time < %s").format(
                    sql.Identifier(table)
                ),
                window,
            ).fetchone()[0]
            for table in ("readings", "device_events")
        )


def test_writer_and_executemany_store_the_same_rows(stack: Settings) -> None:
    base = datetime(2003, 6, 1, tzinfo=UTC) + timedelta(seconds=int(time.time()) % 86400)
    rows = make_rows(600, base)
    window = (base - timedelta(days=1), base + timedelta(days=1))
    dsn = stack.timeseries_dsn
    delete(dsn, window)
    try:
        assert timed_writer(dsn, batches(rows, 250)) > 0
        written = stored(dsn, window)
        assert written == len(rows)
        delete(dsn, window)
        assert timed_executemany(dsn, batches(rows, 250)) > 0
        assert stored(dsn, window) == written
    finally:
        delete(dsn, window)
