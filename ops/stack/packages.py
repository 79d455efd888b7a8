"""Debian packages the local stack needs, installed with apt-get when running as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from schemas.settings import child_environment

PG_BIN = Path("/usr/lib/postgresql/15/bin")

# package -> a file that proves it is installed
REQUIRED = {
    "postgresql-15": PG_BIN / "initdb",
    "mosquitto": Path("/usr/sbin/mosquitto"),
    "mosquitto-clients": Path("/usr/bin/mosquitto_pub"),
    "redis-server": Path("/usr/bin/redis-server"),
}


class MissingPackages(RuntimeError):
    """Raised when required packages are missing and cannot be installed from here."""


def missing(packages: dict[str, Path] | None = None) -> list[str]:
    """Names of required packages whose marker file is absent."""
    wanted = REQUIRED if packages is None else packages
    return [name for name, marker in wanted.items() if not marker.exists()]


def ensure(packages: dict[str, Path] | None = None) -> None:
    """Install missing packages with apt-get (as root), or explain exactly what to install."""
    names = missing(packages)
    if not names:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *names]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingPackages(
            "missing Debian packages: " + " ".join(names) + "\n"
            "install them with: sudo apt-get update && sudo " + " ".join(command)
        )
    print(f"installing Debian packages: {' '.join(names)}", file=sys.stderr, flush=True)
    env = child_environment({"DEBIAN_FRONTEND": "noninteractive"})
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    still = missing(packages)
    if still:
        raise MissingPackages(f"apt-get finished but these are still missing: {' '.join(still)}")
