"""``f2 devices register MAC [--cert] [--rotate] [--json] | revoke MAC | rotate MAC | list``.

Device identities on any broker, through its admin channel (``ops.security.device_identity``): the
local stack's by default; another broker's (compose, a cluster) with ``F2_MQTT_ADMIN_HOST``,
``F2_MQTT_ADMIN_PORT``, ``F2_MQTT_ADMIN_USERNAME`` (default ``f2-operator``),
``F2_MQTT_ADMIN_PASSWORD`` / ``F2_MQTT_ADMIN_PASSWORD_FILE`` and, for TLS,
``F2_MQTT_ADMIN_CA_FILE``. The operator's copy of each device's password and certificate is kept
in ``F2_DEVICE_SECRETS_DIR`` (default ``<stack secrets>/devices``), certificates are signed by the
CA in ``F2_MQTT_CA_DIR`` (default ``<stack secrets>/tls``).

``register`` creates the controller's MQTT identity (username = MAC, a random password, a client
certificate with ``--cert``), its registry row (template F2-rev1, connectors 1..4) and prints how
to connect. ``revoke`` ends its access at once (its sessions are closed) and revokes its
certificate; a later ``register`` creates new credentials. ``rotate`` gives it a new password
(and a new certificate, revoking the old one, if it has one). Certificate revocations reach the
local stack's broker at once (new revocation list + SIGHUP); another broker must be given the
list that ``revoke`` prints and reloaded. All of it is idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import msgspec

from ops.security import device_identity, secret_files
from ops.security.device_identity import DeviceError, DeviceMaterial
from ops.security.device_registry import RegistryError, register_controller, registered_ids
from ops.security.mqtt_admin import AdminError, AdminSettings, DynsecAdmin
from ops.security.tls import TlsError
from ops.stack.local import Stack
from ops.stack.services import OPERATOR_MQTT_USER, Mosquitto, ServiceError, operator_store
from schemas.settings import env_value, load_settings

FAILURES = (DeviceError, RegistryError, ServiceError, AdminError, TlsError, OSError)


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


class DeviceAdminConfig(msgspec.Struct, frozen=True):
    """Where the admin channel and the operator's device material are (``F2_MQTT_ADMIN_*``,
    ``F2_DEVICE_SECRETS_DIR``, ``F2_MQTT_CA_DIR``); ``local`` when it is the local stack's."""

    admin: AdminSettings
    material: str
    ca_dir: str
    local: bool


def load_device_admin(
    broker: Mosquitto, environ: dict[str, str] | None = None
) -> DeviceAdminConfig:
    """The admin channel and material folders from the environment, else the local stack's."""
    env = dict(os.environ if environ is None else environ)
    local = broker.admin_settings()
    remote = "F2_MQTT_ADMIN_HOST" in env
    password = env_value(env, "F2_MQTT_ADMIN_PASSWORD", "" if remote else local.password)
    admin = AdminSettings(
        host=env.get("F2_MQTT_ADMIN_HOST", local.host),
        port=int(env.get("F2_MQTT_ADMIN_PORT", local.port)),
        username=env.get("F2_MQTT_ADMIN_USERNAME", OPERATOR_MQTT_USER),
        password=password,
        ca_file=env.get("F2_MQTT_ADMIN_CA_FILE", ""),
    )
    folder = secret_files.secrets_dir(broker.root)
    return DeviceAdminConfig(
        admin=admin,
        material=env.get("F2_DEVICE_SECRETS_DIR", str(folder / "devices")),
        ca_dir=env.get("F2_MQTT_CA_DIR", str(broker.tls_dir)),
        local=not remote,
    )


def _context() -> tuple[Mosquitto, DeviceAdminConfig, DeviceMaterial]:
    broker = Stack().service("mosquitto")
    assert isinstance(broker, Mosquitto)
    config = load_device_admin(broker)
    return broker, config, DeviceMaterial(Path(config.material), Path(config.ca_dir))


