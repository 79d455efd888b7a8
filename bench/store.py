"""Storage benchmark: rows/s of the timeseries writer by batch size, and of its alternatives.

Same run, same rows (ENV-S1 readings of one sensor at unique times, plus 10% strike events),
the same tables; each variant's rows are deleted before the next:

- ``copy_merge_<N>``: the production writer (``connectors.timeseries_writer``): COPY binary into a
  temp table, ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, one transaction per batch of N.
- ``replay_copy_merge``: the same batches written a second time (all duplicates): the cost of a
  replayed epoch after a crash.
- ``executemany``: ``executemany`` INSERT ... ON CONFLICT DO NOTHING, same batches, one commit
  per batch (psycopg 3 pipelines it).

Run: ``.venv/bin/python -m bench.store [--rows N]``; prints JSON and writes
``bench/results/store.json``. Uses the stack of ``F2_STACK_DIR`` (default: the shared one); its rows
are in a window of year 2003 + a per-run offset and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from connectors.store_rows import RowBatch, event_row, reading_row
from connectors.timeseries_writer import TimeseriesWriter
from schemas.records import Event, RawMessage, Reading
from schemas.settings import load_settings

RESULTS = Path(__file__).resolve().parent / "results" / "store.json"
RAW = RawMessage("tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1", b"{}")


def make_rows(count: int, base: datetime) -> RowBatch:
    batch = RowBatch()
    for n in range(count):
        t = base + timedelta(milliseconds=n)
        if n % 10 == 9:
            event = Event("e4fd45f654be", "J3", "strike-1", "status", n % 20 == 9, t, 1, 1)
            batch.events.append(event_row(event, RAW))
        else:
            reading = Reading("e4fd45f654be", "J1", 1, "T", 20.0 + n % 7, "°C", t, 7, 1 + n % 3, 1)
            batch.readings.append(reading_row(reading, RAW))
    return batch


def batches(rows: RowBatch, size: int) -> list[RowBatch]:
    """``rows`` cut into batches of about ``size`` rows (readings and events in proportion)."""
    count = max(1, round(len(rows) / size))
    r_step = -(-len(rows.readings) // count)
    e_step = -(-len(rows.events) // count)
    return [
        RowBatch(
            rows.readings[i * r_step : (i + 1) * r_step], rows.events[i * e_step : (i + 1) * e_step]
        )
        for i in range(count)
    ]


def delete(dsn: str, window: tuple[datetime, datetime]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("readings", "device_events"):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE time >= %s AND time < %s").format(
                    sql.Identifier(table)
                ),
                window,
            )


def timed_writer(dsn: str, parts: list[RowBatch]) -> float:
    writer = TimeseriesWriter(dsn)
    writer.write(RowBatch())  # connect and create partitions outside the timing
    started = time.perf_counter()
    for part in parts:
        writer.write(part)
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


def timed_executemany(dsn: str, parts: list[RowBatch]) -> float:
    reading_sql = (
        "INSERT INTO readings (time, sensor_id, datapoint_id, value, registry_version)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
    )
    event_sql = (
        "INSERT INTO device_events (time, controller_id, mac, connector, component, field,"
        " value_bool, value_num, value_text, registry_version)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
    )
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for part in parts:
            with conn.cursor() as cur:
                cur.executemany(reading_sql, [r.columns() for r in part.readings])
                if part.events:
                    cur.executemany(event_sql, [e.columns() for e in part.events])
            conn.commit()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    dsn = load_settings().timeseries_dsn
    base = datetime(2003, 1, 1, tzinfo=UTC) + timedelta(days=int(time.time()) % 300)
    window = (base, base + timedelta(milliseconds=args.rows))
    rows = make_rows(args.rows, base)
    delete(dsn, window)
    results: dict[str, dict[str, float]] = {}

    def record(name: str, seconds: float) -> None:
        results[name] = {"seconds": round(seconds, 3), "rows_per_s": round(len(rows) / seconds)}

    for size in (1000, 5000, 20000):
        parts = batches(rows, size)
        record(f"copy_merge_{size}", timed_writer(dsn, parts))
        if size == 5000:
            record("replay_copy_merge_5000", timed_writer(dsn, parts))
        delete(dsn, window)
    record("executemany_5000", timed_executemany(dsn, batches(rows, 5000)))
    delete(dsn, window)
    result = {
        "benchmark": "store",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "rows": len(rows),
        "results": results,
        "copy_over_executemany": round(
            results["copy_merge_5000"]["rows_per_s"] / results["executemany_5000"]["rows_per_s"], 2
        ),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
