"""decode_message end to end: seed fleet, registry lookups, every reason code, fuzzing."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import decode as decode_module
from schemas.decode import decode_message
from schemas.encode import encode_value, modbus_exception_frame, modbus_frame
from schemas.reasons import ALL_REASONS, DECODE_REASONS, STORE_REJECTED, UNDELIVERABLE
from schemas.records import (
    ControllerEntry,
    DataPointDef,
    Decoded,
    DecodeError,
    Event,
    RawMessage,
    Reading,
)
from tests.schemas.support import (
    MAC,
    NOW,
    STAMP,
    STAMP_UTC,
    caught_bug,
    decode,
    event_message,
    probe_controller,
    seed_controller,
    sensor_message,
)

GOLDEN = bytes.fromhex("01030609C413880190556F")


def env_frame(temperature: float, humidity: float, co2: float) -> bytes:
    data = (
        encode_value(temperature, "Int16", decimals=2)
        + encode_value(humidity, "Uint16", decimals=2)
        + encode_value(co2, "Uint16")
    )
    return modbus_frame(1, 3, data)


def test_reasons_are_the_spec_list() -> None:
    assert len(ALL_REASONS) == len(set(ALL_REASONS)) == 14
    assert set(DECODE_REASONS) == set(ALL_REASONS) - {STORE_REJECTED, UNDELIVERABLE}


def test_seed_fleet_frames_decode_to_expected_units(seed_fleet: dict[str, ControllerEntry]) -> None:
    pm_frame = modbus_frame(
        1, 4, encode_value(230.4, "Uint16", decimals=1) + encode_value(-1.25, "Int16", decimals=3)
    )
    for mac, entry in seed_fleet.items():
        cases = [
            (
                "J1",
                1,
                env_frame(21.5, 40.25, 612),
                {"Temperature": (21.5, "°C"), "Humidity": (40.25, "%"), "CO2": (612.0, "ppm")},
            ),
            ("J2", 2, pm_frame, {"Voltage": (230.4, "V"), "Current": (-1.25, "A")}),
            (
                "J4",
                3,
                env_frame(-5.5, 99.99, 400),
                {"Temperature": (-5.5, "°C"), "Humidity": (99.99, "%"), "CO2": (400.0, "ppm")},
            ),
        ]
        for connector, pin, frame, expected in cases:
            raw = sensor_message(frame, pin=pin, connector=connector)
            raw = RawMessage(raw.topic.replace(MAC, mac), raw.payload)
            results = decode(raw, entry)
            assert all(isinstance(r, Reading) for r in results), results
            assert {r.label: (r.value, r.unit) for r in results} == expected
            sensor = entry.sensor_at(int(connector[1]), pin)
            for reading, point in zip(results, sensor.datapoints, strict=True):
                assert (reading.mac, reading.connector, reading.pin) == (mac, connector, pin)
                assert (reading.sensor_id, reading.datapoint_id) == (
                    sensor.sensor_id,
                    point.datapoint_id,
                )
                assert (reading.time, reading.registry_version) == (STAMP_UTC, entry.version)


def test_controller_time_zone_applies_to_naive_timestamps() -> None:
    entry = seed_controller(timezone="America/New_York")
    [reading, *_] = decode(sensor_message(GOLDEN, "2024-06-01 06:00:00.250000"), entry)
    assert reading.time == STAMP_UTC
    [reading, *_] = decode(sensor_message(GOLDEN, "2024-06-01T10:00:00.25Z"), entry)
    assert reading.time == STAMP_UTC


def test_events_need_only_the_controller() -> None:
    bare = ControllerEntry(MAC, 5)
    [event] = decode(event_message("alarm-mode/J3/siren-1", {"status": 1}), bare)
    assert isinstance(event, Event) and event.value is True
    [error] = decode(sensor_message(GOLDEN), bare)
    assert error.reason == "unknown_device"


def test_registry_change_takes_effect_on_the_next_message() -> None:
    raw = sensor_message(GOLDEN)
    before = decode(raw, seed_controller())
    assert before[0].label == "Temperature"
    renamed = (DataPointDef(11, "T", "Int16", 0, 2, 1, append="dK"),)
    after = decode(raw, probe_controller(renamed))
    assert [(r.label, r.value, r.unit) for r in after] == [("T", 250.0, "dK")]
    assert decode(raw, None)[0].reason == "unknown_device"


def _cases() -> dict[str, Callable[[], list[Decoded]]]:
    entry = seed_controller()
    stat = f"stat/f2-{MAC}"
    return {
        "bad_topic": lambda: decode(
            RawMessage(f"{stat}/sensor-mode/J1/door-sensors", b"{}"), entry
        ),
        "bad_json": lambda: decode(
            RawMessage(f"{stat}/alarm-mode/J1/siren-1", b"{not json"), entry
        ),
        "bad_timestamp": lambda: decode(
            sensor_message(GOLDEN, "1999-12-31 23:59:59.000000"), entry
        ),
        "bad_payload": lambda: decode(event_message("alarm-mode/J1/siren-1", {"volume": 3}), entry),
        "bad_hex": lambda: decode(sensor_message("01 03 0G"), entry),
        "bad_frame": lambda: decode(sensor_message(modbus_frame(1, 6, b"\x00\x01")), entry),
        "bad_crc": lambda: decode(sensor_message(GOLDEN[:-1] + b"\x00"), entry),
        "modbus_exception": lambda: decode(sensor_message(modbus_exception_frame(1, 3, 2)), entry),
        "unknown_device": lambda: decode(sensor_message(GOLDEN, pin=2), entry),
        "out_of_range": lambda: decode(
            sensor_message(modbus_frame(1, 3, b"\x09\xc4\x13\x88")), entry
        ),
        "bad_value": lambda: decode(
            sensor_message(modbus_frame(1, 3, encode_value(float("nan"), "Float32"))),
            probe_controller((DataPointDef(1, "F", "Float32", 0, 4),)),
        ),
        "bad_registry": lambda: decode(
            sensor_message(GOLDEN), seed_controller(timezone="Mars/Olympus")
        ),
    }


@pytest.mark.parametrize("reason", DECODE_REASONS)
def test_every_decode_reason_has_an_input(reason: str) -> None:
    results = _cases()[reason]()
    assert reason in [r.reason for r in results if isinstance(r, DecodeError)], results


def test_command_and_success_topics_are_not_telemetry(controller: ControllerEntry) -> None:
    for topic in (
        f"cmnd/f2-{MAC}/alarm-mode/J1/siren-1",
        f"tele/f2-{MAC}/access-control-mode/J1/reader-1/success",
    ):
        assert decode(RawMessage(topic, b"1"), controller)[0].reason == "bad_topic"


def test_unknown_controller_and_pins(controller: ControllerEntry) -> None:
    assert decode(sensor_message(GOLDEN), None)[0].reason == "unknown_device"
    assert decode(sensor_message(GOLDEN, connector="J3"), controller)[0].reason == "unknown_device"
    assert (
        decode(sensor_message(GOLDEN, pin=6, connector="J4"), controller)[0].reason
        == "unknown_device"
    )
    assert isinstance(decode(sensor_message(GOLDEN, connector="1"), controller)[0], Reading)


def test_sensor_payload_shape_errors(controller: ControllerEntry) -> None:
    topic = f"tele/f2-{MAC}/sensor-mode/J1/sensor-1"
    for body in ({"timestamp": STAMP, "data": 12}, {"timestamp": STAMP, "data": None}, [STAMP]):
        assert (
            decode(RawMessage(topic, json.dumps(body).encode()), controller)[0].reason
            == "bad_payload"
        )
    assert decode(RawMessage(topic, b'{"data": "00"}'), controller)[0].reason == "bad_timestamp"


def test_unexpected_exceptions_become_errors(
    monkeypatch: pytest.MonkeyPatch, controller: ControllerEntry
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(decode_module, "parse_timestamp", broken)
    [error] = decode_message(sensor_message(GOLDEN), controller, NOW)
    assert error.reason == "bad_payload" and "RuntimeError: boom" in error.detail


TOPIC_PARTS = st.tuples(
    st.sampled_from(["tele", "stat", "cmnd", "x"]),
    st.sampled_from([MAC, MAC.upper(), "abc123def456", "nothex"]),
    st.sampled_from(["sensor-mode", "access-control-mode", "alarm-mode", "other"]),
    st.sampled_from(["J1", "J2", "J4", "1", "J9"]),
    st.sampled_from(
        [
            "sensor-1",
            "sensor-3",
            "strike-1",
            "door-sensors",
            "exit-buttons",
            "reader-2",
            "siren-1",
            "motion-sensor-4",
            "x",
        ]
    ),
).map(lambda p: f"{p[0]}/f2-{p[1]}/{p[2]}/{p[3]}/{p[4]}")
PAYLOADS = st.one_of(
    st.binary(max_size=120),
    st.builds(
        lambda stamp, data: json.dumps({"timestamp": stamp, "data": data}).encode(),
        st.one_of(st.just(STAMP), st.text(max_size=30), st.integers(), st.floats()),
        st.one_of(
            st.just(GOLDEN.hex()), st.text(max_size=30), st.binary(max_size=20).map(bytes.hex)
        ),
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(TOPIC_PARTS, st.text(max_size=60)), PAYLOADS)
def test_any_message_gives_records_and_never_raises(topic: str, payload: bytes) -> None:
    results = decode(RawMessage(topic, payload), seed_controller())
    assert results
    for item in results:
        assert isinstance(item, Reading | Event | DecodeError)
        if isinstance(item, DecodeError):
            assert item.reason in DECODE_REASONS and not caught_bug(item), item
