"""Helpers for the decode flow's integration tests: the isolated stack and flow processes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psycopg
from confluent_kafka import Producer

from connectors.recovery_dir import prepare_recovery
from ops.stack.procs import wait_until
from schemas.settings import Settings
from tests.stacks import IsolatedStack

ROOT = Path(__file__).resolve().parents[2]
METRICS_PORT = 3032  # decode's API port at offset 0: ``stack.port(METRICS_PORT)`` on a stack
MACS = ("e4fd45f654be", "abc123def456", "123456abcdef")
GOOD_FRAME = "01 03 06 09 C4 13 88 01 90 55 6F"  # 25.00 °C, 50.00 %, 400 ppm
BAD_CRC_FRAME = "01 03 06 09 C4 13 88 01 90 55 60"


def stack_cmd(stack: IsolatedStack, *args: str) -> None:
    """``f2 stack ARGS`` on the isolated decode stack; fails the test on a non-zero exit."""
    stack.f2("stack", *args, timeout=300)


def iso_stack(stack: IsolatedStack) -> Settings:
    """The isolated stack (its own ports and directory), up."""
    stack_cmd(stack, "up")
    return stack.settings()


class FlowProcess:
    """``python -m bytewax.run <module>`` on the isolated stack, as a child process."""

    def __init__(
        self,
        stack: IsolatedStack,
        module: str,
        workdir: Path,
        metrics_port: int,
        recovery: bool,
        env: dict[str, str] | None = None,
    ) -> None:
        self.stack = stack
        self.module, self.workdir, self.port = module, workdir, metrics_port
        self.recovery = workdir / "recovery" if recovery else None
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        flags = ["-s", "1"]
        if self.recovery is not None:
            prepare_recovery(self.recovery, 4, self.stack.dir / "kafka" / "incarnation")
            flags += ["-r", str(self.recovery), "-b", "10"]
        log = open(self.workdir / f"{self.module}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", self.module, *flags],
            cwd=self.workdir,
            env={**flow_env(self.stack, self.port), **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def metric(self, name: str, labels: str = "") -> float:
        """The sum of the samples of metric ``name`` whose labels contain ``labels``."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and labels in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


def flow_env(stack: IsolatedStack, metrics_port: int) -> dict[str, str]:
    """The environment of a flow process on the isolated stack."""
    return {
        **stack.environ(),
        "BYTEWAX_DATAFLOW_API_PORT": str(metrics_port),
        "F2_REGISTRY_REDIS_BACKOFF_S": "1",
        "PYTHONPATH": str(ROOT),
    }


class Traffic:
    """Raw-topic messages for the seed fleet at unique times; what storage must then hold."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(
            days=1, seconds=random.randrange(10**6)
        )
        self.sent = 0
        self.readings = self.events = self.bad_crc = 0
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 10})

    def time_of(self, number: int) -> datetime:
        return self.base + timedelta(milliseconds=number)

    def send(self, count: int) -> None:
        for number in range(self.sent, self.sent + count):
            mac = MACS[number % 3]
            stamp = self.time_of(number).strftime("%Y-%m-%d %H:%M:%S.%f")
            if number % 10 == 9:
                topic = f"stat/f2-{mac}/access-control-mode/J3/strike-1"
                body = {"timestamp": stamp, "status": True, "voltage": "12.1 V"}
                self.events += 2
            else:
                topic = f"tele/f2-{mac}/sensor-mode/J1/sensor-1"
                bad = number % 50 == 7
                body = {"timestamp": stamp, "data": BAD_CRC_FRAME if bad else GOOD_FRAME}
                self.bad_crc += bad
                self.readings += 0 if bad else 3
            self.produce(topic, msgspec.json.encode(body), mac)
        self.sent += count
        assert self.producer.flush(30) == 0

    def produce(self, topic: str, payload: bytes, mac: str) -> None:
        headers = [
            ("mqtt_topic", topic.encode()),
            ("received_at", str(int(time.time() * 1000)).encode()),
        ]
        while True:
            try:
                self.producer.produce(
                    self.settings.raw_topic, payload, mac.encode(), headers=headers
                )
                return
            except BufferError:
                self.producer.poll(0.05)

    def stored(self) -> tuple[int, int]:
        """(readings, events) in storage in this traffic's time window."""
        window = (self.base, self.time_of(self.sent))
        with psycopg.connect(self.settings.timeseries_dsn) as conn:
            r = conn.execute(
                "SELECT count(*) FROM readings WHERE time >= %s AND time <= %s", window
            ).fetchone()[0]
            e = conn.execute(
                "SELECT count(*) FROM device_events WHERE time >= %s AND time <= %s", window
            ).fetchone()[0]
        return r, e

    def wait_stored(self, timeout_s: float = 60) -> tuple[int, int]:
        wait_until(lambda: self.stored() == (self.readings, self.events), timeout_s, 0.5)
        return self.stored()
