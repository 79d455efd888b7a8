"""``f2 demo``: show the pipeline working on the local stack.

``--round-trip-only`` (also ``make mqtt-test``): publish one sensor frame of a seed controller as
the test rig, receive it as the pipeline's MQTT user, decode it with the registry's parameters and
print the readings.
"""

from __future__ import annotations

import argparse
import queue
import sys
import time
import uuid
from datetime import UTC, datetime

import msgspec
import paho.mqtt.client as mqtt
import psycopg
from connectors.registry_pg import load_controller
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from schemas.decode import decode_message, output_record
from schemas.encode import encode_value, frame_hex, modbus_frame
from schemas.records import RawMessage
from schemas.settings import Settings, load_settings

SEED_MAC = "e4fd45f654be"
SEED_TOPIC = f"tele/f2-{SEED_MAC}/sensor-mode/J1/sensor-1"


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="show the pipeline working on the local stack")
    demo.add_argument(
        "--round-trip-only",
        action="store_true",
        help="only an MQTT round trip of one frame, decoded with the registry's parameters",
    )
    demo.set_defaults(func=run)


def _client(settings: Settings, username: str, password: str) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"f2-demo-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(username, password)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    return client


def seed_frame_payload(temperature: float, humidity: float, co2: float) -> bytes:
    """A JSON payload of an ENV-S1 frame (Int16 °C /100, Uint16 % /100, Uint16 ppm)."""
    data = (
        encode_value(temperature, "Int16", "ABCD", 2)
        + encode_value(humidity, "Uint16", "ABCD", 2)
        + encode_value(co2, "Uint16", "ABCD", 0)
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    frame = modbus_frame(1, 3, data)
    return msgspec.json.encode({"timestamp": stamp, "data": frame_hex(frame, spaced=True)})


def round_trip(settings: Settings) -> int:
    """Publish one frame as the rig, receive it as the pipeline, decode and print it."""
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    sub = _client(settings, settings.mqtt_username, settings.mqtt_password)
    sub.on_message = lambda _c, _u, message: received.put(message)
    sub.on_subscribe = lambda _c, _u, _mid, codes, _p: subscribed.put(not codes[0].is_failure)
    sub.subscribe(SEED_TOPIC, qos=1)
    if not subscribed.get(timeout=10):
        print(
            "f2 demo: the pipeline's MQTT user may not subscribe (check the ACL)", file=sys.stderr
        )
        return 1
    payload = seed_frame_payload(21.5, 48.25, 612)
    pub = _client(settings, settings.sim_username, settings.sim_password)
    pub.publish(SEED_TOPIC, payload, qos=1).wait_for_publish(10)
    print(f"published  {SEED_TOPIC}  {payload.decode()}")
    message = received.get(timeout=10)
    for client in (pub, sub):
        client.loop_stop()
        client.disconnect()
    print(f"received   {message.topic} as {settings.mqtt_username}")
    with psycopg.connect(settings.params_dsn) as conn:
        entry = load_controller(conn, SEED_MAC)
    raw = RawMessage(
        topic=message.topic, payload=bytes(message.payload), received_at_ms=int(time.time() * 1000)
    )
    for item in decode_message(raw, entry):
        print("decoded    " + msgspec.json.encode(output_record(item)).decode())
    return 0


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        return round_trip(settings)
    except (queue.Empty, OSError, psycopg.OperationalError) as exc:
        print(
            f"f2 demo: the round trip failed: {exc!r}; is the stack up? (f2 stack status)",
            file=sys.stderr,
        )
        return 1
