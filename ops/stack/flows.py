"""The dataflows as processes: how to run each one, one instance per stack, and a supervisor.

A flow runs as ``python -m bytewax.run <module> <recommended flags>`` with Bytewax's API server
on the flow's metrics port. At most one instance of a flow runs per stack directory: the runner
(``f2 run``) or the supervisor (``f2 stack up --flows``) holds an exclusive lock on
``<stack>/run/<flow>.pid``, which also records its pid. The supervisor writes the flow's output
to ``<stack>/logs/<flow>.log`` and restarts a flow that exits (:mod:`ops.stack.supervisor`).

Readiness: a line containing ``ready`` is printed once the flow's API port answers and, for
ingest, every MQTT session logged ``mqtt session subscribed``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ops.stack import procs
from ops.stack.services import ServiceError
from ops.stack.supervisor import STOP_TIMEOUT_S, stop_child, stop_on_signals, supervise
from schemas.settings import (
    PARAMS_DB,
    PIPELINE_DB_ROLE,
    READER_DB_ROLE,
    TIMESERIES_DB,
    Config,
    child_environment,
    load_config,
    local_dsn,
    project_root,
    read_stack_info,
)


@dataclass(frozen=True)
class FlowSpec:
    """How to run one dataflow: its factory, metrics port, and the recommended ``bytewax.run``
    flags."""

    name: str
    module: str
    metrics_port: Callable[[Config], int]
    flags: Callable[[Path], list[str]]
    prepare: Callable[[Path, Config], None] = lambda _root, _config: None
    sessions: Callable[[Config], int] = lambda _config: 0

    @property
    def target(self) -> str:
        """What ``bytewax.run`` imports: the module's flow factory."""
        return f"{self.module}:build_flow()"


def _decode_recovery(root: Path) -> Path:
    return root / "recovery" / "decode"


def _decode_prepare(root: Path, config: Config) -> None:
    from connectors.recovery_dir import prepare_recovery

    prepare_recovery(
        _decode_recovery(root), config.decode.recovery_parts, root / "kafka" / "incarnation"
    )


FLOWS: dict[str, FlowSpec] = {
    # Stateless: no recovery; 1 s epochs bound the unacknowledged window (connectors.mqtt_source).
    "ingest": FlowSpec(
        "ingest",
        "dataflows.ingest",
        lambda config: config.ingest.metrics_port,
        lambda _root: ["-s", "1"],
        sessions=lambda config: config.ingest.partitions,
    ),
    # Recovery holds the Kafka offsets (dataflows.decode): 1 s snapshots, 10 s of backups kept.
    "decode": FlowSpec(
        "decode",
        "dataflows.decode",
        lambda config: config.decode.metrics_port,
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


def flow_command(spec: FlowSpec, root: Path, config: Config) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one flow process."""
    cache = root / "run" / f"{spec.name}-api"
    cache.mkdir(parents=True, exist_ok=True)
    env = {
        **role_dsns(root, PIPELINE_DB_ROLE),
        **child_environment(),
        "F2_STACK_DIR": str(root),
        "BYTEWAX_DATAFLOW_API_ENABLED": "1",
        "BYTEWAX_DATAFLOW_API_PORT": str(spec.metrics_port(config)),
        "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(cache),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "bytewax.run", spec.target, *spec.flags(root)]
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
    config: Config,
    out: IO[str],
    stop: threading.Event,
    announce: IO[str] | None = None,
) -> int:
    """Run the flow until it exits or ``stop`` is set; output to ``out``, ``ready`` line to
    ``announce`` (default ``out``)."""
    spec.prepare(root, config)
    argv, env = flow_command(spec, root, config)
    cwd = project_root() or Path.cwd()
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
    )
    readiness = Readiness(spec.metrics_port(config), spec.sessions(config))
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
            stop_child(child)
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


def run_supervised(name: str, root: Path, config: Config) -> int:
    """Run flow ``name`` under the supervisor until SIGTERM/SIGINT (one per stack: the lock)."""
    spec = FLOWS[name]
    lock = FlowLock(root, name)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"supervisor {name}: {exc}", flush=True)
        return 1
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        return supervise(name, lambda stop: run_once(spec, root, config, sys.stdout, stop), stop)
    finally:
        lock.release()


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
            env=child_environment({"F2_STACK_DIR": str(root), "PYTHONUNBUFFERED": "1"}),
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


def status_rows(root: Path, config: Config) -> list[dict[str, object]]:
    """One row per flow that runs (or was started and is gone) on this stack."""
    rows = []
    for name, spec in FLOWS.items():
        pid = procs.read_pid(pid_file(root, name))
        supervised = (root / "run" / f"{name}-supervisor.pid").exists()
        if pid is None and not supervised:
            continue
        state = "down"
        if pid is not None:
            state = "ready" if procs.port_open(spec.metrics_port(config)) else "starting"
        rows.append(
            {
                "service": f"flow:{name}",
                "state": state,
                "port": spec.metrics_port(config),
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
    config = load_config()
    return run_supervised(args.flow, Path(config.connections.stack_dir), config)


if __name__ == "__main__":
    sys.exit(main())
