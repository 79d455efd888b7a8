"""Apply the SQL migrations of ``migrations/<database>/`` in file-name order, each once.

Applied files are recorded in ``f2_schema_migrations``; an advisory lock keeps two migrators from
running at once. Every file runs in its own transaction. A folder with backend-specific files
(``*_plain.sql`` / ``*_timescale.sql``, see :mod:`ops.storage.backend`) gets only those of the
database's backend; on TimescaleDB, chunk intervals and policies are then (re)applied from the
``F2_TSDB_*`` settings on every run.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from ops.storage.backend import (
    TIMESCALE,
    choose_backend,
    configure_timescale,
    file_backend,
)
from schemas.settings import MigrateSettings, TimescaleSettings, project_root

MIGRATION_LOCK_ID = 0x46320001
DEFAULTS = MigrateSettings()
TIMESCALE_DEFAULTS = TimescaleSettings()


def migrations_dir(settings: MigrateSettings = DEFAULTS) -> Path:
    """``F2_MIGRATIONS_DIR``, else ``migrations/`` of the source checkout."""
    if settings.migrations_dir:
        return Path(settings.migrations_dir)
    root = project_root()
    if root is None:
        raise RuntimeError("cannot find the migrations: set F2_MIGRATIONS_DIR")
    return root / "migrations"


def pending(conn: psycopg.Connection, files: list[Path]) -> list[Path]:
    """The files of ``files`` not yet recorded as applied."""
    applied = {row[0] for row in conn.execute("SELECT name FROM f2_schema_migrations")}
    return [path for path in files if path.name not in applied]


def set_role_passwords(dsn: str, passwords: dict[str, str]) -> list[str]:
    """Give the login roles of the migrations (``f2_pipeline``, ``f2_reader``) their passwords
    (from secret files: a migration holds none); the roles set. Roles are per server, so one
    database of it is enough."""
    done = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for role, password in passwords.items():
            if not password:
                continue
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if exists:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(password)
                    )
                )
                done.append(role)
    return done


def migrate(
    dsn: str,
    database: str,
    settings: MigrateSettings = DEFAULTS,
    timescale: TimescaleSettings = TIMESCALE_DEFAULTS,
) -> list[str]:
    """Apply the pending migrations of ``migrations/<database>/`` to ``dsn``; return their names.
    ``timescale``: the backend to use (``auto``: TimescaleDB where the extension is available)
    and its policies."""
    files = sorted((migrations_dir(settings) / database).glob("*.sql"))
    done: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS f2_schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            backend = None
            if any(file_backend(path) for path in files):
                backend = choose_backend(conn, timescale.backend)
                files = [path for path in files if file_backend(path) in (None, backend)]
            for path in pending(conn, files):
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute(
                        "INSERT INTO f2_schema_migrations (name) VALUES (%s)", (path.name,)
                    )
                done.append(path.name)
            if backend == TIMESCALE:
                configure_timescale(conn, timescale)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return done
