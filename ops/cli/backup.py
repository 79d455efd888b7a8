"""``f2 backup`` / ``f2 restore``: custom-format dumps of the registry and timeseries databases.

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

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ops.stack.packages import PG_BIN
from schemas.settings import PARAMS_DB, TIMESERIES_DB, load_settings, project_root

DATABASES = {"params": PARAMS_DB, "timeseries": TIMESERIES_DB}
_LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    backup = subparsers.add_parser("backup", help="custom-format dumps of both databases")
    backup.add_argument("--dir", type=Path, help="target directory (default: F2_BACKUP_DIR)")
    backup.set_defaults(func=cmd_backup)

    restore = subparsers.add_parser("restore", help="restore one dump made by `f2 backup`")
    restore.add_argument("file", type=Path)
    restore.add_argument("--database", choices=sorted(DATABASES), help="target stack database")
    restore.add_argument("--dsn", help="target connection string (overrides --database)")
    restore.set_defaults(func=cmd_restore)


def backup_dir() -> Path:
    """``F2_BACKUP_DIR``, else ``backups/`` of the checkout (or of the working directory)."""
    configured = os.environ.get("F2_BACKUP_DIR")
    if configured:
        return Path(configured)
    return (project_root() or Path.cwd()) / "backups"


def pg_bin(tool: str) -> str:
    """Path of a PostgreSQL client tool from ``F2_PG_BIN``."""
    return str(Path(os.environ.get("F2_PG_BIN") or PG_BIN) / tool)


def libpq_env(dsn: str) -> dict[str, str]:
    """This process's environment plus the connection parameters of ``dsn`` as ``PG*`` vars."""
    env = dict(os.environ)
    for key, value in conninfo_to_dict(dsn).items():
        if key in _LIBPQ_ENV and value is not None:
            env[_LIBPQ_ENV[key]] = str(value)
    return env


def dsn_of(database: str) -> str:
    """The stack's connection string for ``params`` or ``timeseries``."""
    settings = load_settings()
    return settings.params_dsn if database == "params" else settings.timeseries_dsn


def dump(dsn: str, target: Path) -> Path:
    """``pg_dump -Fc`` of ``dsn`` into ``target`` (complete or not at all)."""
    partial = target.with_name(target.name + ".partial")
    subprocess.run(
        [pg_bin("pg_dump"), "--format=custom", "--no-password", f"--file={partial}"],
        env=libpq_env(dsn),
        check=True,
    )
    partial.rename(target)
    return target


def backup(directory: Path, now: datetime | None = None) -> list[Path]:
    """Dump both stack databases into ``directory``; return the files."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return [
        dump(dsn_of(database), directory / f"{name}-{stamp}.dump")
        for database, name in DATABASES.items()
    ]


def database_of(file: Path) -> str | None:
    """``params``/``timeseries`` from a dump's name (``f2_params-...dump``), else None."""
    prefix = file.name.rsplit("-", 1)[0]
    return next((key for key, name in DATABASES.items() if name == prefix), None)


def restore(file: Path, dsn: str) -> None:
    """Replace the ``public`` schema of ``dsn`` with the content of ``file``, atomically: the
    dump's SQL runs in one ``psql`` transaction after ``DROP SCHEMA public CASCADE``, so a failed
    restore leaves the database as it was."""
    listing = subprocess.run(
        [pg_bin("pg_restore"), "--list", str(file)], capture_output=True, text=True, check=True
    ).stdout
    timescale = "EXTENSION - timescaledb" in listing
    prologue = "DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n"
    epilogue = ""
    if timescale:
        prologue += "CREATE EXTENSION timescaledb;\nSELECT timescaledb_pre_restore();\n"
        epilogue = "SELECT timescaledb_post_restore();\n"
    env = libpq_env(dsn)
    psql = subprocess.Popen(
        [pg_bin("psql"), "--no-psqlrc", "--quiet", "--single-transaction", "--no-password",
         "--set=ON_ERROR_STOP=1", "--output=/dev/null", "--file=-"],
        stdin=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert psql.stdin is not None
    psql.stdin.write(prologue.encode())
    psql.stdin.flush()
    dumped = subprocess.run(
        [pg_bin("pg_restore"), "--no-owner", "--file=-", str(file)], stdout=psql.stdin, check=False
    )
    if dumped.returncode != 0:
        psql.kill()  # before its end of input: the transaction rolls back
        psql.wait()
        raise subprocess.CalledProcessError(dumped.returncode, "pg_restore")
    psql.stdin.write(epilogue.encode())
    psql.stdin.close()
    if psql.wait() != 0:
        raise subprocess.CalledProcessError(psql.returncode, "psql")


def cmd_backup(args: argparse.Namespace) -> int:
    try:
        files = backup(args.dir or backup_dir())
    except subprocess.CalledProcessError as exc:
        print(f"f2 backup: {exc}", file=sys.stderr)
        return 1
    for file in files:
        print(f"{file}  {file.stat().st_size} bytes")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"f2 restore: no such file: {args.file}", file=sys.stderr)
        return 2
    database = args.database or database_of(args.file)
    if args.dsn is None and database is None:
        print("f2 restore: name the target with --database or --dsn", file=sys.stderr)
        return 2
    try:
        restore(args.file, args.dsn or dsn_of(database))
    except (subprocess.CalledProcessError, psycopg.Error) as exc:
        print(f"f2 restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored {args.file}")
    return 0
