"""``f2``: the operator's command line. Each command lives in its own ``ops.cli`` module; this
entry point reads the settings once (:func:`schemas.settings.load_config`) and hands them to the
command, which parses its arguments and calls the room that does the work."""

from __future__ import annotations

import argparse
import importlib
import sys

from schemas.settings import SettingsError, load_config

# Modules that provide ``register(subparsers)`` and whose parsers set ``func(args, config) -> int``.
COMMAND_MODULES = [
    "ops.cli.stack",
    "ops.cli.simulate",
    "ops.cli.kafka",
    "ops.cli.devices",
    "ops.cli.security",
    "ops.cli.decode",
    "ops.cli.demo",
    "ops.cli.setup",
    "ops.cli.run",
    "ops.cli.migrate",
    "ops.cli.health",
    "ops.cli.performance",
    "ops.cli.replay",
    "ops.cli.dlq",
    "ops.cli.backup",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="f2", description="F2 fleet pipeline operator CLI")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config()
    except SettingsError as exc:
        print(f"f2: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, config) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
