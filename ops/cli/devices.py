"""``f2 devices register MAC [--cert] [--rotate] [--json] | revoke MAC | rotate MAC | list |
seed-store``: see :mod:`ops.security.devices`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ops.security import secret_files
from ops.security.devices import FAILURES, Devices
from ops.stack.services import operator_store
from schemas.settings import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    devices = subparsers.add_parser("devices", help="device identities: MQTT access + registry")
    actions = devices.add_subparsers(dest="action", required=True)

    reg = actions.add_parser("register", help="credentials, registry row, connection settings")
    reg.add_argument("mac", help="12 hex digits, e.g. e4fd45f654be")
    reg.add_argument("--cert", action="store_true", help="also issue a client certificate (mTLS)")
    reg.add_argument("--rotate", action="store_true", help="replace an existing password")
    reg.add_argument("--json", action="store_true", help="print the settings as one JSON object")
    reg.set_defaults(func=cmd_register)

    rev = actions.add_parser("revoke", help="end a device's MQTT access at once")
    rev.add_argument("mac")
    rev.set_defaults(func=cmd_revoke)

    rot = actions.add_parser("rotate", help="a new password (and certificate) for a device")
    rot.add_argument("mac")
    rot.add_argument("--json", action="store_true")
    rot.set_defaults(func=cmd_rotate)

    lst = actions.add_parser("list", help="devices with MQTT access or revoked")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

    seed = actions.add_parser(
        "seed-store",
        help="print a new dynamic-security store whose only client is the operator (for a"
        " broker's first start: compose, a cluster)",
    )
    seed.add_argument("--operator-password-file", required=True, type=Path)
    seed.set_defaults(func=cmd_seed_store)


def _print(settings: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(settings, indent=2))
        return
    for key, value in settings.items():
        print(f"{key:<10} {', '.join(value) if isinstance(value, list) else value}")


def cmd_register(args: argparse.Namespace, config: Config) -> int:
    try:
        settings = Devices(config).register(args.mac, cert=args.cert, rotate=args.rotate)
    except FAILURES as exc:
        print(f"f2 devices register: {exc}", file=sys.stderr)
        return 1
    _print(settings, args.json)
    return 0


def cmd_rotate(args: argparse.Namespace, config: Config) -> int:
    try:
        settings, note = Devices(config).rotate(args.mac)
    except FAILURES as exc:
        print(f"f2 devices rotate: {exc}", file=sys.stderr)
        return 1
    _print(settings, args.json)
    if note:
        print(f"old certificate revoked: {note}", file=sys.stderr)
    return 0


def cmd_revoke(args: argparse.Namespace, config: Config) -> int:
    try:
        mac, had, note = Devices(config).revoke(args.mac)
    except FAILURES as exc:
        print(f"f2 devices revoke: {exc}", file=sys.stderr)
        return 1
    state = "revoked (its sessions were closed)" if had else "had no identity on the broker"
    print(f"{mac}: {state}" + (f"; certificate revoked, {note}" if note else ""))
    return 0


def cmd_seed_store(args: argparse.Namespace, config: Config) -> int:
    password = secret_files.read_secret(args.operator_password_file)
    if not password:
        print(
            f"f2 devices seed-store: no password in {args.operator_password_file}", file=sys.stderr
        )
        return 1
    print(json.dumps(operator_store(password), indent=2))
    return 0


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    try:
        rows = Devices(config).list()
    except FAILURES as exc:
        print(f"f2 devices list: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'MAC':<14} {'ACCESS':<8} {'CERT':<5} DEVICE_ID")
    for row in rows:
        device = "-" if row["device_id"] is None else row["device_id"]
        print(
            f"{row['mac']:<14} {row['access']:<8} {'yes' if row['certificate'] else 'no':<5} "
            f"{device}"
        )
    return 0
