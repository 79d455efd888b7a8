"""Device identities on the broker: grant (password, optional client certificate), revoke, list.

A device's MQTT username is its MAC. Its password is kept in
``<secrets>/devices/<mac>/password`` (so registering again prints the same settings) and its hash
in the broker's ``devices.passwd``; a client certificate (CN = MAC) in ``client.crt``/``.key``
beside it. Every change regenerates the broker's password file and ACL and sends it SIGHUP:
access starts or ends at once, without a restart.

What SIGHUP does on Mosquitto 2.0.11 (verified by tests/integration/test_security_broker.py):
a connected password client whose password is gone is disconnected at once and cannot log in
again; a connected certificate client stays connected, but the ``topic deny #`` entry denies
every publish (PUBACK 135) and delivery from then on, and it cannot reconnect usefully either.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ops import device_access, secret_files, tls
from ops.services import Mosquitto
from ops.tls import CertFiles

PASSWORD_FILE = "password"


def device_dir(broker: Mosquitto, mac: str) -> Path:
    """Where a device's password and certificate are kept."""
    return broker.secrets / "devices" / mac


def grant(broker: Mosquitto, mac: str, rotate: bool = False, reload: bool = True) -> str:
    """Give ``mac`` MQTT access (lifting a revocation); its password (new if ``rotate``)."""
    secret_files.private_dir(broker.secrets / "devices")
    path = device_dir(broker, mac) / PASSWORD_FILE
    if rotate:
        path.unlink(missing_ok=True)
    password = secret_files.ensure_secret(path)
    device_access.set_password(broker.dir, mac, password)
    _apply(broker, reload)
    return password


def issue_certificate(broker: Mosquitto, mac: str) -> CertFiles:
    """A client certificate for ``mac`` (CN = MAC), created if missing."""
    secret_files.private_dir(broker.secrets / "devices")
    return tls.ensure_client_cert(broker.tls_dir, device_dir(broker, mac), mac)


def certificate(broker: Mosquitto, mac: str) -> CertFiles | None:
    """The device's certificate files, if it has them."""
    folder = device_dir(broker, mac)
    cert, key = folder / "client.crt", folder / "client.key"
    if not (cert.exists() and key.exists()):
        return None
    return CertFiles(ca_file=str(broker.tls_dir / "ca.crt"), cert_file=str(cert), key_file=str(key))


def revoke(broker: Mosquitto, mac: str, reload: bool = True) -> bool:
    """Take ``mac``'s access away (password and certificate); True if it had access."""
    had = device_access.revoke(broker.dir, mac)
    shutil.rmtree(device_dir(broker, mac), ignore_errors=True)
    _apply(broker, reload)
    return had


def forget(broker: Mosquitto, mac: str, reload: bool = True) -> None:
    """Remove every trace of a temporary identity (used by ``f2 security check``'s probes)."""
    device_access.forget(broker.dir, mac)
    shutil.rmtree(device_dir(broker, mac), ignore_errors=True)
    _apply(broker, reload)


def _apply(broker: Mosquitto, reload: bool) -> None:
    broker.write_auth()
    if reload:
        broker.reload()
