"""Isolated local stacks for the tests: each in a fresh temporary directory, on ports nobody uses,
stopped and deleted when its tests end (also when they fail or are interrupted).

``isolated_stack()`` is the context manager the fixtures use::

    with isolated_stack() as iso:      # a new directory and a free port offset, nothing started
        iso.f2("stack", "up")
        yield iso.settings()
    # here: ``f2 stack down --purge``, leftovers killed, the directory removed

Port offsets are multiples of ``STEP`` (never 0, the developer's own stack, nor the benchmarks'
default): an offset is taken only if every port a stack can listen on at that offset
(``BASE_PORTS`` + offset) can be bound on 127.0.0.1 right now, and it is held by a ``flock`` on
``<tmp>/f2-test-stack-offset-<N>.lock`` until the stack is stopped, so two test sessions on one
machine never pick the same one. One process never hands the same offset out twice, and the
port sets of two different offsets never overlap. Stacks still running when the interpreter
exits (Ctrl-C past the fixtures' teardown) are stopped by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from schemas.settings import DEFAULT_PORTS, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "ops.cli"]  # how the stack is stopped (tests may swap in a fake)
STEP = 100
SKIPPED_OFFSETS = frozenset({0, 1000})  # the developer's stack; `python -m bench`'s default
HEALTH_PORT = 8000  # ops.health.rules.DEFAULT_HEALTH_PORT
FLOW_API_PORTS = range(3031, 3050)  # ingest 3031, decode 3032, and tests' extra flow processes
# Every port a stack may listen on, at offset 0: its services (PostgreSQL, Redis, Tansu,
# Mosquitto plain/TLS/mTLS, Prometheus), the health API and the flows' API ports.
BASE_PORTS = tuple(
    sorted(
        {
            *DEFAULT_PORTS.values(),
            DEFAULT_PORTS["mosquitto"] + 1,
            DEFAULT_PORTS["mosquitto"] + 2,
            HEALTH_PORT,
            *FLOW_API_PORTS,
        }
    )
)
# Variables that point programs at one particular stack (what `f2 stack env` and
# `f2 security env` export): dropped from an isolated stack's environment.
STACK_VARIABLE_PREFIXES = (
    "F2_STACK_DIR",
    "F2_STACK_PORT_OFFSET",
    "F2_MQTT_",
    "F2_SIM_",
    "F2_KAFKA_BOOTSTRAP",
    "F2_PARAMS_DSN",
    "F2_TIMESERIES_DSN",
    "F2_REDIS_URL",
)
STOP_TIMEOUT_S = 180.0  # `f2 stack down` gives each service 15 s to stop, then kills it
LOCK_PREFIX = "f2-test-stack-offset-"

_registry_lock = threading.Lock()
_handed_out: set[int] = set()
_live: list[IsolatedStack] = []


def ephemeral_port_floor() -> int:
    """The lowest port the kernel hands out to outgoing connections (stack ports stay below)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def candidate_offsets() -> list[int]:
    """Offsets a test stack may use, in the order they are tried."""
    top = ephemeral_port_floor() - 1 - max(BASE_PORTS)
    return [o for o in range(STEP, top + 1, STEP) if o not in SKIPPED_OFFSETS]


