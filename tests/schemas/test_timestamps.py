"""Timestamp rules (docs/PROTOCOL.md §2): formats, zones, DST gap and fold, bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.reasons import BAD_TIMESTAMP
from schemas.records import DecodeError
from schemas.timestamps import _localise, parse_timestamp, zone_for

NOW = datetime(2024, 6, 1, tzinfo=UTC)
LATER = datetime(2025, 1, 1, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "zone", "expected"),
    [
        ("2024-05-01 12:00:00.123456", UTC, utc(2024, 5, 1, 12, 0, 0, 123456)),
        ("2024-05-01 12:00:00.123456", BERLIN, utc(2024, 5, 1, 10, 0, 0, 123456)),
        ("2024-01-15 12:00:00.000001", BERLIN, utc(2024, 1, 15, 11, 0, 0, 1)),
        ("2024-05-01 12:00:00", NEW_YORK, utc(2024, 5, 1, 16)),
        ("2024-05-01T12:00:00Z", BERLIN, utc(2024, 5, 1, 12)),
        ("2024-05-01T12:00:00.5+02:00", UTC, utc(2024, 5, 1, 10, 0, 0, 500000)),
        ("2024-05-01T12:00:00-05:30", UTC, utc(2024, 5, 1, 17, 30)),
        ("2024-05-01T12:00:00", BERLIN, utc(2024, 5, 1, 10)),
        (1714564800, BERLIN, utc(2024, 5, 1, 12)),
        (1714564800.25, UTC, utc(2024, 5, 1, 12, 0, 0, 250000)),
        (1714564800123, UTC, utc(2024, 5, 1, 12, 0, 0, 123000)),
        (1714564800123.0, UTC, utc(2024, 5, 1, 12, 0, 0, 123000)),
    ],
)
def test_accepted_forms(value: object, zone: ZoneInfo, expected: datetime) -> None:
    moment = parse_timestamp(value, zone, NOW)
    assert moment == expected
    assert isinstance(moment, datetime) and moment.utcoffset() == timedelta(0)


def test_spring_forward_gap_is_bad() -> None:
    for text in ("2024-03-31 02:00:00.000000", "2024-03-31 02:59:59.999999", "2024-03-31 02:30:00"):
        error = parse_timestamp(text, BERLIN, NOW)
        assert isinstance(error, DecodeError) and error.reason == BAD_TIMESTAMP
    assert parse_timestamp("2024-03-31 03:00:00.000000", BERLIN, NOW) == utc(2024, 3, 31, 1)
    assert parse_timestamp("2024-03-31 01:59:59.999999", BERLIN, NOW) == utc(
        2024, 3, 31, 0, 59, 59, 999999
    )
    gap = parse_timestamp("2024-03-10 02:30:00.000000", NEW_YORK, NOW)
    assert isinstance(gap, DecodeError)


def test_fall_back_hour_takes_first_occurrence() -> None:
    assert parse_timestamp("2024-10-27 02:30:00.000000", BERLIN, LATER) == utc(2024, 10, 27, 0, 30)
    assert parse_timestamp("2024-10-27 02:30:00", BERLIN, LATER) == utc(2024, 10, 27, 0, 30)
    assert parse_timestamp("2024-10-27 03:00:00.000000", BERLIN, LATER) == utc(2024, 10, 27, 2)
    assert parse_timestamp("2024-11-03 01:15:00.000000", NEW_YORK, LATER) == utc(2024, 11, 3, 5, 15)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        "",
        "yesterday",
        "2024-05-01",
        "2024-13-01 12:00:00.000000",
        "2024-05-01 25:00:00.000000",
        "2024-05-01 12:00:00.12345x",
        "2024-05-01 12:00:00+25:00",
        float("nan"),
        float("inf"),
        1e30,
        -1e30,
        [2024],
        {"t": 1},
    ],
)
def test_unreadable_timestamps_are_bad(value: object) -> None:
    error = parse_timestamp(value, BERLIN, NOW)
    assert isinstance(error, DecodeError) and error.reason == BAD_TIMESTAMP


def test_bounds_default_and_configurable() -> None:
    assert isinstance(parse_timestamp("1999-12-31 23:59:59.999999", UTC, NOW), DecodeError)
    assert parse_timestamp("2000-01-01 00:00:00.000000", UTC, NOW) == utc(2000, 1, 1)
    assert isinstance(parse_timestamp(0, UTC, NOW), DecodeError)
    assert parse_timestamp("2024-06-02 00:00:00.000000", UTC, NOW) == utc(2024, 6, 2)
    assert isinstance(parse_timestamp("2024-06-02 00:00:00.000001", UTC, NOW), DecodeError)
    assert parse_timestamp("1990-01-01 00:00:00.000000", UTC, NOW, earliest=utc(1980, 1, 1)) == utc(
        1990, 1, 1
    )
    assert isinstance(
        parse_timestamp("2024-06-01 01:00:00.000000", UTC, NOW, max_ahead=timedelta(minutes=5)),
        DecodeError,
    )


def test_default_clock_is_now() -> None:
    recent = datetime.now(UTC) - timedelta(minutes=1)
    assert parse_timestamp(recent.strftime("%Y-%m-%d %H:%M:%S.%f"), UTC) == recent
    future = datetime.now(UTC) + timedelta(days=2)
    assert isinstance(parse_timestamp(future.isoformat(), UTC), DecodeError)


def test_zone_names() -> None:
    assert zone_for("UTC") is UTC
    assert zone_for("Europe/Berlin") == BERLIN
    for bad in ("Mars/Olympus", "", "../etc/passwd", "Europe/", "UTC+1"):
        assert zone_for(bad) is None


ZONES = st.sampled_from(
    ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/St_Johns"]
)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2038, 1, 1)), ZONES)
def test_fast_path_matches_exact_conversion(local: datetime, zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    text = local.strftime("%Y-%m-%d %H:%M:%S.%f")
    expected = _localise(local, zone)
    result = parse_timestamp(text, zone, datetime(2040, 1, 1, tzinfo=UTC))
    if isinstance(expected, DecodeError):
        assert isinstance(result, DecodeError) and result.reason == BAD_TIMESTAMP
    else:
        assert result == expected == local.replace(tzinfo=zone, fold=0).astimezone(UTC)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.none()))
def test_any_value_gives_a_time_or_bad_timestamp(value: object) -> None:
    result = parse_timestamp(value, BERLIN, NOW)
    assert isinstance(result, datetime) or result.reason == BAD_TIMESTAMP


def test_fall_back_hour_takes_the_occurrence_closer_to_the_receive_time() -> None:
    first, second = utc(2024, 10, 27, 0, 30), utc(2024, 10, 27, 1, 30)  # 02:30 CEST, 02:30 CET
    text = "2024-10-27 02:30:00.000000"
    assert parse_timestamp(text, BERLIN, LATER, received_s=first.timestamp() + 2) == first
    assert parse_timestamp(text, BERLIN, LATER, received_s=second.timestamp() + 2) == second
    # Received long after: still the nearer one (the second), not a guess.
    assert parse_timestamp(text, BERLIN, LATER, received_s=LATER.timestamp()) == second
    assert parse_timestamp(text, BERLIN, LATER, received_s=0) == first  # unknown: the first
    # Outside the repeated hour the receive time changes nothing.
    normal = "2024-10-27 04:30:00.000000"
    assert parse_timestamp(normal, BERLIN, LATER, received_s=first.timestamp()) == utc(
        2024, 10, 27, 3, 30
    )
    gap = parse_timestamp("2024-03-31 02:30:00", BERLIN, NOW, received_s=NOW.timestamp())
    assert isinstance(gap, DecodeError)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2037, 12, 1)),
    ZONES,
    st.integers(min_value=0, max_value=120),
)
def test_a_live_controller_is_stored_at_its_own_instant(
    instant: datetime, zone_name: str, delay_s: int
) -> None:
    """A controller stamps local wall-clock time; received within two minutes, every instant
    (both passes of a repeated hour included) comes back as itself."""
    zone = ZoneInfo(zone_name)
    moment = instant.replace(tzinfo=UTC, microsecond=0)
    local = moment.astimezone(zone).replace(tzinfo=None)
    text = local.strftime("%Y-%m-%d %H:%M:%S.%f")
    received = moment.timestamp() + delay_s
    assert parse_timestamp(text, zone, datetime(2040, 1, 1, tzinfo=UTC), received_s=received) == (
        moment
    )


def test_every_30_s_across_the_change_gives_distinct_instants() -> None:
    start = utc(2024, 10, 26, 23, 0)  # 01:00 CEST
    seen = []
    for step in range(2 * 3600 // 30 + 120):
        moment = start + timedelta(seconds=30 * step)
        text = moment.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M:%S.%f")
        seen.append(parse_timestamp(text, BERLIN, LATER, received_s=moment.timestamp() + 1))
    assert seen == [start + timedelta(seconds=30 * step) for step in range(len(seen))]
