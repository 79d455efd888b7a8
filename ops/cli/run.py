"""``f2 run FLOW``: run one dataflow in the foreground with its recommended flags
(``ops.stack.flows``).

Prints a line containing ``ready`` once the flow serves metrics (and, for ingest, every MQTT
session is subscribed); refuses to start while the same flow runs on this stack (foreground or
supervised); stops the flow cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from ops.stack import flows
from ops.stack.supervisor import stop_on_signals
from schemas.settings import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="run a dataflow in the foreground (ingest, decode)")
    run.add_argument("flow", choices=sorted(flows.FLOWS))
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    if args.flow not in flows.available_flows():
        print(f"f2 run: dataflow {args.flow!r} is not part of this version", file=sys.stderr)
        return 2
    root = Path(config.connections.stack_dir)
    lock = flows.FlowLock(root, args.flow)
    try:
        lock.acquire()
    except flows.AlreadyRunning as exc:
        print(f"f2 run {args.flow}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        code = flows.run_once(flows.FLOWS[args.flow], root, config, sys.stderr, stop, sys.stdout)
    finally:
        lock.release()
    return 0 if stop.is_set() else code
