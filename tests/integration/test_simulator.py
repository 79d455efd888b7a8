"""The simulator against the shared stack's Mosquitto and registry.

A subscriber (the pipeline's MQTT user) listens beside the simulator and must find the report's
counts exact; ``--register`` must make the fleet appear in the registry, twice without duplicates.
Each test uses a fleet generated from a fresh seed, so its MACs are its own on the shared broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import psycopg
import pytest
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion

from schemas.decode import decode_message
from schemas.records import RawMessage
from schemas.settings import Settings
from simulator.fleet import generate_fleet
from simulator.registry import register_fleet
from tests.simulator.helpers import outcome, registry_of

pytestmark = pytest.mark.integration


def fresh_seed() -> int:
    return int(time.time() * 1000) % 1_000_000_000 + os.getpid()


def simulator(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class Listener:
    """A QoS 1 subscriber as the pipeline's user, for the topics of some controllers."""

    def __init__(self, settings: Settings, macs: list[str]) -> None:
        self.messages: list[MQTTMessage] = []
        self._subscribed = threading.Event()
        client = Client(CallbackAPIVersion.VERSION2, protocol=5)
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        client.on_message = lambda _c, _u, message: self.messages.append(message)
        client.on_subscribe = lambda *_args: self._subscribed.set()
        client.connect(settings.mqtt_host, settings.mqtt_port)
        client.subscribe([(f"+/f2-{mac}/#", 1) for mac in macs])
        client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"
        self._client = client

    def settle(self, expected: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # anything beyond the report's count would show up now
        self._client.disconnect()
        self._client.loop_stop()


def test_report_counts_match_what_a_subscriber_receives(stack: Settings, tmp_path):
    seed = fresh_seed()
    fleet = generate_fleet(4, seed)
    register_fleet(stack.params_dsn, fleet)
    listener = Listener(stack, fleet.macs + list(fleet.ghost_macs))
    report_path = tmp_path / "report.json"
    proc = simulator(
        *("--controllers", "4", "--seed", str(seed), "--interval", "0.1", "--qos", "1"),
        *("--faults", "0.25", "--processes", "2", "--report", str(report_path)),
    )
    assert proc.stdout is not None and proc.stdout.readline().startswith("fleet:")
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)  # ends cleanly and still writes the report
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "done: published" in output
    report = json.loads(report_path.read_text())
    listener.settle(report["published"])

    registry = registry_of(fleet)
    readings = events = 0
    errors: Counter[str] = Counter()
    for message in listener.messages:
        assert not message.retain
        mac = message.topic.split("/")[1][3:]
        raw = RawMessage(message.topic, message.payload)
        got_readings, got_events, got_errors = outcome(decode_message(raw, registry.get(mac)))
        readings += got_readings
        events += got_events
        errors += got_errors
    assert report["published"] > 50, output
    assert len(listener.messages) == report["published"]
    assert readings == report["expected_readings"]
    assert events == report["expected_events"]
    assert dict(errors) == report["expected_errors"]
    assert set(report["expected_errors"]) >= {"bad_crc", "bad_json", "unknown_device"}
    assert report["controllers"] == fleet.macs
    assert report["started_at"] < report["finished_at"]


def test_a_stop_request_after_the_duration_still_gets_the_report(stack: Settings, tmp_path):
    """A benchmark stops the simulator with SIGTERM when it has seen enough; if that lands just
    after ``--duration`` ended (the run is over, the report not yet written), the simulator must
    still exit 0 with its report, not die of the signal."""
    seed = fresh_seed()
    register_fleet(stack.params_dsn, generate_fleet(2, seed))
    report_path = tmp_path / "report.json"
    proc = simulator(
        *("--controllers", "2", "--seed", str(seed), "--interval", "0.1", "--qos", "1"),
        *("--processes", "2", "--duration", "1.5", "--report", str(report_path)),
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("done: published"):
            break  # the run has ended; the report comes next
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGTERM)  # again and again, until the process is gone
        time.sleep(0.005)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(seen) + output
    assert json.loads(report_path.read_text())["published"] > 0


def _registry_rows(dsn: str, macs: list[str]) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            'SELECT count(DISTINCT ctl."DeviceId"), count(DISTINCT c."ConnectorId"),'
            ' count(DISTINCT p."PinId"), count(DISTINCT p."DeviceId")'
            ' FROM "Device" ctl JOIN "Connector" c ON c."ControllerId" = ctl."DeviceId"'
            ' LEFT JOIN "Pin" p ON p."ConnectorId" = c."ConnectorId"'
            ' WHERE lower(ctl."MacAddress") = ANY(%s)',
            (macs,),
        ).fetchone()
        templates = conn.execute(
            'SELECT count(*), count(DISTINCT "Model") FROM "DeviceTemplate"'
            " WHERE \"Model\" IN ('F2-rev1', 'ENV-S1', 'PM-100', 'PM-200')"
        ).fetchone()
        points = conn.execute(
            'SELECT count(*), count(DISTINCT ("DeviceTemplateId", "Label")) FROM "DataPoint"'
        ).fetchone()
        wiring = conn.execute(
            'SELECT lower(ctl."MacAddress"), c."ConnectorNumber", p."Position", t."Model"'
            ' FROM "Device" ctl JOIN "Connector" c ON c."ControllerId" = ctl."DeviceId"'
            ' JOIN "Pin" p ON p."ConnectorId" = c."ConnectorId"'
            ' JOIN "Device" s ON s."DeviceId" = p."DeviceId"'
            ' JOIN "DeviceTemplate" t ON t."DeviceTemplateId" = s."DeviceTemplateId"'
            ' WHERE lower(ctl."MacAddress") = ANY(%s)',
            (macs,),
        ).fetchall()
    assert templates[0] == templates[1] and points[0] == points[1]
    return {
        "controllers": row[0],
        "connectors": row[1],
        "pins": row[2],
        "sensors": row[3],
        "wiring": sorted(wiring),
    }


def test_register_writes_the_fleet_once(stack: Settings):
    seed = fresh_seed()
    fleet = generate_fleet(5, seed)
    expected_wiring = sorted(
        (c.mac, k.number, s.pin, s.model)
        for c in fleet.controllers
        for k in c.connectors
        for s in k.sensors
    )
    args = ("--controllers", "5", "--seed", str(seed), "--register", "--duration", "0")
    for _ in range(2):
        proc = simulator(*args)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output
        rows = _registry_rows(stack.params_dsn, fleet.macs)
        assert rows == {
            "controllers": 5,
            "connectors": 20,
            "pins": len(expected_wiring),
            "sensors": len(expected_wiring),
            "wiring": expected_wiring,
        }
    assert "registered: nothing new" in output
    again = register_fleet(stack.params_dsn, fleet)
    assert sum(again.inserted.values()) == 0 and again.mismatches == []
