"""A fleet of 100,000 controllers (``make bench-fleet``; not part of ``make benchmarks``).

What it shows: whether the pipeline handles a large fleet at the design load, and what the fleet's
size costs, on the measuring machine. Steps, on an isolated stack of its own (a temporary
directory, a free port offset from 2000 up; never ``/tmp/bench-stack`` or another stack), stopped
and purged at the end, also after a failure, SIGTERM or Ctrl-C:

1. **Register** each fleet (``python -m simulator --controllers N --seed S --register
   --duration 0``: set-based inserts, one transaction per 5,000 controllers, with progress lines,
   ``ANALYZE`` at the end), and the main fleet a second time (idempotent: nothing new, and how
   long that takes).
2. **Cold phase** per fleet size (the curve: 1,000, 10,000 and 100,000 controllers): Redis
   flushed, Kafka restarted empty, ingest up, then the simulator's load mode publishes as the test
   rig's MQTT user (``f2-sim``, the stack's default) over ``--connections`` connections (one per
   publishing process) at ``--rate`` msg/s spread over every source of the fleet (a source is a
   sensor or an event connector; the simulator cycles over them in controller order, so each
   controller sends about rate / controllers msg/s and every controller is due once per *fleet
   pass* = sources / rate seconds). Decode is started a few seconds after the first message, so
   its **cold start** is measured into running traffic: decode start → first stored row, → the
   registry cache warm (``f2_controllers_tracked`` = every controller of the fleet, i.e. every
   entry loaded once), → caught up (every entry loaded and under a second of traffic waiting in
   Kafka, while the simulator still publishes: the *steady state*). The simulator publishes at
   least ``min_passes`` fleet passes, at most ``max_passes`` of them or ``max_s`` (whichever is
   longer), and is stopped (SIGTERM: its report counts what the broker acknowledged) ``steady_s``
   after decode caught up. Then the backlog drains and the rows are reconciled with the
   simulator's report (zero loss: stored == ``expected_readings + expected_events``; rows still
   missing are counted again after decode restarted from its recovery snapshot, to tell late from
   lost) and the stored rows must name every controller.
3. **Restart phase** (main fleet): Kafka restarted, Redis kept warm, decode started with a
   registry cache large enough for the whole fleet (``F2_REGISTRY_CACHE_BYTES``): cold start from
   Redis, and decode's memory with the whole fleet cached.
4. **Micro-measurements** in this process: the freshness tracker's memory and scrape time for the
   main fleet (``connectors.freshness``), one registry lookup (PostgreSQL, and through a
   ``RegistryStore``), the share of the fleet the worker cache holds, and the dimension-table sync
   (the writer's upsert of ``controllers``/``sensors``/``data_points`` for every registry entry it
   loads) per controller.

Per phase: decode's RSS (``/proc``: at the end, and its peak), registry lookups per second (misses
of the worker cache, by source: ``f2_registry_lookups_total``, ``f2_registry_loads_total``), CPU
of every process group (``bench.common.CpuMeter``; PostgreSQL with its backends, Redis, Tansu,
Mosquitto, the flows; the simulator from ``os.wait4``), Redis ``INFO`` (memory, keys, evictions),
dimension-table row counts (``pg_stat_user_tables``), freshness metric series, end-to-end latency
(``f2_e2e_latency_seconds{since="device"}``: p50/p99 over the phase, during the warm-up, after it
and in the steady state), the Kafka backlog, decode's CPU per message (in the warm-up, after it,
in the steady state: the figure that holds on a busy machine), and a timeline sampled every
``sample_s`` (decode's ``/metrics`` costs CPU in proportion to the fleet: the freshness collector
walks every tracked device).

Run: ``.venv/bin/python -m bench.fleet [--quick]`` (``make bench-fleet``: 25-30 minutes on 2
cores). ``--quick``: 2,000 controllers at 1,000 msg/s for at most 20 s (a curve point of 500),
about 2 minutes, for the smoke test; ``--render`` summarises ``fleet.json`` again. Writes
``bench/results/fleet.json`` (the ``fleet`` section holds the documented keys,
docs/PERFORMANCE.md) and ``fleet.md``, and adds the ``fleet`` section to ``latest.json`` if
there is one (``bench.report`` renders it). Exit status 1 if a phase failed or rows were lost.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import redis

from bench.common import (
    RESULTS_DIR,
    ROOT,
    CpuMeter,
    f2,
    interruptible_children,
    machine_info,
    proc_stat,
    scrape,
    use_isolated_stack,
    versions,
)
from bench.report import _get
from ops.health.flow_metrics import Scrape, buckets, quantile_of, share_at_or_below
from ops.stack import flows
from ops.stack.local import Stack
from ops.stack.procs import port_open, wait_until
from ops.stack.supervisor import stop_child
from schemas.settings import (
    DEFAULT_FLOW_PORTS,
    DEFAULT_HEALTH_PORT,
    DEFAULT_PORTS,
    PIPELINE_DB_ROLE,
    Config,
)
from schemas.topics import SENSOR_MODE
from simulator.fleet import Fleet, controller_entry, generate_fleet

SEED = 5100  # the main fleet; curve point i uses SEED + 1 + i (distinct MACs)
LATENCY = "f2_e2e_latency_seconds"
DECODE_DELAY_S = 3.0  # decode starts this long after the first message reached ingest
FIRST_ROW_TIMEOUT_S = 180.0
PUBLISH_TIMEOUT_S = 300.0  # the simulator builds its sources before publishing
RECOUNT_WAIT_S = 60.0
OFFSET_FIRST, OFFSET_STEP = 2000, 100
OFFSET_LOCK = "f2-test-stack-offset-{}.lock"
"""The machine-wide lock file of a stack port offset (``tests/stacks.py`` takes the same, so a
test session never picks the offset this benchmark runs on)."""
FRESHNESS_FAMILIES = (
    "f2_freshness_",
    "f2_controllers_",
    "f2_controller_",
    "f2_sensors_",
    "f2_sensor_",
)
STACK_PORTS = (
    *DEFAULT_PORTS.values(),
    DEFAULT_PORTS["mosquitto"] + 1,
    DEFAULT_PORTS["mosquitto"] + 2,
    DEFAULT_HEALTH_PORT,
    *range(DEFAULT_FLOW_PORTS["ingest"], DEFAULT_FLOW_PORTS["ingest"] + 19),
)
"""Every port a stack (and its flows) may listen on, at offset 0."""


@dataclass(frozen=True)
class Plan:
    """What one run does."""

    controllers: int
    curve: tuple[int, ...]  # smaller fleets measured before the main one
    rate: float
    connections: int
    min_passes: float  # fleet passes a phase publishes at least (every controller once: 1)
    max_passes: float  # ... at most (a cold phase)
    max_s: float  # ... but at least this long, at most (so small fleets reach a steady state)
    restart_passes: float  # most fleet passes of the restart phase (0: no restart phase)
    steady_s: float  # a phase ends this long after decode caught up (see Phase.steady)
    sample_s: float  # timeline interval (doubled for fleets over 20,000: scrapes cost decode CPU)
    drain_s: float  # longest wait for the backlog after the simulator ended
    stall_s: float  # ... given up earlier when nothing was stored for this long


FULL = Plan(100_000, (1_000, 10_000), 5000.0, 2, 1.05, 1.5, 180.0, 1.5, 30.0, 5.0, 900.0, 120.0)
QUICK = Plan(2_000, (500,), 1000.0, 2, 1.05, 1.6, 20.0, 1.5, 5.0, 2.0, 60.0, 30.0)


def say(line: str) -> None:
    print(f"bench fleet: {line}", file=sys.stderr, flush=True)


# The isolated stack ------------------------------------------------------------------------------


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def reserve_offset(first: int = OFFSET_FIRST) -> tuple[int, int]:
    """A stack port offset whose ports are all free, with the machine-wide lock that test
    sessions honour (:data:`OFFSET_LOCK`); (offset, lock fd)."""
    try:
        floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        floor = 32768
    for offset in range(first, floor - max(STACK_PORTS), OFFSET_STEP):
        if offset == 1000:  # `make benchmarks`
            continue
        path = Path(tempfile.gettempdir()) / OFFSET_LOCK.format(offset)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if all(_bindable(port + offset) for port in STACK_PORTS):
            return offset, fd
        os.close(fd)
    raise RuntimeError("no free stack port offset from 2000 up")


def release_offset(offset: int, fd: int) -> None:
    with contextlib.suppress(OSError):
        (Path(tempfile.gettempdir()) / OFFSET_LOCK.format(offset)).unlink()
    with contextlib.suppress(OSError):
        os.close(fd)


def service_pids(root: Path, config: Config) -> dict[str, list[int]]:
    """The stack's service processes by name (PostgreSQL: the postmaster, parent of its
    backends)."""
    stack = Stack(root, config)
    return {name: [pid] for name, svc in stack.services.items() if (pid := svc.pid()) is not None}


def proc_kib(pid: int, field: str) -> int | None:
    """A ``/proc/<pid>/status`` field in KiB (``VmRSS``, ``VmHWM``), None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def mib(kib: float | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


class FlowProcess:
    """One dataflow process, started like ``f2 run`` starts it (``ops.stack.flows``), with its
    Bytewax API (metrics) on ``port`` and its output in ``log``."""

    def __init__(self, name: str, config: Config, root: Path, port: int, logdir: Path) -> None:
        self.spec, self.config, self.root = flows.FLOWS[name], config, root
        self.port, self.logdir = port, logdir
        self.log = logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.starts = 0

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        self.spec.prepare(self.root, self.config)
        argv, env = flows.flow_command(self.spec, self.root, self.config)
        env = {**env, **(extra_env or {}), "BYTEWAX_DATAFLOW_API_PORT": str(self.port)}
        self.starts += 1
        self.log = self.logdir / f"{self.spec.name}-{self.starts}.log"  # readiness: this run's
        with open(self.log, "ab") as out:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=out)

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.spec.name} is not running; see {self.log}")
        readiness = flows.Readiness(self.port, self.spec.sessions(self.config))
        for line in self.log.read_text(errors="replace").splitlines():
            readiness.feed(line)
        return readiness.ready()

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        if not wait_until(self.ready, timeout_s, 0.2):
            self.ready()  # raises if it died
            raise RuntimeError(f"{self.spec.name} not ready in {timeout_s:.0f} s; see {self.log}")

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else -1

    def stop(self) -> None:
        """SIGINT (a clean stop), SIGKILL after 20 s."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_child(proc, 20)


# Databases and Redis -----------------------------------------------------------------------------


def stored_rows(dsn: str, since: datetime, until: datetime) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM readings WHERE time >= %(a)s AND time < %(b)s)"
            " + (SELECT count(*) FROM device_events WHERE time >= %(a)s AND time < %(b)s)",
            {"a": since, "b": until},
        ).fetchone()
    return int(row[0]) if row else 0


def macs_stored(dsn: str, since: datetime, until: datetime) -> set[str]:
    """MACs of the controllers with at least one stored reading or event in the window (readings
    name their controller through the ``sensors`` dimension table)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.mac FROM controllers c WHERE c.controller_id IN ("
            " SELECT s.controller_id FROM readings r JOIN sensors s USING (sensor_id)"
            " WHERE r.time >= %(a)s AND r.time < %(b)s"
            " UNION SELECT controller_id FROM device_events WHERE time >= %(a)s AND time < %(b)s)",
            {"a": since, "b": until},
        ).fetchall()
    return {mac for (mac,) in rows}


