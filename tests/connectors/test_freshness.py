"""Device freshness: silent controllers and sensors, a dead sensor behind a live controller, and
per-device labels only for the N stalest."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.decode_step import DecodeOutput
from connectors.freshness import FreshnessSettings, FreshnessTracker
from connectors.store_rows import ReadingRow, RowBatch
from schemas.records import ControllerEntry, RawMessage, SensorEntry
from schemas.wire import KafkaRecord

T0 = datetime(2026, 11, 26, tzinfo=UTC)


def entry(mac: str, controller_id: int, sensor_ids: list[int]) -> ControllerEntry:
    sensors = {
        f"{n + 1}:1": SensorEntry(sid, 1, "ENV-S1", "modbus-rtu", ())
        for n, sid in enumerate(sensor_ids)
    }
    return ControllerEntry(mac=mac, controller_id=controller_id, sensors=sensors)


def output(macs: list[str], sensor_ids: list[int], entries=()) -> DecodeOutput:
    raw = RawMessage("stat/f2-x/A/M", b"", 0)
    readings = [ReadingRow(T0, sid, 1, 1.0, 1, raw, "t") for sid in sensor_ids]
    decoded = [KafkaRecord("decoded", mac.encode(), b"{}") for mac in macs]
    return DecodeOutput(RowBatch(readings=readings, entries=list(entries)), decoded, [])


def samples(tracker: FreshnessTracker) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in tracker.collect()
        for s in family.samples
    }


def test_dead_sensor_behind_a_live_controller_and_a_silent_controller():
    now = [1000.0]
    tracker = FreshnessTracker(FreshnessSettings(silent_after_s=60, top_n=1), clock=lambda: now[0])
    a, b = entry("aaaaaaaaaaaa", 1, [11, 12]), entry("bbbbbbbbbbbb", 2, [21])
    tracker.inspect("f", output(["aaaaaaaaaaaa", "bbbbbbbbbbbb"], [11, 12, 21], [a, b]))
    now[0] += 100  # a keeps talking, but only sensor 11; b is silent
    tracker.inspect("f", output(["aaaaaaaaaaaa"], [11]))
    got = samples(tracker)
    assert got[("f2_controllers_tracked", ())] == 2
    assert got[("f2_controllers_silent", ())] == 1
    assert got[("f2_sensors_silent", (("controller", "live"),))] == 1  # sensor 12
    assert got[("f2_sensors_silent", (("controller", "silent"),))] == 1  # sensor 21
    assert got[("f2_controller_last_seen_age_seconds", (("mac", "bbbbbbbbbbbb"),))] == 100
    labelled = [k for k in got if k[0] == "f2_controller_last_seen_age_seconds"]
    assert len(labelled) == 1  # top_n bounds the label cardinality
    assert got[("f2_controller_silence_seconds_bucket", (("le", "60.0"),))] == 1
    assert got[("f2_controller_silence_seconds_bucket", (("le", "+Inf"),))] == 2


def test_unregistered_macs_are_not_tracked_and_removed_sensors_are_forgotten():
    tracker = FreshnessTracker(FreshnessSettings(), clock=lambda: 0.0)
    tracker.inspect("f", output(["cccccccccccc"], []))
    assert samples(tracker)[("f2_controllers_tracked", ())] == 0
    tracker.inspect("f", output([], [], [entry("aaaaaaaaaaaa", 1, [11, 12])]))
    tracker.inspect("f", output([], [], [entry("aaaaaaaaaaaa", 1, [11])]))
    assert samples(tracker)[("f2_sensors_tracked", ())] == 1
