"""The stack's secrets directory: one file per secret, directory 0700, files 0600.

``F2_SECRETS_DIR`` names it (default ``<stack dir>/secrets``, inside the git-ignored stack
directory). Programs read a secret through the ``<VARIABLE>_FILE`` convention of
``schemas.settings.env_value`` (e.g. ``F2_MQTT_PASSWORD_FILE=<secrets>/mqtt-pipeline-password``),
so no secret has to sit in an environment dump or in the repository.

Layout: ``<name>`` files for passwords and keys, ``tls/`` for the CA and the broker's certificate,
``devices/<mac>/`` for a device's password and client certificate.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from schemas.settings import StackSettings

SECRET_BYTES = 24  # 192 bits of randomness per generated password (32 url-safe characters)


def secrets_dir(stack_root: Path, settings: StackSettings | None = None) -> Path:
    """``F2_SECRETS_DIR`` (``settings.secrets_dir``), else ``<stack dir>/secrets``."""
    configured = settings.secrets_dir if settings is not None else ""
    return Path(configured).resolve() if configured else stack_root / "secrets"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if missing and make it mode 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_secret(path: Path, value: str) -> Path:
    """Write ``value`` to ``path`` with mode 0600, never readable by others even briefly."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def read_secret(path: Path) -> str | None:
    """The secret in ``path`` (stripped), or None if the file does not exist."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def new_password() -> str:
    """A strong random password (url-safe, 192 bits)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def ensure_secret(path: Path, value: str | None = None) -> str:
    """The secret in ``path``; written first (``value`` or a new random one) if missing or empty."""
    current = read_secret(path)
    if current:
        return current
    chosen = value or new_password()
    write_secret(path, chosen)
    return chosen
