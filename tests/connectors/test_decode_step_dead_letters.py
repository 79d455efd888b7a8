"""The decode step's dead letters: at most one per (reason, label) and message, whatever the
message holds, and a message over an input limit is exactly one."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.decode_step import DecodeStep
from schemas.limits import DEFAULT_LIMITS
from schemas.records import ControllerEntry, DataPointDef, RawMessage, SensorEntry
from schemas.settings import PrivacySettings

MAC = "e4fd45f654be"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
STAMP = "2026-11-26 11:59:00.000000"
# Two data points with one label, both past a 2-byte data section: the same (reason, label) twice.
TWINS = (
    DataPointDef(1, "Twin", "Int16", 8, 2),
    DataPointDef(2, "Twin", "Int16", 10, 2),
)
ENTRY = ControllerEntry(MAC, 7, sensors={"1:1": SensorEntry(9, 3, "T", "modbus-rtu", TWINS)})


class OneControllerStore:
    def lookup(self, mac: str) -> tuple[ControllerEntry | None, bool]:
        return (ENTRY if mac == MAC else None), False


def dead_letters(topic: str, payload: bytes) -> list[tuple[bytes, bytes | None]]:
    step = DecodeStep(
        OneControllerStore, "decoded", "dlq", PrivacySettings(), DEFAULT_LIMITS, lambda: NOW
    )
    (out,) = step([RawMessage(topic, payload)])
    return [
        (dict(record.headers)["reason"], dict(record.headers).get("label")) for record in out.dlq
    ]


def test_two_data_points_with_one_label_and_reason_give_one_dead_letter() -> None:
    frame = "01 03 02 00 01 79 84"  # a valid 1-register reply
    payload = json.dumps({"timestamp": STAMP, "data": frame}).encode()
    assert dead_letters(f"tele/f2-{MAC}/sensor-mode/J1/sensor-1", payload) == [
        (b"out_of_range", b"Twin")
    ]


VALUES = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.just("a\x00b"),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
NAMES = st.one_of(
    st.sampled_from(["status", "state", "voltage", "note", "data"]),
    st.text(min_size=1, max_size=70),
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["strike-1", "reader-2", "door-sensors", "exit-buttons"]),
    st.dictionaries(NAMES, VALUES, max_size=40),
)
def test_any_event_message_gives_at_most_one_dead_letter_per_reason_and_label(
    component: str, fields: dict
) -> None:
    payload = json.dumps({"timestamp": STAMP, **fields}).encode()
    letters = dead_letters(f"stat/f2-{MAC}/access-control-mode/J3/{component}", payload)
    assert all(count == 1 for count in Counter(letters).values()), letters
    assert len(letters) <= 32
    if len(fields) - ("timestamp" in fields) > 32:
        assert letters == [(b"bad_payload", None)]
