"""Hostile device input through the decoder: bounded work, the right reason code, no crash.

Every result must be a reason code the decoder chose on purpose: ``decode_message`` turns an
unexpected exception into ``bad_payload "unexpected ..."``, which these tests treat as a failure.
"""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from schemas.decode import decode_message
from schemas.payloads import MAX_PAYLOAD_BYTES
from schemas.reasons import BAD_HEX, BAD_JSON, BAD_PAYLOAD, BAD_TOPIC
from schemas.records import DecodeError, Event, RawMessage
from schemas.topics import parse_topic
from tests.schemas.support import MAC, NOW, STAMP, caught_bug, seed_controller

SENSOR_TOPIC = f"tele/f2-{MAC}/sensor-mode/J1/sensor-1"
READER_TOPIC = f"tele/f2-{MAC}/access-control-mode/J2/reader-1"
STRIKE_TOPIC = f"stat/f2-{MAC}/access-control-mode/J2/strike-1"


def decode(topic: str, payload: bytes) -> list:
    return decode_message(RawMessage(topic, payload), seed_controller(), NOW)


def reasons(results: list) -> set[str]:
    for item in results:
        if isinstance(item, DecodeError):
            assert not caught_bug(item), item.detail
    return {item.reason for item in results if isinstance(item, DecodeError)}


def bounded(topic: str, payload: bytes, max_s: float = 2.0, max_mib: float = 8.0) -> list:
    """Decode and assert it took bounded time and memory (peak above the payload itself)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        results = decode(topic, payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < max_s
    assert peak < max_mib * 1024 * 1024, f"peak {peak} bytes"
    return results


@pytest.mark.parametrize("topic", [SENSOR_TOPIC, STRIKE_TOPIC])
def test_oversized_payload_is_refused_by_size(topic: str) -> None:
    payload = b'{"timestamp": "' + STAMP.encode() + b'", "data": "' + b"A" * (4 << 20) + b'"}'
    assert reasons(bounded(topic, payload)) == {BAD_PAYLOAD}


def test_megabyte_hex_string_is_bounded() -> None:
    payload = json.dumps({"timestamp": STAMP, "data": "0A" * (1 << 20)}).encode()
    assert reasons(bounded(SENSOR_TOPIC, payload)) == {BAD_PAYLOAD}


def test_hex_just_under_the_bound_is_decoded_and_refused_as_a_frame() -> None:
    body_limit = MAX_PAYLOAD_BYTES - 100
    payload = json.dumps({"timestamp": STAMP, "data": "ZZ" * (body_limit // 2)}).encode()
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert reasons(bounded(SENSOR_TOPIC, payload)) == {BAD_HEX}


@pytest.mark.parametrize("depth", [100, 10_000, 60_000])
@pytest.mark.parametrize("topic", [SENSOR_TOPIC, STRIKE_TOPIC])
def test_deeply_nested_json(depth: int, topic: str) -> None:
    payload = b'{"timestamp": "' + STAMP.encode() + b'", "status": ' + b"[" * depth + b"]" * depth
    payload += b"}"
    assert reasons(bounded(topic, payload[:MAX_PAYLOAD_BYTES])) <= {BAD_JSON, BAD_PAYLOAD}
    assert reasons(bounded(topic, payload[:MAX_PAYLOAD_BYTES]))


def test_huge_flat_json_object_is_bounded() -> None:
    fields = ",".join(f'"f{i}": {i}' for i in range(6000))
    payload = ('{"timestamp": "' + STAMP + '", "status": true, ' + fields + "}").encode()
    results = bounded(STRIKE_TOPIC, payload)
    assert reasons(results) <= {BAD_PAYLOAD}


@pytest.mark.parametrize(
    "payload",
    [
        b'{"timestamp": "' + STAMP.encode() + b'", "status": "\xff\xfe"}',
        b"\xc3\x28\xa0\xa1",
        b'{"timestamp": "\xed\xa0\x80", "status": true}',
    ],
)
def test_invalid_utf8_is_bad_json(payload: bytes) -> None:
    assert reasons(decode(STRIKE_TOPIC, payload)) == {BAD_JSON}


def test_nul_bytes_never_crash_and_never_hide_in_reader_text() -> None:
    raw_nul = b'{"timestamp": "' + STAMP.encode() + b'", "status": true}\x00'
    assert reasons(decode(STRIKE_TOPIC, raw_nul)) == {BAD_JSON}
    escaped = json.dumps({"timestamp": STAMP, "data": "b'\\x00\\x01AB'"}).encode()
    events = [item for item in decode(READER_TOPIC, escaped) if isinstance(item, Event)]
    assert [e.value for e in events] == ["000141" + "42"]
    text_nul = json.dumps({"timestamp": STAMP, "data": "A\u0000B"}).encode()
    results = decode(READER_TOPIC, text_nul)
    assert all("\x00" not in str(getattr(item, "value", "")) for item in results)
    assert reasons(results) == {BAD_PAYLOAD}


@pytest.mark.parametrize(
    "topic",
    [
        f"tele/f2-{MAC}/sensor-mode/J1/+",
        f"tele/f2-{MAC}/sensor-mode/#",
        "tele/+/sensor-mode/J1/sensor-1",
        "tele/#",
        f"tele/f2-{MAC}/../J1/sensor-1",
        f"tele/f2-{MAC}/sensor-mode/../../sensor-1",
        f"tele/f2-{MAC}/sensor-mode/J1/sensor-1/..",
        f"tele/f2-{MAC}/sensor-mode/J1/sensor-1\x00",
        f'tele/f2-{MAC}\'; DROP TABLE "Device"; --/sensor-mode/J1/sensor-1',
        "tele/f2-" + "a" * 100_000 + "/sensor-mode/J1/sensor-1",
        "",
        "/" * 1000,
    ],
)
def test_topic_injection_is_bad_topic(topic: str) -> None:
    assert isinstance(parse_topic(topic), DecodeError)
    payload = json.dumps({"timestamp": STAMP, "status": True}).encode()
    assert reasons(decode(topic, payload)) == {BAD_TOPIC}


@pytest.mark.parametrize(
    "value",
    [
        '\'); DROP TABLE "Device"; --',
        "%s %(x)s {0} {x}",
        "\\'\\\\\\x00",
        "$1 $$ $tag$",
    ],
)
def test_sql_metacharacters_in_payload_text_are_plain_values(value: str) -> None:
    payload = json.dumps({"timestamp": STAMP, "status": True, "note": value}).encode()
    events = {e.field: e.value for e in decode(STRIKE_TOPIC, payload) if isinstance(e, Event)}
    assert events["note"] == value
