"""``f2 dlq redrive [--reason R] [--controller MAC] [--since T] [--until T] [--json]``.

See :mod:`ops.recovery.redrive`. Prints what it did (``--json``: the report as one JSON object);
progress lines go to stderr. Exit status 0 when the DLQ was read to the end of the range, 2 when the
read stopped early (the unfinished partitions are listed), 1 on a bad argument.
"""

from __future__ import annotations

import argparse

from ops.cli.replay import add_range_arguments, run_reported
from ops.recovery.redrive import RedriveReport, run_redrive
from schemas.reasons import ALL_REASONS
from schemas.settings import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dlq`` command group to the ``f2`` parser."""
    dlq = subparsers.add_parser("dlq", help="the dead-letter topic")
    actions = dlq.add_subparsers(dest="action", required=True)
    redrive = actions.add_parser(
        "redrive", help="send dead-lettered messages back through decoding and storage"
    )
    redrive.add_argument("--reason", choices=sorted(ALL_REASONS), help="only this reason")
    add_range_arguments(redrive, since_required=False)
    redrive.add_argument("--json", action="store_true", help="print the report as JSON")
    redrive.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    redrive.set_defaults(func=cmd_redrive)


def cmd_redrive(args: argparse.Namespace, config: Config) -> int:
    """Run one redrive and print its report."""
    return run_reported(
        "f2 dlq redrive",
        args,
        config,
        lambda span, mac: run_redrive(config, span, args.reason, mac, not args.quiet),
        print_report,
    )


def print_report(report: RedriveReport) -> None:
    """The human-readable report."""
    if report.horizon:
        print(f"note: {report.horizon}")
    r, e = report.readings, report.events
    print(f"dlq records read: {report.records_read} (oldest {report.oldest_record})")
    print(
        f"matched: {report.matched} records = {report.messages} messages"
        f" ({report.skipped} skipped: no mqtt_topic header)"
    )
    print(f"stored: {report.stored} messages decoded to rows")
    print(
        f"  readings: {r.inserted} stored, {r.unchanged} already stored, {r.rejected} refused;"
        f" events: {e.inserted} stored, {e.unchanged} already stored, {e.rejected} refused"
    )
    new = ", ".join(f"{reason} {n}" for reason, n in report.new_reasons.items()) or "none"
    print(f"dead-lettered again with a new reason: {report.dead_lettered} messages ({new})")
    print(f"failed again with a reason the DLQ already holds: {report.failed_again}")
    if report.empty:
        print(f"decoded to nothing: {report.empty}")
    if not report.complete:
        print(f"INCOMPLETE: partitions {report.unfinished_partitions} did not reach their end")
    print(f"took {report.seconds:.1f} s")
