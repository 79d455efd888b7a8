"""Device lifecycle against a broker that is not the local stack's: a second Mosquitto started from
``deploy/mosquitto/mosquitto.conf`` (its container paths and ports moved into a temporary folder,
its secrets made the way docs/DEPLOYMENT.md makes them). ``f2 devices register | rotate | revoke |
list`` reach it only through its admin channel, as the operator; the registry rows go to the
shared stack's registry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.security import tls
from ops.security.checks import certificate_refused
from ops.security.mqtt_probe import NOT_AUTHORIZED, connect
from ops.security.secret_files import write_secret
from ops.security.tls import CertFiles
from ops.stack import procs
from ops.stack.services import dynsec_plugin
from schemas.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MAC, CERT_MAC = "0d0d0d0d0d01", "0d0d0d0d0d02"


class DeployBroker:
    """The deploy file's Mosquitto on free loopback ports, with secrets in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.secrets = folder / "secrets"
        self.internal, self.tls_port, self.mtls_port = (free_port() for _ in range(3))
        self.pid: int | None = None

    def prepare(self) -> None:
        secrets, data, tls_dir = self.secrets, self.folder / "data", self.folder / "tls"
        for path in (secrets, data, tls_dir):
            path.mkdir(parents=True)
        write_secret(secrets / "mqtt_pipeline_password", "pipeline-" + "p" * 20)
        write_secret(secrets / "mqtt_operator_password", "operator-" + "o" * 20)
        subprocess.run(
            ["mosquitto_passwd", "-c", "-b", str(secrets / "mqtt_passwd"), "f2-pipeline",
             "pipeline-" + "p" * 20],
            check=True, capture_output=True,
        )  # fmt: skip
        shutil.copy(ROOT / "deploy/mosquitto/acl.example", secrets / "mqtt_acl")
        server = tls.ensure_server_cert(tls_dir)
        shutil.copy(server.ca_file, secrets / "mqtt_ca_crt")
        shutil.copy(server.cert_file, secrets / "mqtt_server_crt")
        shutil.copy(server.key_file, secrets / "mqtt_server_key")
        shutil.copy(tls.ensure_crl(tls_dir), secrets / "mqtt_crl")
        seed = f2("devices", "seed-store", "--operator-password-file",
                  str(secrets / "mqtt_operator_password"))  # fmt: skip
        (secrets / "mqtt_dynsec_seed").write_text(seed.stdout)
        shutil.copy(secrets / "mqtt_dynsec_seed", data / "dynsec.json")  # the compose command
        conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
        conf = conf.replace("/run/secrets/", f"{secrets}/").replace("/mosquitto/data/", f"{data}/")
        conf = conf.replace("/usr/lib/mosquitto_dynamic_security.so", dynsec_plugin())
        for port, mine in ((1883, self.internal), (8883, self.tls_port), (8884, self.mtls_port)):
            conf = conf.replace(f"listener {port}\n", f"listener {mine} 127.0.0.1\n")
        conf = conf.replace("log_dest stdout", "log_dest stderr")
        (self.folder / "mosquitto.conf").write_text(conf)
        os.chmod(self.folder, 0o755)
        subprocess.run(["chown", "-R", "mosquitto", str(self.folder)], check=True)

    def start(self) -> None:
        self.pid = procs.spawn(
            ["mosquitto", "-c", str(self.folder / "mosquitto.conf")],
            self.folder / "mosquitto.log",
            self.folder / "mosquitto.pid",
        )
        assert procs.wait_until(lambda: procs.port_open(self.internal), 15), self.log()

    def reload(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGHUP)

    def stop(self) -> None:
        if self.pid is not None:
            procs.terminate(self.pid)

    def log(self) -> str:
        return (self.folder / "mosquitto.log").read_text(errors="replace")[-3000:]

    def environment(self) -> dict[str, str]:
        """What ``f2 devices`` needs to manage this broker (docs/DEPLOYMENT.md)."""
        return {
            "F2_MQTT_ADMIN_HOST": "127.0.0.1",
            "F2_MQTT_ADMIN_PORT": str(self.internal),
            "F2_MQTT_ADMIN_PASSWORD_FILE": str(self.secrets / "mqtt_operator_password"),
            "F2_DEVICE_SECRETS_DIR": str(self.folder / "devices"),
            "F2_MQTT_CA_DIR": str(self.folder / "tls"),
        }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def f2(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, f"f2 {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def broker(stack: Settings) -> Iterator[DeployBroker]:
    # A folder the broker's own user can reach (pytest's temporary folders are root's only).
    folder = Path(tempfile.mkdtemp(prefix="f2-deploy-broker-"))
    os.chmod(folder, 0o755)
    deployed = DeployBroker(folder)
    try:
        deployed.prepare()
        deployed.start()
        yield deployed
    finally:
        deployed.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_devices_are_managed_through_the_admin_channel(broker: DeployBroker) -> None:
    env = broker.environment()
    ca = str(broker.secrets / "mqtt_ca_crt")
    first = json.loads(f2("devices", "register", MAC, "--json", env=env).stdout)
    again = json.loads(f2("devices", "register", MAC, "--json", env=env).stdout)
    assert first["password"] == again["password"] and first["host"] == "127.0.0.1"
    device, code = connect(
        "127.0.0.1", broker.tls_port, MAC, first["password"], ca_file=ca, client_id=MAC
    )
    assert device is not None, (code, broker.log())
    assert device.publish(f"tele/f2-{MAC}/sensor-mode/J1/sensor-1") < 128
    assert device.publish("tele/f2-0d0d0d0d0d09/sensor-mode/J1/sensor-1") == NOT_AUTHORIZED
    device.close()
    for client_id in ("f2-ingest-s0", "anything"):  # a device never chooses its client id
        intruder, code = connect(
            "127.0.0.1", broker.internal, MAC, first["password"], client_id=client_id
        )
        assert intruder is None and code >= 128, client_id

    rotated = json.loads(f2("devices", "rotate", MAC, "--json", env=env).stdout)
    assert rotated["password"] != first["password"]
    old, code = connect("127.0.0.1", broker.internal, MAC, first["password"], client_id=MAC)
    assert old is None and code == NOT_AUTHORIZED
    new, code = connect("127.0.0.1", broker.internal, MAC, rotated["password"], client_id=MAC)
    assert new is not None, code
    new.close()

    listing = {
        row["mac"]: row for row in json.loads(f2("devices", "list", "--json", env=env).stdout)
    }
    assert listing[MAC]["access"] == "granted"


def test_a_revoked_certificate_needs_the_new_list_and_a_reload(broker: DeployBroker) -> None:
    env = broker.environment()
    issued = json.loads(f2("devices", "register", CERT_MAC, "--cert", "--json", env=env).stdout)
    certs = CertFiles(issued["ca_file"], issued["cert_file"], issued["key_file"])
    kept = broker.folder / "kept"
    kept.mkdir(exist_ok=True)
    old = CertFiles(
        certs.ca_file,
        shutil.copy(certs.cert_file, kept / "client.crt"),
        shutil.copy(certs.key_file, kept / "client.key"),
    )
    assert not certificate_refused("127.0.0.1", broker.mtls_port, certs), broker.log()
    revoked = f2("devices", "revoke", CERT_MAC, env=env).stdout
    assert "revocation list" in revoked and "reload" in revoked
    # What the operator does for a broker that is not the local stack's (docs/DEPLOYMENT.md).
    shutil.copy(broker.folder / "tls" / "crl.pem", broker.secrets / "mqtt_crl")
    broker.reload()
    assert procs.wait_until(
        lambda: certificate_refused("127.0.0.1", broker.mtls_port, old), 10, 0.5
    )
    listing = {
        row["mac"]: row for row in json.loads(f2("devices", "list", "--json", env=env).stdout)
    }
    assert listing[CERT_MAC]["access"] == "revoked"
