"""``f2 devices register MAC [--cert] [--json] | revoke MAC | list``: device identities.

``register`` creates the controller's MQTT credentials (username = MAC, a random password, and a
client certificate with ``--cert``), its registry row (template F2-rev1, connectors 1..4) and
prints how to connect. Access starts at once (broker reload, no restart); ``revoke`` ends it at
once. All of it is idempotent.
"""

from __future__ import annotations

import argparse
import json
import sys

from ops import device_access, device_identity
from ops.device_registry import RegistryError, register_controller, registered_ids
from ops.services import Mosquitto, ServiceError
from ops.stack import Stack
from schemas.settings import load_settings


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

    lst = actions.add_parser("list", help="devices with MQTT access or revoked")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)


def _broker() -> Mosquitto:
    broker = Stack().service("mosquitto")
    assert isinstance(broker, Mosquitto)
    return broker


def connection_settings(broker: Mosquitto, mac: str, password: str, device_id: int) -> dict:
    """What a device (or its provisioning tool) needs to connect."""
    settings = load_settings()
    result: dict[str, object] = {
        "mac": mac,
        "device_id": device_id,
        "username": mac,
        "password": password,
        "host": settings.mqtt_host,
        "port": broker.port,
        "tls_port": broker.tls_port,
        "mtls_port": broker.mtls_port,
        "ca_file": str(broker.tls_dir / "ca.crt"),
        "publish": [f"stat/f2-{mac}/#", f"tele/f2-{mac}/#"],
        "subscribe": [f"cmnd/f2-{mac}/#"],
    }
    certs = device_identity.certificate(broker, mac)
    if certs is not None:
        result["cert_file"] = certs.cert_file
        result["key_file"] = certs.key_file
    return result


def cmd_register(args: argparse.Namespace) -> int:
    try:
        mac = device_access.canonical_mac(args.mac)
        broker = _broker()
        device_id = register_controller(load_settings().params_dsn, mac)
        if args.cert:
            device_identity.issue_certificate(broker, mac)
        password = device_identity.grant(broker, mac, rotate=args.rotate)
    except (device_access.DeviceAccessError, RegistryError, ServiceError) as exc:
        print(f"f2 devices register: {exc}", file=sys.stderr)
        return 1
    settings = connection_settings(broker, mac, password, device_id)
    if args.json:
        print(json.dumps(settings, indent=2))
    else:
        for key, value in settings.items():
            print(f"{key:<10} {', '.join(value) if isinstance(value, list) else value}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        mac = device_access.canonical_mac(args.mac)
        had = device_identity.revoke(_broker(), mac)
    except (device_access.DeviceAccessError, ServiceError) as exc:
        print(f"f2 devices revoke: {exc}", file=sys.stderr)
        return 1
    state = "revoked" if had else "already had no access; denied anyway"
    print(f"{mac}: {state} (broker reloaded: connected password sessions were closed)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    broker = _broker()
    with_password = device_access.device_users(broker.dir)
    denied = device_access.revoked(broker.dir)
    macs = sorted(set(with_password) | set(denied))
    ids = registered_ids(load_settings().params_dsn, macs) if macs else {}
    rows = [
        {
            "mac": mac,
            "access": "revoked" if mac in denied else "granted",
            "password": mac in with_password,
            "certificate": device_identity.certificate(broker, mac) is not None,
            "device_id": ids.get(mac),
        }
        for mac in macs
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'MAC':<14} {'ACCESS':<8} {'PASSWORD':<8} {'CERT':<5} DEVICE_ID")
    for row in rows:
        device = "-" if row["device_id"] is None else row["device_id"]
        print(
            f"{row['mac']:<14} {row['access']:<8} {'yes' if row['password'] else 'no':<8} "
            f"{'yes' if row['certificate'] else 'no':<5} {device}"
        )
    return 0
