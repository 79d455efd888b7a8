"""The peer job's own virtualenv (``bench.peer_quix``), created on first use, idempotently.

Quix Streams 3.x pins ``confluent-kafka<2.13`` while the project runs a newer one, so the peer
cannot share ``.venv``. :func:`ensure_venv` builds a virtualenv under
``~/.cache/f2-bench-peer/venv-<key>/`` (outside the checkout; ``<key>`` hashes the interpreter
version and the requirements, so a changed pin builds a new one) with :data:`PEER_PACKAGE` and the
project's own pinned dependencies from ``pyproject.toml`` except ``confluent-kafka`` (Quix Streams
brings its older one). The project itself is not installed there: the peer runs with the checkout
on ``PYTHONPATH``. ``bytewax`` comes along only because ``connectors.timeseries_writer`` imports
``StatefulLogic`` at module level; the peer never runs Bytewax.

A file lock serialises concurrent creators (a test and a benchmark); a venv counts as ready only
once its imports were checked (``ready`` marker). Without network, pip fails and
:class:`PeerVenvError` says so (``offline``), with pip's output.

Run ``python -m bench.peer_venv`` to create it and print its interpreter's path.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "f2-bench-peer"
PEER_PACKAGE = "quixstreams==3.28.1"
NOT_SHARED = ("confluent-kafka",)  # the peer takes Quix Streams' own pin of these
INSTALL_TIMEOUT_S = 900.0
OFFLINE_SIGNS = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "(from versions: none)",  # no index answered (a wrong pin lists the versions there are)
    "ConnectTimeout",
    "Read timed out",
    "ProxyError",
)
CHECK = (
    "import json, bytewax, confluent_kafka, psycopg, quixstreams\n"
    "from importlib import metadata\n"
    "print(json.dumps({p: metadata.version(p) for p in"
    " ('quixstreams', 'confluent-kafka', 'psycopg', 'msgspec', 'bytewax')}"
    " | {'librdkafka': confluent_kafka.libversion()[0]}))"
)


class PeerVenvError(RuntimeError):
    """The peer's virtualenv could not be created; ``offline`` if pip could not reach an index."""

    def __init__(self, message: str, offline: bool) -> None:
        super().__init__(message)
        self.offline = offline


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """What the peer's virtualenv holds: Quix Streams and the project's pins it does not share."""
    pins = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    kept = [pin for pin in pins if not pin.lower().replace("_", "-").startswith(NOT_SHARED)]
    return [PEER_PACKAGE, *kept]


def venv_dir(cache: Path = CACHE) -> Path:
    """Where the virtualenv of the current requirements lives."""
    text = "\n".join([platform.python_version(), *requirements()])
    return cache / f"venv-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def ensure_venv(cache: Path = CACHE, timeout: float = INSTALL_TIMEOUT_S) -> Path:
    """The peer virtualenv's interpreter, creating the virtualenv first if needed."""
    home = venv_dir(cache)
    python = home / "bin" / "python"
    if (home / "ready").exists():
        return python
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / "ready").exists():  # built by another process meanwhile
            return python
        shutil.rmtree(home, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(home)], 120, home)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        _run([*pip, *requirements()], timeout, home)
        installed = _run([str(python), "-c", CHECK], 120, home)
        (home / "ready").write_text(installed.strip().splitlines()[-1] + "\n")
    return python


def installed_versions(python: Path) -> dict[str, str]:
    """The versions the ready virtualenv of ``python`` was checked with."""
    return json.loads((python.parent.parent / "ready").read_text())


def _run(argv: list[str], timeout: float, home: Path) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(home, ignore_errors=True)
        message = f"{' '.join(argv[:4])} … timed out after {timeout:.0f} s"
        raise PeerVenvError(message, True) from exc
    if result.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        output = (result.stdout + result.stderr).strip()
        offline = any(sign in output for sign in OFFLINE_SIGNS)
        raise PeerVenvError(
            f"creating the peer virtualenv failed ({' '.join(argv[:5])} …): {output[-1500:]}",
            offline,
        )
    return result.stdout


if __name__ == "__main__":
    try:
        print(ensure_venv())
    except PeerVenvError as error:
        print(f"{error} (offline: {error.offline})", file=sys.stderr)
        sys.exit(1)
