"""The dataflows as processes: how to run each one, one instance per stack, and a supervisor.

A flow runs as ``python -m bytewax.run <module> <recommended flags>`` with Bytewax's API server
on the flow's metrics port. At most one instance of a flow runs per stack directory: the runner
(``f2 run``) or the supervisor (``f2 stack up --flows``) holds an exclusive lock on
``<stack>/run/<flow>.pid``, which also records its pid. The supervisor writes the flow's output
to ``<stack>/logs/<flow>.log`` and restarts a flow that exits with exponential backoff
(1 s doubling to 60 s; back to 1 s after a run that lasted a minute).

Readiness: a line containing ``ready`` is printed once the flow's API port answers and, for
ingest, every MQTT session logged ``mqtt session subscribed``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ops.stack import procs
from ops.stack.services import ServiceError
from schemas.settings import (
    PARAMS_DB,
    PIPELINE_DB_ROLE,
    READER_DB_ROLE,
    TIMESERIES_DB,
    load_settings,
    local_dsn,
    project_root,
    read_stack_info,
)

BACKOFF_S = (1.0, 60.0)
HEALTHY_RUN_S = 60.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class FlowSpec:
    """How to run one dataflow: module, metrics port and the recommended ``bytewax.run`` flags."""

    name: str
    module: str
    metrics_port: int
    flags: Callable[[Path], list[str]]
    prepare: Callable[[Path], None] = lambda _root: None
    sessions: Callable[[], int] = lambda: 0


def _ingest_sessions() -> int:
    from connectors.mqtt_source import load_source_settings

    return load_source_settings(load_settings()).partitions


def _decode_recovery(root: Path) -> Path:
    return root / "recovery" / "decode"


def _decode_prepare(root: Path) -> None:
    from connectors.recovery_dir import prepare_recovery

    parts = int(os.environ.get("F2_DECODE_RECOVERY_PARTS", "4"))
    prepare_recovery(_decode_recovery(root), parts, root / "kafka" / "incarnation")


FLOWS: dict[str, FlowSpec] = {
    # Stateless: no recovery; 1 s epochs bound the unacknowledged window (connectors.mqtt_source).
    "ingest": FlowSpec(
        "ingest", "dataflows.ingest", 3031, lambda _root: ["-s", "1"], sessions=_ingest_sessions
    ),
    # Recovery holds the Kafka offsets (dataflows.decode): 1 s snapshots, 10 s of backups kept.
    "decode": FlowSpec(
        "decode",
        "dataflows.decode",
        3032,
        lambda root: ["-w", "1", "-r", str(_decode_recovery(root)), "-s", "1", "-b", "10"],
        prepare=_decode_prepare,
    ),
}


def available_flows() -> list[str]:
    """The flows whose module exists in this installation."""
    from importlib.util import find_spec

    return [name for name, spec in FLOWS.items() if find_spec(spec.module) is not None]


def pid_file(root: Path, name: str) -> Path:
    return root / "run" / f"{name}.pid"


def log_file(root: Path, name: str) -> Path:
    return root / "logs" / f"{name}.log"


def metrics_port(spec: FlowSpec) -> int:
    """The flow's API port: ``F2_<FLOW>_METRICS_PORT``, else the spec's default."""
    return int(os.environ.get(f"F2_{spec.name.upper()}_METRICS_PORT", spec.metrics_port))


class AlreadyRunning(RuntimeError):
    """Another runner or supervisor of this flow holds the stack's lock."""


class FlowLock:
    """Exclusive lock on ``run/<flow>.pid``; the file holds the owner's pid while locked."""

    def __init__(self, root: Path, name: str) -> None:
        self.path = pid_file(root, name)
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # held while the process runs
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise AlreadyRunning(f"already running on this stack (pid {owner})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self.path.unlink(missing_ok=True)
            self._handle.close()
            self._handle = None


def is_locked(root: Path, name: str) -> bool:
    """True if a runner or supervisor of ``name`` holds the lock of this stack."""
    path = pid_file(root, name)
    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def flow_command(spec: FlowSpec, root: Path) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one flow process."""
    cache = root / "run" / f"{spec.name}-api"
    cache.mkdir(parents=True, exist_ok=True)
    env = {
        **role_dsns(root, PIPELINE_DB_ROLE),
        **os.environ,
        "F2_STACK_DIR": str(root),
        "BYTEWAX_DATAFLOW_API_ENABLED": "1",
        "BYTEWAX_DATAFLOW_API_PORT": str(metrics_port(spec)),
        "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(cache),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "bytewax.run", spec.module, *spec.flags(root)]
    return argv, env


def role_dsns(root: Path, role: str) -> dict[str, str]:
    """``F2_PARAMS_DSN`` and ``F2_TIMESERIES_DSN`` of the local stack at ``root`` as ``role``
    (the flows log in as ``f2_pipeline``, the health API as ``f2_reader``: least privilege);
    empty where the stack has no password for it. Variables set by the user win."""
    info = read_stack_info(root)
    password = {
        PIPELINE_DB_ROLE: info.db_pipeline_password,
        READER_DB_ROLE: info.db_reader_password,
    }.get(role, "")
    if not password:
        return {}
    return {
        "F2_PARAMS_DSN": local_dsn(info, PARAMS_DB, role, password),
        "F2_TIMESERIES_DSN": local_dsn(info, TIMESERIES_DB, role, password),
    }


@dataclass
class Readiness:
    """Watches a flow's output lines and its API port; ``ready`` once both say so."""

    port: int
    sessions: int
    subscribed: set[str] = field(default_factory=set)

    def feed(self, line: str) -> None:
        if "mqtt session subscribed" in line:
            marker = '"partition":"'
            start = line.find(marker)
            if start >= 0:
                start += len(marker)
                self.subscribed.add(line[start : line.find('"', start)])

    def ready(self) -> bool:
        return len(self.subscribed) >= self.sessions and procs.port_open(self.port)


def run_once(
    spec: FlowSpec,
    root: Path,
    out: IO[str],
    stop: threading.Event,
    announce: IO[str] | None = None,
) -> int:
    """Run the flow until it exits or ``stop`` is set; output to ``out``, ``ready`` line to
    ``announce`` (default ``out``)."""
    spec.prepare(root)
    argv, env = flow_command(spec, root)
    cwd = project_root() or Path.cwd()
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
    )
    readiness = Readiness(metrics_port(spec), spec.sessions())
    announced = threading.Event()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            out.write(line)
            out.flush()
            readiness.feed(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while child.poll() is None:
        if stop.wait(0.2):
            _stop_child(child)
            break
        if not announced.is_set() and readiness.ready():
            announced.set()
            print(
                f"{spec.name} ready: metrics on :{readiness.port}/metrics"
                + (
                    f", {readiness.sessions} MQTT sessions subscribed" if readiness.sessions else ""
                ),
                file=announce or out,
                flush=True,
            )
    reader.join(timeout=5)
    return child.wait()


def _stop_child(child: subprocess.Popen[str]) -> None:
    """SIGINT (Bytewax exits cleanly on it), then SIGKILL after a timeout."""
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGINT)
    try:
        child.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT (instead of dying with the child still running)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())