def connection_settings(
    broker: Mosquitto,
    config: DeviceAdminConfig,
    material: DeviceMaterial,
    mac: str,
    password: str,
    device_id: int,
) -> dict:
    """What a device (or its provisioning tool) needs to connect: the local stack's listeners,
    or only the broker's host for another broker (its device listeners are its own)."""
    result: dict[str, object] = {
        "mac": mac,
        "device_id": device_id,
        "username": mac,
        "password": password,
        "client_id": mac,
    }
    if config.local:
        result |= {
            "host": load_settings().mqtt_host,
            "port": broker.port,
            "tls_port": broker.tls_port,
            "mtls_port": broker.mtls_port,
        }
    else:
        result["host"] = config.admin.host
    result |= {
        "ca_file": str(material.tls_dir / "ca.crt"),
        "publish": [f"stat/f2-{mac}/#", f"tele/f2-{mac}/#"],
        "subscribe": [f"cmnd/f2-{mac}/#"],
    }
    certs = material.certificate(mac)
    if certs is not None:
        result["cert_file"] = certs.cert_file
        result["key_file"] = certs.key_file
    return result


def _apply_revocations(
    broker: Mosquitto, config: DeviceAdminConfig, material: DeviceMaterial
) -> str:
    """Give the local broker the new revocation list; for another broker, what to do."""
    crl = material.tls_dir / "crl.pem"
    if config.local:
        broker.install_crl()
        broker.reload()
        return "revocation list reloaded by the broker"
    return f"give the broker the revocation list {crl} and reload it (SIGHUP)"


def _print(settings: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(settings, indent=2))
        return
    for key, value in settings.items():
        print(f"{key:<10} {', '.join(value) if isinstance(value, list) else value}")


def cmd_register(args: argparse.Namespace) -> int:
    try:
        mac = device_identity.canonical_mac(args.mac)
        broker, config, material = _context()
        device_id = register_controller(load_settings().params_dsn, mac)
        password = material.password(mac, rotate=args.rotate)
        if args.cert:
            material.issue_certificate(mac)
        with DynsecAdmin(config.admin) as admin:
            device_identity.grant(admin, mac, password)
        material.registered(mac)
    except FAILURES as exc:
        print(f"f2 devices register: {exc}", file=sys.stderr)
        return 1
    _print(connection_settings(broker, config, material, mac, password, device_id), args.json)
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    try:
        mac = device_identity.canonical_mac(args.mac)
        broker, config, material = _context()
        device_id = register_controller(load_settings().params_dsn, mac)
        password = material.password(mac, rotate=True)
        had_cert = material.certificate(mac) is not None
        if had_cert:
            material.issue_certificate(mac, rotate=True)
        with DynsecAdmin(config.admin) as admin:
            device_identity.grant(admin, mac, password)
        note = _apply_revocations(broker, config, material) if had_cert else ""
    except FAILURES as exc:
        print(f"f2 devices rotate: {exc}", file=sys.stderr)
        return 1
    _print(connection_settings(broker, config, material, mac, password, device_id), args.json)
    if note:
        print(f"old certificate revoked: {note}", file=sys.stderr)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        mac = device_identity.canonical_mac(args.mac)
        broker, config, material = _context()
        with DynsecAdmin(config.admin) as admin:
            had = device_identity.revoke(admin, mac)
        revoked_cert = material.forget(mac)
        note = _apply_revocations(broker, config, material) if revoked_cert else ""
    except FAILURES as exc:
        print(f"f2 devices revoke: {exc}", file=sys.stderr)
        return 1
    state = "revoked (its sessions were closed)" if had else "had no identity on the broker"
    print(f"{mac}: {state}" + (f"; certificate revoked, {note}" if note else ""))
    return 0


def cmd_seed_store(args: argparse.Namespace) -> int:
    password = secret_files.read_secret(args.operator_password_file)
    if not password:
        print(
            f"f2 devices seed-store: no password in {args.operator_password_file}", file=sys.stderr
        )
        return 1
    print(json.dumps(operator_store(password), indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    try:
        _broker, config, material = _context()
        with DynsecAdmin(config.admin) as admin:
            granted = device_identity.listed(admin)
    except FAILURES as exc:
        print(f"f2 devices list: {exc}", file=sys.stderr)
        return 1
    denied = [mac for mac in material.revoked() if mac not in granted]
    macs = sorted(set(granted) | set(denied))
    ids = registered_ids(load_settings().params_dsn, macs) if macs else {}
    rows = [
        {
            "mac": mac,
            "access": "granted" if mac in granted else "revoked",
            "certificate": material.certificate(mac) is not None,
            "device_id": ids.get(mac),
        }
        for mac in macs
    ]
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
