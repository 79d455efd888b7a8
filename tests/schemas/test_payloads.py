"""Payloads per component (docs/PROTOCOL.md §2): aliases, booleans, units, extras, reader bytes,
bounds."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas.payloads import (
    MAX_PAYLOAD_BYTES,
    decode_object,
    decode_sensor_payload,
    parse_bytes_literal,
    read_number,
)
from schemas.reasons import BAD_JSON, BAD_PAYLOAD
from schemas.records import DecodeError, Event, RawMessage
from tests.schemas.support import (
    MAC,
    STAMP_UTC,
    caught_bug,
    decode,
    event_message,
    seed_controller,
)

STRIKE = "access-control-mode/J2/strike-1"
DOORS = "access-control-mode/J2/door-sensors"
BUTTONS = "access-control-mode/J2/exit-buttons"
READER = "access-control-mode/J3/reader-2"
SIREN = "alarm-mode/J4/siren-2"
MOTION = "alarm-mode/J4/motion-sensor-5"


def fields(path: str, body: dict) -> dict[str, object]:
    results = decode(event_message(path, body), seed_controller())
    assert all(isinstance(r, Event) for r in results), results
    return {r.field: r.value for r in results}


def field_errors(path: str, body: dict) -> list[tuple[str, str | None]]:
    results = decode(event_message(path, body), seed_controller())
    return [(r.reason, r.label) for r in results if isinstance(r, DecodeError)]


@pytest.mark.parametrize("path", [STRIKE, SIREN, MOTION])
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": True}, True),
        ({"status": False}, False),
        ({"status": 1}, True),
        ({"status": 0}, False),
        ({"state": "locked"}, False),
        ({"state": "unlocked"}, True),
        ({"state": "inactive"}, False),
        ({"state": "active"}, True),
        ({"state": "OFF"}, False),
        ({"state": "on"}, True),
        ({"state": True}, True),
        ({"status": False, "state": "on"}, False),
    ],
)
def test_status_and_state_alias(path: str, body: dict, expected: bool) -> None:
    assert fields(path, body) == {"status": expected}


def test_event_record_fields() -> None:
    controller = seed_controller()
    [event] = decode(event_message(STRIKE, {"status": True}), controller)
    assert isinstance(event, Event)
    assert (event.mac, event.connector, event.component, event.field, event.value) == (
        MAC,
        "J2",
        "strike-1",
        "status",
        True,
    )
    assert (event.time, event.controller_id, event.registry_version) == (
        STAMP_UTC,
        controller.controller_id,
        controller.version,
    )


def test_door_sensors_and_aliases() -> None:
    assert fields(DOORS, {"door-sensor-1": True, "door-sensor-2": 0}) == {
        "door-sensor-1": True,
        "door-sensor-2": False,
    }
    assert fields(DOORS, {"door_1": "open", "door_2": "closed"}) == {
        "door-sensor-1": True,
        "door-sensor-2": False,
    }
    assert fields(DOORS, {"door_2": "Open"}) == {"door-sensor-2": True}


def test_exit_buttons() -> None:
    assert fields(BUTTONS, {"exit-button-1": 1, "exit-button-2": False}) == {
        "exit-button-1": True,
        "exit-button-2": False,
    }


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("27.93 °C", 27.93),
        ("-3.2V", -3.2),
        ("1e3 ppm", 1000.0),
        ("42", 42.0),
        (" 5 % ", 5.0),
        ("+.5 A", 0.5),
        ("12.5dBm", 12.5),
        ("-7", -7.0),
    ],
)
def test_numbers_with_units(text: str, number: float) -> None:
    assert read_number(text) == number
    assert fields(STRIKE, {"status": 1, "voltage": text}) == {"status": True, "voltage": number}


@pytest.mark.parametrize("text", ["v1.2.3", "1.2.3", "n/a", "", "nan", "inf", "12 34", "1,5 V"])
def test_other_text_is_not_a_number(text: str) -> None:
    assert read_number(text) is None


def test_extra_scalar_fields_become_events() -> None:
    assert fields(STRIKE, {"status": 1, "voltage": "12.1 V", "current": 0.25}) == {
        "status": True,
        "voltage": 12.1,
        "current": 0.25,
    }
    assert fields(SIREN, {"status": True, "volume": 80}) == {"status": True, "volume": 80.0}
    assert fields(READER, {"data": "b'AB'", "signal_strength": "-67 dBm"}) == {
        "data": "AB",
        "signal_strength": -67.0,
    }
    assert fields(MOTION, {"status": 0, "firmware": "v1.2.3"}) == {
        "status": False,
        "firmware": "v1.2.3",
    }


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (STRIKE, {"status": "maybe"}, [(BAD_PAYLOAD, "status")]),
        (STRIKE, {"status": 2}, [(BAD_PAYLOAD, "status")]),
        (STRIKE, {"status": None}, [(BAD_PAYLOAD, "status")]),
        (DOORS, {"door_1": "ajar", "door-sensor-2": 1}, [(BAD_PAYLOAD, "door-sensor-1")]),
        (STRIKE, {"status": 1, "voltage": [12]}, [(BAD_PAYLOAD, "voltage")]),
        (STRIKE, {"status": 1, "voltage": None}, [(BAD_PAYLOAD, "voltage")]),
        (STRIKE, {"status": 1, "note": "x" * 1024}, [(BAD_PAYLOAD, None)]),
        (STRIKE, {"status": 1, "note": "a\x00b"}, [(BAD_PAYLOAD, "note")]),
        (STRIKE, {"status": 1, "big": 10**400}, [(BAD_PAYLOAD, "big")]),
        (READER, {"data": 17}, [(BAD_PAYLOAD, "data")]),
        (READER, {"data": "b'unterminated"}, [(BAD_PAYLOAD, "data")]),
        (STRIKE, {"voltage": 12}, [(BAD_PAYLOAD, None)]),
        (DOORS, {}, [(BAD_PAYLOAD, None)]),
        (BUTTONS, {"door_1": "open"}, [(BAD_PAYLOAD, None)]),
        (READER, {"signal_strength": 3}, [(BAD_PAYLOAD, None)]),
    ],
)
def test_unreadable_values_are_bad_payload(path: str, body: dict, expected: list) -> None:
    assert field_errors(path, body) == expected


def test_bad_field_does_not_spoil_the_others() -> None:
    results = decode(event_message(STRIKE, {"status": 1, "voltage": {}}), seed_controller())
    assert [(type(r).__name__, getattr(r, "field", None)) for r in results] == [
        ("Event", "status"),
        ("DecodeError", None),
    ]


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("b'A1B2C3D4'", "A1B2C3D4"),
        ("b'\\x02\\x02\\x01\\x00\\x00\\x00\\x03\\x03'", "0202010000000303"),
        ('b"it\'s"', "it's"),
        ("b'\\x41\\102\\n'", "4142" + "0a"),
        ("b'caf\\xc3\\xa9'", "636166c3a9"),
        ("b''", ""),
        ("b'a\\qb'", "a\\qb"),
        ("A1B2C3D4", "A1B2C3D4"),
    ],
)
def test_reader_bytes_literal(literal: str, value: str) -> None:
    assert fields(READER, {"data": literal}) == {"data": value}


@pytest.mark.parametrize(
    "literal",
    ["b'abc", "b'it's'", "b'\\x4'", "b'\\xZZ'", "b'\\777'", "b'é'", "b'abc\\'", "é", "x" * 1024],
)
def test_malformed_bytes_literals(literal: str) -> None:
    assert parse_bytes_literal(literal) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_bytes_literal_round_trips_python_repr(data: bytes) -> None:
    assert parse_bytes_literal(repr(data)) == data
    text = repr(data)
    assert parse_bytes_literal("B" + text[1:]) == data  # the prefix only, whatever the quotes


def test_payload_bounds_and_json_errors() -> None:
    huge = b'{"timestamp": 1, "x": "' + b"a" * MAX_PAYLOAD_BYTES + b'"}'
    assert decode_object(huge).reason == BAD_PAYLOAD
    assert decode_sensor_payload(huge).reason == BAD_PAYLOAD
    deep = b'{"a": ' + b"[" * 30000 + b"]" * 30000 + b"}"
    assert decode_object(deep).reason == BAD_PAYLOAD
    assert decode_sensor_payload(deep).reason == BAD_PAYLOAD
    assert decode_object(b"[1, 2]").reason == BAD_PAYLOAD
    assert decode_sensor_payload(b'"text"').reason == BAD_PAYLOAD
    for bad in (
        b"",
        b"{",
        b"{'a': 1}",
        b"\xff\xfe",
        b'{"a": NaN}',
        b'{"timestamp": "\xed\xa0\x80"}',
    ):
        assert decode_object(bad).reason == BAD_JSON
        assert decode_sensor_payload(bad).reason == BAD_JSON


PATHS = st.sampled_from([STRIKE, DOORS, BUTTONS, READER, SIREN, MOTION])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from(
    ["timestamp", "status", "state", "door_1", "door-sensor-2", "exit-button-1", "data", "volume"]
) | st.text(max_size=8)


def test_caught_bug_tells_the_catch_all_from_a_detail_quoting_python() -> None:
    broken_entry = object()  # no registry entry has this shape: decoding it raises inside
    (bug,) = decode(RawMessage(f"stat/f2-{MAC}/{READER}", b"{}"), broken_entry)  # type: ignore[arg-type]
    (cut_utf8,) = decode(RawMessage(f"stat/f2-{MAC}/{READER}", b'{"\xc2"'), seed_controller())
    assert caught_bug(bug)
    assert cut_utf8.reason == BAD_JSON and "unexpected end of data" in cut_utf8.detail
    assert not caught_bug(cut_utf8)


@settings(max_examples=300, deadline=None)
@given(PATHS, st.dictionaries(KEYS, JSON_VALUES, max_size=5))
def test_any_json_object_gives_events_or_errors(path: str, body: dict) -> None:
    raw = RawMessage(f"stat/f2-{MAC}/{path}", json.dumps(body).encode())
    for item in decode(raw, seed_controller()):
        assert not caught_bug(item), item


@settings(max_examples=300, deadline=None)
@given(PATHS, st.binary(max_size=200))
@example(READER, b'{"\xc2"')  # bad UTF-8 whose detail quotes "unexpected end of data"
def test_any_payload_bytes_give_events_or_errors(path: str, payload: bytes) -> None:
    for item in decode(RawMessage(f"stat/f2-{MAC}/{path}", payload), seed_controller()):
        assert not caught_bug(item), item