DIMENSIONS = ("controllers", "sensors", "data_points")


def dimension_stats(dsn: str) -> dict[str, dict[str, int]]:
    """Cumulative inserts/updates and live rows of the dimension tables."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_live_tup FROM pg_stat_user_tables"
            " WHERE relname = ANY(%s)",
            (list(DIMENSIONS),),
        ).fetchall()
    return {name: {"inserted": i, "updated": u, "live": n} for name, i, u, n in rows}


def dimension_delta(before: dict, after: dict) -> dict[str, dict[str, int]]:
    return {
        table: {
            "inserted": after[table]["inserted"] - before.get(table, {}).get("inserted", 0),
            "updated": after[table]["updated"] - before.get(table, {}).get("updated", 0),
            "live": after[table]["live"],
        }
        for table in after
    }


def redis_facts(client: redis.Redis) -> dict[str, Any]:
    """Redis ``INFO``: memory, keys, evictions, hits and misses."""
    info: dict[str, Any] = {**client.info("memory"), **client.info("stats")}
    return {
        "used_memory_mib": round(info["used_memory"] / 2**20, 1),
        "maxmemory_mib": round(info.get("maxmemory", 0) / 2**20, 1),
        "keys": int(client.dbsize()),
        "evicted_keys": int(info.get("evicted_keys", 0)),
        "keyspace_hits": int(info.get("keyspace_hits", 0)),
        "keyspace_misses": int(info.get("keyspace_misses", 0)),
    }


# The fleet ---------------------------------------------------------------------------------------


def fleet_shape(fleet: Fleet) -> dict[str, int]:
    """Controllers, sensors and sources (what the simulator cycles over) of ``fleet``."""
    sensors = events = 0
    for controller in fleet.controllers:
        for connector in controller.connectors:
            if connector.mode == SENSOR_MODE:
                sensors += len(connector.sensors)
            else:
                events += 1
    return {
        "controllers": len(fleet.controllers),
        "sensors": sensors,
        "sources": sensors + events,
    }


def simulator_argv(size: int, seed: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "simulator",
        "--controllers",
        str(size),
        "--seed",
        str(seed),
        *args,
    ]


def register(size: int, seed: int, log: Path) -> dict[str, Any]:
    """Register a fleet through the simulator's ``--register``; its output echoed as progress."""
    argv = simulator_argv(size, seed, "--register", "--duration", "0")
    began = time.monotonic()
    lines: list[str] = []
    with open(log, "a") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            lines.append(line.rstrip())
            if line.startswith(("registering:", "registered:")):
                say(line.rstrip())
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"registration failed ({code}): {' | '.join(lines[-5:])}")
    added = next((line for line in lines if line.startswith("registered:")), "")
    return {"seconds": round(time.monotonic() - began, 1), "result": added}


# Metrics -----------------------------------------------------------------------------------------


def sample_of(
    decode: Scrape, ingest: Scrape, t: float, rss_kib: int | None, cpu_s: float | None
) -> dict[str, Any]:
    """One point of a phase's timeline (``cpu_s``: decode's CPU seconds so far)."""
    return {
        "t": round(t, 1),
        "cpu_s": None if cpu_s is None else round(cpu_s, 2),
        "tracked": round(decode.total("f2_controllers_tracked")),
        "miss": round(decode.total("f2_registry_lookups_total", result="miss")),
        "hit": round(decode.total("f2_registry_lookups_total", result="hit")),
        "loads_postgres": round(decode.total("f2_registry_loads_total", source="postgres")),
        "loads_redis": round(decode.total("f2_registry_loads_total", source="redis")),
        "decoded": round(decode.total("f2_decode_messages_total")),
        "rows": round(decode.total("f2_store_rows_total", outcome="inserted")),
        "lag": round(decode.total("f2_kafka_consumer_lag")),
        "ingest_received": round(ingest.total("f2_ingest_received_total")),
        "rss_mib": mib(rss_kib),
    }


