"""End to end on an isolated stack: simulator (faults on, with report) → MQTT → ingest → Kafka →
decode → storage + DLQ, reconciled exactly against the simulator's report; once undisturbed, once
with SIGKILLs of the decode process (twice) and of the ingest process (once) mid-run, and once
after crafted messages (over every input limit, NUL text, deep nesting) from a registered
controller."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ops.stack.procs import port_open, wait_until
from schemas.settings import Settings
from tests.integration.decode_support import ROOT, FlowProcess, iso_stack, stack_cmd
from tests.stacks import IsolatedStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_S = 15
INGEST_PORT, DECODE_PORT = 3041, 3042  # at offset 0: the flows' API ports are stack.port(...)


@pytest.fixture
def fresh(decode_stack: IsolatedStack) -> Settings:
    """The isolated stack with a new (empty) Kafka: the DLQ holds only this test's records."""
    settings = iso_stack(decode_stack)
    stack_cmd(decode_stack, "stop", "kafka")
    stack_cmd(decode_stack, "start", "kafka")
    return settings


def start_flows(stack: IsolatedStack, workdir: Path) -> tuple[FlowProcess, FlowProcess]:
    ingest = FlowProcess(stack, "dataflows.ingest", workdir, stack.port(INGEST_PORT), False)
    decode = FlowProcess(stack, "dataflows.decode", workdir, stack.port(DECODE_PORT), True)
    for flow in (ingest, decode):
        flow.start()
    log = workdir / "dataflows.ingest.log"
    assert wait_until(lambda: "subscribed" in log.read_text(errors="replace"), 60)
    assert wait_until(lambda: port_open(stack.port(DECODE_PORT)), 60)
    return ingest, decode


def simulate(stack: IsolatedStack, workdir: Path) -> subprocess.Popen:
    report = workdir / "report.json"
    argv = [sys.executable, "-m", "simulator", "--controllers", "12"]
    argv += ["--seed", str(random.randrange(10**6)), "--register", "--faults", "0.05"]
    argv += ["--rate", "150", "--duration", str(RUN_S), "--report", str(report)]
    env = stack.environ(PYTHONPATH=str(ROOT))
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


def reconcile(
    settings: Settings, workdir: Path, sim: subprocess.Popen, extra: Counter | None = None
) -> None:
    """Storage and the DLQ hold exactly what the simulator's report expects (plus ``extra``
    dead letters by reason)."""
    out, _ = sim.communicate(timeout=RUN_S + 120)
    assert sim.returncode == 0, out
    report = json.loads((workdir / "report.json").read_text())
    expected = (report["expected_readings"], report["expected_events"])
    macs = report["controllers"]
    wait_until(lambda: stored(settings, macs) == expected, 120, 1.0)
    assert stored(settings, macs) == expected
    letters = Counter(report["expected_errors"]) + (extra or Counter())
    found: list[Counter] = []

    def complete() -> bool:
        found.append(dlq_by_reason(settings))
        return found[-1] == letters

    assert wait_until(complete, 60, 2), f"dead letters {dict(found[-1])}, expected {dict(letters)}"


def test_simulated_fleet_ends_in_storage_exactly(
    fresh: Settings, decode_stack: IsolatedStack, tmp_path: Path
):
    ingest, decode = start_flows(decode_stack, tmp_path)
    try:
        reconcile(fresh, tmp_path, simulate(decode_stack, tmp_path))
    finally:
        ingest.kill()
        decode.kill()


def test_exact_through_sigkills_of_decode_twice_and_ingest_once(
    fresh: Settings, decode_stack: IsolatedStack, tmp_path: Path
):
    ingest, decode = start_flows(decode_stack, tmp_path)

    def chaos() -> None:
        for delay, flow in ((3, decode), (3, ingest), (3, decode)):
            time.sleep(delay)
            flow.kill()
            flow.start()

    killer = threading.Thread(target=chaos)
    try:
        sim = simulate(decode_stack, tmp_path)
        killer.start()
        killer.join()
        reconcile(fresh, tmp_path, sim)
    finally:
        ingest.kill()
        decode.kill()


