"""The health API as a supervised background process of the local stack.

``f2 stack up --flows`` (and ``--monitoring``) start ``python -m ops.stack.health_proc supervise``:
it runs ``f2 health serve`` (port ``F2_HEALTH_PORT``, default 8000 + the stack's port offset) and
restarts it with exponential backoff (1 s doubling to 60 s) if it exits. Output goes to
``<stack>/logs/health.log``; the supervisor's pid to ``<stack>/run/health-supervisor.pid``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ops.health.rules import load_health_settings
from ops.stack import flows, procs
from ops.stack.services import ServiceError
from schemas.settings import READER_DB_ROLE, project_root, stack_dir

NAME = "health"
BACKOFF_S = (1.0, 60.0)
HEALTHY_RUN_S = 60.0


def log_file(root: Path) -> Path:
    return root / "logs" / f"{NAME}.log"


def supervisor_pid_file(root: Path) -> Path:
    return root / "run" / f"{NAME}-supervisor.pid"


def start_supervised(root: Path, timeout_s: float = 30.0) -> bool:
    """Start the supervisor unless it runs; wait until the API answers. True if started."""
    if procs.read_pid(supervisor_pid_file(root)) is not None:
        return False
    port = load_health_settings().port
    if procs.port_open(port):
        raise ServiceError(f"health: port {port} is already taken (set F2_HEALTH_PORT)")
    procs.spawn(
        [sys.executable, "-m", "ops.stack.health_proc", "supervise"],
        log_file(root),
        supervisor_pid_file(root),
        env={
            **flows.role_dsns(root, READER_DB_ROLE),
            **os.environ,
            "F2_STACK_DIR": str(root),
            "PYTHONUNBUFFERED": "1",
        },
        cwd=project_root(),
    )
    if not procs.wait_until(lambda: procs.port_open(port), timeout_s):
        raise ServiceError(
            f"health API did not answer on :{port} in {timeout_s:.0f}s; see "
            f"{log_file(root)}\n{procs.tail(log_file(root))}"
        )
    return True


def stop_supervised(root: Path) -> bool:
    """Stop the supervisor (and its server); True if one was running."""
    pid = procs.read_pid(supervisor_pid_file(root))
    supervisor_pid_file(root).unlink(missing_ok=True)
    if pid is None:
        return False
    procs.terminate(pid)
    return True


def status_rows(root: Path) -> list[dict[str, object]]:
    """The health API's row for ``f2 stack status`` (none if it was never started here)."""
    pid = procs.read_pid(supervisor_pid_file(root))
    if pid is None and not supervisor_pid_file(root).exists():
        return []
    port = load_health_settings().port
    state = "down" if pid is None else "ready" if procs.port_open(port) else "starting"
    return [
        {
            "service": NAME,
            "state": state,
            "port": port,
            "pid": pid,
            "rss_mb": procs.rss_mb(pid) if pid else None,
            "log": str(log_file(root)),
        }
    ]


def supervise() -> int:
    """Run ``f2 health serve`` until SIGTERM/SIGINT, restarting it when it exits."""
    stop = threading.Event()
    child: list[subprocess.Popen[bytes]] = []

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()
        if child and child[0].poll() is None:
            child[0].terminate()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    backoff = BACKOFF_S[0]
    while not stop.is_set():
        started = time.monotonic()
        child[:] = [subprocess.Popen([sys.executable, "-m", "ops.cli", "health", "serve"])]
        code = child[0].wait()
        if stop.is_set():
            break
        if time.monotonic() - started >= HEALTHY_RUN_S:
            backoff = BACKOFF_S[0]
        print(f"supervisor health: exited with {code}; restart in {backoff:.0f}s", flush=True)
        stop.wait(backoff)
        backoff = min(backoff * 2, BACKOFF_S[1])
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["supervise"]:
        sys.exit("usage: python -m ops.stack.health_proc supervise")
    os.environ.setdefault("F2_STACK_DIR", str(stack_dir()))
    sys.exit(supervise())
