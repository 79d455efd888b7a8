"""Backups (``f2 backup`` / ``f2 restore``): custom-format dumps of both databases.

``f2 backup`` writes ``<dir>/<database>-<UTC time>.dump`` for both databases (``pg_dump -Fc``;
written as ``.partial`` and renamed when complete). ``f2 restore FILE`` replaces the ``public``
schema of the database the dump came from (the name before the time stamp: ``f2_params`` or
``f2_timeseries``), or of ``--database``, or of any ``--dsn``, with the dump's content, in one
transaction (``pg_restore --clean`` cannot drop partitions' inherited constraints, so the schema is
dropped and recreated instead). Objects get the restoring user as owner. Passwords go to the tools
through ``PGPASSWORD``, never on a command line.

A dump that contains the ``timescaledb`` extension is restored between
``timescaledb_pre_restore()`` and ``timescaledb_post_restore()``, as TimescaleDB requires (not
exercised here: the stack's server is PostgreSQL 15); use client binaries of the server's major
version (``F2_PG_BIN``).

Settings: ``F2_BACKUP_DIR`` (default ``backups/`` of the checkout, else of the working directory),
``F2_PG_BIN`` (default ``/usr/lib/postgresql/15/bin``, the stack's PostgreSQL).
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from ops.stack.packages import PG_BIN
from schemas.settings import (
    PARAMS_DB,
    TIMESERIES_DB,
    Config,
    Settings,
    StackSettings,
    child_environment,
    project_root,
)

DATABASES = {"params": PARAMS_DB, "timeseries": TIMESERIES_DB}
_LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
}


def backup_dir(settings: StackSettings) -> Path:
    """``F2_BACKUP_DIR``, else ``backups/`` of the checkout (or of the working directory)."""
    if settings.backup_dir:
        return Path(settings.backup_dir)
    return (project_root() or Path.cwd()) / "backups"


def pg_bin(settings: StackSettings, tool: str) -> str:
    """Path of a PostgreSQL client tool from ``F2_PG_BIN``."""
    return str(Path(settings.pg_bin or PG_BIN) / tool)


def libpq_env(dsn: str) -> dict[str, str]:
    """This process's environment plus the connection parameters of ``dsn`` as ``PG*`` vars."""
    values = conninfo_to_dict(dsn).items()
    return child_environment(
        {_LIBPQ_ENV[k]: str(v) for k, v in values if k in _LIBPQ_ENV and v is not None}
    )


def dsn_of(settings: Settings, database: str) -> str:
    """The connection string for ``params`` or ``timeseries``."""
    return settings.params_dsn if database == "params" else settings.timeseries_dsn


def dump(settings: StackSettings, dsn: str, target: Path) -> Path:
    """``pg_dump -Fc`` of ``dsn`` into ``target`` (complete or not at all)."""
    partial = target.with_name(target.name + ".partial")
    subprocess.run(
        [pg_bin(settings, "pg_dump"), "--format=custom", "--no-password", f"--file={partial}"],
        env=libpq_env(dsn),
        check=True,
    )
    partial.rename(target)
    return target


def backup(config: Config, directory: Path, now: datetime | None = None) -> list[Path]:
    """Dump both databases into ``directory``; return the files."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return [
        dump(config.stack, dsn_of(config.connections, db), directory / f"{name}-{stamp}.dump")
        for db, name in DATABASES.items()
    ]


def database_of(file: Path) -> str | None:
    """``params``/``timeseries`` from a dump's name (``f2_params-...dump``), else None."""
    prefix = file.name.rsplit("-", 1)[0]
    return next((key for key, name in DATABASES.items() if name == prefix), None)


def restore(settings: StackSettings, file: Path, dsn: str) -> None:
    """Replace the ``public`` schema of ``dsn`` with the content of ``file``, atomically: the
    dump's SQL runs in one ``psql`` transaction after ``DROP SCHEMA public CASCADE``, so a failed
    restore leaves the database as it was."""
    listing = subprocess.run(
        [pg_bin(settings, "pg_restore"), "--list", str(file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    timescale = "EXTENSION - timescaledb" in listing
    prologue = "DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n"
    epilogue = ""
    if timescale:
        prologue += "CREATE EXTENSION timescaledb;\nSELECT timescaledb_pre_restore();\n"
        epilogue = "SELECT timescaledb_post_restore();\n"
    env = libpq_env(dsn)
    psql = subprocess.Popen(
        [pg_bin(settings, "psql"), "--no-psqlrc", "--quiet", "--single-transaction",
         "--no-password", "--set=ON_ERROR_STOP=1", "--output=/dev/null", "--file=-"],
        stdin=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert psql.stdin is not None
    psql.stdin.write(prologue.encode())
    psql.stdin.flush()
    dumped = subprocess.run(
        [pg_bin(settings, "pg_restore"), "--no-owner", "--file=-", str(file)],
        stdout=psql.stdin,
        check=False,
    )
    if dumped.returncode != 0:
        psql.kill()  # before its end of input: the transaction rolls back
        psql.wait()
        raise subprocess.CalledProcessError(dumped.returncode, "pg_restore")
    psql.stdin.write(epilogue.encode())
    psql.stdin.close()
    if psql.wait() != 0:
        raise subprocess.CalledProcessError(psql.returncode, "psql")
