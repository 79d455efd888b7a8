"""``f2 decode`` and the registry reader against PostgreSQL, with a probe fleet in the registry.

The probe fleet (written here with parameters, removed afterwards) covers every encoding and byte
order in one Modbus template, a raw template, a controller on Europe/Berlin time and one with a
time zone that is not an IANA name.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from connectors.registry_pg import load_controller
from schemas.encode import encode_value, frame_hex, modbus_exception_frame, modbus_frame
from schemas.frames import BYTE_ORDERS, ENCODINGS
from schemas.settings import Settings
from tests.conftest import f2

pytestmark = pytest.mark.integration

RECEIVED_AT = "1718000000000"  # 2024-06-10T06:13:20Z
STAMP = "2024-06-01 12:00:00.500000"
SAMPLES = {
    "Int8": -100,
    "Uint8": 200,
    "Int16": -12345,
    "Uint16": 54321,
    "Int32": -123456789,
    "Uint32": 3123456789,
    "Float32": 1.5,
    "Int64": -1234567890123,
    "Uint64": 9876543210123,
    "Float64": -2.25e-3,
}


@dataclass(frozen=True)
class ProbeFleet:
    """MACs of the probe controllers and the probe template's expected readings."""

    utc_mac: str
    berlin_mac: str
    bad_zone_mac: str
    points: list[
        tuple[str, str, str, int, int, float]
    ]  # label, encoding, order, offset, dec, value

    def all_frame(self) -> bytes:
        data = b"".join(
            encode_value(value, encoding, order, decimals)
            for _, encoding, order, _, decimals, value in self.points
        )
        return modbus_frame(7, 3, data)


def _probe_points() -> list[tuple[str, str, str, int, int, float]]:
    points, offset = [], 0
    for number, (encoding, order) in enumerate(
        (e, o) for e in sorted(ENCODINGS) for o in BYTE_ORDERS
    ):
        decimals = number % 4
        value = SAMPLES[encoding] / (1 if ENCODINGS[encoding][2] else 10**decimals)
        points.append((f"{encoding}-{order}", encoding, order, offset, decimals, value))
        offset += ENCODINGS[encoding][1]
    return points


def _insert_fleet(conn: psycopg.Connection, tag: str, fleet: ProbeFleet) -> None:
    """Write the probe templates, sensors and controllers (all named with ``tag``)."""
    sensor_type = _id(conn, 'SELECT "DeviceTypeId" FROM "DeviceType" WHERE "Name" = %s', "Sensor")
    icon = _id(conn, 'SELECT "DataPointIconId" FROM "DataPointIcon" ORDER BY 1 LIMIT 1')
    template_sql = (
        'INSERT INTO "DeviceTemplate" ("Name", "Model", "DeviceTypeId", "FrameFormat") '
        'VALUES (%s, %s, %s, %s) RETURNING "DeviceTemplateId"'
    )
    point_sql = (
        'INSERT INTO "DataPoint" ("DeviceTemplateId", "Label", "DataPointIconId", "DataFormat",'
        ' "DataEncoding", "Offset", "Length", "Decimals", "ByteOrder", "Append")'
        " VALUES (%s, %s, %s, 'number', %s, %s, %s, %s, %s, %s)"
    )
    all_tpl = _id(conn, template_sql, "Probe all", f"PROBE-ALL-{tag}", sensor_type, "modbus-rtu")
    for label, encoding, order, offset, decimals, _ in fleet.points:
        size = ENCODINGS[encoding][1]
        conn.execute(
            point_sql, (all_tpl, label, icon, encoding, offset, size, decimals, order, " u")
        )
    raw_tpl = _id(conn, template_sql, "Probe raw", f"PROBE-RAW-{tag}", sensor_type, "raw")
    conn.execute(point_sql, (raw_tpl, "Level", icon, "Uint16", 0, 2, 1, "ABCD", " mm "))
    conn.execute(point_sql, (raw_tpl, "Flow", icon, "Float32", 2, 4, 0, "DCBA", " l/min"))
    controller_tpl = _id(
        conn, 'SELECT "DeviceTemplateId" FROM "DeviceTemplate" WHERE "Model" = %s', "F2-rev1"
    )
    device_sql = (
        'INSERT INTO "Device" ("DeviceName", "DeviceTemplateId", "ClaimingCode", "SerialNumber",'
        ' "MacAddress", "TimeZone") VALUES (%s, %s, %s, %s, %s, %s) RETURNING "DeviceId"'
    )
    for mac, zone in (
        (fleet.utc_mac.upper(), "UTC"),
        (fleet.berlin_mac, "Europe/Berlin"),
        (fleet.bad_zone_mac, "Mars/Olympus"),
    ):
        controller = _id(
            conn,
            device_sql,
            f"probe {mac}",
            controller_tpl,
            f"PROBE-{mac}",
            f"PROBE-{mac}",
            mac,
            zone,
        )
        for connector, template in ((1, all_tpl), (2, raw_tpl)):
            connector_id = _id(
                conn,
                'INSERT INTO "Connector" ("ControllerId", "ConnectorNumber") VALUES (%s, %s)'
                ' RETURNING "ConnectorId"',
                controller,
                connector,
            )
            serial = f"PROBE-{mac}-J{connector}"
            sensor = _id(conn, device_sql, serial, template, serial, serial, None, "UTC")
            conn.execute(
                'INSERT INTO "Pin" ("ConnectorId", "Position", "DeviceId") VALUES (%s, 1, %s)',
                (connector_id, sensor),
            )


