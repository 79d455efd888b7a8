"""Unit tests of the storage batching rule (injected clock) and the row mapping."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta

import msgspec
from bytewax.operators import StatefulLogic

from connectors.store_rows import (
    EVENT_COLUMNS,
    READING_COLUMNS,
    RowBatch,
    event_row,
    mark,
    mark_seconds,
    pending_bytes,
    pending_rows,
    reading_row,
)
from connectors.timeseries_writer import (
    BATCH_PAYLOAD_BYTES,
    BUFFER_LIMIT,
    LATENCY_STRIDE,
    StoreBatcher,
    StoreSettings,
    dimension_rows,
    sample_marks,
)
from schemas.records import ControllerEntry, DataPointDef, Event, RawMessage, Reading, SensorEntry

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
RAW = RawMessage("tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1", b"{}", received_at_ms=1_000_500)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def rows(n: int) -> RowBatch:
    reading = Reading("e4fd45f654be", "J1", 1, "Temperature", 25.0, "°C", T0, 7, 1, 3)
    return RowBatch(readings=[reading_row(reading, RAW)] * n)


class Writes:
    """A fake ``submit``: records batch sizes; futures complete when ``finish`` is called."""

    def __init__(self, refused: list | None = None) -> None:
        self.sizes: list[int] = []
        self.pending: list[Future] = []
        self.refused = refused or []

    def __call__(self, batch: RowBatch) -> Future:
        self.sizes.append(len(batch))
        future: Future = Future()
        self.pending.append(future)
        return future

    def finish(self) -> None:
        for future in self.pending:
            future.set_result(self.refused)
        self.pending = []


def batcher(clock: Clock, writes: Writes, n: int = 10, ms: int = 200) -> StoreBatcher:
    return StoreBatcher(writes, StoreSettings(batch_rows=n, batch_ms=ms), None, clock)


def test_flushes_at_max_rows():
    clock, writes = Clock(), Writes()
    logic = batcher(clock, writes, n=10)
    assert logic.on_item(rows(4)) == ([], StatefulLogic.RETAIN)
    assert logic.on_item(rows(5)) == ([], StatefulLogic.RETAIN)
    assert logic.on_item(rows(3)) == ([], StatefulLogic.RETAIN)  # written, not yet confirmed
    assert writes.sizes == [12]
    writes.finish()
    assert logic.on_notify() == ([], StatefulLogic.DISCARD)


def test_deadline_is_set_by_first_row_not_the_last():
    clock, writes = Clock(), Writes()
    logic = batcher(clock, writes, ms=200)
    logic.on_item(rows(1))
    deadline = logic.notify_at()
    assert deadline == T0 + timedelta(milliseconds=200)
    for _ in range(5):  # a steady trickle does not push the deadline (unlike op.collect)
        clock.now += timedelta(milliseconds=30)
        logic.on_item(rows(1))
        assert logic.notify_at() == deadline
    assert writes.sizes == []
    clock.now = deadline
    logic.on_notify()
    assert writes.sizes == [6]
    assert logic.notify_at() == deadline + timedelta(milliseconds=5)  # polls the write
    writes.finish()
    assert logic.on_notify() == ([], StatefulLogic.DISCARD)
    assert logic.notify_at() is None


def test_a_buffer_due_during_a_write_keeps_filling_and_goes_when_the_write_ends():
    clock, writes = Clock(), Writes()
    logic = batcher(clock, writes, n=4)
    logic.on_item(rows(4))  # in flight
    logic.on_item(rows(1))
    clock.now += timedelta(milliseconds=300)
    assert logic.on_notify() == ([], StatefulLogic.RETAIN)  # due, still waiting for the write
    logic.on_item(rows(1))
    assert writes.sizes == [4]
    assert logic.notify_at() == clock.now + timedelta(milliseconds=5)  # polls the write
    writes.finish()
    logic.on_notify()
    assert writes.sizes == [4, 2]  # as soon as the first ended
    assert len(pending_rows(logic.snapshot())) == 2


def test_the_flow_waits_for_the_write_in_flight_at_the_buffer_limit():
    clock, writes = Clock(), Writes()
    logic = batcher(clock, writes, n=2)
    logic.on_item(rows(2))
    pending = writes.pending[0]
    for _ in range(BUFFER_LIMIT - 1):
        logic.on_item(rows(2))
    assert writes.sizes == [2] and not pending.done()
    threading.Timer(0.05, writes.finish).start()
    logic.on_item(rows(2))  # BUFFER_LIMIT x batch_rows buffered: waits for the first write
    assert pending.done() and writes.sizes == [2, 2 * BUFFER_LIMIT]


def test_rows_of_large_payloads_are_written_by_bytes_before_rows():
    """Rows keep their message alive: a buffer keeping ``BATCH_PAYLOAD_BYTES`` is full however
    few rows it has, and the flow waits for the write in flight before taking more."""
    clock, writes = Clock(), Writes()
    logic = batcher(clock, writes, n=1000)
    half = rows(3)
    half.payload_bytes = BATCH_PAYLOAD_BYTES // 2
    logic.on_item(half)
    assert writes.sizes == []
    second = rows(3)
    second.payload_bytes = BATCH_PAYLOAD_BYTES // 2
    logic.on_item(second)
    assert writes.sizes == [6]  # 6 rows, not 1,000: their payloads made it full
    pending = writes.pending[0]
    threading.Timer(0.05, writes.finish).start()
    logic.on_item(second)
    logic.on_item(second)  # full again: waits for the write in flight
    assert pending.done() and writes.sizes == [6, 6]


def test_a_batch_counts_the_payload_bytes_of_what_it_extends():
    batch = RowBatch(payload_bytes=5)
    batch.extend(RowBatch(payload_bytes=7))
    assert batch.payload_bytes == 12


def test_snapshot_holds_the_write_in_flight_and_the_buffer():
    clock, writes = Clock(), Writes()
    logic = batcher(clock, writes, n=3)
    logic.on_item(rows(3))  # in flight
    logic.on_item(rows(1))  # buffered
    snap = logic.snapshot()
    assert len(pending_rows(snap)) == 4
    logic.on_item(rows(1))
    assert len(pending_rows(snap)) == 4  # a copy: later items do not leak into the snapshot
    resumed = StoreBatcher(writes, StoreSettings(), snap, clock)
    assert resumed.notify_at() == T0 + timedelta(milliseconds=StoreSettings().batch_ms)
    writes.finish()
    threading.Timer(0.05, writes.finish).start()
    resumed.on_eof()
    assert writes.sizes[-1] == 4


def test_a_snapshot_keeps_every_row_and_each_message_once():
    other = RawMessage(
        "tele/f2-e4fd45f654be/alarm-mode/J2/input-3", b"\x00\xff", 7, 1, True, "raw", 2, 9
    )
    reading = Reading("e4fd45f654be", "J1", 1, "Temperature", -2.5, "°C", T0, 7, 1, 3)
    events = [
        Event("e4fd45f654be", "J2", "input-3", "state", value, T0, 4, 5)
        for value in (True, 12.5, "open")
    ]
    batch = RowBatch(
        readings=[
            reading_row(reading, RAW),
            reading_row(reading, RAW),
            reading_row(reading, other),
        ],
        events=[event_row(event, other) for event in events],
        entries=[ControllerEntry("e4fd45f654be", 4, version=5)],
        marks=[mark(T0, RAW), mark(T0, other)],
        payload_bytes=len(RAW.payload) + len(other.payload),
    )
    data = pending_bytes(batch)
    assert pending_rows(data) == batch
    assert data.count(b"alarm-mode") == 1  # the message once, not once per row


def test_resumes_from_a_pickled_row_batch_of_an_earlier_version():
    clock, writes = Clock(), Writes()
    resumed = StoreBatcher(writes, StoreSettings(), rows(3), clock)
    threading.Timer(0.05, writes.finish).start()
    resumed.on_eof()
    assert writes.sizes == [3]


def test_refused_rows_are_emitted():
    writes = Writes(refused=["r"])
    logic = StoreBatcher(writes, StoreSettings(batch_rows=1), None, Clock())
    assert logic.on_item(rows(1)) == ([], StatefulLogic.RETAIN)
    writes.finish()
    assert logic.on_notify() == (["r"], StatefulLogic.DISCARD)


def test_reading_row_columns_and_origin():
    reading = Reading("e4fd45f654be", "J1", 1, "Temperature", 25.0, "°C", T0, 7, 11, 3)
    row = reading_row(reading, RAW)
    assert row.columns() == (T0, 7, 11, 25.0, 3)
    assert len(row.columns()) == len(READING_COLUMNS)
    assert (row.raw, row.label) == (RAW, "Temperature")


def test_event_row_puts_the_value_in_the_column_of_its_type():
    def values(value):
        event = Event("e4fd45f654be", "J3", "strike-1", "status", value, T0, 5, 2)
        row = event_row(event, RAW)
        columns = row.columns()
        assert columns[:6] == (T0, 5, "e4fd45f654be", "J3", "strike-1", "status")
        assert columns[9] == 2 and len(columns) == len(EVENT_COLUMNS)
        assert (row.raw, row.label) == (RAW, "status")
        return columns[6:9]

    assert values(True) == (True, None, None)
    assert values(False) == (False, None, None)
    assert values(27.5) == (None, 27.5, None)
    assert values("A1B2") == (None, None, "A1B2")


def test_latency_mark_is_device_and_receive_time():
    assert mark(T0, RAW) == (T0, 1000500)
    assert mark_seconds(mark(T0, RAW)) == (T0.timestamp(), 1000.5)


def test_latency_samples_every_fourth_message_across_writes():
    marks = [(T0, n) for n in range(10)]
    first, phase = sample_marks(marks[:6], 0)
    second, phase = sample_marks(marks[6:], phase)
    received = [round(r * 1000) for _, r in first + second]
    assert received == list(range(0, 10, LATENCY_STRIDE))
    assert phase == (-10) % LATENCY_STRIDE
    assert sample_marks([], 3) == ([], 3)


def test_snapshot_marks_of_an_earlier_version_read_as_marks():
    saved = msgspec.msgpack.encode([[RAW], [], [], [], [[T0.timestamp(), 1000.5]], 0])
    assert pending_rows(saved).marks == [(T0, 1000500)]


def test_dimension_rows_keep_the_newest_entry_per_controller():
    point = DataPointDef(1, "Temperature", "Int16", 0, 2, 2, append=" °C")
    sensor = SensorEntry(7, 2, "ENV-S1", "modbus-rtu", (point,))
    old = ControllerEntry("e4fd45f654be", 1, version=3, sensors={"1:1": sensor})
    new = ControllerEntry("e4fd45f654be", 1, version=4, sensors={"4:3": sensor})
    controllers, sensors, points = dimension_rows([old, new])
    assert controllers == [(1, "e4fd45f654be", "UTC", 4)]
    assert sensors == [(7, 1, 4, 3, 2, "ENV-S1", "modbus-rtu", 4)]
    assert points[0][:6] == (1, 2, "Temperature", "Int16", "ABCD", "°C")
