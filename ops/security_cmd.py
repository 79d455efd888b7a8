"""``f2 security setup | restart | check | env``: secrets, TLS and the broker's access rules.

``setup`` (``make secure-setup``) writes every secret of the stack into the secrets directory
(0700/0600; see ``ops.secret_files``), creates what is missing (operator password, reader hash key,
CA and server certificate) and restarts the broker with them. ``restart`` (``make
restart-secure``) only restarts the broker. ``check`` (``make security-check``) prints PASS/FAIL
per check and exits 1 if any failed. ``env`` prints ``*_FILE`` exports so programs read their
secrets from files instead of the environment.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path

from ops import device_identity, secret_files
from ops.security_checks import (
    CheckResult,
    Login,
    anonymous_rejected,
    default_logins_accepted,
    deploy_files_safe,
    device_cannot_read_others_commands,
    device_cannot_speak_for_another,
    environment_secrets,
    guarded,
    loopback_only,
    no_default_passwords,
    read_tcp_tables,
    secrets_private,
    tls_listeners,
    wrong_password_rejected,
)
from ops.services import OPERATOR_MQTT_USER, OPERATOR_PASSWORD_FILE, Mosquitto, ServiceError
from ops.stack import Stack
from schemas.settings import (
    DB_USER,
    PIPELINE_MQTT_USER,
    SIM_MQTT_USER,
    load_settings,
    project_root,
)

# Reserved identities the check creates for itself and removes afterwards.
PROBE_MACS = ("f2f2f2f2f2a1", "f2f2f2f2f2b2")
READER_KEY_FILE = "reader-hash-key"
# variable -> secret file holding its value
SECRET_FILES = {
    "F2_MQTT_PASSWORD": "mqtt-pipeline-password",
    "F2_SIM_PASSWORD": "mqtt-sim-password",
    "F2_PARAMS_DSN": "params-dsn",
    "F2_TIMESERIES_DSN": "timeseries-dsn",
    "F2_REDIS_URL": "redis-url",
    "F2_READER_HASH_KEY": READER_KEY_FILE,
}


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


def _broker(stack: Stack) -> Mosquitto:
    broker = stack.service("mosquitto")
    assert isinstance(broker, Mosquitto)
    return broker


def write_secrets(stack: Stack) -> dict[str, Path]:
    """Every secret of the stack as a file (0600) in the secrets directory; their paths."""
    folder = secret_files.private_dir(secret_files.secrets_dir(stack.root))
    settings = load_settings()
    values = {
        "F2_MQTT_PASSWORD": settings.mqtt_password,
        "F2_SIM_PASSWORD": settings.sim_password,
        "F2_PARAMS_DSN": settings.params_dsn,
        "F2_TIMESERIES_DSN": settings.timeseries_dsn,
        "F2_REDIS_URL": settings.redis_url,
    }
    paths = {}
    for variable, name in SECRET_FILES.items():
        path = folder / name
        if variable in values:
            if secret_files.read_secret(path) != values[variable]:
                secret_files.write_secret(path, values[variable])
        else:
            secret_files.ensure_secret(path, secrets.token_hex(32))
        paths[variable] = path
    secret_files.ensure_secret(folder / OPERATOR_PASSWORD_FILE)
    (stack.root / "stack.json").chmod(0o600)
    return paths


def restart_broker(stack: Stack) -> None:
    stack.stop("mosquitto")
    stack.start("mosquitto")


def cmd_setup(args: argparse.Namespace) -> int:
    stack = Stack()
    try:
        paths = write_secrets(stack)
        broker = _broker(stack)
        restart_broker(stack)
    except (ServiceError, OSError) as exc:
        print(f"f2 security setup: {exc}", file=sys.stderr)
        return 1
    print(f"secrets in {secret_files.secrets_dir(stack.root)} (0700; files 0600)")
    for variable, path in paths.items():
        print(f"  {variable}_FILE={path}")
    print(f"  operator user {OPERATOR_MQTT_USER}: {broker.secrets / OPERATOR_PASSWORD_FILE}")
    print(f"  CA {broker.tls_dir / 'ca.crt'} (key stays in {broker.tls_dir})")
    print(
        f"broker restarted: plain {broker.port}, TLS {broker.tls_port}, mTLS {broker.mtls_port} "
        "(127.0.0.1); next: make security-check"
    )
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    stack = Stack()
    try:
        restart_broker(stack)
    except ServiceError as exc:
        print(f"f2 security restart: {exc}", file=sys.stderr)
        return 1
    print("mosquitto restarted with the current password file, ACL and certificates")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    folder = secret_files.secrets_dir(Stack().root)
    for variable, name in SECRET_FILES.items():
        if (folder / name).exists():
            print(f"export {variable}_FILE='{folder / name}'")
    return 0


def run_checks(stack: Stack) -> list[CheckResult]:
    """Every check against the stack; temporary probe devices are removed afterwards."""
    broker = _broker(stack)
    settings = load_settings()
    host = settings.mqtt_host
    ca_file = str(broker.tls_dir / "ca.crt")
    folder = secret_files.secrets_dir(stack.root)
    operator = secret_files.read_secret(folder / OPERATOR_PASSWORD_FILE) or ""
    pipeline = Login(settings.mqtt_username, settings.mqtt_password)
    try:
        first, second = (
            Login(mac, device_identity.grant(broker, mac, rotate=True, reload=False))
            for mac in PROBE_MACS
        )
        broker.reload()
        results = _live_checks(broker, host, ca_file, pipeline, first, second, operator)
    finally:
        for mac in PROBE_MACS:
            device_identity.forget(broker, mac, reload=False)
        broker.reload()
    info = stack.info
    strength = {
        "db password": info.db_password,
        "pipeline mqtt password": info.pipeline_mqtt_password,
        "sim mqtt password": info.sim_mqtt_password,
        "redis password": info.redis_password,
        "operator mqtt password": operator,
        **environment_secrets(),
    }
    users = [PIPELINE_MQTT_USER, SIM_MQTT_USER, OPERATOR_MQTT_USER]
    root = project_root()
    results += [
        guarded(
            "secrets not world-readable",
            lambda: secrets_private(
                [
                    stack.root / "stack.json",
                    folder,
                    broker.dir / "passwd",
                    broker.dir / "acl",
                    broker.dir / "devices.passwd",
                    broker.dir / "tls",
                    stack.root / "redis" / "redis.conf",
                ]
            ),
        ),
        guarded(
            "no default passwords",
            lambda: no_default_passwords(
                strength,
                default_logins_accepted(
                    (host, broker.port, users),
                    (info.postgres_port, ["postgres", DB_USER]),
                    info.redis_port,
                ),
            ),
        ),
        guarded(
            "services on loopback only",
            lambda: loopback_only(
                {
                    "postgres": info.postgres_port,
                    "redis": info.redis_port,
                    "kafka": info.kafka_port,
                    "mqtt": broker.port,
                    "mqtt-tls": broker.tls_port,
                    "mqtt-mtls": broker.mtls_port,
                },
                read_tcp_tables(),
            ),
        ),
        guarded(
            "deploy files",
            lambda: deploy_files_safe((root or Path.cwd()) / "deploy"),
        ),
    ]
    return results


def _live_checks(
    broker: Mosquitto,
    host: str,
    ca_file: str,
    pipeline: Login,
    first: Login,
    second: Login,
    operator_password: str,
) -> list[CheckResult]:
    port = broker.port
    operator = Login(OPERATOR_MQTT_USER, operator_password)
    users = [PIPELINE_MQTT_USER, SIM_MQTT_USER, OPERATOR_MQTT_USER, first.username]
    return [
        guarded(
            "anonymous rejected",
            lambda: anonymous_rejected(host, {port: None, broker.tls_port: ca_file}),
        ),
        guarded("wrong password rejected", lambda: wrong_password_rejected(host, port, users)),
        guarded(
            "device cannot publish for another",
            lambda: device_cannot_speak_for_another(host, port, first, second, pipeline),
        ),
        guarded(
            "device cannot read others' commands",
            lambda: device_cannot_read_others_commands(host, port, first, second, operator),
        ),
        guarded(
            "tls listeners",
            lambda: tls_listeners(host, broker.tls_port, broker.mtls_port, ca_file, pipeline),
        ),
    ]


def cmd_check(args: argparse.Namespace) -> int:
    try:
        results = run_checks(Stack())
    except ServiceError as exc:
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
