"""``f2 replay`` on an isolated stack: a day of a controller's readings is in storage (decoded by
the real decode flow from the raw archive), then one data point's ``Decimals`` is fixed; a replay
(the decode flow still running) rewrites exactly that data point's rows with the new registry
version and values, leaves every other row alone, and a second replay changes nothing."""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from connectors.store_rows import RowBatch, reading_row
from connectors.timeseries_writer import TimeseriesWriter
from schemas.records import RawMessage, Reading
from schemas.settings import Settings
from simulator.fleet import generate_fleet
from simulator.messages import build_sources
from simulator.registry import register_fleet
from tests.integration.replay_support import (
    REPLAY_DECODE_PORT,
    Flow,
    f2_json,
    fresh_stack,
    iso_stack,
    stored,
    wait_for,
)
from tests.stacks import IsolatedStack

pytestmark = pytest.mark.integration

DAY_S = 86400
EVERY_S = 180  # one message per source every 3 minutes over the past day

ROWS_SQL = """
SELECT r.sensor_id, r.datapoint_id, r.time, r.value, r.registry_version
FROM readings r JOIN sensors s USING (sensor_id) JOIN controllers c USING (controller_id)
WHERE c.mac = %s
"""
INTEGER_POINT_SQL = """
SELECT dp."DataPointId", dp."Decimals"
FROM "Device" ctl
JOIN "Connector" k ON k."ControllerId" = ctl."DeviceId"
JOIN "Pin" p ON p."ConnectorId" = k."ConnectorId"
JOIN "Device" sensor ON sensor."DeviceId" = p."DeviceId"
JOIN "DataPoint" dp ON dp."DeviceTemplateId" = sensor."DeviceTemplateId"
WHERE lower(ctl."MacAddress") = %s AND dp."DataEncoding" IN ('Int16', 'Uint16', 'Int32', 'Uint32')
ORDER BY dp."DataPointId" LIMIT 1
"""


@pytest.fixture
def settings(replay_stack: IsolatedStack) -> Settings:
    return fresh_stack(replay_stack)


