"""Broker security on an isolated stack (own ports; its broker is restarted and reloaded here).

The stack lives in a temporary directory on free ports (``tests.stacks``; stopped and deleted after
the module), set up with ``f2 security setup`` as an operator would.
Each protection ``f2 security check`` reports on is also shown to FAIL when it is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis

from ops.security import checks as security_checks
from ops.security.checks import Login
from ops.security.mqtt_probe import NOT_AUTHORIZED, connect
from ops.security.tls import CertFiles
from ops.stack import procs
from ops.stack.local import Stack
from schemas.settings import load_settings
from tests.stacks import isolated_stack

pytestmark = pytest.mark.integration

DEVICE, OTHER = "a1b2c3d4e5f6", "0a1b2c3d4e5f"


def f2(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The ``f2`` CLI against the isolated stack (``secure_stack`` points this process at it)."""
    env = dict(os.environ)
    for name in list(env):
        if name.startswith(("F2_MQTT_", "F2_SIM_", "F2_PARAMS", "F2_TIMESERIES", "F2_REDIS")):
            env.pop(name)
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check and result.returncode != 0:
        pytest.fail(f"f2 {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def secure_stack():
    """The isolated stack after ``f2 security setup``; this process points at it meanwhile."""
    with isolated_stack() as iso, pytest.MonkeyPatch.context() as patch:
        for name, value in iso.env.items():
            patch.setenv(name, value)
        for name in list(os.environ):
            if name.startswith(("F2_MQTT_", "F2_SIM_", "F2_PARAMS", "F2_TIMESERIES", "F2_REDIS")):
                patch.delenv(name)
        f2("stack", "up")
        f2("security", "setup")
        yield Stack(iso.dir)


@pytest.fixture
def broker(secure_stack):
    return secure_stack.service("mosquitto")


def register(mac: str, *flags: str) -> dict:
    return json.loads(f2("devices", "register", mac, "--json", *flags).stdout)


def test_security_check_passes_after_secure_setup(secure_stack) -> None:
    result = f2("security", "check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout and "FAIL" not in result.stdout


def test_denied_publish_is_a_failed_puback_not_authorized(secure_stack) -> None:
    mine, other = register(DEVICE), register(OTHER)
    probe, code = connect(
        "127.0.0.1", mine["port"], mine["username"], mine["password"], client_id=DEVICE
    )
    assert probe is not None, code
    try:
        foreign = f"tele/f2-{other['mac']}/sensor-mode/J1/sensor-1"
        assert probe.publish(foreign) == NOT_AUTHORIZED
        assert probe.publish(f"tele/f2-{DEVICE}/sensor-mode/J1/sensor-1") < 128
        # ``..`` means nothing to MQTT: this stays under the device's own prefix (and is
        # ``bad_topic`` for the decoder, see tests/schemas/test_hostile.py).
        assert probe.publish(f"tele/f2-{DEVICE}/../f2-{OTHER}/sensor-mode/J1/sensor-1") < 128
        assert probe.publish(f"tele/f2-{OTHER}/../f2-{DEVICE}/sensor-mode/J1/x") == NOT_AUTHORIZED
    finally:
        probe.close()


def test_register_is_idempotent_and_writes_the_registry_row(secure_stack) -> None:
    first = register(DEVICE.upper())
    again = register(DEVICE)
    assert first["device_id"] == again["device_id"] and first["password"] == again["password"]
    assert first["tls_port"] == first["port"] + 1
    with psycopg.connect(load_settings().params_dsn) as conn:
        numbers = conn.execute(
            'SELECT c."ConnectorNumber" FROM "Connector" c JOIN "Device" d'
            ' ON d."DeviceId" = c."ControllerId" WHERE d."MacAddress" = %s ORDER BY 1',
            (DEVICE,),
        ).fetchall()
        model = conn.execute(
            'SELECT t."Model" FROM "Device" d JOIN "DeviceTemplate" t USING ("DeviceTemplateId")'
            ' WHERE d."DeviceId" = %s',
            (first["device_id"],),
        ).fetchone()
    assert [n for (n,) in numbers] == [1, 2, 3, 4] and model == ("F2-rev1",)
    listing = json.loads(f2("devices", "list", "--json").stdout)
    assert {"mac": DEVICE, "access": "granted"}.items() <= next(
        row for row in listing if row["mac"] == DEVICE
    ).items()


def test_hostile_mac_is_refused_before_any_sql(secure_stack) -> None:
    result = f2("devices", "register", '\'); DROP TABLE "Device"; --', check=False)
    assert result.returncode == 1 and "not a MAC" in result.stderr
    with psycopg.connect(load_settings().params_dsn) as conn:
        assert conn.execute('SELECT count(*) FROM "Device"').fetchone()[0] > 0


def test_revoke_disconnects_a_password_session_at_once(secure_stack) -> None:
    settings = register(DEVICE, "--rotate")
    assert settings["client_id"] == DEVICE
    probe, _ = connect(
        "127.0.0.1", settings["port"], DEVICE, settings["password"], client_id=DEVICE
    )
    assert probe is not None
    f2("devices", "revoke", DEVICE)
    assert probe.wait_disconnect(5.0), "revoking did not close the session"
    again, code = connect(
        "127.0.0.1", settings["port"], DEVICE, settings["password"], client_id=DEVICE
    )
    assert again is None and code == NOT_AUTHORIZED
    restored = register(DEVICE)
    assert restored["password"] != settings["password"]
    back, code = connect(
        "127.0.0.1", settings["port"], DEVICE, restored["password"], client_id=DEVICE
    )
    assert back is not None, code
    back.close()


def test_a_device_may_use_no_other_client_id(secure_stack) -> None:
    settings = register(DEVICE)
    for client_id in ("f2-ingest-s0", "f2-probe-x", OTHER, ""):
        probe, code = connect(
            "127.0.0.1", settings["port"], DEVICE, settings["password"], client_id=client_id
        )
        assert probe is None and code >= 128, (client_id, code)


def test_client_certificate_identity_is_the_mac_and_revoke_refuses_it(broker) -> None:
    settings = register(OTHER, "--cert")
    certs = CertFiles(settings["ca_file"], settings["cert_file"], settings["key_file"])
    assert Path(settings["key_file"]).stat().st_mode & 0o077 == 0
    old = Path(tempfile.mkdtemp())
    old_certs = CertFiles(
        certs.ca_file,
        shutil.copy(certs.cert_file, old / "client.crt"),
        shutil.copy(certs.key_file, old / "client.key"),
    )
    probe, code = connect(
        "127.0.0.1", settings["mtls_port"], None, None, certs, client_id="f2-ingest-s0"
    )
    assert probe is not None, code
    try:
        assert probe.publish(f"stat/f2-{OTHER}/alarm-mode/J1/siren-1") < 128
        assert probe.publish(f"stat/f2-{DEVICE}/alarm-mode/J1/siren-1") == NOT_AUTHORIZED
        f2("devices", "revoke", OTHER)
        assert probe.wait_disconnect(5.0), "revoking did not close the certificate session"
    finally:
        probe.close()
    assert security_checks.certificate_refused("127.0.0.1", settings["mtls_port"], old_certs)
    again = register(OTHER, "--cert")
    assert again["cert_file"] and again["password"] != settings["password"]
    new_certs = CertFiles(again["ca_file"], again["cert_file"], again["key_file"])
    fresh, code = connect("127.0.0.1", settings["mtls_port"], None, None, new_certs)
    assert fresh is not None, code
    fresh.close()
    shutil.rmtree(old, ignore_errors=True)


def test_tls_login_with_secret_files_only(secure_stack) -> None:
    """Programs read every secret from ``*_FILE`` variables: connect with those alone."""
    exports = f2("security", "env").stdout.split()
    files = dict(line.split("=", 1) for line in exports if "=" in line)
    environ = {k: v.strip("'") for k, v in files.items()}
    settings = load_settings({**environ, "F2_STACK_DIR": "/nonexistent"})
    broker = secure_stack.service("mosquitto")
    probe, code = connect(
        "127.0.0.1",
        broker.tls_port,
        settings.mqtt_username,
        settings.mqtt_password,
        ca_file=str(broker.tls_dir / "ca.crt"),
    )
    assert probe is not None, code
    probe.close()
    with psycopg.connect(settings.params_dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert redis.Redis.from_url(settings.redis_url).ping()


def test_oversized_message_is_refused_by_the_broker(secure_stack) -> None:
    settings = load_settings()
    watcher, _ = connect(
        "127.0.0.1", settings.mqtt_port, settings.mqtt_username, settings.mqtt_password
    )
    sender, _ = connect(
        "127.0.0.1", settings.mqtt_port, settings.sim_username, settings.sim_password
    )
    assert watcher is not None and sender is not None
    try:
        topic = f"tele/f2-{DEVICE}/sensor-mode/J1/sensor-1"
        watcher.subscribe(topic)
        # Mosquitto 2.0.11 closes the session of a client that sends more than
        # message_size_limit (262144): no PUBACK, the message is never delivered.
        sender.client.publish(topic, b"x" * 262_145, qos=1)
        assert sender.wait_disconnect(5.0)
        assert sender.acks == {}
        assert watcher.wait_messages(1, 1.0) == []
    finally:
        watcher.close()
        sender.close()


# --- each check fails when its protection is removed -------------------------------------------


@pytest.fixture(scope="module")
def open_broker(tmp_path_factory):
    """A Mosquitto with none of the protections: anonymous, no password file, no ACL."""
    folder = tmp_path_factory.mktemp("open-broker")
    os.chmod(folder, 0o755)
    port = _free_port()
    (folder / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
    )
    pid = procs.spawn(
        ["mosquitto", "-c", str(folder / "mosquitto.conf")], folder / "log", folder / "pid"
    )
    assert procs.wait_until(lambda: procs.port_open(port), 10)
    yield port
    procs.terminate(pid)


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def test_checks_fail_on_an_open_broker(secure_stack, open_broker) -> None:
    port = open_broker
    a, b = Login(DEVICE, "pw-a"), Login(OTHER, "pw-b")
    assert not security_checks.anonymous_rejected("127.0.0.1", {port: None}).ok
    assert not security_checks.wrong_password_rejected("127.0.0.1", port, ["f2-pipeline"]).ok
    reader = Login("f2-pipeline", "x")
    assert not security_checks.device_cannot_speak_for_another("127.0.0.1", port, a, b, reader).ok
    operator = Login("f2-operator", "x")
    assert not security_checks.device_cannot_read_others_commands(
        "127.0.0.1", port, a, b, operator
    ).ok
    ca_file = str(secure_stack.root / "secrets" / "tls" / "ca.crt")
    assert not security_checks.tls_listeners("127.0.0.1", port, port, ca_file, reader).ok
    assert not security_checks.client_ids_bound("127.0.0.1", port, reader, a).ok
    assert not security_checks.password_revocation_holds("127.0.0.1", port, a, lambda: None).ok


def test_check_cli_fails_when_the_broker_allows_anonymous(secure_stack, broker) -> None:
    secure_stack.stop("mosquitto")
    conf = broker.dir / "mosquitto.conf"
    conf.write_text(conf.read_text().replace("allow_anonymous false", "allow_anonymous true"))
    procs.spawn(broker.argv(), broker.log_file, broker.pid_file)
    try:
        assert procs.wait_until(broker.ready, 20)
        result = f2("security", "check", check=False)
        assert result.returncode == 1
        assert "FAIL  anonymous rejected" in result.stdout
    finally:
        secure_stack.stop("mosquitto")
        secure_stack.start("mosquitto")
    assert "allow_anonymous false" in conf.read_text()


def test_default_logins_are_detected(open_broker, tmp_path) -> None:
    port = _free_port()
    (tmp_path / "redis.conf").write_text(f'bind 127.0.0.1\nport {port}\nsave ""\n')
    pid = procs.spawn(
        ["redis-server", str(tmp_path / "redis.conf")], tmp_path / "log", tmp_path / "pid"
    )
    try:
        assert procs.wait_until(lambda: procs.port_open(port), 10)
        pg_port = load_settings().params_dsn.split(":")[-1].split("/")[0]
        accepted = security_checks.default_logins_accepted(
            ("127.0.0.1", open_broker, ["f2-pipeline"]), (int(pg_port), ["postgres"]), port
        )
    finally:
        procs.terminate(pid)
    assert "mqtt f2-pipeline/f2-pipeline" in accepted
    assert "redis password None" in accepted
    assert not security_checks.no_default_passwords({"x": "y" * 32}, accepted).ok


def test_loopback_check_fails_for_a_wildcard_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = security_checks.loopback_only({"redis": port}, security_checks.read_tcp_tables())
    assert not result.ok and "0.0.0.0" in result.detail


def test_secrets_check_fails_for_a_world_readable_secret(secure_stack) -> None:
    secret = secure_stack.root / "secrets" / "mqtt-pipeline-password"
    secret.chmod(0o644)
    try:
        assert not security_checks.secrets_private([secret.parent]).ok
    finally:
        secret.chmod(0o600)
    assert security_checks.secrets_private([secret.parent]).ok


HOSTILE = [
    '\'); DROP TABLE "Device"; --',
    "%s %(x)s {0} $1 $$tag$$",
    "\\' OR 1=1 -- \\x00",
    'Robert"); DELETE FROM "DataPoint";--',
]


def test_sql_metacharacters_in_registry_strings_round_trip(secure_stack) -> None:
    """Labels, units, models and names full of SQL metacharacters are plain data end to end."""
    from connectors.registry_pg import load_controller
    from schemas.decode import decode_message
    from schemas.encode import frame_hex, modbus_frame
    from schemas.records import RawMessage, Reading

    mac = "5ec0de5ec0de"
    dsn = load_settings().params_dsn
    register(mac)
    with psycopg.connect(dsn) as conn:
        counts = conn.execute('SELECT count(*) FROM "Device"').fetchone()
        type_id = conn.execute('SELECT "DeviceTypeId" FROM "DeviceType" LIMIT 1').fetchone()[0]
        icon_id = conn.execute('SELECT "DataPointIconId" FROM "DataPointIcon" LIMIT 1').fetchone()[
            0
        ]
        template = conn.execute(
            'INSERT INTO "DeviceTemplate" ("Name", "Model", "DeviceTypeId") VALUES (%s, %s, %s)'
            ' ON CONFLICT ("Model") DO UPDATE SET "Name" = EXCLUDED."Name"'
            ' RETURNING "DeviceTemplateId"',
            (HOSTILE[0], HOSTILE[1], type_id),
        ).fetchone()[0]
        conn.execute('DELETE FROM "DataPoint" WHERE "DeviceTemplateId" = %s', (template,))
        for offset, text in enumerate(HOSTILE):
            conn.execute(
                'INSERT INTO "DataPoint" ("DeviceTemplateId", "Label", "DataPointIconId",'
                ' "DataFormat", "DataEncoding", "Offset", "Length", "Prepend", "Append")'
                " VALUES (%s, %s, %s, %s, 'Uint8', %s, 1, %s, %s)",
                (template, text, icon_id, text, offset, text, f" {text} "),
            )
        sensor = conn.execute(
            'INSERT INTO "Device" ("DeviceName", "DeviceTemplateId", "ClaimingCode",'
            ' "SerialNumber") VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING "DeviceId"',
            (HOSTILE[2], template, HOSTILE[3], f"{mac}-hostile"),
        ).fetchone()
        if sensor is None:
            sensor = conn.execute(
                'SELECT "DeviceId" FROM "Device" WHERE "SerialNumber" = %s', (f"{mac}-hostile",)
            ).fetchone()
        conn.execute(
            'INSERT INTO "Pin" ("ConnectorId", "Position", "DeviceId")'
            ' SELECT c."ConnectorId", 1, %s FROM "Connector" c JOIN "Device" d'
            ' ON d."DeviceId" = c."ControllerId" WHERE d."MacAddress" = %s'
            ' AND c."ConnectorNumber" = 1 ON CONFLICT DO NOTHING',
            (sensor[0], mac),
        )
        conn.commit()
        entry = load_controller(conn, mac)
        assert conn.execute('SELECT count(*) FROM "Device"').fetchone()[0] >= counts[0]
    assert entry is not None
    points = entry.sensor_at(1, 1).datapoints
    assert [p.label for p in points] == HOSTILE
    assert [p.unit for p in points] == HOSTILE and entry.sensor_at(1, 1).model == HOSTILE[1]
    frame = frame_hex(modbus_frame(1, 3, bytes([1, 2, 3, 4])))
    body = json.dumps({"timestamp": "2024-06-01 10:00:00.000000", "data": frame}).encode()
    readings = [
        item
        for item in decode_message(
            RawMessage(f"tele/f2-{mac}/sensor-mode/J1/sensor-1", body), entry
        )
        if isinstance(item, Reading)
    ]
    assert sorted(r.label for r in readings) == sorted(HOSTILE)


def test_database_roles_check_fails_when_a_role_gains_a_privilege(secure_stack) -> None:
    """The flows log in as f2_pipeline, the health API as f2_reader; the check proves each can do
    its job and no more, and fails for the owner or for a role given a privilege too many."""
    from schemas.settings import PARAMS_DB, TIMESERIES_DB, local_dsn

    info = secure_stack.info
    writer = local_dsn(info, TIMESERIES_DB, "f2_pipeline", info.db_pipeline_password)
    reader = local_dsn(info, TIMESERIES_DB, "f2_reader", info.db_reader_password)
    registry = local_dsn(info, PARAMS_DB, "f2_pipeline", info.db_pipeline_password)
    assert security_checks.database_roles(writer, reader, registry).ok
    owner = local_dsn(info, TIMESERIES_DB)
    result = security_checks.database_roles(owner, reader, registry)
    assert not result.ok and "DROP TABLE readings" in result.detail
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("GRANT DELETE ON readings TO f2_pipeline")
        conn.execute("GRANT SELECT ON device_events TO f2_reader")
        try:
            result = security_checks.database_roles(writer, reader, registry)
        finally:
            conn.execute("REVOKE DELETE ON readings FROM f2_pipeline")
            conn.execute("REVOKE SELECT ON device_events FROM f2_reader")
    assert not result.ok
    assert "DELETE FROM readings" in result.detail and "device_events" in result.detail
    with pytest.raises(psycopg.OperationalError):  # a wrong password is refused
        psycopg.connect(local_dsn(info, TIMESERIES_DB, "f2_reader", "not-the-password")).close()
    assert "PASS  database roles" in f2("security", "check", check=False).stdout


def test_simulator_check_fails_when_devices_cannot_log_in_or_messages_go_missing(
    secure_stack, tmp_path
) -> None:
    from ops.security.audit import SIMULATOR_CHECK_SEED, simulator_macs

    settings = load_settings()
    reader = Login(settings.mqtt_username, settings.mqtt_password)
    macs = simulator_macs()
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({mac: "not-the-password" for mac in macs}))

    def simulate(*extra: str):
        def run(report: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    *(sys.executable, "-m", "simulator", "--controllers", str(len(macs))),
                    *("--seed", str(SIMULATOR_CHECK_SEED), "--duration", "2"),
                    *("--interval", "0.5", "--report", str(report), *extra),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        return run

    host, port = settings.mqtt_host, settings.mqtt_port
    refused = security_checks.simulator_publishes(
        host, port, reader, macs, simulate("--credentials-file", str(credentials)), "devices"
    )
    assert not refused.ok and "exit code" in refused.detail
    unseen = security_checks.simulator_publishes(
        host, port, reader, ["0a0a0a0a0a0a"], simulate(), "load mode"
    )
    assert not unseen.ok and "0 seen" in unseen.detail
    assert security_checks.simulator_publishes(host, port, reader, macs, simulate(), "load").ok
