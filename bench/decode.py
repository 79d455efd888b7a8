"""Decode-stage benchmark: messages/s on one core for a realistic mix, against a naive baseline.

The mix: a fleet of controllers (a fifth on Europe/Berlin time, the rest UTC), 70% sensor frames
of an ENV-S1 (three data points, Modbus RTU), 28% events (strikes with aliases and units, door
sensors, exit buttons, readers, sirens, motion sensors) and 2% bad messages (bad CRC, bad hex,
bad JSON, bad timestamp, unknown controller). The naive baseline is written the obvious way
(``json.loads``, a regex for the topic, ``bytes.fromhex``, a bitwise CRC, ``strptime``,
``struct.unpack`` per data point, dicts out). Both must produce the same records for the whole mix
before anything is timed. Each is timed 5 times on one pinned core; the median is reported, as
messages per CPU second (``msgs_per_s``) and per wall-clock second (``wall_msgs_per_s``).

Run: ``.venv/bin/python -m bench.decode [--messages N]``; prints the JSON result and writes it to
``bench/results/decode.json``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import re
import statistics
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from schemas.decode import decode_message
from schemas.encode import encode_value, frame_hex, modbus_frame
from schemas.records import ControllerEntry, DataPointDef, RawMessage, SensorEntry
from schemas.topics import mac_from_topic
from schemas.wire import result_json

RESULTS = Path(__file__).resolve().parent / "results" / "decode.json"
TARGET_RATE = 150_000
TARGET_RATIO = 3.0
RUNS = 5
ENV_POINTS = (
    DataPointDef(1, "Temperature", "Int16", 0, 2, 2, append=" °C"),
    DataPointDef(2, "Humidity", "Uint16", 2, 2, 2, append=" %"),
    DataPointDef(3, "CO2", "Uint16", 4, 2, 0, append=" ppm"),
)


def build_fleet(size: int) -> dict[str, ControllerEntry]:
    """``size`` controllers, each with an ENV-S1 on J1 pin 1; every fifth on Berlin time."""
    fleet = {}
    for number in range(size):
        mac = f"f2{number:010x}"
        sensor = SensorEntry(1000 + number, 2, "ENV-S1", "modbus-rtu", ENV_POINTS)
        zone = "Europe/Berlin" if number % 5 == 0 else "UTC"
        fleet[mac] = ControllerEntry(mac, number + 1, zone, 1, {"1:1": sensor})
    return fleet


def _stamp(moment: datetime, zone: str) -> str:
    local = moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    return local.strftime("%Y-%m-%d %H:%M:%S.%f")


def _event(rng: random.Random, prefix: str, stamp: str) -> tuple[str, dict[str, Any]]:
    choice = rng.randrange(6)
    if choice == 0:
        state = rng.choice(["locked", "unlocked"])
        return f"{prefix}/access-control-mode/J2/strike-1", {
            "timestamp": stamp,
            "state": state,
            "voltage": f"{rng.uniform(11, 13):.2f} V",
        }
    if choice == 1:
        return f"{prefix}/access-control-mode/J2/door-sensors", {
            "timestamp": stamp,
            "door-sensor-1": rng.random() < 0.5,
            "door_2": rng.choice(["open", "closed"]),
        }
    if choice == 2:
        return f"{prefix}/access-control-mode/J2/exit-buttons", {
            "timestamp": stamp,
            "exit-button-1": rng.randrange(2),
            "exit-button-2": False,
        }
    if choice == 3:
        card = bytes(rng.randrange(256) for _ in range(4))
        data = repr(card.hex().upper().encode()) if rng.random() < 0.5 else repr(card)
        return f"{prefix}/access-control-mode/J3/reader-1", {"timestamp": stamp, "data": data}
    if choice == 4:
        return f"{prefix}/alarm-mode/J4/siren-2", {"timestamp": stamp, "status": True}
    return f"{prefix}/alarm-mode/J4/motion-sensor-3", {"timestamp": stamp, "status": 0}


def _bad(rng: random.Random, prefix: str, stamp: str, good_hex: str) -> tuple[str, bytes]:
    sensor_topic = f"{prefix}/sensor-mode/J1/sensor-1"
    choice = rng.randrange(5)
    if choice == 0:
        broken = good_hex[:-2] + ("00" if good_hex[-2:] != "00" else "11")
        body = {"timestamp": stamp, "data": broken}
    elif choice == 1:
        body = {"timestamp": stamp, "data": good_hex[:-1] + "G"}
    elif choice == 2:
        return sensor_topic, b'{"timestamp": "' + stamp.encode() + b'", "data": '
    elif choice == 3:
        body = {"timestamp": "1999-12-31 23:59:59.000000", "data": good_hex}
    else:
        return "tele/f2-0000deadbeef/sensor-mode/J1/sensor-1", json.dumps(
            {"timestamp": stamp}
        ).encode()
    return sensor_topic, json.dumps(body).encode()


def build_mix(fleet: dict[str, ControllerEntry], count: int, seed: int = 7) -> list[RawMessage]:
    """``count`` messages: 70% ENV-S1 frames, 28% events, 2% bad, over the fleet."""
    rng = random.Random(seed)
    macs = list(fleet)
    start = datetime.now(UTC) - timedelta(hours=1)
    messages = []
    for number in range(count):
        mac = rng.choice(macs)
        moment = start + timedelta(microseconds=rng.randrange(3_600_000_000))
        stamp = _stamp(moment, fleet[mac].timezone)
        prefix = f"{rng.choice(['tele', 'stat'])}/f2-{mac}"
        values = (rng.randint(-2000, 5000), rng.randint(0, 10000), rng.randint(300, 5000))
        data = b"".join(encode_value(v, "Uint16" if v >= 0 else "Int16") for v in values)
        good_hex = frame_hex(modbus_frame(1, 3, data), spaced=number % 2 == 0)
        roll = rng.random()
        if roll < 0.02:
            topic, payload = _bad(rng, prefix, stamp, good_hex)
        elif roll < 0.30:
            topic, body = _event(rng, prefix, stamp)
            payload = json.dumps(body).encode()
        else:
            topic = f"tele/f2-{mac}/sensor-mode/J1/sensor-1"
            payload = json.dumps({"timestamp": stamp, "data": good_hex}).encode()
        messages.append(RawMessage(topic, payload, 0))
    return messages


def run_fast(messages: list[RawMessage], fleet: dict[str, ControllerEntry]) -> list[list[Any]]:
    """Decode the mix with :func:`schemas.decode.decode_message`."""
    get = fleet.get
    return [decode_message(raw, get(mac_from_topic(raw.topic) or "")) for raw in messages]


# The naive baseline -------------------------------------------------------------------------

NAIVE_TOPIC = re.compile(
    r"^(cmnd|stat|tele)/f2-([0-9a-fA-F]{12})/(sensor-mode|access-control-mode|alarm-mode)/"
    r"J?([1-4])/([a-z-]+?)(?:-(\d+))?(/success)?$"
)
NAIVE_COMPONENTS = {
    "sensor-mode": {"sensor": 6},
    "access-control-mode": {"strike": 2, "door-sensors": 0, "reader": 2, "exit-buttons": 0},
    "alarm-mode": {"siren": 2, "motion-sensor": 5},
}
NAIVE_WORDS = {
    "locked": False,
    "unlocked": True,
    "open": True,
    "closed": False,
    "on": True,
    "off": False,
}
NAIVE_FORMATS = {"Int16": ">h", "Uint16": ">H"}


def naive_crc(data: bytes) -> int:
    """Bitwise CRC-16/MODBUS, the textbook loop."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def naive_time(value: Any, zone_name: str) -> datetime | None:
    """The payload timestamp the obvious way (strptime, zoneinfo), or None if bad."""
    try:
        local = datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
    except (TypeError, ValueError):
        return None
    zone = ZoneInfo(zone_name)
    moment = local.replace(tzinfo=zone).astimezone(UTC)
    if moment.astimezone(zone).replace(tzinfo=None) != local:
        return None
    if moment < datetime(2000, 1, 1, tzinfo=UTC) or moment > datetime.now(UTC) + timedelta(days=1):
        return None
    return moment


