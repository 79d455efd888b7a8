"""dataflows.decode as two processes (``-i``/``-a``) on the isolated stack: every row stored once,
through a SIGKILL of the whole cluster, and each process keeps its registry cache across batches.

Until the per-worker-thread cache (``connectors.per_thread``), two processes rebuilt their registry
cache on every batch and their writer whenever a shard went idle; nothing ran decode as more than
one process in the tests, so it went unnoticed.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import msgspec
import psycopg
import pytest
from psycopg import sql

from connectors.recovery_dir import prepare_recovery
from ops.stack.local import create_topics
from ops.stack.procs import port_open, wait_until
from tests.integration.decode_support import Traffic, flow_env, iso_stack
from tests.stacks import IsolatedStack

pytestmark = pytest.mark.integration

BASE_PORTS = (3036, 3037)  # at offset 0: the processes' API ports are stack.port(...)
FLEET_MACS = 3  # the three controllers Traffic writes for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DecodeCluster:
    """Two ``bytewax.run dataflows.decode`` processes forming one cluster, with recovery."""

    def __init__(self, stack: IsolatedStack, workdir: Path, topics: dict[str, str]) -> None:
        self.stack, self.workdir, self.topics = stack, workdir, topics
        self.ports = tuple(stack.port(base) for base in BASE_PORTS)
        self.recovery = workdir / "recovery"
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        prepare_recovery(self.recovery, 4, self.stack.dir / "kafka" / "incarnation")
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in self.ports)
        for index, port in enumerate(self.ports):
            flags = ["-s", "1", "-r", str(self.recovery), "-b", "10", "-i", str(index)]
            log = open(self.workdir / f"decode-{index}.log", "ab")
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bytewax.run",
                        "dataflows.decode",
                        *flags,
                        "-a",
                        addresses,
                    ],
                    cwd=self.workdir,
                    env={**flow_env(self.stack, port), **self.topics},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        assert wait_until(lambda: all(port_open(p) for p in self.ports), 60, 0.2)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait(10)
        self.procs = []

    def metric(self, name: str) -> float:
        """The sum of metric ``name`` over both processes."""
        total = 0.0
        for port in self.ports:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            for line in text.decode().splitlines():
                if line.startswith(name):
                    total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture()
def setup(decode_stack: IsolatedStack, tmp_path: Path) -> Iterator[tuple[DecodeCluster, Traffic]]:
    iso = iso_stack(decode_stack)
    suffix = f"{int(time.time() * 1000)}"
    topics = {
        "F2_TOPIC_RAW": f"procs_raw_{suffix}",
        "F2_TOPIC_DECODED": f"procs_decoded_{suffix}",
        "F2_TOPIC_DLQ": f"procs_dlq_{suffix}",
    }
    create_topics(iso.kafka_bootstrap, list(topics.values()), 4)
    settings = msgspec.structs.replace(
        iso,
        raw_topic=topics["F2_TOPIC_RAW"],
        decoded_topic=topics["F2_TOPIC_DECODED"],
        dlq_topic=topics["F2_TOPIC_DLQ"],
    )
    traffic = Traffic(settings)
    # The stack's database outlives test runs: clear this traffic's window first.
    with psycopg.connect(iso.timeseries_dsn, autocommit=True) as conn:
        for table in ("readings", "device_events"):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE time >= %s AND time <= %s").format(
                    sql.Identifier(table)
                ),
                (traffic.base, traffic.base + timedelta(minutes=1)),
            )
    cluster = DecodeCluster(decode_stack, tmp_path, topics)
    yield cluster, traffic
    cluster.kill()


def test_two_processes_store_every_row_once_through_a_sigkill(setup) -> None:
    cluster, traffic = setup
    traffic.send(40000)  # before the flow starts, so it is caught mid-stream below
    cluster.start()
    assert wait_until(lambda: 0 < traffic.stored()[0] < traffic.readings // 2, 60, 0.05)
    cluster.kill()
    assert traffic.stored()[0] < traffic.readings
    cluster.start()
    # Several batches after the restart; the window holds exactly what was sent (the unique keys
    # make a duplicate impossible, so a count short of it is a lost row).
    for _ in range(8):
        traffic.send(250)
        assert traffic.wait_stored(120) == (traffic.readings, traffic.events)
    # One registry cache per process: each controller is loaded a few times at most (at start
    # and after the change feed's "forget everything" on connect), not once per batch.
    loads = cluster.metric("f2_registry_loads_total")
    assert loads <= 2 * len(cluster.ports) * FLEET_MACS
