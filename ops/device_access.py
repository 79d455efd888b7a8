"""Per-device MQTT access in the broker's folder: device passwords and revoked identities.

The broker's password file and ACL are regenerated from these (``ops.services.Mosquitto``):
``devices.passwd`` holds the hashed passwords of registered devices (username = MAC, hashed by
``mosquitto_passwd``), ``revoked`` the MACs whose access was taken away. A revoked MAC gets a
``topic deny #`` ACL entry, which also shuts out a client certificate issued for it (the mTLS
listener takes the certificate's CN as the username and skips the password file). Mosquitto
re-reads both files on SIGHUP, so a change takes effect without a restart.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from schemas.topics import normalise_mac

DEVICES_PASSWD = "devices.passwd"
REVOKED = "revoked"


class DeviceAccessError(ValueError):
    """A MAC that is not 12 hex digits, or mosquitto_passwd failed."""


def canonical_mac(text: str) -> str:
    """``text`` as 12 lower-case hex digits, or :class:`DeviceAccessError`."""
    mac = normalise_mac(text.strip())
    if mac is None:
        raise DeviceAccessError(f"not a MAC address (12 hex digits, no separators): {text!r}")
    return mac


def device_users(broker_dir: Path) -> list[str]:
    """The MACs that have a password in ``devices.passwd``, sorted."""
    try:
        lines = (broker_dir / DEVICES_PASSWD).read_text().splitlines()
    except FileNotFoundError:
        return []
    return sorted({line.split(":", 1)[0] for line in lines if ":" in line})


def revoked(broker_dir: Path) -> list[str]:
    """The MACs whose access is revoked, sorted."""
    try:
        lines = (broker_dir / REVOKED).read_text().split()
    except FileNotFoundError:
        return []
    return sorted({mac for mac in lines if normalise_mac(mac) == mac})


def _write_revoked(broker_dir: Path, macs: set[str]) -> None:
    text = "".join(f"{mac}\n" for mac in sorted(macs))
    (broker_dir / REVOKED).write_text(text)


def set_password(broker_dir: Path, mac: str, password: str) -> None:
    """Give ``mac`` this password and lift a revocation of it."""
    passwd = broker_dir / DEVICES_PASSWD
    create = [] if passwd.exists() else ["-c"]
    result = subprocess.run(
        ["mosquitto_passwd", *create, "-b", str(passwd), mac, password],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise DeviceAccessError(f"mosquitto_passwd failed: {result.stdout}{result.stderr}")
    passwd.chmod(0o600)
    _write_revoked(broker_dir, set(revoked(broker_dir)) - {mac})


def revoke(broker_dir: Path, mac: str) -> bool:
    """Remove ``mac``'s password and deny it everything; True if it had access before."""
    had_password = mac in device_users(broker_dir)
    if had_password:
        passwd = broker_dir / DEVICES_PASSWD
        lines = passwd.read_text().splitlines(keepends=True)
        passwd.write_text("".join(line for line in lines if line.split(":", 1)[0] != mac))
    already = set(revoked(broker_dir))
    _write_revoked(broker_dir, already | {mac})
    return had_password or mac not in already


def forget(broker_dir: Path, mac: str) -> None:
    """Drop every trace of ``mac`` (password and revocation): for temporary probe identities."""
    revoke(broker_dir, mac)
    _write_revoked(broker_dir, set(revoked(broker_dir)) - {mac})


def deny_entries(macs: list[str]) -> str:
    """ACL lines that deny each revoked MAC every topic (checked before the patterns)."""
    return "".join(f"user {mac}\ntopic deny #\n\n" for mac in macs)
