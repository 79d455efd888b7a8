"""The health API as a supervised background process of the local stack.

``f2 stack up --flows`` (and ``--monitoring``) start ``python -m ops.stack.health_proc supervise``:
it runs ``f2 health serve`` (port ``F2_HEALTH_PORT``, default 8000 + the stack's port offset) and
restarts it when it exits (:mod:`ops.stack.supervisor`). Output goes to
``<stack>/logs/health.log``; the supervisor's pid to ``<stack>/run/health-supervisor.pid``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from ops.stack import flows, procs
from ops.stack.services import ServiceError
from ops.stack.supervisor import stop_on_signals, supervise, wait_child
from schemas.settings import (
    READER_DB_ROLE,
    HealthSettings,
    child_environment,
    load_config,
    project_root,
)

NAME = "health"


def log_file(root: Path) -> Path:
    return root / "logs" / f"{NAME}.log"


def supervisor_pid_file(root: Path) -> Path:
    return root / "run" / f"{NAME}-supervisor.pid"


def start_supervised(root: Path, settings: HealthSettings, timeout_s: float = 30.0) -> bool:
    """Start the supervisor unless it runs; wait until the API answers. True if started."""
    if procs.read_pid(supervisor_pid_file(root)) is not None:
        return False
    port = settings.port
    if procs.port_open(port):
        raise ServiceError(f"health: port {port} is already taken (set F2_HEALTH_PORT)")
    procs.spawn(
        [sys.executable, "-m", "ops.stack.health_proc", "supervise"],
        log_file(root),
        supervisor_pid_file(root),
        env={
            **flows.role_dsns(root, READER_DB_ROLE),
            **child_environment({"F2_STACK_DIR": str(root), "PYTHONUNBUFFERED": "1"}),
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


def status_rows(root: Path, settings: HealthSettings) -> list[dict[str, object]]:
    """The health API's row for ``f2 stack status`` (none if it was never started here)."""
    pid = procs.read_pid(supervisor_pid_file(root))
    if pid is None and not supervisor_pid_file(root).exists():
        return []
    port = settings.port
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


def run_supervised() -> int:
    """Run ``f2 health serve`` under the supervisor until SIGTERM/SIGINT."""
    stop = threading.Event()
    stop_on_signals(stop)

    def serve(stop: threading.Event) -> int:
        argv = [sys.executable, "-m", "ops.cli", "health", "serve"]
        return wait_child(subprocess.Popen(argv, cwd=project_root()), stop)

    return supervise(NAME, serve, stop)


def main(argv: list[str]) -> int:
    if argv != ["supervise"]:
        print("usage: python -m ops.stack.health_proc supervise", file=sys.stderr)
        return 2
    load_config()  # fails early, with the variable named, on a bad setting
    return run_supervised()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
