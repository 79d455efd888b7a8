"""Payload timestamps (docs/PROTOCOL.md §2) to timezone-aware UTC datetimes.

Accepted: the controller's naive ``YYYY-MM-DD HH:MM:SS.ffffff`` (in the controller's IANA zone),
ISO 8601 with ``T``, ``Z`` or an offset, epoch numbers (≥ 1e11 = milliseconds, else seconds),
and ``datetime`` objects a msgspec decoder already parsed from such text (naive = local time).
A local time inside a spring-forward gap is rejected; one in a fall-back hour (it happens twice)
takes the occurrence closer to the message's receive time (``received_s``: ingest's
``received_at``, kept in the raw record so replays resolve the same way), or the first one when
there is none. A live controller's second pass through the repeated hour is thereby stored as
such, not as a duplicate of the first pass. Times before ``earliest`` or more than ``max_ahead``
past ``now`` are rejected, so a controller with a reset clock cannot poison storage. Errors are
returned as ``bad_timestamp``.

Speed: a zone's UTC offset is cached per local hour when it holds for the whole hour (hours
with a transition or a repeated time take the exact path), and UTC needs no zone arithmetic at all.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from schemas.reasons import BAD_TIMESTAMP
from schemas.records import DecodeError

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=1)
EPOCH_MS_THRESHOLD = 1e11
EPOCH_RANGE = (-6e10, 2.5e11)
"""Epoch seconds that fit a ``datetime`` (years 1..9999); the bounds check applies afterwards."""
HOUR_CACHE_SIZE = 100_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_LAST_MICROSECOND = timedelta(minutes=59, seconds=59, microseconds=999_999)
_HOUR_OFFSETS: dict[tuple[int, int, tzinfo], timedelta | None] = {}  # (ordinal, hour, zone)
_UNKNOWN = object()
_CLOCK: list = [0.0, EARLIEST, EARLIEST]  # refresh at (epoch s), now, now + MAX_AHEAD


@lru_cache(maxsize=1024)
def zone_for(name: str) -> tzinfo | None:
    """The zone called ``name`` (``datetime.UTC`` for UTC), or None if it is not an IANA name."""
    if name in ("UTC", "Etc/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError, TypeError):
        return None


def parse_timestamp(
    value: object,
    zone: tzinfo = UTC,
    now: datetime | None = None,
    earliest: datetime = EARLIEST,
    max_ahead: timedelta = MAX_AHEAD,
    received_s: float = 0.0,
) -> datetime | DecodeError:
    """The UTC instant a payload's ``timestamp`` names, or a ``bad_timestamp`` error.

    ``zone`` applies to naive times only; ``now`` (default: the current time) bounds the future;
    ``received_s`` (epoch seconds, 0 = unknown) picks the occurrence of an ambiguous local time.
    By default the clock is read only when a time is past the bound last read (at most once a
    second): the bound only grows, so a time within an older bound is within the current one.
    """
    kind = type(value)
    try:
        if kind is datetime and zone is UTC and value.tzinfo is None:  # the common case
            moment = _EPOCH + (value - _NAIVE_EPOCH)
        elif kind is datetime:
            moment = _from_datetime(value, zone, received_s)
        elif kind is str:
            moment = _from_text(value, zone, received_s)
        elif (kind is int or kind is float) and math.isfinite(value):
            moment = _from_epoch(value)
        else:
            return DecodeError(BAD_TIMESTAMP, f"missing or not a date/time: {value!r}"[:200])
    except (ValueError, OverflowError):
        return DecodeError(BAD_TIMESTAMP, f"not a representable date and time: {value!r}"[:200])
    if type(moment) is DecodeError:
        return moment
    if now is None and max_ahead is MAX_AHEAD:
        if earliest <= moment <= _CLOCK[2]:  # the clock only moves on: an old bound is stricter
            return moment
        if time.time() >= _CLOCK[0]:
            _tick()
        latest = _CLOCK[2]
    elif now is None:
        if time.time() >= _CLOCK[0]:
            _tick()
        latest = _CLOCK[1] + max_ahead
    else:
        latest = now + max_ahead
    if earliest <= moment <= latest:
        return moment
    if moment < earliest:
        return DecodeError(BAD_TIMESTAMP, f"{moment.isoformat()} is before {earliest.isoformat()}")
    return DecodeError(BAD_TIMESTAMP, f"{moment.isoformat()} is after {latest.isoformat()}")


def _tick() -> None:
    """Refresh the clock :func:`parse_timestamp` uses by default (at most once a second)."""
    now = datetime.now(UTC)
    _CLOCK[:] = [time.time() + 1.0, now, now + MAX_AHEAD]


def _from_text(text: str, zone: tzinfo, received_s: float) -> datetime | DecodeError:
    """ISO-like text (date, ``T`` or space, time); raises ``ValueError`` if unreadable."""
    if len(text) < 19 or len(text) > 40 or text[10] not in " Tt":
        return DecodeError(BAD_TIMESTAMP, f"not a date and time: {text!r}"[:200])
    moment = datetime.fromisoformat(text)
    if zone is UTC and moment.tzinfo is None:  # the common case
        return _EPOCH + (moment - _NAIVE_EPOCH)
    return _from_datetime(moment, zone, received_s)


def _from_datetime(moment: datetime, zone: tzinfo, received_s: float) -> datetime | DecodeError:
    """An aware time in UTC, or a naive one read as local time in ``zone``."""
    if moment.tzinfo is not None:
        return moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    if zone is UTC:
        return _EPOCH + (moment - _NAIVE_EPOCH)
    offset = _HOUR_OFFSETS.get((moment.toordinal(), moment.hour, zone), _UNKNOWN)
    if offset is _UNKNOWN:
        offset = _hour_offset(moment, zone)
    if offset is None:
        return _localise(moment, zone, received_s)
    return _EPOCH + ((moment - _NAIVE_EPOCH) - offset)


def _hour_offset(naive: datetime, zone: tzinfo) -> timedelta | None:
    """The UTC offset of ``naive``'s local hour in ``zone`` if it holds for the whole hour.

    None when the hour holds a transition, a gap or a time that happens twice (a fall-back hour):
    those take the exact path. Cached, since a controller's timestamps stay in one hour for an
    hour.
    """
    start = naive.replace(minute=0, second=0, microsecond=0)
    end = start + _LAST_MICROSECOND
    first, last = _localise(start, zone), _localise(end, zone)
    offset = None
    if (
        type(first) is datetime
        and type(last) is datetime
        and last - first == _LAST_MICROSECOND
        and not _ambiguous(start, zone)
        and not _ambiguous(end, zone)
    ):
        offset = start - first.replace(tzinfo=None)
    if len(_HOUR_OFFSETS) >= HOUR_CACHE_SIZE:
        _HOUR_OFFSETS.clear()
    _HOUR_OFFSETS[naive.toordinal(), naive.hour, zone] = offset
    return offset


def _ambiguous(naive: datetime, zone: tzinfo) -> bool:
    """True if the local time ``naive`` happens twice in ``zone``."""
    return (
        naive.replace(tzinfo=zone, fold=0).utcoffset()
        != naive.replace(tzinfo=zone, fold=1).utcoffset()
    )


def _localise(naive: datetime, zone: tzinfo, received_s: float = 0.0) -> datetime | DecodeError:
    """Attach ``zone`` to a naive local time and convert to UTC. An ambiguous time takes the
    occurrence closer to ``received_s`` (epoch seconds), the first one when that is 0."""
    utc = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) != naive:
        return DecodeError(BAD_TIMESTAMP, f"{naive.isoformat(' ')} does not exist in {zone}")
    if received_s:
        second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if second != utc:
            received = _EPOCH + timedelta(seconds=received_s)
            if abs(second - received) < abs(utc - received):
                return second
    return utc


def _from_epoch(number: float) -> datetime | DecodeError:
    """Epoch seconds, or milliseconds when the number is at least 1e11."""
    millis = abs(number) >= EPOCH_MS_THRESHOLD
    seconds = number / 1000 if millis else number
    if not EPOCH_RANGE[0] < seconds < EPOCH_RANGE[1]:
        return DecodeError(BAD_TIMESTAMP, f"epoch value out of range: {number!r}")
    return _EPOCH + (timedelta(milliseconds=number) if millis else timedelta(seconds=number))
