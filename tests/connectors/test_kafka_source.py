"""The raw source's offset bookkeeping: resume offset and skipped-offset counting."""

from __future__ import annotations

from connectors.kafka_source import OFFSET_GAPS, _RawPartition


class Record:
    """What ``Consumer.consume`` returns, reduced to what the source reads."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def headers(self) -> list[tuple[str, bytes]]:
        return [("mqtt_topic", b"tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1")]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000)

    def value(self) -> bytes:
        return b"{}"

    def offset(self) -> int:
        return self._offset


class Batches:
    def __init__(self, *batches: list[int]) -> None:
        self.batches = [[Record(o) for o in batch] for batch in batches]

    def consume(self, _count: int, _timeout: float) -> list[Record]:
        return self.batches.pop(0) if self.batches else []


class NoLag:
    def update(self, _consumer: object, _offset: int) -> None:
        pass


def partition(consumer: Batches, offset: int) -> _RawPartition:
    part = _RawPartition.__new__(_RawPartition)
    part._consumer, part._topic, part._partition = consumer, "raw", 0
    part._offset, part._batch, part._idle, part._lag = offset, 100, False, NoLag()
    return part


def gaps() -> float:
    return OFFSET_GAPS._value.get()


def test_contiguous_offsets_count_no_gap_and_set_the_resume_offset() -> None:
    before = gaps()
    part = partition(Batches([5, 6, 7], [8, 9]), 5)
    assert [r.source_offset for r in part.next_batch()] == [5, 6, 7]
    assert [r.source_offset for r in part.next_batch()] == [8, 9]
    assert part.snapshot() == 10
    assert gaps() == before


def test_a_skipped_offset_is_counted_within_and_across_batches() -> None:
    before = gaps()
    part = partition(Batches([5, 6, 9], [12, 13]), 5)
    part.next_batch()
    part.next_batch()
    assert part.snapshot() == 14
    assert gaps() == before + 2


def test_the_first_record_read_from_the_beginning_is_not_a_gap() -> None:
    before = gaps()
    part = partition(Batches([40, 41]), -2)  # OFFSET_BEGINNING: the log may start anywhere
    part.next_batch()
    assert gaps() == before
