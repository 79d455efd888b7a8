"""Rows for the timeseries database, and the batches the decode flow hands to the writer.

Delivery guarantee: none by itself; this module only shapes data. A :class:`RowBatch` is what
travels from the decode step to the storage batching step; while buffered it is saved in recovery
snapshots as :func:`pending_bytes` (each message once, however many rows it gave). A row carries
its table's columns (:meth:`ReadingRow.columns`, in the order of :data:`READING_COLUMNS` /
:data:`EVENT_COLUMNS`) and where it came from: the :class:`~schemas.records.RawMessage` and the
label or field, so that a row the database refuses is dead-lettered with its original message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from schemas.records import ControllerEntry, Event, RawMessage, Reading

READING_COLUMNS = ("time", "sensor_id", "datapoint_id", "value", "registry_version")
READING_TYPES = ("timestamptz", "int4", "int4", "float8", "int8")
EVENT_COLUMNS = (
    "time",
    "controller_id",
    "mac",
    "connector",
    "component",
    "field",
    "value_bool",
    "value_num",
    "value_text",
    "registry_version",
)
EVENT_TYPES = (
    "timestamptz",
    "int4",
    "text",
    "text",
    "text",
    "text",
    "bool",
    "float8",
    "text",
    "int8",
)


class ReadingRow(msgspec.Struct, frozen=True, gc=False):
    """One row of ``readings``, with its origin (``raw``, ``label``)."""

    time: datetime
    sensor_id: int
    datapoint_id: int
    value: float
    registry_version: int
    raw: RawMessage
    label: str

    def columns(self) -> tuple[datetime, int, int, float, int]:
        """The row's values in :data:`READING_COLUMNS` order."""
        return (self.time, self.sensor_id, self.datapoint_id, self.value, self.registry_version)


class EventRow(msgspec.Struct, frozen=True, gc=False):
    """One row of ``device_events`` (the value in the column of its type), with its origin."""

    time: datetime
    controller_id: int
    mac: str
    connector: str
    component: str
    field: str
    value_bool: bool | None
    value_num: float | None
    value_text: str | None
    registry_version: int
    raw: RawMessage

    @property
    def label(self) -> str:
        return self.field

    def columns(self) -> tuple[Any, ...]:
        """The row's values in :data:`EVENT_COLUMNS` order."""
        return (
            self.time,
            self.controller_id,
            self.mac,
            self.connector,
            self.component,
            self.field,
            self.value_bool,
            self.value_num,
            self.value_text,
            self.registry_version,
        )


Row = ReadingRow | EventRow

Mark = tuple[datetime, int]
"""A stored message's device time and receive time (epoch ms), for the latency histograms."""


class Rejected(msgspec.Struct, frozen=True, gc=False):
    """A row the database refused (``store_rejected``): its message, label or field, and why."""

    raw: RawMessage
    label: str
    table: str
    detail: str


class RowBatch(msgspec.Struct, gc=False):
    """Rows decoded from one or more source batches, plus what the writer does with them.

    ``entries`` are registry entries loaded while decoding these rows (the writer upserts them into
    the dimension tables); ``marks`` hold one :func:`mark` per stored message, for the end-to-end
    latency histograms; ``payload_bytes`` is the size of the payloads the rows keep alive (each
    message once), so a batch of big messages is bounded by bytes as well as rows.
    """

    readings: list[ReadingRow] = msgspec.field(default_factory=list)
    events: list[EventRow] = msgspec.field(default_factory=list)
    entries: list[ControllerEntry] = msgspec.field(default_factory=list)
    marks: list[Mark] = msgspec.field(default_factory=list)
    payload_bytes: int = 0

    def __len__(self) -> int:
        return len(self.readings) + len(self.events)

    def extend(self, other: RowBatch) -> None:
        """Append ``other``'s content to this batch."""
        self.readings.extend(other.readings)
        self.events.extend(other.events)
        self.entries.extend(other.entries)
        self.marks.extend(other.marks)
        self.payload_bytes += other.payload_bytes


