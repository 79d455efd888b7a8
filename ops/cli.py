"""``f2``: the operator's command line. Each command lives in its own ``ops.*_cmd`` module."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that provide ``register(subparsers)`` and whose parsers set ``func(args) -> int``.
COMMAND_MODULES = [
    "ops.stack_cmd",
    "ops.simulate_cmd",
    "ops.kafka_cmd",
    "ops.devices_cmd",
    "ops.security_cmd",
    "ops.decode_cmd",
    "ops.demo_cmd",
    "ops.setup_cmd",
    "ops.run_cmd",
    "ops.migrate_cmd",
    "ops.health_cmd",
    "ops.performance_cmd",
    "ops.replay_cmd",
    "ops.dlq_cmd",
    "ops.backup_cmd",
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
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
