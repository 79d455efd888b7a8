"""Measure Mosquitto's memory per queued payload byte (the overhead factor of the broker sizing
rule, ``ops/stack/broker_sizing.py``).

Starts a private ``/usr/sbin/mosquitto`` on a free loopback port in a temporary directory (stopped
in ``finally``), with the production queue semantics of ``deploy/mosquitto/mosquitto.conf``
(password login, QoS 1, ``max_inflight_messages 1000``; persistence off unless ``--persistence``,
which measured the same) and a small per-session byte limit. Then:

1. ``--sessions`` persistent sessions join the pipeline's shared subscription the way ingest does
   (client id ``f2-ingest-s<k>``, ``clean_start=False``, a session expiry,
   ``$share/f2-ingest/stat/#`` and ``…/tele/#`` at QoS 1) and disconnect;
2. the broker's resident memory (``VmRSS``) is read;
3. the simulator's own messages (its topics and payloads: ``--payload sim``, 56-123 bytes) or
   payloads of a fixed size (``--payload N``, the simulator's topics) are published at QoS 1 until
   the queued payload bytes reach ``--fill`` of ``sessions × max_queued_bytes`` (the shared
   subscription spreads them round-robin, so each session's queue fills to about that fraction);
4. the publisher disconnects, the broker's ``$SYS`` counters confirm what is queued and that
   nothing was dropped, and ``VmRSS`` is read again.

The factor is the RSS growth over the queued payload bytes (what ``max_queued_bytes`` counts);
the per-message overhead is (growth - payload bytes) / messages. Usage::

    .venv/bin/python -m tools.mosquitto_overhead               # 4 sessions x 32 MiB, the simulator
    .venv/bin/python -m tools.mosquitto_overhead --payload 256 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from schemas.settings import Settings
from schemas.topics import SENSOR_MODE
from simulator.fastmqtt import FastPublisher
from simulator.fleet import generate_fleet
from simulator.messages import EventSource, SensorSource

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
USER = "02a1b2c3d4e5"  # a device-like username and client id (a MAC: 12 characters)
PASSWORD = "overhead-measurement"
GROUP = "f2-ingest"
FILTERS = ("stat/#", "tele/#")
MIB = 1 << 20
CONF = """\
per_listener_settings false
allow_anonymous false
password_file {dir}/passwd
user {user}
listener {port} 127.0.0.1
protocol mqtt
{persistence}
max_queued_messages 0
max_queued_bytes {max_queued_bytes}
max_inflight_messages 1000
max_packet_size 1048576
message_size_limit 262144
sys_interval 1
log_dest file {dir}/mosquitto.log
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def private_broker(max_queued_bytes: int, persistence: bool = False) -> Iterator[tuple[int, int]]:
    """A Mosquitto of its own on a free loopback port: (port, pid); stopped on exit. With
    ``persistence``, as production saves it (``autosave_on_changes``, every 10000 changes)."""
    with tempfile.TemporaryDirectory(prefix="f2-mosquitto-overhead-") as scratch:
        port = free_port()
        subprocess.run(
            [MOSQUITTO_PASSWD, "-c", "-b", f"{scratch}/passwd", USER, PASSWORD],
            check=True,
            capture_output=True,
        )
        user = pwd.getpwuid(os.getuid()).pw_name
        conf = Path(scratch, "mosquitto.conf")
        saving = (
            f"persistence true\npersistence_location {scratch}/\nautosave_on_changes true\n"
            "autosave_interval 10000"
            if persistence
            else "persistence false"
        )
        conf.write_text(
            CONF.format(
                dir=scratch,
                port=port,
                user=user,
                max_queued_bytes=max_queued_bytes,
                persistence=saving,
            )
        )
        broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                    break
                if broker.poll() is not None or time.monotonic() > deadline:
                    log = Path(scratch, "mosquitto.log")
                    raise RuntimeError(
                        "mosquitto did not start: " + (log.read_text() if log.exists() else "")
                    )
                time.sleep(0.05)
            yield port, broker.pid
        finally:
            broker.terminate()
            try:
                broker.wait(10)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()


def _client(client_id: str, port: int, clean_start: bool) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(USER, PASSWORD)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    connected = threading.Event()
    client.on_connect = lambda *_args: connected.set()
    client.connect("127.0.0.1", port, keepalive=30, clean_start=clean_start, properties=props)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"{client_id}: no CONNACK")
    return client


def make_sessions(port: int, sessions: int) -> None:
    """``sessions`` persistent sessions in the shared group, left offline (as ingest's are while
    it is down)."""
    options = SubscribeOptions(qos=1)
    for k in range(sessions):
        client = _client(f"{GROUP}-s{k}", port, clean_start=True)
        subscribed = threading.Event()
        client.on_subscribe = lambda *_args, done=subscribed: done.set()
        client.subscribe([(f"$share/{GROUP}/{f}", options) for f in FILTERS])
        if not subscribed.wait(10):
            raise RuntimeError("no SUBACK")
        client.disconnect()
        client.loop_stop()


