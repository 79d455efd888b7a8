"""Device lifecycle on any broker: register, rotate, revoke, list (``f2 devices``).

Identities live in the broker's dynamic-security plugin and are managed through its admin channel
(:mod:`ops.security.device_identity`): the local stack's broker by default, another one (compose,
a cluster) with ``F2_MQTT_ADMIN_*``. The operator's copy of each device's password and certificate
is kept in ``F2_DEVICE_SECRETS_DIR``; certificates are signed and revoked by the CA in
``F2_MQTT_CA_DIR``.

``register`` creates the controller's MQTT identity (username = MAC, a random password, a client
certificate when asked), its registry row (template F2-rev1, connectors 1..4) and returns how to
connect. ``revoke`` ends its access at once (its sessions are closed) and revokes its certificate;
a later ``register`` creates new credentials. ``rotate`` gives it a new password (and a new
certificate, revoking the old one, if it has one). Certificate revocations reach the local stack's
broker at once (new revocation list + SIGHUP); another broker must be given the list and reloaded.
All of it is idempotent.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from ops.security import device_identity, secret_files
from ops.security.device_identity import DeviceError, DeviceMaterial
from ops.security.device_registry import RegistryError, register_controller, registered_ids
from ops.security.mqtt_admin import AdminError, AdminSettings, DynsecAdmin
from ops.security.tls import TlsError
from ops.stack.local import Stack
from ops.stack.services import Mosquitto, ServiceError
from schemas.settings import Config, DeviceAdminSettings

FAILURES = (DeviceError, RegistryError, ServiceError, AdminError, TlsError, OSError)


class AdminChannel(msgspec.Struct, frozen=True):
    """Where the admin channel and the operator's device material are; ``local`` when it is
    the local stack's broker."""

    admin: AdminSettings
    material: str
    ca_dir: str
    local: bool


def admin_channel(broker: Mosquitto, settings: DeviceAdminSettings) -> AdminChannel:
    """The admin channel and material folders of ``settings``, else the local stack's."""
    local = broker.admin_settings()
    admin = AdminSettings(
        host=settings.host or local.host,
        port=settings.port or local.port,
        username=settings.username,
        password=settings.password or ("" if settings.remote else local.password),
        ca_file=settings.ca_file,
    )
    folder = secret_files.secrets_dir(broker.root, broker.settings)
    return AdminChannel(
        admin=admin,
        material=settings.device_secrets_dir or str(folder / "devices"),
        ca_dir=settings.ca_dir or str(broker.tls_dir),
        local=not settings.remote,
    )


class Devices:
    """The device lifecycle for one configuration (the ``f2 devices`` commands' task object)."""

    def __init__(self, config: Config) -> None:
        broker = Stack(config=config).service("mosquitto")
        assert isinstance(broker, Mosquitto)
        self.broker = broker
        self.params_dsn = config.connections.params_dsn
        self.mqtt_host = config.connections.mqtt_host
        self.channel = admin_channel(broker, config.devices)
        self.material = DeviceMaterial(Path(self.channel.material), Path(self.channel.ca_dir))

    def register(self, mac: str, cert: bool = False, rotate: bool = False) -> dict:
        """Identity, registry row and material for ``mac``; its connection settings."""
        mac = device_identity.canonical_mac(mac)
        device_id = register_controller(self.params_dsn, mac)
        password = self.material.password(mac, rotate=rotate)
        if cert:
            self.material.issue_certificate(mac)
        with DynsecAdmin(self.channel.admin) as admin:
            device_identity.grant(admin, mac, password)
        self.material.registered(mac)
        return self.connection_settings(mac, password, device_id)

    def rotate(self, mac: str) -> tuple[dict, str]:
        """A new password (and certificate, if it had one) for ``mac``; its settings, and what
        was done about the old certificate ("" if it had none)."""
        mac = device_identity.canonical_mac(mac)
        device_id = register_controller(self.params_dsn, mac)
        password = self.material.password(mac, rotate=True)
        had_cert = self.material.certificate(mac) is not None
        if had_cert:
            self.material.issue_certificate(mac, rotate=True)
        with DynsecAdmin(self.channel.admin) as admin:
            device_identity.grant(admin, mac, password)
        note = self.apply_revocations() if had_cert else ""
        return self.connection_settings(mac, password, device_id), note

    def revoke(self, mac: str) -> tuple[str, bool, str]:
        """End ``mac``'s access; (its MAC, whether it had an identity, the certificate note)."""
        mac = device_identity.canonical_mac(mac)
        with DynsecAdmin(self.channel.admin) as admin:
            had = device_identity.revoke(admin, mac)
        revoked_cert = self.material.forget(mac)
        return mac, had, self.apply_revocations() if revoked_cert else ""

    def list(self) -> list[dict]:
        """Every device with access or revoked: MAC, access, certificate, registry id."""
        with DynsecAdmin(self.channel.admin) as admin:
            granted = device_identity.listed(admin)
        denied = [mac for mac in self.material.revoked() if mac not in granted]
        macs = sorted(set(granted) | set(denied))
        ids = registered_ids(self.params_dsn, macs) if macs else {}
        return [
            {
                "mac": mac,
                "access": "granted" if mac in granted else "revoked",
                "certificate": self.material.certificate(mac) is not None,
                "device_id": ids.get(mac),
            }
            for mac in macs
        ]

    def connection_settings(self, mac: str, password: str, device_id: int) -> dict:
        """What a device (or its provisioning tool) needs to connect: the local stack's
        listeners, or only the broker's host for another broker (its listeners are its own)."""
        result: dict[str, object] = {
            "mac": mac,
            "device_id": device_id,
            "username": mac,
            "password": password,
            "client_id": mac,
        }
        if self.channel.local:
            result |= {
                "host": self.mqtt_host,
                "port": self.broker.port,
                "tls_port": self.broker.tls_port,
                "mtls_port": self.broker.mtls_port,
            }
        else:
            result["host"] = self.channel.admin.host
        result |= {
            "ca_file": str(self.material.tls_dir / "ca.crt"),
            "publish": [f"stat/f2-{mac}/#", f"tele/f2-{mac}/#"],
            "subscribe": [f"cmnd/f2-{mac}/#"],
        }
        certs = self.material.certificate(mac)
        if certs is not None:
            result["cert_file"] = certs.cert_file
            result["key_file"] = certs.key_file
        return result

    def apply_revocations(self) -> str:
        """Give the local broker the new revocation list; for another broker, what to do."""
        crl = self.material.tls_dir / "crl.pem"
        if self.channel.local:
            self.broker.install_crl()
            self.broker.reload()
            return "revocation list reloaded by the broker"
        return f"give the broker the revocation list {crl} and reload it (SIGHUP)"
