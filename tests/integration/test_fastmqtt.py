"""The raw socket publisher against the shared stack's Mosquitto (auth and ACL as deployed).

A subscriber (the pipeline's MQTT user) must receive exactly the messages the publisher counted
as acknowledged; a publish the ACL denies must come back as PUBACK 0x87 and count as refused; the
simulator's load mode (``--rate``, which publishes through this client) must report exactly what
arrives.
Each test publishes under a MAC of its own, so other engineers' subscribers are not disturbed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter

import pytest
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion

from schemas.decode import decode_message
from schemas.records import RawMessage
from schemas.settings import Settings
from simulator.fastmqtt import FastPublisher
from simulator.fleet import generate_fleet
from simulator.messages import Outgoing
from tests.integration.test_simulator import Listener, fresh_seed, simulator
from tests.simulator.helpers import outcome, registry_of

pytestmark = pytest.mark.integration

MESSAGES = 3000


def fresh_mac() -> str:
    return f"0f{(time.time_ns() // 1000 + os.getpid()) % (1 << 40):010x}"


class Subscriber:
    """A QoS 1 subscriber as the pipeline's user."""

    def __init__(self, settings: Settings, topic_filter: str) -> None:
        self.messages: list[MQTTMessage] = []
        self._subscribed = threading.Event()
        client = Client(CallbackAPIVersion.VERSION2, protocol=5)
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        client.on_message = lambda _c, _u, message: self.messages.append(message)
        client.on_subscribe = lambda *_args: self._subscribed.set()
        client.connect(settings.mqtt_host, settings.mqtt_port)
        client.subscribe(topic_filter, 1)
        client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"
        self._client = client

    def settle(self, expected: int, timeout_s: float = 15.0) -> list[MQTTMessage]:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything beyond the expected count would show up now
        self._client.disconnect()
        self._client.loop_stop()
        return self.messages


def test_subscriber_receives_exactly_the_acknowledged_messages(stack: Settings):
    mac = fresh_mac()
    subscriber = Subscriber(stack, f"+/f2-{mac}/#")
    publisher = FastPublisher(stack, f"f2-test-fast-{mac}", qos=1)
    publisher.connect()
    topics = [f"tele/f2-{mac}/sensor-mode/J1/sensor-{pin}" for pin in (1, 2, 3)]
    for n in range(MESSAGES):
        publisher.publish(Outgoing(topics[n % 3], b'{"n":%d}' % n, readings=2))
        if n % 32 == 0:
            publisher.service()
    publisher.publish(Outgoing(f"stat/f2-{mac}/sensor-mode/J1/STATUS", b'{"n":-1}', events=1))
    assert publisher.drain(10) == 0
    publisher.close()

    tally = publisher.tally
    assert (tally.published, tally.rejected) == (MESSAGES + 1, 0)
    assert (tally.readings, tally.events) == (2 * MESSAGES, 1)
    received = subscriber.settle(tally.published)
    assert len(received) == tally.published
    assert sorted(m.payload for m in received) == sorted(
        [b'{"n":%d}' % n for n in range(MESSAGES)] + [b'{"n":-1}']
    )
    assert not any(m.retain for m in received)
    assert all(m.qos == 1 for m in received)


def test_a_publish_the_acl_denies_is_refused_not_published(stack: Settings):
    mac = fresh_mac()
    publisher = FastPublisher(stack, f"f2-test-fast-denied-{mac}", qos=1)
    publisher.connect()
    publisher.publish(Outgoing(f"tele/f2-{mac}/sensor-mode/J1/sensor-1", b"{}", readings=2))
    publisher.publish(Outgoing("cmnd/x", b"{}", readings=5))  # the sim user may not write cmnd/
    publisher.publish(Outgoing(f"cmnd/f2-{mac}/sensor-mode/J1/STATUS", b"{}", events=3))
    assert publisher.drain(10) == 0
    publisher.close()
    tally = publisher.tally
    assert (tally.published, tally.rejected) == (1, 2)
    assert (tally.readings, tally.events) == (2, 0)


def test_load_mode_report_matches_what_a_subscriber_receives(stack: Settings, tmp_path):
    seed = fresh_seed()
    fleet = generate_fleet(3, seed)
    listener = Listener(stack, fleet.macs + list(fleet.ghost_macs))
    report_path = tmp_path / "report.json"
    proc = simulator(
        *("--controllers", "3", "--seed", str(seed), "--rate", "1500", "--duration", "2"),
        *("--qos", "1", "--faults", "0.2", "--processes", "2", "--report", str(report_path)),
    )
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    report = json.loads(report_path.read_text())
    listener.settle(report["published"])
    registry = registry_of(fleet)
    readings = events = 0
    errors: Counter[str] = Counter()
    for message in listener.messages:
        mac = message.topic.split("/")[1][3:]
        raw = RawMessage(message.topic, message.payload)
        got_readings, got_events, got_errors = outcome(decode_message(raw, registry.get(mac)))
        readings, events, errors = readings + got_readings, events + got_events, errors + got_errors
    assert report["published"] > 1500, output
    assert len(listener.messages) == report["published"]
    assert (readings, events) == (report["expected_readings"], report["expected_events"])
    assert dict(errors) == report["expected_errors"]