def broker_stats(port: int) -> dict[str, int]:
    """The broker's ``$SYS`` counters (messages stored, their bytes, dropped), the last values
    published over a few ``sys_interval``s."""
    stats: dict[str, int] = {}
    names = {
        "$SYS/broker/store/messages/count": "stored",
        "$SYS/broker/store/messages/bytes": "stored_bytes",
        "$SYS/broker/publish/messages/dropped": "dropped",
    }
    client = _client("f2-overhead-sys", port, clean_start=True)
    done = threading.Event()

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        stats[names[message.topic]] = int(message.payload)  # the latest value wins
        if len(stats) == len(names):
            done.set()

    client.on_message = on_message
    client.subscribe([(topic, 0) for topic in names])
    done.wait(30)
    time.sleep(3)  # a few sys_intervals: the retained values may predate the last publish
    client.disconnect()
    client.loop_stop()
    return stats


def messages(payload: str) -> Iterator[tuple[bytes, bytes]]:
    """(topic field, payload) of the simulator's fleet, round-robin over its sources; with a
    number, payloads padded or cut to that many bytes."""
    fleet = generate_fleet(200)
    sources: list[SensorSource | EventSource] = []
    for controller in fleet.controllers:
        for connector in controller.connectors:
            if connector.mode == SENSOR_MODE:
                sources += [SensorSource(controller, connector, s) for s in connector.sensors]
            else:
                sources.append(EventSource(controller, connector, 0.1))
    size = None if payload == "sim" else int(payload)
    out: list[tuple[bytes, bytes]] = []

    def keep(topic: bytes, body: bytes, _kind: int) -> None:
        if size is not None:
            body = (body + b" " * size)[:size]
        out.append((topic, body))

    t = time.time()
    while True:
        t += 0.001
        for source in sources:
            source.emit(keep, t)
        yield from out
        out.clear()


def measure(
    sessions: int, max_queued_bytes: int, fill: float, payload: str, persistence: bool = False
) -> dict[str, object]:
    """Fill ``sessions`` offline queues to ``fill`` of ``max_queued_bytes`` each; the numbers."""
    target = int(sessions * max_queued_bytes * fill)
    with private_broker(max_queued_bytes, persistence) as (port, pid):
        make_sessions(port, sessions)
        time.sleep(0.5)
        before = rss_bytes(pid)
        settings = Settings(mqtt_port=port, sim_username=USER, sim_password=PASSWORD)
        publisher = FastPublisher(settings, USER, qos=1)
        publisher.connect()
        sent = count = 0
        started = time.monotonic()
        for topic, body in messages(payload):
            publisher.send(topic, body, 0)
            sent += len(body)
            count += 1
            if count % 500 == 0:
                publisher.service()
            if sent >= target:
                break
        if publisher.drain(60):
            raise RuntimeError("the broker did not acknowledge every message")
        publisher.close()
        elapsed = time.monotonic() - started
        stats = broker_stats(port)
        after = rss_bytes(pid)
    growth = after - before
    return {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "mosquitto": _mosquitto_version(),
        "sessions": sessions,
        "max_queued_bytes": max_queued_bytes,
        "payload": payload,
        "persistence": persistence,
        "messages": count,
        "payload_bytes": sent,
        "mean_payload_bytes": round(sent / count, 1),
        "broker_stored": stats.get("stored"),
        "broker_stored_bytes": stats.get("stored_bytes"),
        "broker_dropped": stats.get("dropped"),
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "rss_growth_bytes": growth,
        "overhead_factor": round(growth / sent, 3),
        "overhead_bytes_per_message": round((growth - sent) / count, 1),
        "publish_s": round(elapsed, 1),
    }


def _mosquitto_version() -> str:
    result = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).splitlines()
    return first[0].removeprefix("mosquitto version ").strip() if first else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--max-queued-mib", type=float, default=32)
    parser.add_argument("--fill", type=float, default=0.9, help="fraction of the queues to fill")
    parser.add_argument("--payload", default="sim", help="'sim' or a payload size in bytes")
    parser.add_argument(
        "--persistence", action="store_true", help="save to disk as production does"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(
        args.sessions, int(args.max_queued_mib * MIB), args.fill, args.payload, args.persistence
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    dropped = result["broker_dropped"]
    if dropped is None:
        print("mosquitto's $SYS counters did not arrive", file=sys.stderr)
        return 1
    if dropped:
        print(f"mosquitto dropped {dropped} messages: lower --fill", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
