"""Where a flow's threads spend their wall time: on CPU or waiting, and waiting for what.

Two sources, taken over the same window of a running flow process:

- ``/proc/<pid>/task/<tid>/stat``: each thread's CPU seconds (user + system), exact;
- py-spy (``record --idle --threads --nonblocking -f raw``): stack samples of every thread at a
  fixed rate, idle or not, so each thread's samples stand for its wall time. A second py-spy
  without ``--idle`` samples the same threads only when the OS has them running.

Each sample is put in one category by the first :data:`RULES` entry whose marker appears in its
stack (Python frames only: a thread inside Bytewax's Rust code or a C library shows the last
Python frame that called it). A category's share of wall time is its share of the ``--idle``
samples; its on-CPU share is its share of running samples scaled to the thread's measured CPU, and
the rest of its wall share is waiting. ``other`` is what no rule names: a profile accounts for a
thread when ``other`` stays under 10 %.

Sampling costs the flows some CPU (py-spy reads their memory; ``--nonblocking`` does not stop
them): a step that is profiled is reported apart from the measured steps.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import CLOCK_TICKS

SAMPLE_HZ = 50

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Kafka producer: delivery confirmations awaited (ingest's sink per batch; decode's sink at
    # each snapshot), then records handed to librdkafka.
    ("kafka: wait for delivery confirmations", ("_Delivery.settle", "Producer.flush")),
    ("kafka: produce records", ("_Delivery.produce",)),
    # Decode's Kafka source: fetch (librdkafka's queue; it never blocks) and raw-record building.
    ("kafka: fetch raw records", ("_RawPartition.next_batch",)),
    ("decode: frames and events", ("DecodeStep.__call__",)),
    ("decode: group records by sink partition", ("SinkChunks.__call__",)),
    ("store: batch rows", ("StoreBatcher",)),
    ("freshness tracker", ("FreshnessTracker", "process_tracker")),
    ("registry feed: listen", ("_FeedPartition",)),
    # The writer thread: a COPY/INSERT/COMMIT waiting for PostgreSQL, or waiting for work.
    ("database: statements and commits", ("Connection.wait", "LibpqWriter", "Copy.")),
    ("store: write batch (Python)", ("TimeseriesWriter",)),
    ("idle: waiting for work", ("ThreadPoolExecutor", "_worker", "Queue.get", "queue.get")),
    ("registry lookups", ("RegistryStore", "registry_store", "registry_pg")),
    # Ingest: records from MQTT messages, and the MQTT side.
    ("ingest: build raw records", ("RecordBuilder", "raw_record")),
    ("mqtt: acknowledge closed epochs", ("_ack_closed_epochs", "send_pubacks")),
    ("mqtt: take received messages", ("_MqttPartition.next_batch", "_MqttPartition.next_awake")),
    ("mqtt: handle incoming packets", ("_handle_publish", "_on_publish", "_packet_handle")),
    ("mqtt: read socket", ("_sock_recv", "_packet_read", "loop_read")),
    ("mqtt: wait on socket (select)", ("Client._loop", "loop_forever")),
    ("metrics: serve /metrics", ("generate_latest", "CollectorRegistry", "ProcessCollector")),
)
NATIVE = "bytewax runtime (native code)"
"""A stack whose innermost Python frame is the entry module (or a thread with no Python frame):
Bytewax's Rust runtime (scheduling, epoch ends, exchange between workers, sleeping until a
source's ``next_awake``) or a native thread such as the API server's."""
ENTRY_FRAMES = frozenset({"<module>", "_run_code", "_run_module_as_main"})
OTHER = "other"


def category(frames: list[str]) -> str:
    """The category of one sample's Python ``frames`` (outermost first, ``func (file:line)``)."""
    if not frames or frames[-1].split(" (", 1)[0] in ENTRY_FRAMES:
        return NATIVE
    stack = ";".join(frames)
    for name, markers in RULES:
        if any(marker in stack for marker in markers):
            return name
    return OTHER