def freshness_series(decode: Scrape) -> int:
    return sum(1 for name, _, _ in decode.samples if name.startswith(FRESHNESS_FAMILIES))


def latency(before: Scrape, after: Scrape) -> dict[str, Any]:
    cumulative = buckets(before, after, LATENCY, since="device")
    p50, p99 = quantile_of(cumulative, 0.5), quantile_of(cumulative, 0.99)
    share = share_at_or_below(cumulative, 1.0)
    return {
        "observations": round(cumulative[-1][1]) if cumulative else 0,
        "p50_s": None if p50 is None else round(p50, 3),
        "p99_s": None if p99 is None else round(p99, 3),
        "share_within_1s": None if share is None else round(share, 4),
    }


def flush_ms(before: Scrape, after: Scrape) -> float | None:
    """Mean storage flush time between two scrapes."""
    count = after.total("f2_store_flush_seconds_count") - before.total(
        "f2_store_flush_seconds_count"
    )
    total = after.total("f2_store_flush_seconds_sum") - before.total("f2_store_flush_seconds_sum")
    return round(1000 * total / count, 1) if count > 0 else None


def peak_rate(timeline: list[dict[str, Any]], key: str, until: float | None = None) -> float:
    """The highest per-second increase of ``key`` between consecutive timeline points."""
    best = 0.0
    for a, b in itertools.pairwise(timeline):
        if until is not None and b["t"] > until + 1e-6:
            break
        if b["t"] > a["t"]:
            best = max(best, (b[key] - a[key]) / (b["t"] - a["t"]))
    return round(best, 1)


EMPTY = Scrape(0.0, True)


# A phase ----------------------------------------------------------------------------------------


@dataclass
class Bench:
    """Everything a phase needs: the stack, its settings, the flows, where logs go."""

    config: Config
    root: Path
    offset: int
    workdir: Path
    plan: Plan

    def __post_init__(self) -> None:
        ports = {name: port + self.offset for name, port in DEFAULT_FLOW_PORTS.items()}
        self.ingest = FlowProcess("ingest", self.config, self.root, ports["ingest"], self.workdir)
        self.decode = FlowProcess("decode", self.config, self.root, ports["decode"], self.workdir)
        self.redis = redis.Redis.from_url(self.config.connections.redis_url, socket_timeout=10)
        self.simulator: subprocess.Popen[str] | None = None

    @property
    def dsn(self) -> str:
        return self.config.connections.timeseries_dsn

    def fresh_broker(self) -> None:
        """Kafka restarted empty (the flows' resume state with it), no leftover ingest
        sessions."""
        from connectors.mqtt_source import forget_sessions, source_settings

        f2("stack", "stop", "kafka")
        f2("stack", "start", "kafka")
        forget_sessions(source_settings(self.config.connections, self.config.ingest))

    def stop_all(self) -> None:
        if self.simulator is not None and self.simulator.poll() is None:
            self.simulator.terminate()
            try:
                self.simulator.wait(30)
            except subprocess.TimeoutExpired:
                self.simulator.kill()
        self.decode.stop()
        self.ingest.stop()


def publishing_for(plan: Plan, shape: dict[str, int], max_passes: float) -> tuple[float, float]:
    """(least, most) seconds of publishing: at least ``min_passes`` fleet passes, at most
    ``max_passes`` of them or ``max_s``, whichever is longer."""
    pass_s = shape["sources"] / plan.rate
    return math.ceil(plan.min_passes * pass_s), max(plan.max_s, math.ceil(max_passes * pass_s))


def run_phase(
    bench: Bench,
    name: str,
    size: int,
    seed: int,
    publishing: tuple[float, float],
    cache_bytes: int | None = None,
    flush_redis: bool = True,
) -> dict[str, Any]:
    """One measured run of a fleet (module docstring, steps 2 and 3); ``publishing``: (least,
    most) seconds."""
    plan, dsn = bench.plan, bench.dsn
    least, duration = publishing
    say(f"{name}: {size} controllers, {plan.rate:.0f} msg/s for {least:.0f}-{duration:.0f} s")
    if flush_redis:
        bench.redis.flushdb()
    bench.fresh_broker()
    redis_before, dims_before = redis_facts(bench.redis), dimension_stats(dsn)
    bench.ingest.start()
    bench.ingest.wait_ready()
    report = bench.workdir / f"report-{name}.json"
    since = datetime.now(UTC) - timedelta(seconds=2)
    argv = simulator_argv(size, seed, "--rate", str(plan.rate), "--duration", str(duration))
    argv += ["--qos", "1", "--processes", str(plan.connections), "--report", str(report)]
    sim_log = bench.workdir / f"simulator-{name}.log"
    try:
        with open(sim_log, "w") as out:
            bench.simulator = subprocess.Popen(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True
            )
        phase = Phase(bench, name, size, since, report, sim_log, cache_bytes).measure(least)
    finally:
        bench.stop_all()
    phase["dimension_rows"] = dimension_delta(dims_before, dimension_stats(dsn))
    phase["redis_before"] = redis_before
    return phase


def _reaped(proc: subprocess.Popen[str]) -> tuple[float, int] | None:
    """(CPU seconds, peak RSS KiB) of the simulator (its workers included) once it exited."""
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if not pid:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss


