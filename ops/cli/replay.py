"""``f2 replay --since T [--until T] [--controller MAC] [--json]``: re-decode the raw archive.

See :mod:`ops.recovery.replay`. Prints what it did (``--json``: the report as one JSON object);
progress lines go to stderr. Exit status 0 when every partition was read to the end of the range, 2
when the read stopped early (the unfinished partitions are listed), 1 on a bad argument.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from connectors.logs import configure_logging
from ops.recovery.replay import (
    ReplayReport,
    TimeWindow,
    parse_when,
    run_replay,
    serve_metrics,
)
from ops.recovery.replay import window as time_window
from schemas.settings import Config
from schemas.topics import normalise_mac

INCOMPLETE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``replay`` command to the ``f2`` parser."""
    parser = subparsers.add_parser(
        "replay", help="re-decode the raw archive for a time range with the current registry"
    )
    add_range_arguments(parser, since_required=True)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(func=run)


def add_range_arguments(parser: argparse.ArgumentParser, since_required: bool) -> None:
    """``--since``/``--until``/``--controller`` (shared with ``f2 dlq redrive``)."""
    when = "ISO 8601 (no zone = UTC), 'now', or an age like 90m, 36h, 2d"
    parser.add_argument("--since", required=since_required, help=f"start of the range: {when}")
    parser.add_argument("--until", help=f"end of the range (default: now): {when}")
    parser.add_argument("--controller", metavar="MAC", help="only this controller's messages")


def parse_range(args: argparse.Namespace) -> tuple[datetime | None, datetime | None, str | None]:
    """The parsed ``--since``/``--until``/``--controller``; ValueError on a bad one."""
    now = datetime.now(UTC)
    since = parse_when(args.since, now) if args.since else None
    until = parse_when(args.until, now) if args.until else None
    mac = None
    if args.controller:
        mac = normalise_mac(args.controller)
        if mac is None:
            raise ValueError(f"not a MAC address: {args.controller!r}")
    return since, until, mac


def run(args: argparse.Namespace, config: Config) -> int:
    """Run one replay and print its report."""
    return run_reported(
        "f2 replay",
        args,
        config,
        lambda span, mac: run_replay(config, span, mac, not args.quiet),
        print_report,
    )


def run_reported(
    name: str,
    args: argparse.Namespace,
    config: Config,
    execute: Callable[[TimeWindow, str | None], Any],
    show: Callable[[Any], None],
) -> int:
    """Parse the range, run ``execute``, print its report (or its JSON); the exit status."""
    configure_logging(config.connections.log_level)
    try:
        since, until, mac = parse_range(args)
        span = time_window(since, until)
    except ValueError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    serve_metrics(config.replay)
    report = execute(span, mac)
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        show(report)
    return 0 if report.complete else INCOMPLETE


def print_report(report: ReplayReport) -> None:
    """The human-readable report."""
    if report.horizon:
        print(f"note: {report.horizon}")
    r, e = report.readings, report.events
    who = report.controller or "all controllers"
    print(f"range: {report.since} .. {report.until or 'now'}, {who}")
    print(f"raw records read: {report.records_read} (oldest {report.oldest_record})")
    print(f"messages re-decoded: {report.replayed} (registry version {report.registry_version})")
    print(
        f"readings: {r.inserted} inserted, {r.replaced} replaced (newer version, new value), "
        f"{r.unchanged} unchanged, {r.rejected} refused"
    )
    print(f"events: {e.inserted} inserted, {e.unchanged} unchanged, {e.rejected} refused")
    print(f"rows changed: {report.rows_changed}")
    if report.errors:
        listed = ", ".join(f"{reason} {n}" for reason, n in report.errors.items())
        print(f"decode errors (not dead-lettered again): {listed}")
    if not report.complete:
        print(f"INCOMPLETE: partitions {report.unfinished_partitions} did not reach their end")
    print(f"took {report.seconds:.1f} s")
