"""``f2 backup`` and ``f2 restore`` round trip on the stack's PostgreSQL: dumps of two source
databases (migrated and filled here, so nobody else's writes change the counts) restored into
fresh databases, and over a damaged source, with every table's row count compared."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from connectors.store_rows import RowBatch
from connectors.timeseries_writer import TimeseriesWriter
from ops.storage.migrate import migrate
from schemas.settings import DB_USER, Settings, read_stack_info, stack_dir
from tests.integration.tsdb_support import day_of_readings, fleet_entry

pytestmark = pytest.mark.integration


def run_f2(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


@pytest.fixture
def databases(stack: Settings) -> Iterator[dict[str, str]]:
    """Fresh databases on the stack's server (owned by the pipeline's user); DSN by role."""
    info = read_stack_info(stack_dir())
    admin = f"postgresql://postgres:{info.db_password}@127.0.0.1:{info.postgres_port}/postgres"
    tag = secrets.token_hex(3)
    names = {role: f"f2_bk_{role}_{tag}" for role in ("params", "ts", "params_copy", "ts_copy")}
    user_dsn = stack.params_dsn.rsplit("/", 1)[0]
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names.values():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(DB_USER)
                )
            )
    try:
        yield {role: f"{user_dsn}/{name}" for role, name in names.items()}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names.values():
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def row_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
            )
        ]
        return {
            table: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()[0]
            for table in tables
        }


def test_backup_restores_every_row(databases: dict[str, str], tmp_path: Path) -> None:
    migrate(databases["params"], "params")
    migrate(databases["ts"], "timeseries")
    entry = fleet_entry(31, "aa0000000031", sensors=4)
    start = datetime.now(UTC) - timedelta(days=2)
    writer = TimeseriesWriter(databases["ts"])
    try:
        batch = RowBatch(readings=list(day_of_readings(entry, start, hours=2)), entries=[entry])
        assert writer.write(batch) == []
    finally:
        writer.close()
    sources = {"params": row_counts(databases["params"]), "ts": row_counts(databases["ts"])}
    assert sources["ts"]["readings"] == len(batch.readings) > 0
    assert sources["params"] and all(sources["params"].values())

    env = {"F2_PARAMS_DSN": databases["params"], "F2_TIMESERIES_DSN": databases["ts"]}
    made = run_f2("backup", "--dir", str(tmp_path), env=env)
    assert made.returncode == 0, made.stderr
    files = {path.name.split("-")[0]: path for path in tmp_path.glob("*.dump")}
    assert sorted(files) == ["f2_params", "f2_timeseries"]

    for role, name in (("params", "f2_params"), ("ts", "f2_timeseries")):
        restored = run_f2("restore", str(files[name]), "--dsn", databases[f"{role}_copy"], env={})
        assert restored.returncode == 0, restored.stderr
        assert row_counts(databases[f"{role}_copy"]) == sources[role]

    with psycopg.connect(databases["ts"], autocommit=True) as conn:
        conn.execute("DELETE FROM readings WHERE time < %s", (start + timedelta(hours=1),))
        conn.execute("DROP VIEW readings_hourly_named")
    again = run_f2("restore", str(files["f2_timeseries"]), "--dsn", databases["ts"], env={})
    assert again.returncode == 0, again.stderr
    assert row_counts(databases["ts"]) == sources["ts"]
