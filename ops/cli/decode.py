"""``f2 decode``: decode one device message against the registry and print the result.

``f2 decode --topic TOPIC --payload PAYLOAD [--received-at MS]`` looks the topic's controller up
in the registry database (``F2_PARAMS_DSN``) and prints one JSON object per line, as the decode
flow would produce them: ``{"kind": "reading", ...}``, ``{"kind": "event", ...}`` or
``{"kind": "error", "reason", "detail"[, "label"]}``. A bad message is output, not failure: the
exit status is 0. Only an unreachable registry is an error (status 2, message on stderr).
``--payload -`` reads the payload bytes from stdin. ``--received-at`` (epoch ms) is the clock the
timestamp's "not in the future" bound is checked against (default: now).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import psycopg
from psycopg.conninfo import conninfo_to_dict

from connectors.registry_pg import load_controller
from schemas.decode import decode_message
from schemas.records import ControllerEntry, RawMessage
from schemas.settings import Config
from schemas.topics import mac_from_topic
from schemas.wire import result_json

REGISTRY_UNREACHABLE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``decode`` command to the ``f2`` parser."""
    parser = subparsers.add_parser(
        "decode", help="decode one device message against the registry, one JSON object a line"
    )
    parser.add_argument("--topic", required=True, help="the MQTT topic, e.g. tele/f2-<mac>/...")
    parser.add_argument("--payload", required=True, help="the payload text ('-': read stdin)")
    parser.add_argument(
        "--received-at", type=int, metavar="MS", help="receive time in epoch ms (default: now)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    """Decode the message given on the command line; print the results as JSON lines."""
    payload = sys.stdin.buffer.read() if args.payload == "-" else args.payload.encode()
    raw = RawMessage(args.topic, payload, received_at_ms=args.received_at or 0)
    mac = mac_from_topic(args.topic)
    entry: ControllerEntry | None = None
    if mac is not None:
        dsn = config.connections.params_dsn
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                entry = load_controller(conn, mac)
        except psycopg.Error as exc:
            print(f"f2 decode: cannot read the registry at {_where(dsn)}: {exc}", file=sys.stderr)
            return REGISTRY_UNREACHABLE
    now = None
    if args.received_at is not None:
        now = datetime.fromtimestamp(args.received_at / 1000, UTC)
    out = sys.stdout.buffer
    for item in decode_message(raw, entry, now, config.limits):
        out.write(result_json(item) + b"\n")
    out.flush()
    return 0


def _where(dsn: str) -> str:
    """The database a DSN names, without its credentials."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparseable F2_PARAMS_DSN)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"