@dataclass
class ThreadProfile:
    """One thread: its name, CPU seconds, and samples per category (all, and running ones)."""

    name: str
    cpu_s: float = 0.0
    wall: Counter[str] = field(default_factory=Counter)
    running: Counter[str] = field(default_factory=Counter)

    def summary(self, window_s: float) -> dict[str, Any]:
        """Shares of ``window_s``: on CPU, and per category its wall, on-CPU and waiting shares."""
        total = sum(self.wall.values())
        cpu_share = min(1.0, self.cpu_s / window_s) if window_s > 0 else 0.0
        run_total = sum(self.running.values())
        categories = {}
        for name, count in self.wall.most_common():
            wall = count / total if total else 0.0
            on_cpu = cpu_share * self.running[name] / run_total if run_total else 0.0
            on_cpu = min(on_cpu, wall)
            categories[name] = {
                "wall": round(wall, 4),
                "on_cpu": round(on_cpu, 4),
                "waiting": round(wall - on_cpu, 4),
            }
        return {
            "thread": self.name,
            "cpu_share": round(cpu_share, 4),
            "samples": total,
            "accounted": round(1 - categories.get(OTHER, {"wall": 0.0})["wall"], 4),
            "categories": categories,
        }


def parse_raw(text: str) -> Iterator[tuple[str, str, list[str], int]]:
    """``(thread id, thread name, frames, count)`` from py-spy's raw (collapsed) output with
    ``--threads``: ``thread (123): name;frame (file:line);... count`` per line (the name is
    missing for a thread Python never named)."""
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, *frames = stack.split(";")
        tid, _, name = head.removeprefix("thread (").partition(")")
        yield tid, name.lstrip(": ") or f"thread {tid}", frames, int(count)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid`` (``/proc/<pid>/task``), by thread id."""
    cpu = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu[task.name] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return cpu


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter (the ``[perf]`` extra), else on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Sampler:
    """py-spy on one process for ``seconds``: all samples and running samples, plus per-thread
    CPU from ``/proc`` over the same window."""

    def __init__(self, pid: int, seconds: float, workdir: Path, label: str) -> None:
        self.pid, self.seconds = pid, seconds
        self.files = {kind: workdir / f"spy-{label}-{kind}.txt" for kind in ("wall", "running")}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._cpu0: dict[str, float] = {}
        self._started = 0.0

    def start(self) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is missing (make benchmarks installs the [perf] extra)")
        self._cpu0 = thread_cpu(self.pid)
        self._started = time.monotonic()
        for kind, path in self.files.items():
            argv = [exe, "record", "-p", str(self.pid), "-d", str(max(1, round(self.seconds)))]
            argv += ["-r", str(SAMPLE_HZ), "--threads", "--nonblocking", "-f", "raw"]
            argv += ["-o", str(path), *(["--idle"] if kind == "wall" else [])]
            self._procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def finish(self) -> dict[str, Any]:
        """Wait for py-spy; the per-thread profile (see :class:`ThreadProfile`)."""
        for proc in self._procs:
            try:
                proc.wait(self.seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        window = time.monotonic() - self._started
        cpu1 = thread_cpu(self.pid)
        texts = {
            kind: path.read_text() if path.exists() else "" for kind, path in self.files.items()
        }
        return profile(texts["wall"], texts["running"], self._cpu0, cpu1, window)


def profile(
    wall_text: str,
    running_text: str,
    cpu_before: dict[str, float],
    cpu_after: dict[str, float],
    window_s: float,
) -> dict[str, Any]:
    """Per-thread summaries from py-spy's two raw outputs and two ``/proc`` readings."""
    threads: dict[str, ThreadProfile] = {}
    for kind, text in (("wall", wall_text), ("running", running_text)):
        for tid, name, frames, count in parse_raw(text):
            thread = threads.setdefault(tid, ThreadProfile(name))
            getattr(thread, kind)[category(frames)] += count
    for tid, thread in threads.items():
        thread.cpu_s = max(0.0, cpu_after.get(tid, 0.0) - cpu_before.get(tid, 0.0))
    summaries = [t.summary(window_s) for t in threads.values() if t.wall]
    summaries.sort(key=lambda s: (-s["cpu_share"], s["thread"]))
    cpu_s = sum(cpu_after.values()) - sum(cpu_before.get(t, 0.0) for t in cpu_after)
    return {
        "window_s": round(window_s, 2),
        "process_cpu_share": round(cpu_s / window_s, 3) if window_s else 0.0,
        "threads": summaries,
    }
