"""Helpers for the replay and re-drive integration tests: isolated stack, flow processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from connectors.replay_reader import TopicReader
from schemas.settings import Settings, load_settings
from tests.stacks import IsolatedStack

ROOT = Path(__file__).resolve().parents[2]
INGEST_PORT, DECODE_PORT, REPLAY_DECODE_PORT = 3041, 3042, 3043  # flow API ports at offset 0


def env(stack: IsolatedStack) -> dict[str, str]:
    """The environment of a process on the isolated stack."""
    return stack.environ(PYTHONPATH=str(ROOT), F2_REGISTRY_REDIS_BACKOFF_S="1")


def f2(stack: IsolatedStack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``f2 ARGS`` on the isolated stack; fails the test on a non-zero exit."""
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env=env(stack),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        pytest.fail(f"f2 {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def f2_json(stack: IsolatedStack, *args: str) -> dict:
    """The JSON report a ``f2 ... --json`` command prints."""
    return json.loads(f2(stack, *args, "--json", "--quiet").stdout)


def iso_stack(stack: IsolatedStack) -> Settings:
    """The isolated stack, up."""
    f2(stack, "stack", "up", timeout=300)
    return load_settings(env(stack))


def fresh_stack(stack: IsolatedStack) -> Settings:
    """The isolated stack up, with a restarted (empty) Kafka: the topics hold only this test's."""
    f2(stack, "stack", "up", timeout=300)
    f2(stack, "stack", "stop", "kafka")
    f2(stack, "stack", "start", "kafka")
    return load_settings(env(stack))


class Flow:
    """``python -m bytewax.run <module>`` on the isolated stack (no recovery: reads from start);
    its API on the stack's counterpart of ``api_port`` (a port at offset 0)."""

    def __init__(self, stack: IsolatedStack, module: str, workdir: Path, api_port: int) -> None:
        self.stack, self.module, self.workdir = stack, module, workdir
        self.port = stack.port(api_port)
        self.log = workdir / f"{module}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Flow:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", self.module, "-s", "1"],
            cwd=self.workdir,
            env={**env(self.stack), "BYTEWAX_DATAFLOW_API_PORT": str(self.port)},
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def wait_for(check, timeout: float, every: float = 0.5):
    """Poll ``check()`` until it returns a truthy value or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(every)
        value = check()
    return value


def dlq_records(settings: Settings) -> list:
    """Every record of the DLQ, read to its end."""
    reader = TopicReader(
        settings.kafka_bootstrap, settings.dlq_topic, int(time.time() * 1000) + 60000
    )
    return [msg for batch in reader.batches() for msg in batch]


def stored(settings: Settings, mac: str) -> tuple[int, int]:
    """(readings, events) stored for controller ``mac``."""
    with psycopg.connect(settings.timeseries_dsn) as conn:
        readings = conn.execute(
            "SELECT count(*) FROM readings r JOIN sensors s USING (sensor_id)"
            " JOIN controllers c ON c.controller_id = s.controller_id WHERE c.mac = %s",
            (mac,),
        ).fetchone()[0]
        events = conn.execute(
            "SELECT count(*) FROM device_events WHERE mac = %s", (mac,)
        ).fetchone()[0]
    return readings, events