def publish_day(settings: Settings, seed: int) -> tuple[str, int, int, float]:
    """A day of one new controller's messages, straight into the raw archive (time order)."""
    fleet = generate_fleet(1, seed)
    register_fleet(settings.params_dsn, fleet)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20})
    sources = build_sources(fleet)
    first = time.time() - DAY_S + 60
    readings = events = 0
    for tick in range(DAY_S // EVERY_S - 1):
        for index, source in enumerate(sources):
            t = first + tick * EVERY_S + index
            out = source.next(t)
            headers = [
                ("mqtt_topic", out.topic.encode()),
                ("mqtt_qos", b"1"),
                ("mqtt_retain", b"0"),
                ("received_at", str(int(t * 1000)).encode()),
            ]
            producer.produce(settings.raw_topic, out.payload, source.mac.encode(), headers=headers)
            readings += out.readings
            events += out.events
        producer.poll(0)
    assert producer.flush(30) == 0
    return fleet.macs[0], readings, events, first


def snapshot(settings: Settings, mac: str) -> dict[tuple, tuple[float, int]]:
    with psycopg.connect(settings.timeseries_dsn) as conn:
        return {(s, d, t): (v, ver) for s, d, t, v, ver in conn.execute(ROWS_SQL, (mac,))}


def test_fixed_decimals_are_replayed_into_exactly_their_rows(
    settings: Settings, replay_stack: IsolatedStack, tmp_path: Path
):
    mac, readings, events, first = publish_day(settings, random.randrange(10**6))
    decode = Flow(replay_stack, "dataflows.decode", tmp_path, REPLAY_DECODE_PORT).start()
    params = psycopg.connect(settings.params_dsn, autocommit=True)
    point = None
    try:
        assert wait_for(lambda: stored(settings, mac) == (readings, events), 90, 1.0), (
            f"stored {stored(settings, mac)}, expected {(readings, events)}"
        )
        before = snapshot(settings, mac)
        point, decimals = params.execute(INTEGER_POINT_SQL, (mac,)).fetchone()
        params.execute(
            'UPDATE "DataPoint" SET "Decimals" = %s WHERE "DataPointId" = %s', (decimals + 1, point)
        )
        version = params.execute("SELECT version FROM f2_registry_version").fetchone()[0]
        changing = {k for k, (v, _) in before.items() if k[1] == point and v != 0}
        assert changing

        one = f2_json(replay_stack, "replay", "--since", "2d", "--controller", mac)
        after = snapshot(settings, mac)
        assert "before the oldest record" in one["horizon"]
        assert one["complete"] and one["registry_version"] == version
        assert one["readings"]["replaced"] == len(changing)
        assert one["readings"]["inserted"] == one["events"]["inserted"] == 0
        assert one["readings"]["unchanged"] == readings - len(changing)
        assert after.keys() == before.keys()
        for key, (value, row_version) in after.items():
            if key in changing:
                assert row_version == version
                assert math.isclose(value, before[key][0] / 10, rel_tol=1e-9)
            else:
                assert (value, row_version) == before[key]
        assert stored(settings, mac) == (readings, events)

        since = datetime.fromtimestamp(int(first * 1000) / 1000, UTC).isoformat()  # the oldest
        two = f2_json(replay_stack, "replay", "--since", since, "--controller", mac)
        assert two["horizon"] is None
        assert two["replayed"] == one["replayed"]
        assert two["readings"]["replaced"] == two["readings"]["inserted"] == 0
        assert snapshot(settings, mac) == after
    finally:
        decode.kill()
        if point is not None:
            params.execute(
                'UPDATE "DataPoint" SET "Decimals" = %s WHERE "DataPointId" = %s', (decimals, point)
            )
        params.close()


def test_replace_mode_counts_and_isolates_a_refused_row(replay_stack: IsolatedStack):
    """Newer version + new value replaces; same value, older version or a lost in-batch duplicate
    is left alone; new keys are inserted; a refused row (NULL value) is bisected out."""
    dsn = iso_stack(replay_stack).timeseries_dsn
    sensor = random.randint(10**8, 2 * 10**9)
    t0 = datetime.now(UTC).replace(microsecond=0)
    raw = RawMessage("tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1", b"{}")

    def row(k: int, value: float | None, version: int) -> tuple:
        at = t0 + timedelta(seconds=k)
        return reading_row(
            Reading("e4fd45f654be", "J1", 1, "T", value, "", at, sensor, 1, version), raw
        )

    live, replay = TimeseriesWriter(dsn), TimeseriesWriter(dsn, replace_older=True)
    try:
        assert live.write(RowBatch(readings=[row(k, float(k), 1) for k in range(5)])) == []
        batch = [row(0, 100.0, 2), row(1, 101.0, 2), row(2, 2.0, 2), row(3, 103.0, 0)]
        batch += [row(4, 104.0, 2), row(4, 204.0, 3), row(10, 10.0, 2), row(11, 11.0, 2)]
        batch.append(row(12, None, 2))
        refused = replay.write(RowBatch(readings=batch))
        assert [r.table for r in refused] == ["readings"]
        counts = replay.counts["readings"]
        assert (counts.inserted, counts.replaced, counts.unchanged, counts.rejected) == (2, 3, 3, 1)
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT time, value, registry_version FROM readings"
                " WHERE sensor_id = %s ORDER BY time",
                (sensor,),
            ).fetchall()
        assert [(v, ver) for _, v, ver in rows] == [
            (100.0, 2),
            (101.0, 2),
            (2.0, 1),
            (3.0, 1),
            (204.0, 3),
            (10.0, 2),
            (11.0, 2),
        ]
    finally:
        live.close()
        replay.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM readings WHERE sensor_id = %s", (sensor,))