def supervise(name: str, root: Path) -> int:
    """Run flow ``name`` forever, restarting it with exponential backoff, until SIGTERM/SIGINT."""
    spec = FLOWS[name]
    lock = FlowLock(root, name)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"supervisor {name}: {exc}", flush=True)
        return 1
    stop = threading.Event()
    stop_on_signals(stop)
    backoff = BACKOFF_S[0]
    try:
        while not stop.is_set():
            started = time.monotonic()
            code = run_once(spec, root, sys.stdout, stop)
            if stop.is_set():
                break
            if time.monotonic() - started >= HEALTHY_RUN_S:
                backoff = BACKOFF_S[0]
            print(
                f"supervisor {name}: flow exited with {code}; restart in {backoff:.0f}s", flush=True
            )
            stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_S[1])
    finally:
        lock.release()
    return 0


def start_supervised(root: Path, names: list[str], timeout_s: float = 90.0) -> list[str]:
    """Start a supervisor per flow not yet running; wait for each to log ``ready``."""
    started = []
    for name in names:
        if is_locked(root, name):
            continue
        log = log_file(root, name)
        offset = log.stat().st_size if log.exists() else 0
        procs.spawn(
            [sys.executable, "-m", "ops.stack.flows", "supervise", name],
            log,
            root / "run" / f"{name}-supervisor.pid",
            env={**os.environ, "F2_STACK_DIR": str(root), "PYTHONUNBUFFERED": "1"},
            cwd=project_root(),
        )
        if not procs.wait_until(
            lambda log=log, offset=offset, name=name: _logged_ready(log, offset, name), timeout_s
        ):
            raise ServiceError(
                f"flow {name} did not report ready within {timeout_s:.0f}s; see {log}"
            )
        started.append(name)
    return started


def _logged_ready(log: Path, offset: int, name: str) -> bool:
    with open(log, "rb") as handle:
        handle.seek(offset)
        return f"{name} ready".encode() in handle.read()


def stop_supervised(root: Path) -> list[str]:
    """Stop every supervised flow of this stack (the supervisor stops its flow first)."""
    stopped = []
    for name in FLOWS:
        pid = procs.read_pid(root / "run" / f"{name}-supervisor.pid")
        if pid is not None:
            procs.terminate(pid, timeout_s=STOP_TIMEOUT_S + 5)
            stopped.append(name)
        (root / "run" / f"{name}-supervisor.pid").unlink(missing_ok=True)
    return stopped


def status_rows(root: Path) -> list[dict[str, object]]:
    """One row per flow that runs (or was started and is gone) on this stack."""
    rows = []
    for name, spec in FLOWS.items():
        pid = procs.read_pid(pid_file(root, name))
        supervised = (root / "run" / f"{name}-supervisor.pid").exists()
        if pid is None and not supervised:
            continue
        state = "down"
        if pid is not None:
            state = "ready" if procs.port_open(metrics_port(spec)) else "starting"
        rows.append(
            {
                "service": f"flow:{name}",
                "state": state,
                "port": metrics_port(spec),
                "pid": pid,
                "rss_mb": procs.rss_mb(pid) if pid else None,
                "log": str(log_file(root, name)) if supervised else "(foreground: f2 run)",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.stack.flows")
    parser.add_argument("action", choices=["supervise"])
    parser.add_argument("flow", choices=sorted(FLOWS))
    args = parser.parse_args(argv)
    from schemas.settings import stack_dir

    return supervise(args.flow, stack_dir())


if __name__ == "__main__":
    sys.exit(main())
