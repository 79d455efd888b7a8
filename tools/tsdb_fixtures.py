"""A realistic day of readings and PGlite-friendly connections, for the TimescaleDB test tiers and
the compression benchmark (``tools/tsdb_compression.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import psycopg

from connectors.store_rows import ReadingRow
from ops.stack import procs
from schemas.records import ControllerEntry, DataPointDef, RawMessage, SensorEntry
from simulator.signals import SignalSource

PORTS = range(55440, 55461)
RAW = RawMessage("tele/f2-e4fd45f654be/SENSOR", b"{}")

# (datapoint id, signal, decimals, unit) per template, as in the simulator's ENV-S1 and PM-100.
TEMPLATES = {
    1: (
        "ENV-S1",
        ((101, "temperature", 2, " °C"), (102, "humidity", 2, " %"), (103, "co2", 0, " ppm")),
    ),
    2: ("PM-100", ((201, "voltage", 1, " V"), (202, "current", 3, " A"))),
}


def free_port(first: int) -> int:
    """The first port from ``first`` within the project's test range that nobody listens on."""
    for port in range(first, PORTS.stop):
        if not procs.port_open(port):
            return port
    raise RuntimeError(f"no free port in {first}..{PORTS.stop - 1}")


def connect(dsn: str, timeout_s: float = 10.0) -> psycopg.Connection:
    """Autocommit connection; retried, because PGlite refuses a new connection for a moment
    after the previous one closed. No server-side prepared statements: PGlite serves every
    connection from one backend session, so a later connection would collide with the names an
    earlier one prepared."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True, connect_timeout=5, prepare_threshold=None)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def fleet_entry(controller_id: int, mac: str, sensors: int) -> ControllerEntry:
    """A controller with ``sensors`` sensors, ENV-S1 and PM-100 in turn (ids controller*100+n)."""
    entries = {}
    for n in range(sensors):
        template_id = 1 + n % 2
        model, points = TEMPLATES[template_id]
        defs = tuple(
            DataPointDef(dp, signal.title(), "Uint16", 0, 2, dec, "ABCD", unit)
            for dp, signal, dec, unit in points
        )
        entries[f"{1 + n // 8}:{1 + n % 8}"] = SensorEntry(
            controller_id * 100 + n, template_id, model, "modbus-rtu", defs
        )
    return ControllerEntry(mac, controller_id, "UTC", 1, entries)


def day_of_readings(
    entry: ControllerEntry, start: datetime, hours: float = 24, step_s: int = 30
) -> Iterator[ReadingRow]:
    """A simulated stretch of readings of every sensor of ``entry``: one frame per ``step_s``
    (the simulator's default interval), values from the simulator's signal model, rounded to
    each data point's decimals as the decoder produces them."""
    sources = {s.sensor_id: SignalSource(str(s.sensor_id)) for s in entry.sensors.values()}
    base = start.timestamp()
    for i in range(int(hours * 3600 / step_s)):
        t = start + timedelta(seconds=i * step_s)
        for sensor in entry.sensors.values():
            values = sources[sensor.sensor_id].sample(base + i * step_s)
            _, points = TEMPLATES[sensor.template_id]
            for dp, signal, decimals, _ in points:
                value = round(values[signal], decimals)
                yield ReadingRow(t, sensor.sensor_id, dp, value, entry.version, RAW, signal)
