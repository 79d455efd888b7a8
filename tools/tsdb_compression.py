"""Storage reduction by TimescaleDB compression on a realistic simulated day of readings.

One UTC day of readings from a fleet of ENV-S1 and PM-100 sensors (one frame per sensor every 30 s,
the simulator's signal model, values rounded to each data point's decimals) is loaded into the
``readings`` hypertable of a fresh PGlite+TimescaleDB server (migrations applied, default
settings), then its chunk is compressed; bytes are taken from ``hypertable_detailed_size`` before
and after (table + indexes + TOAST). Run: ``.venv/bin/python -m tools.tsdb_compression [sensors]``.
Writes ``bench/results/tsdb_compression.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from ops.storage.migrate import migrate
from tools.pglite_tsdb import PgliteServer
from tools.tsdb_fixtures import connect, day_of_readings, fleet_entry, free_port

BATCH = 20000
INSERT = (
    "INSERT INTO readings (time, sensor_id, datapoint_id, value, registry_version)"
    " SELECT * FROM unnest(%s::timestamptz[], %s::int4[], %s::int4[], %s::float8[], %s::int8[])"
)
SIZE = (
    "SELECT table_bytes, index_bytes, toast_bytes, total_bytes"
    " FROM hypertable_detailed_size('readings')"
)


def sizes(conn: psycopg.Connection) -> dict[str, int]:
    """Bytes of the readings hypertable: table, index, toast, total."""
    row = conn.execute(SIZE).fetchone()
    return dict(zip(("table", "index", "toast", "total"), row, strict=True))


def measure(dsn: str, sensors: int) -> dict[str, object]:
    """Load one day, compress it, return the numbers."""
    day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = list(day_of_readings(fleet_entry(1, "aa0000000001", sensors), day, hours=24))
    with connect(dsn) as conn:
        conn.prepare_threshold = None
        started = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            chunk = rows[i : i + BATCH]
            columns = zip(*(r.columns() for r in chunk), strict=True)
            conn.execute(INSERT, [list(col) for col in columns])
        load_s = time.perf_counter() - started
        conn.execute("ANALYZE readings")
        before = sizes(conn)
        started = time.perf_counter()
        chunks = [r[0] for r in conn.execute("SELECT show_chunks('readings')").fetchall()]
        for chunk in chunks:
            conn.execute("SELECT compress_chunk(%s)", (chunk,))
        compress_s = time.perf_counter() - started
        after = sizes(conn)
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        version = conn.execute("SELECT f2_storage_backend()").fetchone()[0]
    return {
        "backend": version,
        "sensors": sensors,
        "rows": len(rows),
        "rows_after_compression": stored,
        "chunks": len(chunks),
        "bytes_before": before,
        "bytes_after": after,
        "ratio": round(before["total"] / after["total"], 2),
        "bytes_per_row_before": round(before["total"] / len(rows), 1),
        "bytes_per_row_after": round(after["total"] / len(rows), 2),
        "load_rows_per_s": round(len(rows) / load_s),
        "compress_s": round(compress_s, 2),
    }


def main() -> int:
    sensors = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    with tempfile.TemporaryDirectory() as run_dir:
        server = PgliteServer(free_port(55445), Path(run_dir))
        dsn = server.start()
        try:
            migrate(dsn, "timeseries")
            time.sleep(0.5)  # PGlite frees its single connection slot a moment after a close
            result = measure(dsn, sensors)
        finally:
            server.stop()
    out = Path(__file__).resolve().parents[1] / "bench" / "results" / "tsdb_compression.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
