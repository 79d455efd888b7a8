"""``f2 dlq redrive`` on an isolated stack: a controller publishes before it is registered, the
real ingest and decode flows dead-letter its messages as ``unknown_device``; after registering it,
a redrive stores its readings and events exactly once, and a second redrive stores nothing new."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from schemas.settings import Settings
from schemas.topics import mac_from_topic
from tests.integration.replay_support import (
    DECODE_PORT,
    INGEST_PORT,
    Flow,
    dlq_records,
    env,
    f2,
    f2_json,
    fresh_stack,
    stored,
    wait_for,
)
from tests.stacks import IsolatedStack

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(replay_stack: IsolatedStack) -> Settings:
    return fresh_stack(replay_stack)


def simulate(
    stack: IsolatedStack, workdir: Path, seed: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "simulator", "--controllers", "1", "--seed", str(seed), *extra]
    result = subprocess.run(
        argv, cwd=workdir, env=env(stack), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def unknown_device_messages(settings: Settings, mac: str) -> int:
    seen = set()
    for msg in dlq_records(settings):
        headers = dict(msg.headers() or ())
        topic = headers.get("mqtt_topic", b"").decode()
        if headers.get("reason") == b"unknown_device" and mac_from_topic(topic) == mac:
            seen.add((headers.get("source_partition"), headers.get("source_offset")))
    return len(seen)


def test_unregistered_controller_is_stored_exactly_once_after_redrive(
    settings: Settings, replay_stack: IsolatedStack, tmp_path: Path
):
    seed = random.randrange(10**6)
    ingest = Flow(replay_stack, "dataflows.ingest", tmp_path, INGEST_PORT).start()
    decode = Flow(replay_stack, "dataflows.decode", tmp_path, DECODE_PORT).start()
    try:
        assert wait_for(lambda: "subscribed" in ingest.log.read_text(errors="replace"), 60)
        report_file = tmp_path / "report.json"
        run = ("--rate", "40", "--duration", "3", "--report", str(report_file))
        simulate(replay_stack, tmp_path, seed, *run)
        report = json.loads(report_file.read_text())
        mac, published = report["controllers"][0], report["published"]
        expected = (report["expected_readings"], report["expected_events"])
        assert published > 0 and expected[0] > 0
        got = wait_for(lambda: unknown_device_messages(settings, mac) == published, 60, 1.0)
        assert got, f"{unknown_device_messages(settings, mac)} of {published} dead-lettered"
    finally:
        ingest.kill()
        decode.kill()
    assert stored(settings, mac) == (0, 0)

    f2(replay_stack, "devices", "register", mac)
    # its sensors on their pins
    simulate(replay_stack, tmp_path, seed, "--register", "--duration", "0")

    first = f2_json(
        replay_stack, "dlq", "redrive", "--reason", "unknown_device", "--controller", mac
    )
    assert first["complete"] and first["horizon"] is None
    assert first["messages"] == first["stored"] == published
    assert (first["readings"]["inserted"], first["events"]["inserted"]) == expected
    assert first["dead_lettered"] == first["failed_again"] == 0
    assert stored(settings, mac) == expected

    second = f2_json(
        replay_stack, "dlq", "redrive", "--reason", "unknown_device", "--controller", mac
    )
    assert second["messages"] == published
    assert (second["readings"]["inserted"], second["events"]["inserted"]) == (0, 0)
    assert (second["readings"]["unchanged"], second["events"]["unchanged"]) == expected
    assert stored(settings, mac) == expected


def test_a_new_failure_is_dead_lettered_once_and_copies_count_once(
    settings: Settings, replay_stack: IsolatedStack
):
    """Two copies of one dead-lettered message (same raw-archive place) whose registry problem is
    fixed but whose frame is bad: one message, dead-lettered again once as ``bad_crc`` with the
    original source headers; the next redrive finds that failure in the DLQ and adds nothing."""
    topic = "tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 5))
    payload = json.dumps({"timestamp": stamp, "data": "01 03 06 09 C4 13 88 01 90 55 60"}).encode()
    headers = [("mqtt_topic", topic.encode()), ("reason", b"unknown_device"), ("stage", b"decode")]
    headers += [("source_topic", b"raw_iot_data"), ("source_partition", b"1")]
    headers += [("source_offset", b"77"), ("detail", b"not in the registry")]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for _ in range(2):
        producer.produce(settings.dlq_topic, payload, b"e4fd45f654be", headers=headers)
    assert producer.flush(10) == 0

    first = f2_json(replay_stack, "dlq", "redrive", "--reason", "unknown_device")
    assert (first["matched"], first["messages"], first["dead_lettered"]) == (2, 1, 1)
    assert first["new_reasons"] == {"bad_crc": 1} and first["stored"] == 0
    again = [
        dict(m.headers())
        for m in dlq_records(settings)
        if dict(m.headers())["reason"] == b"bad_crc"
    ]
    assert len(again) == 1
    assert again[0]["stage"] == b"decode" and again[0]["source_offset"] == b"77"
    assert "redriven_at" in again[0]

    second = f2_json(replay_stack, "dlq", "redrive")
    assert (second["records_read"], second["messages"]) == (3, 1)
    assert (second["dead_lettered"], second["failed_again"]) == (0, 1)
    assert len(dlq_records(settings)) == 3