def crafted_messages(mac: str, stamp: str) -> list[tuple[str, bytes, str, str]]:
    """Hostile or buggy messages from a registered controller: (topic, payload, the one dead
    letter's reason, stage). Each is refused as a whole, but the NUL one, whose status is stored."""
    strike = f"stat/f2-{mac}/access-control-mode/J3/strike-1"
    reader = f"tele/f2-{mac}/access-control-mode/J3/reader-1"
    sensor = f"tele/f2-{mac}/sensor-mode/J1/sensor-1"
    rng = random.Random()
    long_name = "".join(rng.choices(string.printable, k=4000))

    def body(**fields: object) -> bytes:
        return json.dumps({"timestamp": stamp, **fields}).encode()

    head = b'{"timestamp": "' + stamp.encode() + b'", '

    return [
        (strike, body(status=True, **{long_name: 1}), "bad_payload", "decode"),
        (strike, body(status=True, **{f"f{n}": n for n in range(100)}), "bad_payload", "decode"),
        (strike, body(status=True, note="x" * 5000), "bad_payload", "decode"),
        (strike, body(status=False, note="a\x00b"), "bad_payload", "decode"),
        (reader, body(data="b'" + "A" * 2000 + "'"), "bad_payload", "decode"),
        (strike, body(status=True, pad="y" * 100_000), "bad_payload", "ingest"),
        (sensor + "/" + "z" * 300, body(data="01"), "bad_topic", "ingest"),
        (strike, head + b'"a": ' + b"[" * 5000, "bad_payload", "decode"),  # nested too deep
        (sensor, head + b'"data": "\\ud800"}', "bad_json", "decode"),
        (strike, body(status=True, **{"x" * 64: 1, "y" * 64: 2}), "", ""),  # within the limits
    ]


def test_crafted_messages_then_good_traffic_store_every_good_row(
    fresh: Settings, decode_stack: IsolatedStack, tmp_path: Path
) -> None:
    """Crafted messages from a registered controller through the live pipeline, then a simulated
    fleet: every good row is stored, each crafted message is exactly one dead letter."""
    ingest, decode = start_flows(decode_stack, tmp_path)
    mac = "e4fd45f654be"
    stamp = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S.%f")
    crafted = crafted_messages(mac, stamp)
    try:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        client.username_pw_set(fresh.sim_username, fresh.sim_password)
        client.connect(fresh.mqtt_host, fresh.mqtt_port)
        client.loop_start()
        for topic, payload, _, _ in crafted:
            client.publish(topic, payload, qos=1).wait_for_publish(30)
        client.disconnect()
        client.loop_stop()
        extra = Counter(reason for _, _, reason, _ in crafted if reason)
        reconcile(fresh, tmp_path, simulate(decode_stack, tmp_path), extra)
        with psycopg.connect(fresh.timeseries_dsn) as conn:
            events = conn.execute(
                "SELECT field FROM device_events WHERE mac = %s AND time = %s::timestamp",
                (mac, stamp),
            ).fetchall()
        assert sorted(f for (f,) in events) == sorted(["status", "x" * 64, "y" * 64])
        letters = dead_letters_of(fresh, crafted)
    finally:
        ingest.kill()
        decode.kill()
    expected = [(reason, stage) for _, _, reason, stage in crafted if reason]
    assert letters == expected, letters


def dead_letters_of(
    settings: Settings, crafted: list[tuple[str, bytes, str, str]]
) -> list[tuple[str, str]]:
    """(reason, stage) of the DLQ records of each crafted message, in their order."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "crafted"})
    consumer.assign([TopicPartition(settings.dlq_topic, p, -2) for p in range(4)])
    found: dict[int, list[tuple[str, str]]] = {}
    idle_until = time.monotonic() + 5
    while time.monotonic() < idle_until:
        for message in consumer.consume(1000, 0.5):
            if message.error():
                continue
            idle_until = time.monotonic() + 5
            headers = dict(message.headers() or [])
            for index, (topic, payload, _, _) in enumerate(crafted):
                if headers.get("mqtt_topic") == topic.encode() and message.value() == payload:
                    letter = (headers["reason"].decode(), headers["stage"].decode())
                    found.setdefault(index, []).append(letter)
    consumer.close()
    return [letter for index in sorted(found) for letter in found[index]]
