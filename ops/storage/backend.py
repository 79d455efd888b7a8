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

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec
import psycopg

PLAIN = "postgres"
TIMESCALE = "timescaledb"
_SUFFIXES = {"_plain.sql": PLAIN, "_timescale.sql": TIMESCALE}


class TimescaleSettings(msgspec.Struct, frozen=True):
    """``F2_STORAGE_BACKEND`` and the ``F2_TSDB_*`` knobs (PostgreSQL interval strings; a
    retention of ``off`` means no retention policy; unset or empty variables take the default)."""

    backend: str = "auto"
    chunk_interval: str = "1 day"
    events_chunk_interval: str = "7 days"
    compress_after: str = "2 days"
    retention: str = "365 days"
    refresh_start: str = "7 days"
    refresh_end: str = "1 hour"
    refresh_every: str = "30 minutes"


_ENV = {
    "backend": "F2_STORAGE_BACKEND",
    "chunk_interval": "F2_TSDB_CHUNK_INTERVAL",
    "events_chunk_interval": "F2_TSDB_EVENTS_CHUNK_INTERVAL",
    "compress_after": "F2_TSDB_COMPRESS_AFTER",
    "retention": "F2_TSDB_RETENTION",
    "refresh_start": "F2_TSDB_REFRESH_START",
    "refresh_end": "F2_TSDB_REFRESH_END",
    "refresh_every": "F2_TSDB_REFRESH_EVERY",
}


def load_timescale_settings(environ: Mapping[str, str] | None = None) -> TimescaleSettings:
    """:class:`TimescaleSettings` from the environment, defaults for what is unset."""
    env = os.environ if environ is None else environ
    values = {field: env[name] for field, name in _ENV.items() if env.get(name)}
    settings = TimescaleSettings(**values)
    if settings.backend not in ("auto", PLAIN, TIMESCALE):
        raise ValueError(f"F2_STORAGE_BACKEND must be auto, {PLAIN} or {TIMESCALE}")
    return settings


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