def _id(conn: psycopg.Connection, sql: str, *params: object) -> int:
    """The first column of the first row ``sql`` returns."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]


def _delete_fleet(conn: psycopg.Connection, tag: str) -> None:
    """Remove the probe devices (connectors and pins cascade), then the probe templates."""
    conn.execute('DELETE FROM "Device" WHERE lower("SerialNumber") LIKE %s', (f"probe-f2{tag}%",))
    conn.execute('DELETE FROM "DeviceTemplate" WHERE "Model" LIKE %s', (f"PROBE-%-{tag}",))


@pytest.fixture(scope="module")
def probe(stack: Settings) -> Iterator[ProbeFleet]:
    """The probe fleet, written into the registry for this module and removed after it."""
    tag = uuid.uuid4().hex[:8]
    fleet = ProbeFleet(f"f2{tag}01", f"f2{tag}02", f"f2{tag}03", _probe_points())
    with psycopg.connect(stack.params_dsn) as conn:
        _insert_fleet(conn, tag, fleet)
    try:
        yield fleet
    finally:
        with psycopg.connect(stack.params_dsn) as conn:
            _delete_fleet(conn, tag)


def decode_cli(topic: str, payload: object, received_at: str = RECEIVED_AT) -> list[dict]:
    """Run ``f2 decode`` and parse its JSON lines."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    result = f2("decode", "--topic", topic, "--payload", text, "--received-at", received_at)
    return [json.loads(line) for line in result.stdout.splitlines()]


def sensor_topic(mac: str, connector: int = 1, pin: int = 1) -> str:
    return f"tele/f2-{mac}/sensor-mode/J{connector}/sensor-{pin}"


def test_load_controller_maps_the_registry(stack: Settings, probe: ProbeFleet) -> None:
    with psycopg.connect(stack.params_dsn) as conn:
        entry = load_controller(conn, probe.utc_mac.upper())
        assert load_controller(conn, "000000000000") is None
        assert load_controller(conn, "not-a-mac") is None
        berlin = load_controller(conn, probe.berlin_mac, version=7)
    assert entry is not None and berlin is not None
    assert (entry.mac, entry.timezone, berlin.timezone, berlin.version) == (
        probe.utc_mac,
        "UTC",
        "Europe/Berlin",
        7,
    )
    assert sorted(entry.sensors) == ["1:1", "2:1"]
    probe_all, raw = entry.sensors["1:1"], entry.sensors["2:1"]
    assert (probe_all.frame_format, raw.frame_format) == ("modbus-rtu", "raw")
    assert [
        (p.label, p.encoding, p.byte_order, p.offset, p.decimals) for p in probe_all.datapoints
    ] == [
        (label, encoding, order, offset, decimals)
        for label, encoding, order, offset, decimals, _ in probe.points
    ]
    assert [p.unit for p in raw.datapoints] == ["mm", "l/min"]


def test_every_encoding_and_byte_order(probe: ProbeFleet) -> None:
    frame = frame_hex(probe.all_frame(), spaced=True).lower()
    lines = decode_cli(sensor_topic(probe.utc_mac), {"timestamp": STAMP, "data": frame})
    assert [line["kind"] for line in lines] == ["reading"] * len(probe.points)
    for line, (label, _, _, _, _, value) in zip(lines, probe.points, strict=True):
        assert line["label"] == label and line["unit"] == "u"
        assert math.isclose(line["value"], value, rel_tol=1e-12), (label, line["value"], value)
        assert (line["mac"], line["connector"], line["pin"]) == (probe.utc_mac, "J1", 1)
        assert line["time"] == "2024-06-01T12:00:00.500000Z"


def test_controller_time_zone(probe: ProbeFleet) -> None:
    frame = frame_hex(probe.all_frame())
    [first, *_] = decode_cli(sensor_topic(probe.berlin_mac), {"timestamp": STAMP, "data": frame})
    assert first["time"] == "2024-06-01T10:00:00.500000Z"
    gap = {"timestamp": "2024-03-31 02:30:00.000000", "data": frame}
    assert [line["reason"] for line in decode_cli(sensor_topic(probe.berlin_mac), gap)] == [
        "bad_timestamp"
    ]
    bad_zone = decode_cli(sensor_topic(probe.bad_zone_mac), {"timestamp": STAMP, "data": frame})
    assert [line["reason"] for line in bad_zone] == ["bad_registry"]


