"""``f2 simulate``: run the F2 fleet simulator (same options as ``python -m simulator``)."""

from __future__ import annotations

import argparse

from connectors.logs import configure_logging
from schemas.settings import Config
from simulator.cli import add_arguments, run


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a fleet of F2 controllers (demo, soak and load tests)",
        description="Publish realistic F2 controller traffic to MQTT and report what was sent.",
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace, config: Config) -> int:
    configure_logging(config.connections.log_level)
    return run(args, config)