def stack_ports(offset: int) -> list[int]:
    """Every port a stack with this offset may listen on."""
    return [base + offset for base in BASE_PORTS]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if ``port`` can be bound on ``host`` now (nothing listens; not even in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _lock_path(offset: int) -> Path:
    return Path(tempfile.gettempdir()) / f"{LOCK_PREFIX}{offset}.lock"


def _lock_offset(offset: int) -> int | None:
    """An fd holding the machine-wide lock of ``offset``, or None if another process holds it."""
    path = _lock_path(offset)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:  # its holder deleted it meanwhile
            raise OSError("stale lock file")
    except OSError:
        os.close(fd)
        return None
    return fd


def _unlock_offset(offset: int, fd: int) -> None:
    with contextlib.suppress(OSError):
        _lock_path(offset).unlink()  # while still locked: a waiter then sees a stale inode
    with contextlib.suppress(OSError):
        os.close(fd)


def reserve_offset() -> tuple[int, int]:
    """A port offset no stack of this machine uses and whose ports are all free, with its lock."""
    with _registry_lock:
        for offset in candidate_offsets():
            if offset in _handed_out:
                continue
            fd = _lock_offset(offset)
            if fd is None:
                continue
            if all(port_free(port) for port in stack_ports(offset)):
                _handed_out.add(offset)
                return offset, fd
            _unlock_offset(offset, fd)
    raise RuntimeError(
        f"no free port offset for a test stack among {candidate_offsets()}: stop leftover stacks "
        f"(`ps aux | grep -E 'postgres -D|mosquitto|redis-server|tansu'`)"
    )


def without_stack_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` minus the variables that would point programs at another stack."""
    return {k: v for k, v in environ.items() if not k.startswith(STACK_VARIABLE_PREFIXES)}


@dataclass(eq=False)
class IsolatedStack:
    """One test stack: its directory, port offset and environment; ``stop()`` ends it."""

    dir: Path
    offset: int
    lock_fd: int | None = None
    created: float = field(default_factory=time.time)
    stopped: bool = False

    @property
    def env(self) -> dict[str, str]:
        """``F2_STACK_DIR`` and ``F2_STACK_PORT_OFFSET`` of this stack."""
        return {"F2_STACK_DIR": str(self.dir), "F2_STACK_PORT_OFFSET": str(self.offset)}

    def port(self, default: int) -> int:
        """This stack's counterpart of a default port (e.g. ``port(3032)``: decode's API)."""
        return default + self.offset

    def environ(self, **extra: str) -> dict[str, str]:
        """The environment of a process on this stack: this process's, pointed at the stack."""
        return {**without_stack_variables(os.environ), **self.env, **extra}

    def settings(self) -> Settings:
        return load_settings(self.environ())

    def f2(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``f2 ARGS`` on this stack; fails the test on a non-zero exit unless ``check=False``."""
        result = subprocess.run(
            [*CLI, *args],
            env=self.environ(),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(f"f2 {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop everything the stack runs and delete its directory. Idempotent; errors ignored;
        bounded by ``timeout_s`` (plus a few seconds to kill what ``down`` left running)."""
        with _registry_lock:
            if self.stopped:
                return
            self.stopped = True
            with contextlib.suppress(ValueError):
                _live.remove(self)
        try:
            subprocess.run(
                [*CLI, "stack", "down", "--purge"],
                env=self.environ(),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout_s,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            self._kill_leftovers()
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.lock_fd is not None:
                _unlock_offset(self.offset, self.lock_fd)
                self.lock_fd = None

    def _kill_leftovers(self) -> None:
        """SIGKILL (with their process groups) the processes whose pid files the stack still
        holds, if they were started after the stack was made (not a recycled pid)."""
        killed = []
        for pid_file in sorted((self.dir / "run").glob("*.pid")):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if pid <= 1 or not _started_after(pid, self.created - 2):
                continue
            for kill, target in ((os.killpg, pid), (os.kill, pid)):
                with contextlib.suppress(OSError):
                    kill(target, signal.SIGKILL)
            killed.append(pid)
        deadline = time.monotonic() + 5
        while killed and time.monotonic() < deadline:
            killed = [pid for pid in killed if Path(f"/proc/{pid}").exists() and _alive(pid)]
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _started_after(pid: int, since: float) -> bool:
    """True if process ``pid`` exists and started at or after ``since`` (epoch seconds)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time, clock ticks after boot
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") >= since


def start_isolated_stack() -> IsolatedStack:
    """A new stack directory and port offset (nothing started yet); ``stop()`` it when done."""
    offset, fd = reserve_offset()
    try:
        directory = Path(tempfile.mkdtemp(prefix="f2-test-stack-"))
    except BaseException:
        _unlock_offset(offset, fd)
        raise
    stack = IsolatedStack(directory, offset, fd)
    with _registry_lock:
        _live.append(stack)
    return stack


@contextlib.contextmanager
def isolated_stack() -> Iterator[IsolatedStack]:
    """An isolated stack for the ``with`` block, stopped and deleted however the block ends."""
    stack = start_isolated_stack()
    try:
        yield stack
    finally:
        stack.stop()


@atexit.register
def stop_all() -> None:
    """Stop every stack of this process not stopped yet (last resort, e.g. after Ctrl-C)."""
    with _registry_lock:
        stacks = list(_live)
    for stack in stacks:
        stack.stop()