class Phase:
    """The measurement of one phase while the simulator runs: decode's cold start, a timeline of
    its metrics, the drain and the reconciliation."""

    def __init__(
        self,
        bench: Bench,
        name: str,
        size: int,
        since: datetime,
        report: Path,
        sim_log: Path,
        cache_bytes: int | None,
    ) -> None:
        self.bench, self.name, self.size, self.since = bench, name, size, since
        self.report, self.sim_log, self.cache_bytes = report, sim_log, cache_bytes
        self.env = {"F2_REGISTRY_CACHE_BYTES": str(cache_bytes)} if cache_bytes else None
        self.timeline: list[dict[str, Any]] = []
        self.scrape_s: list[float] = []
        self.warm: tuple[float, Scrape] | None = None
        self.steady: tuple[float, Scrape] | None = None
        self.last: Scrape = EMPTY
        self.t0 = self.published_t = 0.0
        self.publishing = True  # the steady state counts only while traffic arrives
        self.sample_s = bench.plan.sample_s * (2 if size > 20_000 else 1)

    def sample(self) -> Scrape:
        """Scrape both flows; a timeline point; note when every controller was loaded."""
        began = time.monotonic()
        decode = scrape([self.bench.decode.port])
        self.scrape_s.append(time.monotonic() - began)
        if not decode.ok:
            return self.last
        ingest = scrape([self.bench.ingest.port])
        rss = proc_kib(self.bench.decode.pid, "VmRSS")
        stat = proc_stat(self.bench.decode.pid)
        point = sample_of(decode, ingest, began - self.t0, rss, stat[1] if stat else None)
        self.timeline.append(point)
        self.last = decode
        if self.warm is None and point["tracked"] >= self.size:
            self.warm = (point["t"], decode)
            say(f"{self.name}: registry cache warm (all {self.size} loaded) at {point['t']:.0f} s")
        caught_up = point["lag"] <= self.bench.plan.rate  # under a second of traffic waiting
        if self.warm is not None and self.steady is None and caught_up and self.publishing:
            self.steady = (point["t"], decode)
            say(f"{self.name}: decode caught up at {point['t']:.0f} s")
        return decode

    def cold_start(self) -> tuple[float | None, float]:
        """Start decode into the running traffic; (seconds to its API, seconds to its first
        stored row), from its counter of inserted rows (polled every 0.1 s)."""
        bench = self.bench
        bench.decode.start(self.env)
        self.t0 = bench.decode.started
        ready = None
        while True:
            now = time.monotonic() - self.t0
            if now > FIRST_ROW_TIMEOUT_S:
                raise RuntimeError(f"{self.name}: no row stored {now:.0f} s after decode started")
            if bench.decode.proc is None or bench.decode.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: decode exited; see {bench.decode.log}")
            decode = (
                scrape([bench.decode.port])
                if port_open(bench.decode.port, timeout_s=0.1)
                else EMPTY
            )
            if decode.ok and decode.samples:
                ready = now if ready is None else ready
                if decode.total("f2_store_rows_total", outcome="inserted") > 0:
                    return ready, time.monotonic() - self.t0
            time.sleep(0.1)

    def measure(self, least_s: float) -> dict[str, Any]:
        """Cold start, then sample until the simulator ends: at its ``--duration``, or stopped
        (SIGTERM: it reports what was acknowledged) ``steady_s`` after decode caught up once it
        published for ``least_s``; drain, reconcile."""
        bench, name = self.bench, self.name
        sim = bench.simulator
        assert sim is not None
        ingest = [bench.ingest.port]
        if not wait_until(
            lambda: scrape(ingest).total("f2_ingest_received_total") > 0, PUBLISH_TIMEOUT_S
        ):
            raise RuntimeError(f"{name}: the simulator published nothing; see {self.sim_log}")
        first_message = time.monotonic()
        time.sleep(DECODE_DELAY_S)
        roles = {**service_pids(bench.root, bench.config), "ingest": [bench.ingest.pid]}
        ready, first_row = self.cold_start()
        meter = CpuMeter({**roles, "decode": [bench.decode.pid]})
        meter.start()
        say(f"{name}: decode stored its first row {first_row:.1f} s after it started")
        usage = None
        next_sample, stopping = time.monotonic(), False
        while usage is None:
            now = time.monotonic()
            if now >= next_sample:
                self.sample()
                next_sample += self.sample_s
                steady_for = (now - self.t0 - self.steady[0]) if self.steady else -1.0
                if not stopping and now - first_message >= least_s:
                    if steady_for >= bench.plan.steady_s:
                        # A clean stop: the report counts what was acked. Not terminate():
                        # it polls first, which reaps a simulator that just ended, and then
                        # os.wait4 has no child left to measure (ECHILD).
                        os.kill(sim.pid, signal.SIGTERM)
                        stopping = True
            usage = _reaped(sim)
            if usage is None:
                time.sleep(0.2)
        published_at = time.monotonic()
        self.published_t = published_at - self.t0
        self.publishing = False
        end_of_publishing = self.sample()
        if sim.returncode != 0 or not self.report.exists():
            raise RuntimeError(
                f"{name}: simulator exited with {sim.returncode}; see {self.sim_log}"
            )
        summary = json.loads(self.report.read_text())
        expected = summary["expected_readings"] + summary["expected_events"]
        until = datetime.now(UTC) + timedelta(seconds=1)
        stored = self.drain(expected, until)
        drain_s = time.monotonic() - published_at
        window_s = time.monotonic() - self.t0
        final = self.sample()
        cpu = meter.stop()
        pid = bench.decode.pid
        memory = {
            "decode_rss_mib": mib(proc_kib(pid, "VmRSS")),
            "decode_peak_rss_mib": mib(proc_kib(pid, "VmHWM")),
            "ingest_rss_mib": mib(proc_kib(bench.ingest.pid, "VmRSS")),
            "simulator_peak_rss_mib": mib(usage[1]),
        }
        lost = self.recount(expected, until) if stored < expected else 0
        macs = macs_stored(bench.dsn, self.since, until)
        unseen = sorted(set(summary["controllers"]) - macs)
        published_s = published_at - first_message
        cpu_cores = {role: round(s / window_s, 3) for role, s in cpu.items()}
        phase = {
            "name": name,
            "controllers": self.size,
            "registry_cache_bytes": self.cache_bytes,
            "published": summary["published"],
            "publishing_s": round(published_s, 1),
            "achieved_msgs_per_s": round(summary["published"] / max(published_s, 1e-3), 1),
            "expected_rows": expected,
            "stored_rows": stored,
            "missing_rows": max(0, expected - stored),
            "rows_lost": lost,
            "drain_s": round(drain_s, 1),
            "controllers_seen": len(set(summary["controllers"]) & macs),
            "controllers_unseen": len(unseen),
            "unseen_examples": unseen[:5],
            "decode_started_after_first_message_s": round(self.t0 - first_message, 1),
            "decode_ready_s": None if ready is None else round(ready, 1),
            "cold_start_s": round(first_row, 2),
            **self.registry(final, end_of_publishing, window_s),
            **memory,
            "dead_letters": round(final.total("f2_decode_errors_total")),
            "freshness_series": freshness_series(final),
            "controllers_tracked": round(final.total("f2_controllers_tracked")),
            "sensors_tracked": round(final.total("f2_sensors_tracked")),
            "decode_metric_samples": len(final.samples),
            "decode_scrape_s": _spread(self.scrape_s),
            "window_s": round(window_s, 1),
            "cpu_s": cpu | {"simulator": round(usage[0], 2)},
            "cpu_cores": cpu_cores | {"simulator": round(usage[0] / max(published_s, 1e-3), 3)},
            "redis": redis_facts(bench.redis),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "timeline": self.timeline,
        }
        say(
            f"{name}: stored {stored} of {expected} rows, lost {lost};"
            f" {phase['controllers_seen']} controllers seen; p99 {phase['latency']['p99_s']} s;"
            f" decode RSS {phase['decode_rss_mib']} MiB"
        )
        return phase

    def drain(self, expected: int, until: datetime) -> int:
        """Wait for the backlog (decode's inserted-rows counter, then the database) until
        everything is stored, ``drain_s`` passed or nothing was stored for ``stall_s``; the rows
        stored in the phase's window."""
        plan = self.bench.plan
        deadline = time.monotonic() + plan.drain_s
        progress, moved = -1.0, time.monotonic()
        while True:
            decode = self.sample()
            inserted = decode.total("f2_store_rows_total", outcome="inserted")
            now = time.monotonic()
            if inserted > progress:
                progress, moved = inserted, now
            give_up = now >= deadline or now - moved >= plan.stall_s
            if inserted >= expected or give_up:
                stored = stored_rows(self.bench.dsn, self.since, until)
                if stored >= expected or give_up:
                    return stored
            time.sleep(self.sample_s)

    def recount(self, expected: int, until: datetime) -> int:
        """Rows still missing after decode was started again from its recovery snapshot (as
        after a crash): the lost ones (the rest were late)."""
        bench = self.bench
        say(f"{self.name}: rows missing after the drain; restarting decode to tell late from lost")
        bench.decode.stop()
        bench.decode.start(self.env)
        stored = 0

        def arrived() -> bool:
            nonlocal stored
            stored = stored_rows(bench.dsn, self.since, until)
            return stored >= expected

        wait_until(arrived, RECOUNT_WAIT_S, 2.0)
        return max(0, expected - stored)

    def registry(self, final: Scrape, published: Scrape, window_s: float) -> dict[str, Any]:
        """Registry lookups, loads and latency over the phase, the warm-up, after it, and in the
        steady state (from decode catching up to the end of publishing), if it came."""
        warm_s, warm = self.warm if self.warm else (None, final)
        steady_s, steady = self.steady if self.steady else (None, published)
        span = warm_s or window_s
        lookups = {
            result: round(final.total("f2_registry_lookups_total", result=result))
            for result in ("hit", "miss")
        }
        loads = {
            source: round(final.total("f2_registry_loads_total", source=source))
            for source in ("postgres", "redis")
        }
        return {
            "cache_warm_s": warm_s,
            "registry_lookups": lookups,
            "registry_loads": loads,
            "registry_lookups_per_s_warmup": round(
                warm.total("f2_registry_lookups_total", result="miss") / max(span, 1e-3), 1
            ),
            "registry_lookups_per_s_peak": peak_rate(self.timeline, "miss", warm_s),
            "registry_after_warm": {
                result: lookups[result]
                - round(warm.total("f2_registry_lookups_total", result=result))
                for result in ("hit", "miss")
            },
            "registry_refreshes": round(final.total("f2_registry_refreshes_total")),
            "decode_msgs_per_s_warmup": round(
                warm.total("f2_decode_messages_total") / max(span, 1e-3), 1
            ),
            "max_consumer_lag": max((p["lag"] for p in self.timeline), default=0),
            "latency": latency(EMPTY, final),
            "latency_warmup": latency(EMPTY, warm) if self.warm else None,
            "latency_after_warm": latency(warm, final) if self.warm else None,
            "flush_ms_warmup": flush_ms(EMPTY, warm),
            "flush_ms_after_warm": flush_ms(warm, final) if self.warm else None,
            "steady_from_s": steady_s,
            "steady_for_s": None if steady_s is None else round(self.published_t - steady_s, 1),
            "latency_steady": latency(steady, published) if self.steady else None,
            "decode_msgs_per_s_after_warm_publishing": _rate(
                warm, published, "f2_decode_messages_total"
            ),
            "decode_cpu_us_per_msg": {
                "warmup": self.cpu_per_msg(None, warm_s),
                "after_warm": self.cpu_per_msg(warm_s, None),
                "steady": self.cpu_per_msg(steady_s, self.published_t) if self.steady else None,
            },
        }

    def cpu_per_msg(self, start: float | None, end: float | None) -> float | None:
        """Decode's CPU µs per decoded message between two timeline points (by time; None: the
        first or the last point)."""
        points = [p for p in self.timeline if p["cpu_s"] is not None]
        if not points:
            return None
        first = points[0] if start is None else next((p for p in points if p["t"] >= start), None)
        last = (
            points[-1]
            if end is None
            else next((p for p in reversed(points) if p["t"] <= end), None)
        )
        if first is None or last is None or last["decoded"] <= first["decoded"]:
            return None
        return round(
            1e6 * (last["cpu_s"] - first["cpu_s"]) / (last["decoded"] - first["decoded"]), 1
        )


