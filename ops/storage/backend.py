"""Which storage backend a timeseries database uses, and the TimescaleDB settings.

A migration folder may hold backend-specific files: ``NNN_name_plain.sql`` runs only on plain
PostgreSQL, ``NNN_name_timescale.sql`` only on TimescaleDB; every other file runs on both. The
backend of a database is chosen once, by :func:`choose_backend`: a database where a file of one kind
is already applied keeps that kind; otherwise TimescaleDB if the extension is available on the
server (``pg_available_extensions``), else plain. ``F2_STORAGE_BACKEND`` (``auto``, ``timescaledb``,
``postgres``) overrides the automatic choice for a new database.

The chosen backend is visible in the database itself: ``SELECT f2_storage_backend()``.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from schemas.settings import TimescaleSettings

PLAIN = "postgres"
TIMESCALE = "timescaledb"
_SUFFIXES = {"_plain.sql": PLAIN, "_timescale.sql": TIMESCALE}


def file_backend(path: Path) -> str | None:
    """The backend a migration file is for, or None if it is for both."""
    for suffix, backend in _SUFFIXES.items():
        if path.name.endswith(suffix):
            return backend
    return None


def choose_backend(conn: psycopg.Connection, wanted: str = "auto") -> str:
    """The backend for this database (see the module doc); ``wanted`` is ``F2_STORAGE_BACKEND``."""
    applied = {row[0] for row in conn.execute("SELECT name FROM f2_schema_migrations")}
    used = {file_backend(Path(name)) for name in applied} - {None}
    if len(used) == 1:
        return used.pop()
    available = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
    ).fetchone()[0]
    if wanted == TIMESCALE and not available:
        raise RuntimeError("F2_STORAGE_BACKEND=timescaledb but the server has no timescaledb")
    if wanted in (PLAIN, TIMESCALE):
        return wanted
    return TIMESCALE if available else PLAIN


def configure_timescale(conn: psycopg.Connection, settings: TimescaleSettings) -> str:
    """Apply chunk intervals and policies (idempotent); return what changed."""
    retention = None if settings.retention.lower() in ("off", "none") else settings.retention
    row = conn.execute(
        "SELECT f2_timescale_configure(%s::interval, %s::interval, %s::interval, %s::interval,"
        " %s::interval, %s::interval, %s::interval)",
        (
            settings.chunk_interval,
            settings.events_chunk_interval,
            settings.compress_after,
            retention,
            settings.refresh_start,
            settings.refresh_end,
            settings.refresh_every,
        ),
    ).fetchone()
    return row[0]


def describe(dsn: str) -> str:
    """``f2_storage_backend()`` of the database at ``dsn``, or why it is unknown."""
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            return conn.execute("SELECT f2_storage_backend()").fetchone()[0]
    except psycopg.Error as exc:
        return f"unknown ({type(exc).__name__})"
