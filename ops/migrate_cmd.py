"""``f2 migrate``: apply the pending SQL migrations to the registry and timeseries databases.

The one-shot of containers and init jobs (compose ``migrate`` service, the decode pods' init
container): it reads ``F2_PARAMS_DSN`` / ``F2_TIMESERIES_DSN`` (or their ``*_FILE`` variants) and
the migrations from ``F2_MIGRATIONS_DIR``, and is safe to run concurrently and repeatedly (an
advisory lock serialises migrators; each file is applied once, see :mod:`ops.migrate`).
"""

from __future__ import annotations

import argparse
import sys

import psycopg

from ops.migrate import migrate
from schemas.settings import load_settings

DATABASES = ("params", "timeseries")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("migrate", help="apply pending SQL migrations (idempotent)")
    parser.add_argument(
        "--database",
        choices=[*DATABASES, "all"],
        default="all",
        help="which database to migrate (default: both)",
    )
    parser.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_settings()
    dsns = {"params": settings.params_dsn, "timeseries": settings.timeseries_dsn}
    wanted = DATABASES if args.database == "all" else (args.database,)
    for database in wanted:
        try:
            applied = migrate(dsns[database], database)
        except psycopg.Error as exc:
            print(f"f2 migrate {database}: {exc}".rstrip(), file=sys.stderr)
            return 1
        print(f"{database}: {', '.join(applied) if applied else 'up to date'}", flush=True)
    return 0
