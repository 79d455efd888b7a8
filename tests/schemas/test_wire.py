"""The Kafka wire formats (schemas/wire.py): raw records round-trip, one dead-letter header set for
every stage, the size fallbacks, and the decoded records."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from schemas.records import ControllerEntry, DecodeError, RawMessage
from schemas.wire import (
    DEAD_LETTER_MIN_BYTES,
    DEAD_LETTER_VALUE_BYTES,
    KafkaRecord,
    dead_letter,
    decoded_json,
    raw_message,
    raw_record,
    result_json,
    truncated,
    undeliverable,
)
from tests.schemas.support import MAC, decode, event_message, sensor_message

GOLDEN = bytes.fromhex("01030609C413880190556F")
TOPIC = f"tele/f2-{MAC}/sensor-mode/J1/sensor-1"
DEAD_LETTER_HEADERS = [
    "mqtt_topic",
    "mqtt_qos",
    "mqtt_retain",
    "received_at",
    "reason",
    "detail",
    "stage",
    "source_topic",
    "source_partition",
    "source_offset",
]

messages = st.builds(
    RawMessage,
    topic=st.text(max_size=80),
    payload=st.binary(max_size=200),
    received_at_ms=st.integers(min_value=0, max_value=2**53),
    qos=st.sampled_from([0, 1, 2]),
    retain=st.booleans(),
)


@given(messages)
def test_a_raw_record_reads_back_as_the_message_it_was_made_from(raw: RawMessage) -> None:
    record = raw_record(raw, "raw_iot_data", b"key")
    back = raw_message(dict(record.headers), record.value, 123, "raw_iot_data", 4, 99)
    expected = RawMessage(
        raw.topic.encode("utf-8", "replace").decode("utf-8", "replace"),
        raw.payload,
        raw.received_at_ms,
        raw.qos,
        raw.retain,
        "raw_iot_data",
        4,
        99,
    )
    assert back == expected
    assert [name for name, _ in record.headers] == DEAD_LETTER_HEADERS[:4]


_RAW_NAMES = ["mqtt_topic", "mqtt_qos", "mqtt_retain", "received_at", "other"]
header_lists = st.one_of(
    st.none(),
    st.lists(
        st.tuples(
            st.sampled_from(_RAW_NAMES),
            st.one_of(st.none(), st.binary(max_size=12), st.sampled_from([b"0", b"1", b"2"])),
        ),
        max_size=6,
    ),
)


@given(messages, header_lists)
def test_a_header_list_reads_as_its_dict_would(raw: RawMessage, headers: list | None) -> None:
    in_order = raw_record(raw, "raw_iot_data", b"key").headers
    for listed in (in_order, headers):
        by_name = dict(listed or ())
        assert raw_message(listed, b"v", 5, "t", 1, 2) == raw_message(by_name, b"v", 5, "t", 1, 2)


def test_missing_or_broken_headers_fall_back() -> None:
    back = raw_message({"received_at": b"soon", "mqtt_qos": b"x"}, None, 777, "t", 0, 1)
    assert (back.topic, back.payload, back.received_at_ms, back.qos) == ("", b"", 777, 1)
    assert raw_message({}, b"v", -5, "t", 0, 1).received_at_ms == 0
    assert raw_message({"mqtt_qos": b"2"}, b"v", 0, "t", 0, 1).qos == 2


@given(messages, st.sampled_from(["ingest", "decode", "store", "redrive"]), st.booleans())
def test_every_stage_writes_one_dead_letter_header_set(
    raw: RawMessage, stage: str, labelled: bool
) -> None:
    label = "CO2" if labelled else None
    letter = dead_letter(raw, "bad_crc", "detail é", stage, "dlq_iot_data", label)
    names = [name for name, _ in letter.headers]
    assert names == DEAD_LETTER_HEADERS + (["label"] if labelled else [])
    headers = dict(letter.headers)
    assert headers["stage"] == stage.encode() and headers["reason"] == b"bad_crc"
    assert letter.value == raw.payload and letter.topic == "dlq_iot_data"
    again = raw_message(headers, letter.value, 0, raw.source_topic, -1, -1)
    assert (again.received_at_ms, again.qos, again.retain) == (
        raw.received_at_ms,
        raw.qos,
        raw.retain,
    )


def test_a_dead_letter_is_keyed_by_the_mac_when_the_topic_has_one() -> None:
    assert dead_letter(RawMessage(TOPIC, b"x"), "r", "d", "decode", "dlq").key == MAC.encode()
    assert dead_letter(RawMessage("no/mac", b"x"), "r", "d", "ingest", "dlq").key is None


def test_undeliverable_keeps_the_record_and_says_why() -> None:
    record = KafkaRecord("raw_iot_data", b"k", b"v" * 10, [("mqtt_topic", b"t"), ("stage", b"x")])
    letter = undeliverable(record, "too large", "ingest", "dlq_iot_data")
    assert (letter.topic, letter.key, letter.value) == ("dlq_iot_data", b"k", record.value)
    assert dict(letter.headers) == {
        "mqtt_topic": b"t",
        "reason": b"undeliverable",
        "detail": b"too large",
        "stage": b"ingest",
        "target_topic": b"raw_iot_data",
    }


def test_truncation_keeps_the_head_with_size_and_digest_then_halves() -> None:
    value = bytes(range(256)) * 1000
    first = truncated(KafkaRecord("dlq", b"k", value, [("reason", b"undeliverable")]))
    assert first is not None and first.value == value[:DEAD_LETTER_VALUE_BYTES]
    headers = dict(first.headers)
    assert headers["original_size"] == str(len(value)).encode()
    assert headers["sha256"] == hashlib.sha256(value).hexdigest().encode()
    second = truncated(first)
    assert second is not None and len(second.value) == DEAD_LETTER_VALUE_BYTES // 2
    assert dict(second.headers)["sha256"] == headers["sha256"]
    small = KafkaRecord("dlq", None, b"x" * DEAD_LETTER_MIN_BYTES, [("original_size", b"9")])
    assert truncated(small) is None


def test_decoded_records_share_one_set_of_keys(controller: ControllerEntry) -> None:
    [reading, *_] = decode(sensor_message(GOLDEN), controller)
    record = json.loads(decoded_json(reading))
    assert record == {
        "kind": "reading",
        "mac": MAC,
        "connector": "J1",
        "pin": 1,
        "label": "Temperature",
        "value": 25.0,
        "unit": "°C",
        "time": "2024-06-01T10:00:00.250000Z",
        "sensor_id": reading.sensor_id,
        "datapoint_id": reading.datapoint_id,
        "registry_version": reading.registry_version,
        "v": 1,
    }
    [event] = decode(
        event_message("access-control-mode/J2/door-sensors", {"door_1": "open"}), controller
    )
    event_record = json.loads(decoded_json(event))
    assert set(event_record) == set(record) - {"pin", "label", "unit"} | {"component", "field"}
    assert (event_record["kind"], event_record["field"], event_record["value"]) == (
        "event",
        "door-sensor-1",
        True,
    )
    assert event_record["sensor_id"] is None and event_record["datapoint_id"] is None


def test_times_are_rfc3339_utc() -> None:
    from msgspec.json import decode as json_decode

    from schemas.records import Reading

    whole = Reading(MAC, "J1", 1, "x", 1.0, "", datetime(2024, 6, 1, 10, tzinfo=UTC), 1, 2)
    stamp = json_decode(decoded_json(whole))["time"]
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")) == whole.time
    assert stamp.endswith("Z")


def test_f2_decode_prints_errors_with_their_label_only_when_set() -> None:
    assert json.loads(result_json(DecodeError("out_of_range", "past the end", "CO2"))) == {
        "kind": "error",
        "reason": "out_of_range",
        "detail": "past the end",
        "label": "CO2",
    }
    assert "label" not in json.loads(result_json(DecodeError("bad_crc", "x")))
