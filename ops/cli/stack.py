"""``f2 stack ...``: manage the local stack (see ``ops.stack.local``)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from ops.stack import flows, monitoring
from ops.stack.local import SERVICE_ORDER, Stack
from ops.stack.packages import MissingPackages
from ops.stack.services import ServiceError
from ops.storage import backend as storage_backend
from schemas.settings import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    stack = subparsers.add_parser("stack", help="the local stack of services")
    actions = stack.add_subparsers(dest="action", required=True)

    up = actions.add_parser("up", help="start every service (idempotent), migrate, create topics")
    up.add_argument(
        "--flows", action="store_true", help="also start the dataflows and the health API"
    )
    up.add_argument(
        "--monitoring", action="store_true", help="also start Prometheus (and the health API)"
    )
    up.set_defaults(func=cmd_up)

    down = actions.add_parser("down", help="stop what `up` started")
    down.add_argument("--purge", action="store_true", help="also delete all stack data")
    down.set_defaults(func=cmd_down)

    actions.add_parser("status", help="state, port, pid and log of each service").set_defaults(
        func=cmd_status
    )
    actions.add_parser("env", help="export lines for every program of the project").set_defaults(
        func=cmd_env
    )

    logs = actions.add_parser("logs", help="show (or follow) a service's log")
    logs.add_argument(
        "service", nargs="?", help="a service, flow (ingest, decode) or health; all when omitted"
    )
    logs.add_argument("-n", "--lines", type=int, default=40)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(func=cmd_logs)

    for verb, func in (("start", cmd_start), ("stop", cmd_stop)):
        parser = actions.add_parser(verb, help=f"{verb} one service")
        parser.add_argument("service", choices=SERVICE_ORDER)
        parser.set_defaults(func=func)


def _guarded(action) -> int:
    try:
        action()
    except (ServiceError, MissingPackages) as exc:
        print(f"f2 stack: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_up(args: argparse.Namespace, config: Config) -> int:
    stack = Stack(config=config)
    code = _guarded(stack.up)
    if code == 0 and args.flows:
        code = _guarded(lambda: flows.start_supervised(stack.root, flows.available_flows()))
    if code == 0 and (args.flows or args.monitoring):
        code = _guarded(lambda: monitoring.start(stack, prometheus=args.monitoring))
    if code == 0:
        print(f'stack ready in {stack.root}; settings: eval "$(f2 stack env)"', file=sys.stderr)
    return code


def cmd_down(args: argparse.Namespace, config: Config) -> int:
    return _guarded(lambda: Stack(config=config).down(purge=args.purge))


def cmd_start(args: argparse.Namespace, config: Config) -> int:
    return _guarded(lambda: Stack(config=config).start(args.service))


def cmd_stop(args: argparse.Namespace, config: Config) -> int:
    return _guarded(lambda: Stack(config=config).stop(args.service))


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    rows = Stack(config=config).status_rows()
    print(f"{'SERVICE':<10} {'STATE':<24} {'PORT':>6} {'PID':>8} {'RSS MB':>7}  LOG")
    for row in rows:
        pid = "-" if row["pid"] is None else str(row["pid"])
        rss = "-" if row["rss_mb"] is None else f"{row['rss_mb']:.0f}"
        name, state, port = row["service"], row["state"], row["port"]
        print(f"{name:<10} {state:<24} {port:>6} {pid:>8} {rss:>7}  {row['log']}")
    if any(row["service"] == "postgres" and row["state"] == "ready" for row in rows):
        print(f"timeseries storage: {storage_backend.describe(config.connections.timeseries_dsn)}")
    return 0 if all(row["state"] == "ready" for row in rows) else 3


def cmd_env(args: argparse.Namespace, config: Config) -> int:
    print("\n".join(Stack(config=config).env_lines()))
    return 0


def cmd_logs(args: argparse.Namespace, config: Config) -> int:
    stack = Stack(config=config)
    logs = monitoring.log_files(stack)
    if args.service and args.service not in logs:
        print(
            f"f2 stack logs: unknown {args.service!r}; one of: {', '.join(logs)}", file=sys.stderr
        )
        return 2
    names = [args.service] if args.service else list(logs)
    files = [str(logs[name]) for name in names if args.service or logs[name].exists()]
    argv = ["tail", f"-n{args.lines}", *(["-F"] if args.follow else []), *files]
    return subprocess.call(argv)
