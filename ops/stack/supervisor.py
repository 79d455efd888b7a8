"""The one supervisor of the local stack's background processes (the flows, the health API).

:func:`supervise` runs a child until told to stop, restarting it with exponential backoff (1 s
doubling to 60 s; back to 1 s after a run that lasted a minute) and logging every restart. It is
a dozen lines on purpose: a process manager (supervisord, circus) would be one more service to
install and keep alive on a developer's machine, for what ``f2 stack`` needs; in containers and
Kubernetes the orchestrator restarts instead.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable

BACKOFF_S = (1.0, 60.0)
HEALTHY_RUN_S = 60.0
STOP_TIMEOUT_S = 15.0


def supervise(
    name: str,
    run_once: Callable[[threading.Event], int],
    stop: threading.Event,
    backoff_s: tuple[float, float] = BACKOFF_S,
    healthy_run_s: float = HEALTHY_RUN_S,
) -> int:
    """Call ``run_once(stop)`` (one run of the child; returns its exit code) until ``stop`` is
    set, waiting between runs with exponential backoff."""
    delay = backoff_s[0]
    while not stop.is_set():
        started = time.monotonic()
        code = run_once(stop)
        if stop.is_set():
            break
        if time.monotonic() - started >= healthy_run_s:
            delay = backoff_s[0]
        print(f"supervisor {name}: exited with {code}; restart in {delay:.0f}s", flush=True)
        stop.wait(delay)
        delay = min(delay * 2, backoff_s[1])
    return 0


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT (instead of dying with the child still running)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())


def wait_child(child: subprocess.Popen, stop: threading.Event) -> int:
    """Wait for ``child`` to exit; stop it when ``stop`` is set. Its exit code."""
    while child.poll() is None:
        if stop.wait(0.2):
            stop_child(child)
            break
    return child.wait()


def stop_child(child: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGINT (Bytewax and the health server exit cleanly on it), SIGKILL after ``timeout_s``;
    reaped either way."""
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
