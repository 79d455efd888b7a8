"""Device identities on the broker: grant, revoke, rotate, list — through its admin channel.

A device's MQTT username is its MAC. Its identity lives in the broker's dynamic-security plugin
(``ops.security.mqtt_admin``): a client with the device's password and a fixed client id (the MAC:
the plugin refuses any other, so a device can never take over or end another identity's session),
and a role ``f2-device-<mac>`` that lets it publish only on ``stat/f2-<mac>/#`` and
``tele/f2-<mac>/#`` and subscribe only to ``cmnd/f2-<mac>/#``. The same commands work on the local
stack, compose and an external broker; every one is idempotent.

The operator's side of a device (its password, its client certificate) is kept in
:class:`DeviceMaterial` (``<secrets>/devices/<mac>/``), so registering again prints the same
settings. Revoking deletes the client (its connections end at once, its password no longer logs
in), puts its certificate's serial on the CA's revocation list (the mTLS listener refuses it from
the next reload) and forgets the material: registering the MAC again creates a new password and a
new certificate, never the old ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ops.security import secret_files, tls
from ops.security.mqtt_admin import AdminError, DynsecAdmin
from ops.security.tls import CertFiles
from schemas.topics import normalise_mac

PASSWORD_FILE = "password"
ROLE_PREFIX = "f2-device-"
REVOKED_FILE = "revoked"
EXISTS = ("already exists",)
MISSING = ("not found",)


class DeviceError(ValueError):
    """A MAC that is not 12 hex digits."""


def canonical_mac(text: str) -> str:
    """``text`` as 12 lower-case hex digits, or :class:`DeviceError`."""
    mac = normalise_mac(text.strip())
    if mac is None:
        raise DeviceError(f"not a MAC address (12 hex digits, no separators): {text!r}")
    return mac


def role_name(mac: str) -> str:
    return ROLE_PREFIX + mac


def device_acls(mac: str) -> list[dict[str, object]]:
    """What a device may do: speak for itself, hear its own commands."""
    own = f"cmnd/f2-{mac}/#"
    return [
        {"acltype": "publishClientSend", "topic": f"stat/f2-{mac}/#", "allow": True},
        {"acltype": "publishClientSend", "topic": f"tele/f2-{mac}/#", "allow": True},
        {"acltype": "subscribePattern", "topic": own, "allow": True, "priority": 1},
        {"acltype": "subscribePattern", "topic": "#", "allow": False},
        {"acltype": "publishClientReceive", "topic": own, "allow": True, "priority": 1},
        {"acltype": "publishClientReceive", "topic": "#", "allow": False},
    ]


def grant(admin: DynsecAdmin, mac: str, password: str) -> None:
    """Give ``mac`` access with ``password`` (creating its role and client, or setting the
    password of an existing client and enabling it)."""
    role = role_name(mac)
    admin.checked(
        {"command": "createRole", "rolename": role},
        *({"command": "addRoleACL", "rolename": role, **acl} for acl in device_acls(mac)),
        tolerate=EXISTS,
    )
    created = admin.run(
        {
            "command": "createClient",
            "username": mac,
            "password": password,
            "clientid": mac,
            "textname": f"F2 controller {mac}",
            "roles": [{"rolename": role}],
        }
    )[0]
    error = created.get("error")
    if error and "already exists" not in error:
        raise AdminError(f"createClient {mac}: {error}")
    if error:
        client = admin.checked({"command": "getClient", "username": mac})[0]["data"]["client"]
        commands = [
            {"command": "setClientPassword", "username": mac, "password": password},
            {"command": "setClientId", "username": mac, "clientid": mac},
            {"command": "enableClient", "username": mac},
        ]
        if role not in {r["rolename"] for r in client.get("roles", [])}:
            commands.append({"command": "addClientRole", "username": mac, "rolename": role})
        admin.checked(*commands)


def revoke(admin: DynsecAdmin, mac: str) -> bool:
    """Take ``mac``'s access away at once (its sessions are disconnected); True if it had it."""
    answer = admin.run({"command": "deleteClient", "username": mac})[0]
    admin.checked({"command": "deleteRole", "rolename": role_name(mac)}, tolerate=MISSING)
    error = answer.get("error")
    if error and not any(word in error for word in MISSING):
        raise AdminError(f"deleteClient {mac}: {error}")
    return not error


def listed(admin: DynsecAdmin) -> list[str]:
    """The MACs that have an identity on the broker, sorted."""
    answer = admin.checked({"command": "listClients", "verbose": False, "count": -1})[0]
    names = answer.get("data", {}).get("clients", [])
    return sorted({name for name in names if normalise_mac(name) == name})


class DeviceMaterial:
    """The operator's copy of each device's password and certificate, and the CA that signs
    and revokes the certificates (``tls_dir``)."""

    def __init__(self, folder: Path, tls_dir: Path) -> None:
        self.folder = folder
        self.tls_dir = tls_dir

    def device_dir(self, mac: str) -> Path:
        return self.folder / mac

    def password(self, mac: str, rotate: bool = False) -> str:
        """The device's password, created (or replaced, with ``rotate``) if needed."""
        secret_files.private_dir(self.folder)
        path = self.device_dir(mac) / PASSWORD_FILE
        if rotate:
            path.unlink(missing_ok=True)
        return secret_files.ensure_secret(path)

    def certificate(self, mac: str) -> CertFiles | None:
        """The device's certificate files, if it has them."""
        folder = self.device_dir(mac)
        cert, key = folder / "client.crt", folder / "client.key"
        if not (cert.exists() and key.exists()):
            return None
        return CertFiles(
            ca_file=str(self.tls_dir / "ca.crt"), cert_file=str(cert), key_file=str(key)
        )

    def issue_certificate(self, mac: str, rotate: bool = False) -> CertFiles:
        """A client certificate for ``mac`` (CN = MAC), created if missing; with ``rotate`` the
        old one is revoked and a new one issued."""
        if rotate:
            self.revoke_certificate(mac)
        secret_files.private_dir(self.folder)
        return tls.ensure_client_cert(self.tls_dir, self.device_dir(mac), mac)

    def revoke_certificate(self, mac: str) -> bool:
        """Put the device's certificate on the revocation list and delete it; True if it had
        one (the broker must then be given the new list and reloaded)."""
        cert = self.device_dir(mac) / "client.crt"
        if not cert.exists():
            return False
        tls.revoke_certificate(self.tls_dir, cert)
        for name in ("client.crt", "client.key"):
            (self.device_dir(mac) / name).unlink(missing_ok=True)
        return True

    def forget(self, mac: str) -> bool:
        """Revoke the certificate, delete the material and remember the MAC as revoked; True if
        a certificate was revoked."""
        revoked_cert = self.revoke_certificate(mac)
        shutil.rmtree(self.device_dir(mac), ignore_errors=True)
        self._set_revoked(mac, True)
        return revoked_cert

    def revoked(self) -> list[str]:
        """The MACs revoked and not registered again, sorted."""
        try:
            lines = (self.folder / REVOKED_FILE).read_text().split()
        except FileNotFoundError:
            return []
        return sorted({mac for mac in lines if normalise_mac(mac) == mac})

    def registered(self, mac: str) -> None:
        """``mac`` has access again (it is no longer listed as revoked)."""
        self._set_revoked(mac, False)

    def _set_revoked(self, mac: str, revoked: bool) -> None:
        macs = set(self.revoked())
        macs = macs | {mac} if revoked else macs - {mac}
        secret_files.write_secret(self.folder / REVOKED_FILE, " ".join(sorted(macs)))
