"""The security of the local stack: its secrets as files, and ``f2 security check``.

:func:`write_secrets` writes every secret of the stack into the secrets directory (0700/0600;
see :mod:`ops.security.secret_files`), creating what is missing (operator password, reader hash
key). :func:`run_checks` runs every check of :mod:`ops.security.checks` against the running stack
with temporary probe devices (removed afterwards): anonymous and wrong logins, device isolation,
TLS, client ids bound to identities, revocation by password and certificate, re-registration,
the simulator in both modes, database roles, secrets' modes, default passwords, loopback, the
deploy files.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec

from ops.security import device_identity, secret_files
from ops.security.checks import (
    CheckResult,
    Login,
    anonymous_rejected,
    certificate_revocation_holds,
    client_ids_bound,
    database_roles,
    default_logins_accepted,
    deploy_files_safe,
    device_cannot_read_others_commands,
    device_cannot_speak_for_another,
    guarded,
    loopback_only,
    no_default_passwords,
    password_revocation_holds,
    read_tcp_tables,
    reregistration_is_new,
    secrets_private,
    simulator_publishes,
    tls_listeners,
    wrong_password_rejected,
)
from ops.security.device_identity import DeviceMaterial
from ops.security.mqtt_admin import DynsecAdmin
from ops.security.tls import CertFiles
from ops.stack.local import Stack
from ops.stack.services import OPERATOR_MQTT_USER, OPERATOR_PASSWORD_FILE, Mosquitto
from schemas.settings import (
    DB_USER,
    PARAMS_DB,
    PIPELINE_DB_ROLE,
    PIPELINE_MQTT_USER,
    READER_DB_ROLE,
    SIM_MQTT_USER,
    TIMESERIES_DB,
    environment_secrets,
    load_settings,
    local_dsn,
    project_root,
)
from simulator.fleet import generate_fleet

# Reserved identities the check creates for itself and removes afterwards.
PROBE_MACS = ("f2f2f2f2f2a1", "f2f2f2f2f2b2", "f2f2f2f2f2c3")
# The fleet the simulator checks run (its device identities are removed afterwards).
SIMULATOR_CHECK_SEED = 0xF25EC
SIMULATOR_CHECK_CONTROLLERS = 2
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


def broker_of(stack: Stack) -> Mosquitto:
    broker = stack.service("mosquitto")
    assert isinstance(broker, Mosquitto)
    return broker


def write_secrets(stack: Stack) -> dict[str, Path]:
    """Every secret of the stack as a file (0600) in the secrets directory; their paths."""
    folder = secret_files.private_dir(secret_files.secrets_dir(stack.root, stack.settings))
    settings = load_settings({"F2_STACK_DIR": str(stack.root)})  # the stack's own values
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


def _probe_device(
    admin: DynsecAdmin, material: DeviceMaterial, mac: str, cert: bool = False
) -> Login:
    """A temporary device identity for the checks (new password; a certificate with ``cert``)."""
    password = material.password(mac, rotate=True)
    if cert:
        material.issue_certificate(mac)
    device_identity.grant(admin, mac, password)
    return Login(mac, password)


def _revocation_checks(
    broker: Mosquitto, host: str, admin: DynsecAdmin, material: DeviceMaterial, owner: Login
) -> list[CheckResult]:
    """Client-id binding, revocation (password, certificate) and re-registration, on a probe
    device with a password and a certificate."""
    mac = PROBE_MACS[2]
    device = _probe_device(admin, material, mac, cert=True)
    issued = material.certificate(mac)
    assert issued is not None
    kept = Path(tempfile.mkdtemp(prefix="f2-old-cert-"))  # the old files, after the revocation
    certs = CertFiles(
        issued.ca_file,
        shutil.copy(issued.cert_file, kept / "client.crt"),
        shutil.copy(issued.key_file, kept / "client.key"),
    )

    def revoke_certificate() -> None:
        material.revoke_certificate(mac)
        broker.install_crl()
        broker.reload()

    def register_again() -> tuple[Login, CertFiles]:
        material.forget(mac)
        again = _probe_device(admin, material, mac, cert=True)
        new_certs = material.certificate(mac)
        assert new_certs is not None
        return again, new_certs

    bound = guarded(
        "client ids bound to identities",
        lambda: client_ids_bound(host, broker.port, owner, device, broker.mtls_port, certs),
    )
    by_cert = guarded(
        "revocation holds (certificate)",
        lambda: certificate_revocation_holds(host, broker.mtls_port, certs, revoke_certificate),
    )
    by_password = guarded(
        "revocation holds (password)",
        lambda: password_revocation_holds(
            host, broker.port, device, lambda: device_identity.revoke(admin, mac)
        ),
    )
    again = guarded(
        "re-registration revives nothing",
        lambda: reregistration_is_new(
            host, broker.port, broker.mtls_port, device, certs, register_again
        ),
    )
    shutil.rmtree(kept, ignore_errors=True)
    return [bound, by_password, by_cert, again]


def simulator_macs() -> list[str]:
    """The MACs of the simulator checks' fleet."""
    return generate_fleet(SIMULATOR_CHECK_CONTROLLERS, SIMULATOR_CHECK_SEED).macs