def reading_row(reading: Reading, raw: RawMessage) -> ReadingRow:
    """The row of one reading."""
    return ReadingRow(
        reading.time,
        reading.sensor_id,
        reading.datapoint_id,
        reading.value,
        reading.registry_version,
        raw,
        reading.label,
    )


def event_row(event: Event, raw: RawMessage) -> EventRow:
    """The row of one event: its value in the column of its type (bool, number or text)."""
    value = event.value
    kind = type(value)
    return EventRow(
        event.time,
        event.controller_id,
        event.mac,
        event.connector,
        event.component,
        event.field,
        value if kind is bool else None,
        float(value) if kind is float or kind is int else None,
        value if kind is str else None,
        event.registry_version,
        raw,
    )


def mark(time: datetime, raw: RawMessage) -> Mark:
    """The latency mark of one stored message: its device time and receive time as they are.

    Kept unconverted: every stored message has one, and the writer observes only a sample of
    them (:func:`mark_seconds` converts those).
    """
    return (time, raw.received_at_ms)


def mark_seconds(m: Mark) -> tuple[float, float]:
    """Device time and receive time of a :func:`mark`, epoch seconds (receive time 0: unknown)."""
    return (m[0].timestamp(), m[1] / 1000.0)


class _Pending(msgspec.Struct, array_like=True, gc=False):
    """A :class:`RowBatch` as saved in a recovery snapshot: each message once (``raws``), rows
    as their column values plus the index of their message."""

    raws: list[RawMessage]
    readings: list[tuple[datetime, int, int, float, int, str, int]]
    events: list[
        tuple[datetime, int, str, str, str, str, bool | None, float | None, str | None, int, int]
    ]
    entries: list[ControllerEntry]
    marks: list[tuple[datetime | float, int | float]]
    """:func:`mark` values; snapshots written before 2026-12-08 hold epoch seconds, both floats."""
    payload_bytes: int = 0


_PENDING_ENCODER = msgspec.msgpack.Encoder()
_PENDING_DECODER = msgspec.msgpack.Decoder(_Pending)


def pending_bytes(batch: RowBatch) -> bytes:
    """``batch`` as the bytes a recovery snapshot keeps (:func:`pending_rows` reads them back).

    Bytewax pickles a snapshot: pickling rows one object at a time cost about 2 µs a row and
    most of that again in the garbage collections it set off; this is msgpack, with each message
    once.
    """
    raws: list[RawMessage] = []
    index: dict[int, int] = {}

    def at(raw: RawMessage) -> int:
        position = index.get(id(raw))
        if position is None:
            position = index[id(raw)] = len(raws)
            raws.append(raw)
        return position

    readings = [
        (r.time, r.sensor_id, r.datapoint_id, r.value, r.registry_version, r.label, at(r.raw))
        for r in batch.readings
    ]
    events = [(*e.columns(), at(e.raw)) for e in batch.events]
    return _PENDING_ENCODER.encode(
        _Pending(raws, readings, events, batch.entries, batch.marks, batch.payload_bytes)
    )


def _seconds_mark(device_s: float, receive_s: float) -> Mark:
    """A mark saved as epoch seconds by an earlier version."""
    return (datetime.fromtimestamp(device_s, UTC), round(receive_s * 1000))


def pending_rows(data: bytes) -> RowBatch:
    """The :class:`RowBatch` :func:`pending_bytes` saved."""
    saved = _PENDING_DECODER.decode(data)
    raws = saved.raws
    return RowBatch(
        readings=[
            ReadingRow(t, s, d, v, version, raws[i], label)
            for t, s, d, v, version, label, i in saved.readings
        ],
        events=[EventRow(*row[:-1], raws[row[-1]]) for row in saved.events],
        entries=saved.entries,
        marks=[m if type(m[0]) is datetime else _seconds_mark(*m) for m in saved.marks],
        payload_bytes=saved.payload_bytes,
    )
