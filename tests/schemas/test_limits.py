"""Input limits (docs/PROTOCOL.md §2) as properties: a message over any limit is one dead letter and
yields nothing else; messages within them are not refused for their size."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import decode as decode_module
from schemas.decode import decode_message
from schemas.limits import DEFAULT_LIMITS
from schemas.reasons import BAD_PAYLOAD, BAD_TOPIC
from schemas.records import DecodeError, Event, RawMessage
from schemas.settings import InputLimits, SettingsError, load_section
from tests.schemas.support import MAC, NOW, STAMP, seed_controller

STRIKE = f"stat/f2-{MAC}/access-control-mode/J3/strike-1"
SENSOR = f"tele/f2-{MAC}/sensor-mode/J1/sensor-1"
NAME_CHARS = string.ascii_letters + string.digits + "_.-"
GOOD_NAMES = st.text(NAME_CHARS, min_size=1, max_size=64).filter(
    lambda n: n not in ("timestamp", "status", "state")
)


def decoded(payload: bytes, topic: str = STRIKE, limits: InputLimits = DEFAULT_LIMITS) -> list:
    return decode_message(RawMessage(topic, payload), seed_controller(), NOW, limits)


def one_error(results: list, reason: str = BAD_PAYLOAD) -> DecodeError:
    assert len(results) == 1, results
    [error] = results
    assert isinstance(error, DecodeError) and error.reason == reason and error.label is None
    return error


def body(fields: dict) -> bytes:
    return json.dumps({"timestamp": STAMP, "status": True, **fields}).encode()


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(GOOD_NAMES, st.integers(0, 9), min_size=32, max_size=200))
def test_more_than_32_fields_is_one_dead_letter(fields: dict) -> None:
    error = one_error(decoded(body(fields)))
    assert "event fields exceed the limit of 32" in error.detail


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(GOOD_NAMES, st.integers(0, 9), max_size=31))
def test_up_to_32_valid_fields_are_all_events(fields: dict) -> None:
    results = decoded(body(fields))
    assert all(isinstance(r, Event) for r in results)
    assert len(results) == len(fields) + 1


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(NAME_CHARS, min_size=65, max_size=5000),
        st.text(min_size=1, max_size=80).filter(
            lambda n: any(c not in NAME_CHARS for c in n) and n not in ("timestamp", "state")
        ),
    )
)
def test_a_field_name_off_the_limit_is_one_dead_letter(name: str) -> None:
    error = one_error(decoded(body({name: 1})))
    assert "event field name" in error.detail and len(error.detail) < 300


@settings(max_examples=100, deadline=None)
@given(st.integers(1024, 20000))
def test_text_over_1023_characters_is_one_dead_letter(size: int) -> None:
    one_error(decoded(body({"note": "x" * size})))
    reader = f"stat/f2-{MAC}/access-control-mode/J3/reader-1"
    one_error(decoded(json.dumps({"timestamp": STAMP, "data": "A" * size}).encode(), reader))


@settings(max_examples=50, deadline=None)
@given(st.integers(65537, 300_000), st.sampled_from([STRIKE, SENSOR]))
def test_a_payload_over_64_kib_is_one_dead_letter(size: int, topic: str) -> None:
    payload = body({"pad": "x" * size})
    one_error(decoded(payload, topic))


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=20).map(lambda tail: f"{STRIKE}/{'x' * 256}{tail}"))
def test_a_topic_over_256_bytes_is_one_bad_topic_and_never_cached(topic: str) -> None:
    before = len(decode_module._ROUTES)
    one_error(decoded(body({}), topic), BAD_TOPIC)
    assert len(decode_module._ROUTES) == before


def test_limits_are_configurable_and_validated() -> None:
    environ = {"F2_LIMIT_FIELD_NAME_CHARS": "5000", "F2_LIMIT_EVENT_FIELDS": "2"}
    limits = load_section(InputLimits, environ)
    assert limits == InputLimits(field_name_chars=5000, event_fields=2)
    long_name = "n" * 4000
    assert all(isinstance(r, Event) for r in decoded(body({long_name: 1}), limits=limits))
    one_error(decoded(body({"a": 1, "b": 2}), limits=limits))
    with pytest.raises(SettingsError, match="F2_LIMIT_TEXT_CHARS"):
        load_section(InputLimits, {"F2_LIMIT_TEXT_CHARS": "0"})
    assert load_section(InputLimits, {}) == DEFAULT_LIMITS


def test_a_nul_character_in_text_is_a_field_error() -> None:
    results = decoded(body({"note": "a\x00b", "volume": 3}))
    errors = [r for r in results if isinstance(r, DecodeError)]
    assert [(e.reason, e.label) for e in errors] == [(BAD_PAYLOAD, "note")]
    assert {r.field for r in results if isinstance(r, Event)} == {"status", "volume"}