def test_raw_template(probe: ProbeFleet) -> None:
    data = encode_value(123.4, "Uint16", "ABCD", 1) + encode_value(2.5, "Float32", "DCBA")
    lines = decode_cli(
        sensor_topic(probe.utc_mac, 2), {"timestamp": 1717243200, "data": data.hex()}
    )
    assert [(x["label"], x["value"], x["unit"]) for x in lines] == [
        ("Level", 123.4, "mm"),
        ("Flow", 2.5, "l/min"),
    ]


def test_framing_errors_and_partial_frames(probe: ProbeFleet) -> None:
    topic = sensor_topic(probe.utc_mac)
    good = probe.all_frame()
    cases = {
        "bad_crc": good[:-1] + bytes([good[-1] ^ 1]),
        "modbus_exception": modbus_exception_frame(7, 3, 4),
        "bad_frame": good[:4],
    }
    for reason, frame in cases.items():
        lines = decode_cli(topic, {"timestamp": STAMP, "data": frame.hex()})
        assert [(x["kind"], x["reason"]) for x in lines] == [("error", reason)]
    assert decode_cli(topic, {"timestamp": STAMP, "data": "01 03 zz"})[0]["reason"] == "bad_hex"
    short = modbus_frame(7, 3, good[3:13])  # the first 10 data bytes only
    lines = decode_cli(topic, {"timestamp": STAMP, "data": short.hex()})
    readings = [x for x in lines if x["kind"] == "reading"]
    errors = [x for x in lines if x["kind"] == "error"]
    fits = [p[0] for p in probe.points if p[3] + ENCODINGS[p[1]][1] <= 10]
    assert [x["label"] for x in readings] == fits
    assert len(errors) == len(probe.points) - len(fits)
    assert {x["reason"] for x in errors} == {"out_of_range"}


def test_events_and_aliases(probe: ProbeFleet) -> None:
    strike = f"stat/f2-{probe.berlin_mac}/access-control-mode/J3/strike-1"
    lines = decode_cli(strike, {"timestamp": STAMP, "state": "unlocked", "voltage": "12.5 V"})
    assert [(x["kind"], x["component"], x["field"], x["value"]) for x in lines] == [
        ("event", "strike-1", "status", True),
        ("event", "strike-1", "voltage", 12.5),
    ]
    assert lines[0]["time"] == "2024-06-01T10:00:00.500000Z"
    doors = f"stat/f2-{probe.utc_mac}/access-control-mode/4/door-sensors"
    lines = decode_cli(doors, {"timestamp": "2024-06-01T12:00:00Z", "door_1": "open", "door_2": 0})
    assert [(x["connector"], x["field"], x["value"]) for x in lines] == [
        ("J4", "door-sensor-1", True),
        ("J4", "door-sensor-2", False),
    ]
    reader = f"tele/f2-{probe.utc_mac}/access-control-mode/J3/reader-1"
    lines = decode_cli(reader, {"timestamp": STAMP, "data": "b'\\x02\\x01\\x03'"})
    assert [x["value"] for x in lines] == ["020103"]


def test_unknown_devices_and_bad_input(probe: ProbeFleet) -> None:
    frame = probe.all_frame().hex()
    body = {"timestamp": STAMP, "data": frame}
    assert decode_cli(sensor_topic("0badc0ffee00"), body)[0]["reason"] == "unknown_device"
    assert decode_cli(sensor_topic(probe.utc_mac, 3), body)[0]["reason"] == "unknown_device"
    assert decode_cli(sensor_topic(probe.utc_mac, 1, 2), body)[0]["reason"] == "unknown_device"
    assert (
        decode_cli(f"tele/f2-{probe.utc_mac}/sensor-mode/J1/sensor-9", body)[0]["reason"]
        == "bad_topic"
    )
    assert decode_cli(sensor_topic(probe.utc_mac), "{oops")[0]["reason"] == "bad_json"
    future = {"timestamp": "2024-06-12 00:00:00.000000", "data": frame}
    assert decode_cli(sensor_topic(probe.utc_mac), future)[0]["reason"] == "bad_timestamp"


def test_seed_golden_vector(stack: Settings) -> None:
    body = {"timestamp": STAMP, "data": "01 03 06 09 C4 13 88 01 90 55 6F"}
    lines = decode_cli("tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1", body)
    assert [(x["label"], x["value"], x["unit"]) for x in lines] == [
        ("Temperature", 25.0, "°C"),
        ("Humidity", 50.0, "%"),
        ("CO2", 400.0, "ppm"),
    ]


def test_unreachable_registry_is_a_clear_error(stack: Settings) -> None:
    env = {
        **os.environ,
        "F2_PARAMS_DSN": "postgresql://f2:x@127.0.0.1:1/f2_params?connect_timeout=3",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "decode",
            "--topic",
            sensor_topic("e4fd45f654be"),
            "--payload",
            "{}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert "cannot read the registry" in result.stderr and result.stdout == ""
    assert "x@" not in result.stderr
