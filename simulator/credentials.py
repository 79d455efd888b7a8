"""Each simulated controller's own MQTT credentials (``--device-credentials``).

A device user's name is its MAC; its password comes either from the operator CLI, run as a
subprocess per controller (``python -m ops.cli devices register MAC --json``: creates the account
if missing, returns the same password when it exists, and reloads the broker so access works at
once), or from a JSON file (``--credentials-file``) that maps each MAC to its password. The
subprocess keeps the layering: the simulator imports only ``schemas`` of the project.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec

from schemas.topics import normalise_mac

REGISTER_TIMEOUT_S = 60.0


class CredentialsError(RuntimeError):
    """A controller's credentials could not be obtained."""


class DeviceAccount(msgspec.Struct):
    """The part of ``f2 devices register --json`` the simulator needs."""

    username: str
    password: str


_account = msgspec.json.Decoder(DeviceAccount)
_mapping = msgspec.json.Decoder(dict[str, str])


def register_device(mac: str) -> str:
    """The password of device ``mac``, registering it through the operator CLI if needed."""
    command = [sys.executable, "-m", "ops.cli", "devices", "register", mac, "--json"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=REGISTER_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialsError(f"f2 devices register {mac}: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise CredentialsError(f"f2 devices register {mac} failed: {detail}")
    try:
        account = _account.decode(done.stdout)
    except msgspec.DecodeError as exc:
        raise CredentialsError(f"f2 devices register {mac}: unexpected output: {exc}") from exc
    if account.username != mac:
        raise CredentialsError(f"f2 devices register {mac} returned user {account.username!r}")
    return account.password


def register_devices(macs: list[str]) -> dict[str, str]:
    """MAC → password for every controller in ``macs`` (one registration at a time: each one
    rewrites the broker's password file)."""
    return {mac: register_device(mac) for mac in macs}


def read_credentials_file(path: Path, macs: list[str]) -> dict[str, str]:
    """MAC → password for every controller in ``macs`` from a JSON object ``{"<mac>": "<pw>"}``
    (MACs in any case); every one of ``macs`` must be there."""
    try:
        raw = _mapping.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise CredentialsError(f"credentials file {path}: {exc}") from exc
    passwords: dict[str, str] = {}
    for key, password in raw.items():
        mac = normalise_mac(key)
        if mac is None:
            raise CredentialsError(f"credentials file {path}: {key!r} is not a MAC")
        passwords[mac] = password
    missing = [mac for mac in macs if mac not in passwords]
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise CredentialsError(f"credentials file {path} has no password for {shown}")
    return {mac: passwords[mac] for mac in macs}