def naive_value(field: str, value: Any) -> Any:
    """An event field value: booleans, words, numbers with units, reader bytes."""
    if field == "data":
        raw = ast.literal_eval(value)
        text = raw.decode("latin-1")
        return text if raw.isascii() and text.isprintable() else raw.hex()
    if isinstance(value, bool):
        return value
    if field in ("status", "door-sensor-1", "door-sensor-2", "exit-button-1", "exit-button-2"):
        return NAIVE_WORDS[value] if isinstance(value, str) else value == 1
    if isinstance(value, str):
        return float(re.match(r"\s*([-+0-9.eE]+)", value).group(1))
    return float(value)


def naive_decode(topic: str, payload: bytes, fleet: dict[str, ControllerEntry]) -> list[dict]:
    """One message decoded the obvious way, as ``f2 decode`` dicts (errors without detail)."""
    match = NAIVE_TOPIC.match(topic)
    if not match or match.group(5) not in NAIVE_COMPONENTS[match.group(3)]:
        return [{"kind": "error", "reason": "bad_topic"}]
    mac = match.group(2).lower()
    entry = fleet.get(mac)
    if entry is None:
        return [{"kind": "error", "reason": "unknown_device"}]
    connector, kind, index = "J" + match.group(4), match.group(5), int(match.group(6) or 0)
    try:
        body = json.loads(payload)
    except ValueError:
        return [{"kind": "error", "reason": "bad_json"}]
    moment = naive_time(body.get("timestamp"), entry.timezone)
    if moment is None:
        return [{"kind": "error", "reason": "bad_timestamp"}]
    stamp = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    if kind != "sensor":
        component = kind if index == 0 else f"{kind}-{index}"
        aliases = {"state": "status", "door_1": "door-sensor-1", "door_2": "door-sensor-2"}
        return [
            {
                "kind": "event",
                "mac": mac,
                "connector": connector,
                "component": component,
                "field": aliases.get(field, field),
                "value": naive_value(aliases.get(field, field), value),
                "time": stamp,
            }
            for field, value in body.items()
            if field != "timestamp"
        ]
    sensor = entry.sensors[f"{match.group(4)}:{index}"]
    try:
        frame = bytes.fromhex(body["data"])
    except ValueError:
        return [{"kind": "error", "reason": "bad_hex"}]
    if naive_crc(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
        return [{"kind": "error", "reason": "bad_crc"}]
    data = frame[3:-2]
    out = []
    for point in sensor.datapoints:
        raw = data[point.offset : point.offset + point.length]
        value = struct.unpack(NAIVE_FORMATS[point.encoding], raw)[0] / 10**point.decimals
        out.append(
            {
                "kind": "reading",
                "mac": mac,
                "connector": connector,
                "pin": index,
                "label": point.label,
                "value": value,
                "unit": point.append.strip(),
                "time": stamp,
            }
        )
    return out


def run_naive(messages: list[RawMessage], fleet: dict[str, ControllerEntry]) -> list[list[dict]]:
    """Decode the mix with the naive baseline."""
    return [naive_decode(raw.topic, raw.payload, fleet) for raw in messages]


# Harness ------------------------------------------------------------------------------------


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A decoded record as the naive baseline produces it: its fields (no registry ids, version
    or error detail) and ``time`` as a datetime."""
    for name in ("detail", "sensor_id", "datapoint_id", "registry_version", "v"):
        record.pop(name, None)
    if "time" in record:
        record["time"] = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    return record


def check_agreement(fast: list[list[Any]], naive: list[list[dict]]) -> None:
    """Raise if the two decoders disagree on any message (error details are not compared)."""
    for number, (ours, theirs) in enumerate(zip(fast, naive, strict=True)):
        records = [comparable(msgspec.json.decode(result_json(item))) for item in ours]
        if records != [comparable(dict(record)) for record in theirs]:
            raise AssertionError(f"message {number}: {records} != {theirs}")


def median_rates(
    function: Any, messages: list[RawMessage], fleet: dict[str, ControllerEntry]
) -> tuple[float, float]:
    """Median messages/s of ``RUNS`` timed runs (after a warm-up): per CPU second, per wall second.

    The CPU-time rate is the headline: it is what one core does for this process even when other
    processes share the machine; the wall-clock rate equals it on an otherwise idle core.
    """
    function(messages, fleet)
    cpu_rates, wall_rates = [], []
    for _ in range(RUNS):
        cpu, wall = time.process_time(), time.perf_counter()
        function(messages, fleet)
        cpu_rates.append(len(messages) / (time.process_time() - cpu))
        wall_rates.append(len(messages) / (time.perf_counter() - wall))
    return statistics.median(cpu_rates), statistics.median(wall_rates)


def pin_one_core() -> int | None:
    """Pin this process to one CPU (the first allowed one), where the platform allows it."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def main(argv: list[str] | None = None) -> int:
    """Build the mix, check agreement, time both decoders, print and save the JSON result."""
    parser = argparse.ArgumentParser(prog="bench.decode", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--controllers", type=int, default=200)
    args = parser.parse_args(argv)
    cpu = pin_one_core()
    fleet = build_fleet(args.controllers)
    messages = build_mix(fleet, args.messages)
    check_agreement(run_fast(messages, fleet), run_naive(messages, fleet))
    fast, fast_wall = median_rates(run_fast, messages, fleet)
    naive, naive_wall = median_rates(run_naive, messages, fleet)
    result = {
        "benchmark": "decode",
        "messages": len(messages),
        "controllers": len(fleet),
        "runs": RUNS,
        "msgs_per_s": round(fast),
        "naive_msgs_per_s": round(naive),
        "ratio": round(fast / naive, 2),
        "wall_msgs_per_s": round(fast_wall),
        "wall_naive_msgs_per_s": round(naive_wall),
        "target_msgs_per_s": TARGET_RATE,
        "target_ratio": TARGET_RATIO,
        "met": fast >= TARGET_RATE and fast / naive >= TARGET_RATIO,
        "load_average": os.getloadavg()[0],
        "cpu": cpu,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = msgspec.json.format(msgspec.json.encode(result), indent=2).decode()
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
