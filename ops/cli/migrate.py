"""``f2 migrate``: apply the pending SQL migrations to the registry and timeseries databases.

The one-shot of containers and init jobs (compose ``migrate`` service, the decode pods' init
container): it reads ``F2_PARAMS_DSN`` / ``F2_TIMESERIES_DSN`` (the databases' owner, or their
``*_FILE`` variants) and the migrations from ``F2_MIGRATIONS_DIR``, and is safe to run concurrently
and repeatedly (an advisory lock serialises migrators; each file is applied once, see
:mod:`ops.storage.migrate`). The login roles the migrations create (``f2_pipeline`` for the flows,
``f2_reader`` for Grafana and the health API) get their passwords from
``F2_DB_PIPELINE_PASSWORD_FILE`` and ``F2_DB_READER_PASSWORD_FILE``.
"""

from __future__ import annotations

import argparse
import sys

import psycopg

from ops.storage.migrate import migrate, set_role_passwords
from schemas.settings import PIPELINE_DB_ROLE, READER_DB_ROLE, Config

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


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    settings, m = config.connections, config.migrate
    dsns = {"params": settings.params_dsn, "timeseries": settings.timeseries_dsn}
    wanted = DATABASES if args.database == "all" else (args.database,)
    passwords = {PIPELINE_DB_ROLE: m.db_pipeline_password, READER_DB_ROLE: m.db_reader_password}
    for database in wanted:
        try:
            applied = migrate(dsns[database], database, m, config.timescale)
            roles = set_role_passwords(dsns[database], passwords)
        except psycopg.Error as exc:
            print(f"f2 migrate {database}: {exc}".rstrip(), file=sys.stderr)
            return 1
        print(f"{database}: {', '.join(applied) if applied else 'up to date'}", flush=True)
        if roles:
            print(f"{database}: passwords set for {', '.join(roles)}", flush=True)
    return 0
