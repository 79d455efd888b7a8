"""``f2 security setup | restart | check | env``: secrets, TLS and the broker's access rules.

``setup`` (``make secure-setup``) writes every secret of the stack into the secrets directory
(0700/0600; see ``ops.security.secret_files``), creates what is missing (operator password, reader
hash key, CA and server certificate) and restarts the broker with them. ``restart`` (``make
restart-secure``) only restarts the broker. ``check`` (``make security-check``) prints PASS/FAIL
per check and exits 1 if any failed. ``env`` prints ``*_FILE`` exports so programs read their
secrets from files instead of the environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ops.security import secret_files
from ops.security.audit import (
    SECRET_FILES,
    broker_of,
    restart_broker,
    run_checks,
    write_secrets,
)
from ops.security.mqtt_admin import AdminError
from ops.stack.local import Stack
from ops.stack.services import OPERATOR_MQTT_USER, OPERATOR_PASSWORD_FILE, ServiceError
from schemas.settings import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    security = subparsers.add_parser("security", help="secrets, TLS, access checks")
    actions = security.add_subparsers(dest="action", required=True)
    actions.add_parser(
        "setup", help="write secrets + certificates, restart the broker"
    ).set_defaults(func=cmd_setup)
    actions.add_parser("restart", help="restart the broker with the current secrets").set_defaults(
        func=cmd_restart
    )
    check = actions.add_parser("check", help="PASS/FAIL per protection; exit 1 on any FAIL")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_check)
    actions.add_parser("env", help="export lines: *_FILE variables for every secret").set_defaults(
        func=cmd_env
    )


def cmd_setup(args: argparse.Namespace, config: Config) -> int:
    stack = Stack(config=config)
    try:
        paths = write_secrets(stack)
        broker = broker_of(stack)
        restart_broker(stack)
    except (ServiceError, OSError) as exc:
        print(f"f2 security setup: {exc}", file=sys.stderr)
        return 1
    print(f"secrets in {secret_files.secrets_dir(stack.root, stack.settings)} (0700; files 0600)")
    for variable, path in paths.items():
        print(f"  {variable}_FILE={path}")
    print(f"  operator user {OPERATOR_MQTT_USER}: {broker.secrets / OPERATOR_PASSWORD_FILE}")
    print(f"  CA {broker.tls_dir / 'ca.crt'} (key stays in {broker.tls_dir})")
    print(
        f"broker restarted: plain {broker.port}, TLS {broker.tls_port}, mTLS {broker.mtls_port} "
        "(127.0.0.1); next: make security-check"
    )
    return 0


def cmd_restart(args: argparse.Namespace, config: Config) -> int:
    stack = Stack(config=config)
    try:
        restart_broker(stack)
    except ServiceError as exc:
        print(f"f2 security restart: {exc}", file=sys.stderr)
        return 1
    print("mosquitto restarted with the current password file, ACL and certificates")
    return 0


def cmd_env(args: argparse.Namespace, config: Config) -> int:
    folder = secret_files.secrets_dir(Path(config.connections.stack_dir), config.stack)
    for variable, name in SECRET_FILES.items():
        if (folder / name).exists():
            print(f"export {variable}_FILE='{folder / name}'")
    return 0


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    try:
        results = run_checks(Stack(config=config))
    except (ServiceError, AdminError) as exc:
        print(f"f2 security check: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{"name": r.name, "ok": r.ok, "detail": r.detail} for r in results]))
    else:
        for result in results:
            print(f"{'PASS' if result.ok else 'FAIL'}  {result.name}: {result.detail}")
        failed = sum(not r.ok for r in results)
        print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if any(not r.ok for r in results) else 0
