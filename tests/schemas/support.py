"""Registry entries and message builders shared by the decoding tests (seed fleet of
docs/PROTOCOL.md §4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemas.decode import BUG_PREFIX, decode_message
from schemas.encode import frame_hex
from schemas.records import (
    ControllerEntry,
    DataPointDef,
    Decoded,
    DecodeError,
    RawMessage,
    SensorEntry,
)

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
STAMP = "2024-06-01 10:00:00.250000"
STAMP_UTC = datetime(2024, 6, 1, 10, 0, 0, 250000, tzinfo=UTC)
ENV_S1 = (
    DataPointDef(1, "Temperature", "Int16", 0, 2, 2, append=" °C"),
    DataPointDef(2, "Humidity", "Uint16", 2, 2, 2, append=" %"),
    DataPointDef(3, "CO2", "Uint16", 4, 2, 0, append=" ppm"),
)
PM_100 = (
    DataPointDef(4, "Voltage", "Uint16", 0, 2, 1, append=" V"),
    DataPointDef(5, "Current", "Int16", 2, 2, 3, append=" A"),
)
SEED_MACS = ("e4fd45f654be", "abc123def456", "123456abcdef")
MAC = SEED_MACS[0]


def seed_controller(mac: str = MAC, number: int = 0, timezone: str = "UTC") -> ControllerEntry:
    """A seed controller: ENV-S1 on (J1, pin 1), PM-100 on (J2, pin 2), ENV-S1 on (J4, pin 3)."""
    base = 100 * (number + 1)
    return ControllerEntry(
        mac,
        base,
        timezone,
        3,
        {
            "1:1": SensorEntry(base + 1, 2, "ENV-S1", "modbus-rtu", ENV_S1),
            "2:2": SensorEntry(base + 2, 3, "PM-100", "modbus-rtu", PM_100),
            "4:3": SensorEntry(base + 3, 2, "ENV-S1", "modbus-rtu", ENV_S1),
        },
    )


def probe_controller(
    datapoints: tuple[DataPointDef, ...], frame_format: str = "modbus-rtu", timezone: str = "UTC"
) -> ControllerEntry:
    """A controller with one sensor of the given template on (J1, pin 1)."""
    sensor = SensorEntry(7, 9, "PROBE", frame_format, datapoints)
    return ControllerEntry(MAC, 1, timezone, 0, {"1:1": sensor})


def sensor_message(
    frame: bytes | str, stamp: object = STAMP, pin: int = 1, connector: str = "J1"
) -> RawMessage:
    """A sensor telemetry message carrying ``frame`` (bytes become hex)."""
    data = frame_hex(frame) if isinstance(frame, bytes) else frame
    body = json.dumps({"timestamp": stamp, "data": data}).encode()
    return RawMessage(f"tele/f2-{MAC}/sensor-mode/{connector}/sensor-{pin}", body)


def event_message(path: str, body: dict, stamp: object = STAMP) -> RawMessage:
    """A stat message for ``<mode>/<Jn>/<component>`` with ``body`` plus a timestamp."""
    payload = json.dumps({"timestamp": stamp, **body}).encode()
    return RawMessage(f"stat/f2-{MAC}/{path}", payload)


def decode(raw: RawMessage, entry: ControllerEntry | None) -> list[Decoded]:
    """:func:`decode_message` at the tests' fixed clock."""
    return decode_message(raw, entry, NOW)


def caught_bug(item: Decoded) -> bool:
    """Whether ``decode_message``'s catch-all turned an exception (a bug) into this error.

    Checks the catch-all's prefix, not a word anywhere in the detail: a legitimate detail may
    quote Python's own message (bad UTF-8 says "unexpected end of data").
    """
    return isinstance(item, DecodeError) and item.detail.startswith(BUG_PREFIX)
