"""Test tier A: TimescaleDB 2.23 with its Timescale-licensed features (compression, continuous
aggregates, policies) in PGlite, PostgreSQL 17 compiled to WASM, served over TCP on loopback.

The npm packages are pinned by ``tests/timescale/pglite/package-lock.json`` and installed there
with ``npm ci`` when missing or when the lock file changed (:func:`ensure_installed`).
:class:`PgliteServer` runs ``server.mjs`` (in memory, or ``data_dir``) on a loopback port.

Limits (docs/ARCHITECTURE.md, D23): one client connection at a time (a second one is refused),
``COPY FROM STDIN`` kills the server (bulk-load with ``unnest`` arrays), background jobs never run
by themselves (``CALL run_job(id)``), clients need ``sslmode=disable`` and some password.
Startup takes about 15 s (initdb in WASM). Test tooling, not a production store.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ops.stack import procs
from schemas.settings import project_root

READY_LINE = "ready: PGlite+TimescaleDB"


def package_dir() -> Path:
    """``tests/timescale/pglite`` of the source checkout."""
    root = project_root()
    if root is None:
        raise RuntimeError("the PGlite test server needs the source checkout")
    return root / "tests" / "timescale" / "pglite"


def ensure_installed(folder: Path | None = None) -> Path:
    """Run ``npm ci`` in ``folder`` unless its ``node_modules`` matches the lock file."""
    folder = folder or package_dir()
    installed = folder / "node_modules" / ".package-lock.json"
    lock = folder / "package-lock.json"
    if installed.is_file() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is missing: apt-get install -y nodejs npm")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm ci failed in {folder}:\n{result.stdout}\n{result.stderr}")
    return folder


class PgliteServer:
    """One PGlite+TimescaleDB server process (``node server.mjs``) on ``127.0.0.1:port``."""

    def __init__(self, port: int, run_dir: Path, data_dir: Path | None = None) -> None:
        self.port = port
        self.run_dir = run_dir
        self.data_dir = data_dir
        self.log_file = run_dir / f"pglite-{port}.log"
        self.pid: int | None = None

    @property
    def dsn(self) -> str:
        """Connection string (the password is required but any value is accepted)."""
        return f"postgresql://postgres:pglite@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def start(self, timeout_s: float = 120.0) -> str:
        """Install if needed, start, wait for its ready line; return :attr:`dsn`."""
        folder = ensure_installed()
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is missing: apt-get install -y nodejs")
        if procs.port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use")
        env = {"PATH": "/usr/bin:/bin", "F2_PGLITE_PORT": str(self.port)}
        if self.data_dir is not None:
            env["F2_PGLITE_DATA_DIR"] = str(self.data_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.write_text("")
        self.pid = procs.spawn(
            [node, "server.mjs"],
            self.log_file,
            self.run_dir / f"pglite-{self.port}.pid",
            env=env,
            cwd=folder,
        )
        ready = procs.wait_until(self._settled, timeout_s, interval_s=0.5)
        if not ready or not self.alive():
            self.stop()
            raise RuntimeError(f"PGlite did not start: {procs.tail(self.log_file)}")
        return self.dsn

    def _settled(self) -> bool:
        """Ready, or exited (no point waiting longer)."""
        return not self.alive() or READY_LINE in self.log_file.read_text(errors="replace")

    def alive(self) -> bool:
        """True while the server process runs (a crash inside the WASM ends it)."""
        return self.pid is not None and procs.pid_alive(self.pid)

    def stop(self) -> None:
        """SIGTERM (clean close of the data dir), SIGKILL after a grace period."""
        if self.pid is not None:
            procs.terminate(self.pid, timeout_s=10.0)
            self.pid = None
