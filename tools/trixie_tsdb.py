"""Test tier B: TimescaleDB (Apache edition) on PostgreSQL 17 inside a Debian trixie chroot.

Bookworm has no TimescaleDB package and trixie's ``postgresql-17-timescaledb`` needs a newer libc,
so :func:`ensure_root` builds a minimal trixie root with ``debootstrap`` (installing debootstrap
first if missing) into a cache directory that survives between runs (``F2_TRIXIE_ROOT``, default
``/var/cache/f2-timescale/trixie``): about a minute and 750 MB once, nothing when it is present.
:class:`TrixiePostgres` runs one throw-away cluster in it on a loopback port; the chroot shares
the host's network, so clients connect to ``127.0.0.1:<port>`` directly.

This edition has hypertables and ``COPY``, but no compression, continuous aggregates or policies
(those are Timescale-licensed; tier A, :mod:`tools.pglite_tsdb`, has them). Needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ops.stack import procs

DEFAULT_ROOT = Path("/var/cache/f2-timescale/trixie")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGE = "postgresql-17-timescaledb"
PG_BIN = "/usr/lib/postgresql/17/bin"
READY_MARK = ".f2-ready"


def root_dir() -> Path:
    """``F2_TRIXIE_ROOT``, else :data:`DEFAULT_ROOT`."""
    return Path(os.environ.get("F2_TRIXIE_ROOT") or DEFAULT_ROOT)


def _run(argv: list[str], log: Path) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} failed ({result.returncode}): {procs.tail(log, 15)}\nfull log: {log}"
        )


def _in_chroot_with_proc(root: Path, command: str) -> list[str]:
    """``command`` run by ``sh`` in ``root`` with /proc mounted in a private mount namespace
    (the mount vanishes with the process, whatever happens to it)."""
    script = f'mount -t proc proc "{root}/proc" && exec chroot "{root}" sh -c \'{command}\''
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def ensure_root(root: Path | None = None, mirror: str | None = None) -> Path:
    """The chroot with PostgreSQL 17 + TimescaleDB, built first if absent. Idempotent; a lock
    file serialises concurrent callers; a half-built root is never used (built beside, renamed)."""
    root = root or root_dir()
    if (root / READY_MARK).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / READY_MARK).is_file():
            return root
        _build(root, mirror or os.environ.get("F2_TRIXIE_MIRROR") or DEFAULT_MIRROR)
    return root


def _build(root: Path, mirror: str) -> None:
    partial = root.with_name(root.name + ".partial")
    log = root.with_name(root.name + ".build.log")
    log.write_text("")
    if shutil.which("debootstrap") is None:
        _run(["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"], log)
    for stale in (partial, root):
        if stale.exists():
            _run(["rm", "-rf", "--one-file-system", str(stale)], log)
    _run(["debootstrap", "--variant=minbase", "trixie", str(partial), mirror], log)
    policy = partial / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    common = partial / "etc/postgresql-common"
    common.mkdir(parents=True, exist_ok=True)
    (common / "createcluster.conf").write_text("create_main_cluster = false\n")
    install = (
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q"
        f" --no-install-recommends {PACKAGE} && apt-get clean"
    )
    _run(_in_chroot_with_proc(partial, install), log)
    (partial / READY_MARK).write_text(f"{PACKAGE} from {mirror}\n")
    partial.rename(root)


class TrixiePostgres:
    """One PostgreSQL 17 + TimescaleDB cluster in the chroot: fresh data, trust auth, loopback."""

    def __init__(self, port: int, root: Path | None = None) -> None:
        self.port = port
        self.root = root or root_dir()
        self.data = f"/var/lib/f2-tsdb/{port}"
        self.log_file = self.root / f"var/log/f2-tsdb-{port}.log"
        self.pid: int | None = None

    @property
    def dsn(self) -> str:
        """Connection string for the ``postgres`` database as superuser ``postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def _chroot(self, *argv: str, user: str = "postgres") -> list[str]:
        return ["chroot", f"--userspec={user}:{user}", str(self.root), *argv]

    def start(self, timeout_s: float = 60.0) -> str:
        """Build the root if needed, initdb, start; return :attr:`dsn` once it accepts queries."""
        ensure_root(self.root)
        if procs.port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use")
        host_data = self.root / self.data.lstrip("/")
        if host_data.exists():
            shutil.rmtree(host_data)
        host_data.parent.mkdir(parents=True, exist_ok=True)
        host_data.mkdir(mode=0o700)
        subprocess.run(
            self._chroot("chown", "postgres:postgres", self.data, user="root"), check=True
        )
        self.log_file.write_text("")
        _run(
            self._chroot(
                f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C", "-c", "dynamic_shared_memory_type=mmap",
            ),
            self.log_file,
        )  # fmt: skip
        argv = self._chroot(
            f"{PG_BIN}/postgres", "-D", self.data, "-p", str(self.port), "-k", self.data,
            "-c", "listen_addresses=127.0.0.1", "-c", "shared_preload_libraries=timescaledb",
            "-c", "timescaledb.telemetry_level=off", "-c", "fsync=off",
        )  # fmt: skip
        self.pid = procs.spawn(argv, self.log_file, self.root / f"var/run/f2-tsdb-{self.port}.pid")
        ready = procs.wait_until(self._settled, timeout_s)
        if not ready or self.pid is None or not procs.pid_alive(self.pid):
            self.stop()
            raise RuntimeError(f"chroot PostgreSQL did not start: {procs.tail(self.log_file)}")
        return self.dsn

    def _settled(self) -> bool:
        """Accepting connections, or exited (no point waiting longer)."""
        if self.pid is None or not procs.pid_alive(self.pid):
            return True
        probe = self._chroot(f"{PG_BIN}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port))
        return subprocess.run(probe, check=False).returncode == 0

    def stop(self) -> None:
        """Fast shutdown, then delete the cluster's data."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            deadline = time.monotonic() + 20
            while procs.pid_alive(self.pid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, os.WNOHANG)
                time.sleep(0.1)
            if procs.pid_alive(self.pid):
                procs.terminate(self.pid)
            self.pid = None
        shutil.rmtree(self.root / self.data.lstrip("/"), ignore_errors=True)