def _rate(old: Scrape, new: Scrape, metric: str) -> float | None:
    """Per-second increase of ``metric`` from ``old`` to ``new`` (None unless ``new`` is later)."""
    span = new.at - old.at
    return round((new.total(metric) - old.total(metric)) / span, 1) if span > 1 else None


def _spread(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "median": round(ordered[len(ordered) // 2], 3) if ordered else None,
        "max": round(ordered[-1], 3) if ordered else None,
    }


# Micro-measurements -----------------------------------------------------------------------------


def freshness_cost(fleet: Fleet) -> dict[str, Any]:
    """Memory (tracemalloc) and scrape time of a freshness tracker holding ``fleet``."""
    from connectors.decode_step import DecodeOutput
    from connectors.freshness import FreshnessTracker
    from connectors.store_rows import RowBatch
    from schemas.settings import FreshnessSettings

    entries, sensor_id = [], 0
    for number, controller in enumerate(fleet.controllers, start=1):
        entry = controller_entry(controller, number)
        sensors = {}
        for key, sensor in entry.sensors.items():
            sensor_id += 1
            sensors[key] = msgspec.structs.replace(sensor, sensor_id=sensor_id)
        entries.append(msgspec.structs.replace(entry, sensors=sensors))
    gc.collect()
    tracemalloc.start()
    try:
        tracker = FreshnessTracker(FreshnessSettings())
        for start in range(0, len(entries), 500):
            batch = RowBatch(entries=entries[start : start + 500])
            tracker.inspect("freshness", DecodeOutput(batch, [], []))
        traced = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    began = time.perf_counter()
    families = list(tracker.collect())
    collect_s = time.perf_counter() - began
    controllers = len(entries)
    del entries, tracker
    gc.collect()
    return {
        "controllers": controllers,
        "sensors": sensor_id,
        "memory_mib": round(traced / 2**20, 1),
        "bytes_per_controller": round(traced / max(controllers, 1)),
        "collect_s": round(collect_s, 3),
        "series": sum(len(family.samples) for family in families),
    }


def registry_cost(config: Config, root: Path, macs: list[str]) -> dict[str, Any]:
    """Milliseconds per registry lookup as decode does them, one controller at a time, as the
    flows' database role: from PostgreSQL (``load_controller`` and the version in one
    REPEATABLE READ transaction) and through a fresh :class:`RegistryStore` (an empty worker
    cache, so Redis answers what it holds, PostgreSQL the rest)."""
    from prometheus_client import REGISTRY

    from connectors.registry_pg import load_controller
    from connectors.registry_store import RegistryStore

    dsn = flows.role_dsns(root, PIPELINE_DB_ROLE).get(
        "F2_PARAMS_DSN", config.connections.params_dsn
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        began = time.perf_counter()
        for mac in macs:
            with conn.transaction():
                load_controller(conn, mac)
                conn.execute("SELECT version FROM f2_registry_version").fetchone()
        postgres_s = time.perf_counter() - began

    def loads(source: str) -> float:
        return REGISTRY.get_sample_value("f2_registry_loads_total", {"source": source}) or 0.0

    store = RegistryStore(dsn, config.connections.redis_url, config.registry)
    before = {source: loads(source) for source in ("redis", "postgres")}
    try:
        began = time.perf_counter()
        for mac in macs:
            store.lookup(mac)
        store_s = time.perf_counter() - began
    finally:
        store.close()
    return {
        "controllers": len(macs),
        "postgres_ms": round(1000 * postgres_s / max(len(macs), 1), 3),
        "store_ms": round(1000 * store_s / max(len(macs), 1), 3),
        "store_loads": {source: round(loads(source) - n) for source, n in before.items()},
    }


def cache_fit(fleet: Fleet, cache_bytes: int) -> dict[str, Any]:
    """How many registry entries of ``fleet`` the worker cache holds (it counts an entry as
    8 × its msgpack size, ``connectors.registry_store``), and the bound the whole fleet needs."""
    encode = msgspec.msgpack.Encoder().encode
    sizes = [len(c.mac) + 8 * len(encode(controller_entry(c, 1))) for c in fleet.controllers]
    mean = sum(sizes) / max(len(sizes), 1)
    return {
        "cache_bytes": cache_bytes,
        "entry_msgpack_bytes_mean": round((mean - 12) / 8),
        "controllers_that_fit": int(cache_bytes // mean),
        "bytes_for_whole_fleet": sum(sizes),
    }


def dimension_cost(config: Config, macs: list[str], chunk: int = 100) -> dict[str, Any]:
    """The writer's dimension upsert (``TimeseriesWriter.write`` of batches holding only
    registry entries, ``chunk`` controllers per flush, as decode hands them over during a
    warm-up) for ``macs`` already registered and synced: the cost of every reload."""
    from connectors.registry_pg import load_controller
    from connectors.store_rows import RowBatch
    from connectors.timeseries_writer import TimeseriesWriter

    with psycopg.connect(config.connections.params_dsn) as conn:
        version = conn.execute("SELECT version FROM f2_registry_version").fetchone()[0]
        entries = [e for mac in macs if (e := load_controller(conn, mac, version)) is not None]
    writer = TimeseriesWriter(config.connections.timeseries_dsn, config.store)
    try:
        writer.write(RowBatch(entries=entries[:1]))  # connect, partition upkeep
        began = time.perf_counter()
        for start in range(0, len(entries), chunk):
            writer.write(RowBatch(entries=entries[start : start + chunk]))
        spent = time.perf_counter() - began
    finally:
        writer.close()
    sensors = sum(len(e.sensors) for e in entries)
    return {
        "controllers": len(entries),
        "sensors": sensors,
        "controllers_per_flush": chunk,
        "seconds": round(spent, 3),
        "ms_per_controller": round(1000 * spent / max(len(entries), 1), 3),
    }


# The run ----------------------------------------------------------------------------------------


def run(bench: Bench, seeds: dict[int, int], out: dict[str, Any]) -> None:
    """Register and measure every fleet of the plan, into ``out`` (the raw result: what was
    measured stays there if a later step fails)."""
    plan = bench.plan
    fleets: dict[int, Fleet] = {}
    shapes: dict[int, dict[str, int]] = {}
    out.setdefault("registration", {})
    out.setdefault("phases", [])
    for size in (*plan.curve, plan.controllers):
        fleets[size] = generate_fleet(size, seeds[size])
        shapes[size] = fleet_shape(fleets[size])
        log = bench.workdir / f"register-{size}.log"
        say(f"registering {size} controllers ({shapes[size]['sensors']} sensors) ...")
        registration = register(size, seeds[size], log)
        if size == plan.controllers:
            registration["again"] = register(size, seeds[size], log)
            say(f"registered again in {registration['again']['seconds']} s (idempotent)")
        out["registration"][str(size)] = registration | shapes[size]
        publishing = publishing_for(plan, shapes[size], plan.max_passes)
        phase = run_phase(bench, f"cold-{size}", size, seeds[size], publishing)
        out["phases"].append(phase | {"fleet": shapes[size], "seed": seeds[size]})
    main = fleets[plan.controllers]
    say("measuring the freshness tracker and the dimension sync ...")
    out["freshness"] = freshness_cost(main)
    out["cache_fit"] = cache_fit(main, bench.config.registry.cache_bytes)
    out["dimension_sync"] = dimension_cost(bench.config, main.macs[:2000])
    out["registry_lookup"] = registry_cost(bench.config, bench.root, main.macs[-1000:])
    if plan.restart_passes:
        whole = int(out["cache_fit"]["bytes_for_whole_fleet"] * 1.25)
        cache = max(whole, bench.config.registry.cache_bytes)
        publishing = publishing_for(plan, shapes[plan.controllers], plan.restart_passes)
        phase = run_phase(
            bench,
            f"restart-{plan.controllers}",
            plan.controllers,
            seeds[plan.controllers],
            publishing,
            cache_bytes=cache,
            flush_redis=False,
        )
        out["phases"].append(phase | {"fleet": shapes[plan.controllers]})


def summarize(raw: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The ``fleet`` section (the documented keys, docs/PERFORMANCE.md) from a raw result."""
    phases = {p["name"]: _steady_while_publishing(p) for p in raw.get("phases", [])}
    main = phases.get(f"cold-{plan.controllers}", {})
    restart = phases.get(f"restart-{plan.controllers}", {})
    freshness = raw.get("freshness", {})
    registration = raw.get("registration", {}).get(str(plan.controllers), {})
    return {
        "controllers": plan.controllers,
        "sensors": _get(main, "fleet", "sensors"),
        "sources": _get(main, "fleet", "sources"),
        "rate_msgs_per_s": plan.rate,
        "connections": plan.connections,
        "duration_s": main.get("publishing_s"),
        "achieved_msgs_per_s": main.get("achieved_msgs_per_s"),
        "register_s": registration.get("seconds"),
        "register_again_s": _get(registration, "again", "seconds"),
        "rows_expected": main.get("expected_rows"),
        "rows_stored": main.get("stored_rows"),
        "rows_lost": main.get("rows_lost"),
        "rows_lost_all_phases": sum(p.get("rows_lost", 0) for p in phases.values()),
        "drain_s": main.get("drain_s"),
        "controllers_unseen": main.get("controllers_unseen"),
        "dead_letters": main.get("dead_letters"),
        "cold_start_s": main.get("cold_start_s"),
        "decode_ready_s": main.get("decode_ready_s"),
        "cache_warm_s": main.get("cache_warm_s"),
        "fleet_pass_s": _pass_s(main, plan),
        "decode_rss_mib": main.get("decode_rss_mib"),
        "decode_peak_rss_mib": main.get("decode_peak_rss_mib"),
        "decode_rss_mib_fleet_cached": restart.get("decode_rss_mib"),
        "p50_s": _get(main, "latency", "p50_s"),
        "p99_s": _get(main, "latency", "p99_s"),
        "p99_warmup_s": _get(main, "latency_warmup", "p99_s"),
        "p99_after_warm_s": _get(main, "latency_after_warm", "p99_s"),
        "share_within_1s": _get(main, "latency", "share_within_1s"),
        "steady_from_s": main.get("steady_from_s"),
        "steady_for_s": main.get("steady_for_s"),
        "p50_steady_s": _get(main, "latency_steady", "p50_s"),
        "p99_steady_s": _get(main, "latency_steady", "p99_s"),
        "decode_msgs_per_s_after_warm_publishing": main.get(
            "decode_msgs_per_s_after_warm_publishing"
        ),
        "decode_cpu_us_per_msg_warmup": _get(main, "decode_cpu_us_per_msg", "warmup"),
        "decode_cpu_us_per_msg_after_warm": _get(main, "decode_cpu_us_per_msg", "after_warm"),
        "decode_cpu_us_per_msg_fleet_cached": _get(restart, "decode_cpu_us_per_msg", "after_warm"),
        "decode_cores_at_rate_fleet_cached": _cores(
            _get(restart, "decode_cpu_us_per_msg", "after_warm"), plan.rate
        ),
        "registry_lookups_per_s": main.get("registry_lookups_per_s_warmup"),
        "registry_lookups_per_s_peak": main.get("registry_lookups_per_s_peak"),
        "registry_loads": main.get("registry_loads"),
        "registry_misses_after_warm": _get(main, "registry_after_warm", "miss"),
        "registry_cache_fits_controllers": _get(raw, "cache_fit", "controllers_that_fit"),
        "registry_lookup_ms": {
            "postgres": _get(raw, "registry_lookup", "postgres_ms"),
            "store": _get(raw, "registry_lookup", "store_ms"),
        },
        "decode_msgs_per_s_warmup": main.get("decode_msgs_per_s_warmup"),
        "max_consumer_lag": main.get("max_consumer_lag"),
        "flush_ms_warmup": main.get("flush_ms_warmup"),
        "flush_ms_after_warm": main.get("flush_ms_after_warm"),
        "redis_used_memory_mib": _get(main, "redis", "used_memory_mib"),
        "redis_keys": _get(main, "redis", "keys"),
        "redis_evicted_keys": _get(main, "redis", "evicted_keys"),
        "redis_cpu_cores": _get(main, "cpu_cores", "redis"),
        "postgres_cpu_cores": _get(main, "cpu_cores", "postgres"),
        "decode_cpu_cores": _get(main, "cpu_cores", "decode"),
        "cpu_cores": main.get("cpu_cores"),
        "freshness_series": main.get("freshness_series"),
        "freshness_memory_mib": freshness.get("memory_mib"),
        "freshness_collect_s": freshness.get("collect_s"),
        "decode_scrape_s": _get(main, "decode_scrape_s", "median"),
        "dimension_sync_ms_per_controller": _get(raw, "dimension_sync", "ms_per_controller"),
        "dimension_rows": main.get("dimension_rows"),
        "load_average": main.get("load_average"),
        "restart": {
            "cold_start_s": restart.get("cold_start_s"),
            "cache_warm_s": restart.get("cache_warm_s"),
            "registry_lookups_per_s": restart.get("registry_lookups_per_s_warmup"),
            "registry_loads": restart.get("registry_loads"),
            "registry_misses_after_warm": _get(restart, "registry_after_warm", "miss"),
            "registry_cache_bytes": restart.get("registry_cache_bytes"),
            "decode_rss_mib": restart.get("decode_rss_mib"),
            "p99_s": _get(restart, "latency", "p99_s"),
            "steady_from_s": restart.get("steady_from_s"),
            "p99_steady_s": _get(restart, "latency_steady", "p99_s"),
            "decode_msgs_per_s_after_warm_publishing": restart.get(
                "decode_msgs_per_s_after_warm_publishing"
            ),
            "rows_lost": restart.get("rows_lost"),
        },
        "curve": [
            {
                "controllers": p["controllers"],
                "decode_rss_mib": p.get("decode_rss_mib"),
                "decode_peak_rss_mib": p.get("decode_peak_rss_mib"),
                "p99_s": _get(p, "latency", "p99_s"),
                "p99_after_warm_s": _get(p, "latency_after_warm", "p99_s"),
                "p99_steady_s": _get(p, "latency_steady", "p99_s"),
                "steady_from_s": p.get("steady_from_s"),
                "decode_cpu_us_per_msg_warmup": _get(p, "decode_cpu_us_per_msg", "warmup"),
                "decode_cpu_us_per_msg_after_warm": _get(p, "decode_cpu_us_per_msg", "after_warm"),
                "cold_start_s": p.get("cold_start_s"),
                "cache_warm_s": p.get("cache_warm_s"),
                "rows_lost": p.get("rows_lost"),
            }
            for p in phases.values()
            if p["name"].startswith("cold-")
        ],
    }


def _cores(us_per_msg: float | None, rate: float) -> float | None:
    """Cores a process needs at ``rate`` msg/s at ``us_per_msg`` CPU µs a message."""
    return None if us_per_msg is None else round(us_per_msg * rate / 1e6, 2)


def _steady_while_publishing(phase: dict[str, Any]) -> dict[str, Any]:
    """``phase`` without a steady state if decode caught up only after publishing ended."""
    if (phase.get("steady_for_s") or 0) > 0:
        return phase
    return phase | {"steady_from_s": None, "steady_for_s": None, "latency_steady": None}


def _pass_s(phase: dict[str, Any], plan: Plan) -> float | None:
    sources = _get(phase, "fleet", "sources")
    return round(sources / plan.rate, 1) if sources else None


FRESHNESS_FIXED_SERIES = 26
"""Freshness series without device labels (gauges, two gauge histograms of 8 buckets)."""


def checks(fleet: dict[str, Any], top_n: int) -> dict[str, dict[str, Any]]:
    """What the run must show (and the findings it may show), each with its value and whether it
    holds."""

    def check(value: Any, holds: bool) -> dict[str, Any]:
        return {"value": value, "met": bool(holds)}

    f = fleet
    bound = 2 * top_n + FRESHNESS_FIXED_SERIES
    return {
        "zero_loss": check(f["rows_lost_all_phases"], f["rows_lost_all_phases"] == 0),
        "every_controller_stored": check(f["controllers_unseen"], f["controllers_unseen"] == 0),
        "decode_caught_up": check(f["steady_from_s"], f["steady_from_s"] is not None),
        "p99_steady_within_1s": check(f["p99_steady_s"], (f["p99_steady_s"] or 99.0) <= 1.0),
        "fleet_cached_decode_caught_up": check(
            f["restart"]["steady_from_s"], f["restart"]["steady_from_s"] is not None
        ),
        "freshness_series_bounded": check(
            f["freshness_series"], (f["freshness_series"] or 0) <= bound
        ),
        "registry_cache_holds_fleet": check(
            f["registry_cache_fits_controllers"],
            (f["registry_cache_fits_controllers"] or 0) >= f["controllers"],
        ),
        "redis_holds_fleet": check(f["redis_evicted_keys"], f["redis_evicted_keys"] == 0),
        "decode_kept_up_during_warmup": check(
            f["decode_msgs_per_s_warmup"],
            (f["decode_msgs_per_s_warmup"] or 0) >= 0.95 * f["rate_msgs_per_s"],
        ),
    }


# Output -----------------------------------------------------------------------------------------


SUMMARY_ROWS: tuple[tuple[str, str], ...] = (
    ("registration, first / again (s)", "{register_s} / {register_again_s}"),
    ("published msg/s (for s)", "{achieved_msgs_per_s} ({duration_s})"),
    ("rows expected / stored / lost", "{rows_expected} / {rows_stored} / {rows_lost}"),
    ("controllers never stored; dead letters", "{controllers_unseen}; {dead_letters}"),
    ("decode start → API / first stored row (s)", "{decode_ready_s} / {cold_start_s}"),
    ("→ registry cache warm (one fleet pass) (s)", "{cache_warm_s} ({fleet_pass_s})"),
    (
        "registry lookups/s in warm-up (peak)",
        "{registry_lookups_per_s} ({registry_lookups_per_s_peak})",
    ),
    ("registry loads by source", "{registry_loads}"),
    ("one lookup, ms (PostgreSQL path; through the store)", "{registry_lookup_ms}"),
    (
        "worker cache holds (controllers); misses after warm-up",
        "{registry_cache_fits_controllers}; {registry_misses_after_warm}",
    ),
    (
        "decode msg/s during warm-up; max consumer lag",
        "{decode_msgs_per_s_warmup}; {max_consumer_lag}",
    ),
    (
        "p50 / p99 over the phase (s); p99 in the warm-up / after it (s)",
        "{p50_s} / {p99_s}; {p99_warmup_s} / {p99_after_warm_s}",
    ),
    ("decode caught up at (s); steady for (s)", "{steady_from_s}; {steady_for_s}"),
    ("p50 / p99 in the steady state (s)", "{p50_steady_s} / {p99_steady_s}"),
    ("decode msg/s after warm-up, while publishing", "{decode_msgs_per_s_after_warm_publishing}"),
    (
        "decode CPU µs per message: warm-up / after / whole fleet cached",
        "{decode_cpu_us_per_msg_warmup} / {decode_cpu_us_per_msg_after_warm}"
        " / {decode_cpu_us_per_msg_fleet_cached}",
    ),
    ("decode cores at the rate, whole fleet cached", "{decode_cores_at_rate_fleet_cached}"),
    ("storage flush ms, warm-up / after", "{flush_ms_warmup} / {flush_ms_after_warm}"),
    ("decode RSS at the end / peak (MiB)", "{decode_rss_mib} / {decode_peak_rss_mib}"),
    ("decode RSS, whole fleet cached (MiB)", "{decode_rss_mib_fleet_cached}"),
    ("Redis MiB / keys / evicted", "{redis_used_memory_mib} / {redis_keys} / {redis_evicted_keys}"),
    ("CPU cores by process group", "{cpu_cores}"),
    (
        "freshness series / memory MiB / collect s",
        "{freshness_series} / {freshness_memory_mib} / {freshness_collect_s}",
    ),
    ("decode /metrics scrape (median s)", "{decode_scrape_s}"),
    ("dimension sync ms per controller", "{dimension_sync_ms_per_controller}"),
    ("dimension rows written (main phase)", "{dimension_rows}"),
    ("restart with warm Redis, cache for the whole fleet", "{restart}"),
)


def render(doc: dict[str, Any]) -> str:
    """``fleet.md``: the summary, the curve, the checks."""
    f = doc.get("fleet", {})
    machine = doc.get("machine", {})
    lines = [
        f"# Fleet of {f.get('controllers', 0):,} controllers ({doc.get('mode')})",
        "",
        f"Started {doc.get('started_at')}, {doc.get('runtime_s')} s on {machine.get('cpus')}"
        f" CPUs; load average at the start {machine.get('load_average')}, at the end"
        f" {doc.get('load_average_end')}. {f.get('rate_msgs_per_s', 0):,.0f} msg/s over"
        f" {f.get('connections')} connections as the test rig's MQTT user.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    values = _Missing(f)
    lines += [f"| {name} | {text.format_map(values)} |" for name, text in SUMMARY_ROWS]
    lines += ["", "## Curve", ""]
    lines += [
        "| controllers | decode RSS MiB | peak | p99 s (phase) | caught up at s"
        " | p99 s (steady) | decode CPU µs/msg (warm-up, after) | lost |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|"]
    lines += [
        f"| {c['controllers']:,} | {c['decode_rss_mib']} | {c['decode_peak_rss_mib']} |"
        f" {c['p99_s']} | {c['steady_from_s']} | {c['p99_steady_s']} |"
        f" {c.get('decode_cpu_us_per_msg_warmup')}, {c.get('decode_cpu_us_per_msg_after_warm')} |"
        f" {c['rows_lost']} |"
        for c in f.get("curve", [])
    ]
    lines += ["", "## Checks", "", "| check | value | holds |", "|---|---|---|"]
    lines += [
        f"| {name} | {c['value']} | {'yes' if c['met'] else '**no**'} |"
        for name, c in doc.get("checks", {}).items()
    ]
    if doc.get("error"):
        lines += ["", f"**Failed:** {doc['error']}"]
    return "\n".join(lines) + "\n"


class _Missing(dict):
    """A summary whose missing keys format as "—"."""

    def __missing__(self, key: str) -> str:
        return "—"


def write(doc: dict[str, Any], folder: Path) -> list[Path]:
    """``fleet.json``, ``fleet.md``; the ``fleet`` section into ``latest.json`` (and its page
    rendered again) if there is one."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "fleet.json", folder / "fleet.md"]
    written[0].write_text(json.dumps(doc, indent=2) + "\n")
    written[1].write_text(render(doc))
    latest = folder / "latest.json"
    if not latest.exists() or doc.get("fleet", {}).get("rows_stored") is None:
        return written
    try:
        from bench.report import PLOTS, render_markdown

        results = json.loads(latest.read_text())
        results["fleet"] = doc["fleet"] | {"started_at": doc["started_at"], "mode": doc["mode"]}
        latest.write_text(json.dumps(results, indent=2) + "\n")
        written.append(latest)
        plots = [folder / name for name in PLOTS.values() if (folder / name).exists()]
        (folder / "latest.md").write_text(render_markdown(results, plots))
        written.append(folder / "latest.md")
    except Exception as exc:  # the fleet's own files are written; the shared report is extra
        say(f"latest.json not updated: {type(exc).__name__}: {exc}")
    return written


# Entry point -------------------------------------------------------------------------------------


@contextlib.contextmanager
def isolated(stack_dir: str | None, port_offset: str, keep: bool) -> Iterator[tuple[Path, int]]:
    """The benchmark's own stack: up, then stopped and purged (unless ``keep``) whatever
    happens; its directory and port offset."""
    lock: tuple[int, int] | None = None
    if port_offset == "auto":
        lock = reserve_offset()
        offset = lock[0]
    else:
        offset = int(port_offset)
    made = stack_dir is None
    root = Path(stack_dir or tempfile.mkdtemp(prefix="f2-fleet-stack-"))
    use_isolated_stack(str(root), str(offset))
    try:
        say(f"stack {root} (port offset {offset}) ...")
        f2("stack", "up", timeout=600)
        yield root, offset
    finally:
        if not keep:
            say(f"stopping and purging the stack {root}")
            with contextlib.suppress(Exception):
                f2("stack", "down", "--purge", timeout=300)
            if made:
                shutil.rmtree(root, ignore_errors=True)
        if lock is not None:
            release_offset(*lock)


def rerender(folder: Path) -> int:
    """Summarise ``fleet.json``'s raw result again (this version's summary and checks) and write
    ``fleet.json`` and ``fleet.md`` (and the ``fleet`` section of ``latest.json``)."""
    doc = json.loads((folder / "fleet.json").read_text())
    plan = Plan(**{**doc["plan"], "curve": tuple(doc["plan"]["curve"])})
    doc["fleet"] = summarize(doc["raw"], plan)
    top_n = doc.get("freshness_top_n", 20)
    doc["checks"] = checks(doc["fleet"], top_n) if doc["fleet"]["rows_stored"] is not None else {}
    for path in write(doc, folder):
        say(f"wrote {path}")
    return 0


def _terminate(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")


def plan_from(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    if args.controllers:
        plan = replace(plan, controllers=args.controllers)
    if args.curve is not None:
        plan = replace(plan, curve=tuple(int(n) for n in args.curve.split(",") if n))
    if args.rate:
        plan = replace(plan, rate=args.rate)
    if args.connections:
        plan = replace(plan, connections=args.connections)
    if args.restart_passes is not None:
        plan = replace(plan, restart_passes=args.restart_passes)
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="2,000 controllers, 20 s (smoke)")
    parser.add_argument("--controllers", type=int, help="the main fleet's size")
    parser.add_argument("--curve", help="comma-separated smaller fleets measured first")
    parser.add_argument("--rate", type=float, help="msg/s published over the whole fleet")
    parser.add_argument("--connections", type=int, help="publishing processes (a connection each)")
    parser.add_argument(
        "--restart-passes", type=float, help="fleet passes of the restart phase (0: none)"
    )
    parser.add_argument("--stack-dir", help="default: a new temporary directory")
    parser.add_argument("--port-offset", default="auto", help="default: a free one from 2000 up")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack up")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--render", action="store_true", help="only summarise fleet.json again and rewrite fleet.md"
    )
    args = parser.parse_args(argv)
    if args.render:
        return rerender(args.results_dir)
    plan = plan_from(args)
    interruptible_children()
    previous = signal.signal(signal.SIGTERM, _terminate)
    seeds = {size: SEED + 1 + i for i, size in enumerate(plan.curve)} | {plan.controllers: SEED}
    began = time.monotonic()
    doc: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": asdict(plan),
        "machine": machine_info(),
        "versions": versions(),
    }
    workdir = Path(tempfile.mkdtemp(prefix="f2-bench-fleet-"))
    raw: dict[str, Any] = {"phases": []}
    top_n = 20
    interrupted = False
    try:
        with isolated(args.stack_dir, args.port_offset, args.keep_stack) as (root, offset):
            from schemas.settings import load_config

            bench = Bench(load_config(), root, offset, workdir, plan)
            top_n = bench.config.freshness.top_n
            try:
                run(bench, seeds, raw)
            finally:
                bench.stop_all()
    except (Exception, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        doc["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        (workdir / "error.txt").write_text(traceback.format_exc())
        say(f"FAILED: {doc['error']} (traceback and logs in {workdir})")
    finally:
        signal.signal(signal.SIGTERM, previous)
    doc["runtime_s"] = round(time.monotonic() - began)
    doc["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["fleet"] = summarize(raw, plan)
    doc["checks"] = checks(doc["fleet"], top_n) if doc["fleet"]["rows_stored"] is not None else {}
    doc["freshness_top_n"] = top_n
    doc["raw"] = raw
    doc["workdir"] = str(workdir)
    for path in write(doc, args.results_dir):
        say(f"wrote {path}")
    for name, check in doc["checks"].items():
        say(f"{name}: {check['value']} {'holds' if check['met'] else 'DOES NOT HOLD'}")
    if interrupted:
        return 130
    return 1 if doc.get("error") or doc["fleet"]["rows_lost_all_phases"] else 0


if __name__ == "__main__":
    sys.exit(main())
