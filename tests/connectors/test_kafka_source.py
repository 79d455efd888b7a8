"""The raw source's offset bookkeeping: resume offset, and skipped offsets read again before they
are passed over (a broker that makes a later batch readable before an earlier one)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.kafka_source import OFFSET_GAPS, OffsetOrder, _RawPartition


class Record:
    """What ``Consumer.consume`` returns, reduced to what the source reads."""

    def __init__(self, offset: int, value: bytes = b"{}") -> None:
        self._offset, self._value = offset, value

    def error(self) -> None:
        return None

    def headers(self) -> list[tuple[str, bytes]]:
        return [("mqtt_topic", b"tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1")]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000)

    def value(self) -> bytes:
        return self._value

    def offset(self) -> int:
        return self._offset


class Batches:
    """A consumer that returns scripted batches, and records where it was told to read from."""

    def __init__(self, *batches: list[int], value: bytes = b"{}") -> None:
        self.batches = [[Record(o, value) for o in batch] for batch in batches]
        self.assigned: list[int] = []
        self.asked: list[int] = []

    def consume(self, count: int, _timeout: float) -> list[Record]:
        self.asked.append(count)
        return self.batches.pop(0)[:count] if self.batches else []

    def assign(self, partitions: list) -> None:
        self.assigned += [tp.offset for tp in partitions]


class NoLag:
    def update(self, _consumer: object, _offset: int) -> None:
        pass


def partition(consumer: Batches, offset: int, wait_s: float = 60.0) -> _RawPartition:
    part = _RawPartition.__new__(_RawPartition)
    part._consumer, part._topic, part._partition = consumer, "raw", 0
    part._order, part._batch, part._awake, part._lag = (
        OffsetOrder(offset, wait_s),
        100,
        None,
        NoLag(),
    )
    part._window, part._idle = timedelta(0), timedelta(milliseconds=10)
    part._ask = part._batch
    return part


def gaps(outcome: str) -> float:
    return OFFSET_GAPS.labels(outcome)._value.get()


def offsets(part: _RawPartition) -> list[int]:
    return [r.source_offset for r in part.next_batch()]


def test_contiguous_offsets_count_no_gap_and_set_the_resume_offset() -> None:
    before = [gaps(o) for o in ("filled", "skipped", "rewound")]
    consumer = Batches([5, 6, 7], [8, 9])
    part = partition(consumer, 5)
    assert offsets(part) == [5, 6, 7]
    assert offsets(part) == [8, 9]
    assert part.snapshot() == 10
    assert consumer.assigned == []
    assert [gaps(o) for o in ("filled", "skipped", "rewound")] == before


def test_a_gap_is_read_again_and_the_late_records_are_emitted_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "f2.decode")
    before = gaps("filled")
    # The broker first returns 9-10 past the missing 7-8, then, read again from 7, all of them.
    consumer = Batches([5, 6, 9, 10], [7, 8, 9, 10, 11])
    part = partition(consumer, 5)
    assert offsets(part) == [5, 6]
    assert consumer.assigned == [7]
    assert part.snapshot() == 7  # a crash now resumes at the missing records
    assert part.next_awake() is not None  # read again after a short wait, not in a busy loop
    assert offsets(part) == [7, 8, 9, 10, 11]
    assert part.snapshot() == 12
    assert gaps("filled") == before + 1
    late = [r for r in caplog.records if r.getMessage() == "kafka offsets arrived late"]
    assert [(r.records, r.detail.split(" ")[0]) for r in late] == [(2, "7..8")]  # type: ignore[attr-defined]


def test_a_gap_still_there_after_the_wait_is_passed_over_once() -> None:
    before = gaps("skipped")
    consumer = Batches([5, 6, 9], [12, 13])
    part = partition(consumer, 5, wait_s=0.0)
    assert offsets(part) == [5, 6, 9]
    assert offsets(part) == [12, 13]
    assert part.snapshot() == 14
    assert consumer.assigned == []
    assert gaps("skipped") == before + 2


def test_the_first_record_read_from_the_beginning_is_not_a_gap() -> None:
    before = gaps("skipped")
    part = partition(Batches([40, 41]), -2)  # OFFSET_BEGINNING: the log may start anywhere
    assert offsets(part) == [40, 41]
    assert gaps("skipped") == before


def test_the_wait_runs_from_when_the_gap_was_first_seen() -> None:
    order = OffsetOrder(10, wait_s=2.0)
    assert order.admit([10, 11, 14], now=100.0) == (2, True)
    assert order.next_offset == 12
    assert order.admit([14, 15], now=101.0) == (0, True)  # still missing, still waiting
    assert order.admit([14, 15], now=102.5) == (2, False)  # 2.5 s since first seen: passed over
    assert order.next_offset == 16
    assert order.admit([17], now=102.6) == (0, True)  # a new gap gets its own wait


def test_an_offset_going_back_is_emitted_and_counted() -> None:
    before = gaps("rewound")
    order = OffsetOrder(10, wait_s=2.0)
    assert order.admit([3, 4, 5], now=0.0) == (3, False)
    assert order.next_offset == 6
    assert gaps("rewound") == before + 1


def fetch(log: list[tuple[int, int, int]], start: int, now: int) -> list[int]:
    """What a Tansu-like broker returns for a fetch at ``start``: every record of every batch
    already stored, from ``start`` on, whatever is missing before them."""
    return [
        offset
        for first, size, stored_at in log
        if stored_at <= now
        for offset in range(first, first + size)
        if offset >= start
    ]


batches = st.lists(st.tuples(st.integers(1, 30), st.integers(0, 20)), min_size=1, max_size=30)


@settings(max_examples=300)
@given(batches)
def test_every_record_is_emitted_once_and_in_order_however_late_a_batch_is_stored(
    spec: list[tuple[int, int]],
) -> None:
    """Batches get consecutive offsets, and each is stored after its own delay (the broker's
    produce race). A consumer polls once per tick; with a wait longer than any delay nothing is
    skipped, duplicated or reordered."""
    log, first = [], 0
    for size, delay in spec:
        log.append((first, size, delay))
        first += size
    order = OffsetOrder(0, wait_s=25)
    emitted: list[int] = []
    for now in range(max(d for _, d in spec) + 3):
        got = fetch(log, order.next_offset, now)
        count, _reread = order.admit(got, now)
        emitted += got[:count]
    assert emitted == list(range(first))


def test_without_a_wait_a_late_batch_is_lost() -> None:
    """What the source did before: the consumer moves past a batch stored late, for good."""
    log = [(0, 5, 0), (5, 30, 3), (35, 5, 1)]  # 5-34 stored last
    order = OffsetOrder(0, wait_s=0)
    emitted: list[int] = []
    for now in range(6):
        got = fetch(log, order.next_offset, now)
        emitted += got[: order.admit(got, now)[0]]
    assert len(emitted) == 10 and 5 not in emitted


def test_batch_window_after_a_partial_poll_and_none_after_a_full_one() -> None:
    part = partition(Batches([5, 6], list(range(7, 107)), []), 5)
    part._window = timedelta(milliseconds=40)
    offsets(part)
    awake = part.next_awake()
    assert awake is not None  # 2 of 100: let records gather for the window
    assert awake - datetime.now(UTC) <= timedelta(milliseconds=40)
    assert len(offsets(part)) == 100
    assert part.next_awake() is None  # a full poll: more may be waiting
    assert offsets(part) == []
    assert part.next_awake() is not None  # idle


def test_large_payloads_make_the_next_batches_ask_for_fewer_records() -> None:
    """A batch is bounded by bytes too (``BATCH_BYTES``): after 64 KiB records, the source asks
    for what makes about 4 MiB; after small ones, for the full batch size again."""
    big = b"x" * 65536
    consumer = Batches(list(range(0, 100)), list(range(100, 200)), value=big)
    part = partition(consumer, 0)
    assert len(part.next_batch()) == 100  # the first ask knows nothing yet
    assert len(part.next_batch()) == 64  # 4 MiB of 64 KiB records
    assert consumer.asked == [100, 64]
    consumer.batches = [[Record(o) for o in range(164, 264)]]
    assert offsets(part)[:1] == [164] and consumer.asked[-1] == 64
    assert part._ask == 100  # small payloads again: the full batch