def _simulator_checks(
    admin: DynsecAdmin, material: DeviceMaterial, host: str, port: int, pipeline: Login
) -> list[CheckResult]:
    """The simulator under the protections: in load mode (the test rig's user) and with
    ``--credentials-file`` (each controller its own device identity, bound client id)."""
    macs = simulator_macs()
    argv = [
        *(sys.executable, "-m", "simulator", "--controllers", str(SIMULATOR_CHECK_CONTROLLERS)),
        *("--seed", str(SIMULATOR_CHECK_SEED), "--duration", "3", "--interval", "0.5"),
    ]

    def run(extra: list[str]) -> Callable[[Path], subprocess.CompletedProcess[str]]:
        def simulate(report: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*argv, "--report", str(report), *extra],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=project_root(),
                check=False,
            )

        return simulate

    results = [
        guarded(
            "simulator works (load mode)",
            lambda: simulator_publishes(host, port, pipeline, macs, run([]), "load mode"),
        )
    ]
    logins = {mac: _probe_device(admin, material, mac).password for mac in macs}
    with tempfile.TemporaryDirectory(prefix="f2-security-sim-") as folder:
        credentials = Path(folder) / "credentials.json"
        credentials.write_bytes(msgspec.json.encode(logins))
        credentials.chmod(0o600)
        results.append(
            guarded(
                "simulator works (device credentials)",
                lambda: simulator_publishes(
                    host,
                    port,
                    pipeline,
                    macs,
                    run(["--credentials-file", str(credentials)]),
                    "device credentials",
                ),
            )
        )
    return results


def run_checks(stack: Stack) -> list[CheckResult]:
    """Every check against the stack; temporary probe devices are removed afterwards."""
    broker = broker_of(stack)
    settings = stack.config.connections
    host = settings.mqtt_host
    ca_file = str(broker.tls_dir / "ca.crt")
    folder = secret_files.secrets_dir(stack.root, stack.settings)
    operator = secret_files.read_secret(folder / OPERATOR_PASSWORD_FILE) or ""
    pipeline = Login(settings.mqtt_username, settings.mqtt_password)
    material = DeviceMaterial(folder / "devices", broker.tls_dir)
    with DynsecAdmin(broker.admin_settings()) as admin:
        try:
            first, second = (_probe_device(admin, material, mac) for mac in PROBE_MACS[:2])
            results = _live_checks(broker, host, ca_file, pipeline, first, second, operator)
            results += _revocation_checks(broker, host, admin, material, pipeline)
            results += _simulator_checks(admin, material, host, broker.port, pipeline)
        finally:
            for mac in (*PROBE_MACS, *simulator_macs()):
                device_identity.revoke(admin, mac)
                material.forget(mac)
                material.registered(mac)  # probes leave no trace in the revoked list
            broker.install_crl()
            broker.reload()
    info = stack.info
    results.append(
        guarded(
            "database roles",
            lambda: database_roles(
                local_dsn(info, TIMESERIES_DB, PIPELINE_DB_ROLE, info.db_pipeline_password),
                local_dsn(info, TIMESERIES_DB, READER_DB_ROLE, info.db_reader_password),
                local_dsn(info, PARAMS_DB, PIPELINE_DB_ROLE, info.db_pipeline_password),
            ),
        )
    )
    strength = {
        "db password": info.db_password,
        "pipeline mqtt password": info.pipeline_mqtt_password,
        "sim mqtt password": info.sim_mqtt_password,
        "redis password": info.redis_password,
        "db pipeline password": info.db_pipeline_password,
        "db reader password": info.db_reader_password,
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
                    broker.dir / "dynsec.json",
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
