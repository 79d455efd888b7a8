"""End to end on an isolated stack: simulator (faults on, with report) → MQTT → ingest → Kafka →
decode → storage + DLQ, reconciled exactly against the simulator's report; once undisturbed and
once with SIGKILLs of the decode process (twice) and of the ingest process (once) mid-run."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from ops.procs import port_open, wait_until
from schemas.settings import Settings
from tests.integration.decode_support import ROOT, STACK_ENV, FlowProcess, iso_stack, stack_cmd

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_S = 15


@pytest.fixture
def fresh() -> Settings:
    """The isolated stack with a new (empty) Kafka: the DLQ holds only this test's records."""
    settings = iso_stack()
    stack_cmd("stop", "kafka")
    stack_cmd("start", "kafka")
    return settings


def start_flows(workdir: Path) -> tuple[FlowProcess, FlowProcess]:
    ingest = FlowProcess("dataflows.ingest", workdir, 3441, recovery=False)
    decode = FlowProcess("dataflows.decode", workdir, 3442, recovery=True)
    for flow in (ingest, decode):
        flow.start()
    log = workdir / "dataflows.ingest.log"
    assert wait_until(lambda: "subscribed" in log.read_text(errors="replace"), 60)
    assert wait_until(lambda: port_open(3442), 60)
    return ingest, decode


def simulate(workdir: Path) -> subprocess.Popen:
    report = workdir / "report.json"
    argv = [sys.executable, "-m", "simulator", "--controllers", "12"]
    argv += ["--seed", str(random.randrange(10**6)), "--register", "--faults", "0.05"]
    argv += ["--rate", "150", "--duration", str(RUN_S), "--report", str(report)]
    env = {**os.environ, **STACK_ENV, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, text=True)


def stored(settings: Settings, macs: list[str]) -> tuple[int, int]:
    with psycopg.connect(settings.timeseries_dsn) as conn:
        readings = conn.execute(
            "SELECT count(*) FROM readings r JOIN sensors s USING (sensor_id)"
            " JOIN controllers c ON c.controller_id = s.controller_id WHERE c.mac = ANY(%s)",
            (macs,),
        ).fetchone()[0]
        events = conn.execute(
            "SELECT count(*) FROM device_events WHERE mac = ANY(%s)", (macs,)
        ).fetchone()[0]
    return readings, events


def dlq_by_reason(settings: Settings) -> Counter:
    """DLQ records deduplicated by (mqtt_topic, value, reason, label), counted by reason."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "e2e",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(settings.dlq_topic, p, -2) for p in range(4)])
    seen, eof, deadline = set(), set(), time.monotonic() + 30
    while len(eof) < 4 and time.monotonic() < deadline:
        for message in consumer.consume(1000, 1.0):
            if message.error():
                eof.add(message.partition())
                continue
            h = dict(message.headers() or [])
            seen.add((h.get("mqtt_topic"), message.value(), h.get("reason"), h.get("label")))
    consumer.close()
    return Counter(reason.decode() for _, _, reason, _ in seen)


def reconcile(settings: Settings, workdir: Path, sim: subprocess.Popen) -> None:
    out, _ = sim.communicate(timeout=RUN_S + 120)
    assert sim.returncode == 0, out
    report = json.loads((workdir / "report.json").read_text())
    expected = (report["expected_readings"], report["expected_events"])
    macs = report["controllers"]
    wait_until(lambda: stored(settings, macs) == expected, 120, 1.0)
    assert stored(settings, macs) == expected
    assert wait_until(lambda: dlq_by_reason(settings) == Counter(report["expected_errors"]), 60, 2)


def test_simulated_fleet_ends_in_storage_exactly(fresh: Settings, tmp_path: Path):
    ingest, decode = start_flows(tmp_path)
    try:
        reconcile(fresh, tmp_path, simulate(tmp_path))
    finally:
        ingest.kill()
        decode.kill()


def test_exact_through_sigkills_of_decode_twice_and_ingest_once(fresh: Settings, tmp_path: Path):
    ingest, decode = start_flows(tmp_path)

    def chaos() -> None:
        for delay, flow in ((3, decode), (3, ingest), (3, decode)):
            time.sleep(delay)
            flow.kill()
            flow.start()

    killer = threading.Thread(target=chaos)
    try:
        sim = simulate(tmp_path)
        killer.start()
        killer.join()
        reconcile(fresh, tmp_path, sim)
    finally:
        ingest.kill()
        decode.kill()
