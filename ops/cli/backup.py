"""``f2 backup`` / ``f2 restore``: see :mod:`ops.recovery.backup`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import psycopg

from ops.recovery.backup import DATABASES, backup, backup_dir, database_of, dsn_of, restore
from schemas.settings import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    backup_parser = subparsers.add_parser("backup", help="custom-format dumps of both databases")
    backup_parser.add_argument("--dir", type=Path, help="target directory (default: F2_BACKUP_DIR)")
    backup_parser.set_defaults(func=cmd_backup)

    restore_parser = subparsers.add_parser("restore", help="restore one dump made by `f2 backup`")
    restore_parser.add_argument("file", type=Path)
    restore_parser.add_argument(
        "--database", choices=sorted(DATABASES), help="target stack database"
    )
    restore_parser.add_argument("--dsn", help="target connection string (overrides --database)")
    restore_parser.set_defaults(func=cmd_restore)


def cmd_backup(args: argparse.Namespace, config: Config) -> int:
    try:
        files = backup(config, args.dir or backup_dir(config.stack))
    except subprocess.CalledProcessError as exc:
        print(f"f2 backup: {exc}", file=sys.stderr)
        return 1
    for file in files:
        print(f"{file}  {file.stat().st_size} bytes")
    return 0


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    if not args.file.is_file():
        print(f"f2 restore: no such file: {args.file}", file=sys.stderr)
        return 2
    database = args.database or database_of(args.file)
    if args.dsn is None and database is None:
        print("f2 restore: name the target with --database or --dsn", file=sys.stderr)
        return 2
    try:
        restore(config.stack, args.file, args.dsn or dsn_of(config.connections, database))
    except (subprocess.CalledProcessError, psycopg.Error) as exc:
        print(f"f2 restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored {args.file}")
    return 0
