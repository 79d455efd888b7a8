"""``f2 demo``: show the pipeline working on the local stack.

Default: start both dataflows (supervised, as ``f2 stack up --flows``), run the simulator with a
fresh registered fleet and a few faults for ``--seconds``, wait until storage holds exactly the
readings and events the simulator's report expects, and print the reconciliation and a sample of
stored rows.

``--round-trip-only`` (also ``make mqtt-test``): publish one sensor frame of a seed controller as
the test rig, receive it as the pipeline's MQTT user, decode it with the registry's parameters and
print the readings.
"""

from __future__ import annotations

import argparse
import queue
import secrets
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from connectors.registry_pg import load_controller
from ops.stack import flows
from schemas.decode import decode_message
from schemas.encode import encode_value, frame_hex, modbus_frame
from schemas.records import RawMessage
from schemas.settings import Config, Settings
from schemas.wire import result_json

SEED_MAC = "e4fd45f654be"
SEED_TOPIC = f"tele/f2-{SEED_MAC}/sensor-mode/J1/sensor-1"


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="show the pipeline working on the local stack")
    demo.add_argument("--seconds", type=int, default=15, help="how long the simulator publishes")
    demo.add_argument("--rate", type=float, default=100.0, help="messages per second")
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
        print("decoded    " + result_json(item).decode())
    return 0


def stored_counts(settings: Settings, macs: list[str]) -> tuple[int, int]:
    """Readings and events in storage for the controllers ``macs``."""
    with psycopg.connect(settings.timeseries_dsn) as conn:
        readings = conn.execute(
            "SELECT count(*) FROM readings_named WHERE mac = ANY(%s)", (macs,)
        ).fetchone()[0]
        events = conn.execute(
            "SELECT count(*) FROM device_events WHERE mac = ANY(%s)", (macs,)
        ).fetchone()[0]
    return readings, events


def print_sample(settings: Settings, macs: list[str]) -> None:
    with psycopg.connect(settings.timeseries_dsn) as conn:
        rows = conn.execute(
            "SELECT time, mac, connector, pin, label, value, unit FROM readings_named"
            " WHERE mac = ANY(%s) ORDER BY time DESC, mac, connector, pin, label LIMIT 9",
            (macs,),
        ).fetchall()
    print("\nlatest readings (view readings_named):")
    for moment, mac, connector, pin, label, value, unit in rows:
        where = f"{mac}  {connector} pin {pin}"
        print(f"  {moment:%H:%M:%S.%f}  {where}  {label:<12}{value:>10.2f} {unit}")


def pipeline_demo(settings: Settings, seconds: int, rate: float) -> int:
    """Flows on, a simulated fleet through the pipeline, storage reconciled with its report."""
    root = Path(settings.stack_dir)
    started = flows.start_supervised(root, flows.available_flows())
    print(f"dataflows running: {', '.join(started) or 'already running'} (f2 stack status)")
    report_path = root / "demo-report.json"
    argv = [sys.executable, "-m", "simulator", "--controllers", "5", "--register"]
    argv += ["--seed", str(secrets.randbelow(10**9)), "--faults", "0.03", "--rate", str(rate)]
    argv += ["--duration", str(seconds), "--report", str(report_path)]
    print(f"simulating 5 controllers at {rate:g} msg/s for {seconds}s (3% faults) ...")
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    report = msgspec.json.decode(report_path.read_bytes())
    expected = (report["expected_readings"], report["expected_events"])
    print(
        f"published {report['published']} messages: expect {expected[0]} readings, "
        f"{expected[1]} events; dead letters by reason: {report['expected_errors']}"
    )
    deadline = time.monotonic() + 120
    got = stored_counts(settings, report["controllers"])
    while got != expected and time.monotonic() < deadline:
        time.sleep(1)
        got = stored_counts(settings, report["controllers"])
    print(f"stored    {got[0]} readings, {got[1]} events")
    print_sample(settings, report["controllers"])
    if got != expected:
        print(
            "f2 demo: storage does not match the report; see f2 stack logs decode", file=sys.stderr
        )
        return 1
    print("\nOK: every reading and event the simulated devices sent is stored exactly once.")
    print("Next: f2 health | f2 kafka tail dlq_iot_data --from-beginning | make db-timescale")
    return 0


def run(args: argparse.Namespace, config: Config) -> int:
    settings = config.connections
    try:
        if args.round_trip_only:
            return round_trip(settings)
        return pipeline_demo(settings, args.seconds, args.rate)
    except (queue.Empty, OSError, psycopg.OperationalError, subprocess.CalledProcessError) as exc:
        print(f"f2 demo failed: {exc!r}; is the stack up? (f2 stack status)", file=sys.stderr)
        return 1
