"""The decode flow's per-batch step: raw messages (+ registry changes) to rows and Kafka records.

Delivery guarantee: none of its own (pure mapping plus registry lookups); it never raises for a
bad message: every problem is a dead letter (:func:`schemas.wire.dead_letter`) with its reason, at
most one per (reason, label) and message (a message over an input limit is one). Per input batch
it returns one :class:`DecodeOutput`: the rows for storage, the ``decoded_iot_data`` records (one
per reading or event, :func:`schemas.wire.decoded_json`) and the dead letters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import msgspec
from prometheus_client import Counter

from connectors.registry_store import RegistryChange, RegistryStore
from connectors.store_rows import Rejected, RowBatch, event_row, mark, reading_row
from schemas.decode import decode_message
from schemas.privacy import hash_card_id
from schemas.reasons import ALL_REASONS, STORE_REJECTED
from schemas.records import ControllerEntry, DecodeError, Event, RawMessage, Reading
from schemas.settings import InputLimits, PrivacySettings
from schemas.topics import mac_from_topic
from schemas.wire import KafkaRecord, dead_letter, decoded_json

MESSAGES = Counter("f2_decode_messages", "Raw messages decoded", ["outcome"])
READINGS = Counter("f2_decode_readings", "Readings decoded")
EVENTS = Counter("f2_decode_events", "Events decoded")
ERRORS = Counter("f2_decode_errors", "Dead-lettered errors by reason", ["stage", "reason"])
for _reason in ALL_REASONS:
    ERRORS.labels("store" if _reason == STORE_REJECTED else "decode", _reason)
_OK, _PARTIAL, _FAILED = (MESSAGES.labels(o) for o in ("ok", "partial", "failed"))


_encode = msgspec.json.Encoder().encode


class DecodeOutput(msgspec.Struct, gc=False):
    """What one input batch produced."""

    rows: RowBatch
    decoded: list[KafkaRecord]
    dlq: list[KafkaRecord]


def rejected_record(rejected: Rejected, topic: str) -> KafkaRecord:
    """The dead-letter record of a row the database refused (``stage=store``)."""
    ERRORS.labels("store", STORE_REJECTED).inc()
    raw, detail, label = rejected.raw, rejected.detail, rejected.label
    return dead_letter(raw, STORE_REJECTED, detail, "store", topic, label)


class DecodeStep:
    """``flat_map_batch`` mapper: decodes a batch with this worker's registry store."""

    def __init__(
        self,
        store_for: Callable[[], RegistryStore],
        decoded_topic: str,
        dlq_topic: str,
        privacy: PrivacySettings,
        limits: InputLimits,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store_for = store_for
        self._decoded_topic = decoded_topic
        self._dlq_topic = dlq_topic
        self._now = now
        self._limits = limits
        # Reader values (card ids) are credentials: with a key configured they are replaced by
        # their keyed hash before they reach storage or decoded_iot_data (the raw archive and the
        # DLQ keep the original payload; give those topics a short retention or restrict them).
        self._reader_key = privacy.key

    def __call__(self, items: list[RawMessage | RegistryChange]) -> Iterable[DecodeOutput]:
        store = self._store_for()
        now = self._now()
        rows = RowBatch()
        decoded: list[KafkaRecord] = []
        dlq: list[KafkaRecord] = []
        decoded_topic, dlq_topic, limits = self._decoded_topic, self._dlq_topic, self._limits
        seen: dict[str, ControllerEntry | None] = {}  # this batch's lookups
        outcomes = [0, 0, 0]  # ok, partial, failed
        n_readings = n_events = held = 0
        readings = rows.readings
        for raw in items:
            if type(raw) is RegistryChange:
                store.apply(raw)
                seen.clear()
                continue
            mac = mac_from_topic(raw.topic)
            entry = None
            if mac is not None:
                if mac in seen:
                    entry = seen[mac]
                else:
                    entry, loaded = store.lookup(mac)
                    seen[mac] = entry
                    if loaded and entry is not None:
                        rows.entries.append(entry)
            key = mac.encode() if mac else None
            stored_time = None
            failed = 0
            dead: set[tuple[str, str | None]] | None = None
            for item in decode_message(raw, entry, now, limits):
                kind = type(item)
                if kind is DecodeError:
                    failed += 1
                    if dead is None:
                        dead = set()
                    elif (item.reason, item.label) in dead:
                        continue  # one dead letter per (reason, label) and message
                    dead.add((item.reason, item.label))
                    ERRORS.labels("decode", item.reason).inc()
                    dlq.append(
                        dead_letter(raw, item.reason, item.detail, "decode", dlq_topic, item.label)
                    )
                    continue
                if stored_time is None:  # one timestamp per message
                    stored_time = item.time
                if kind is Reading:
                    decoded.append(KafkaRecord(decoded_topic, key, _encode(item)))
                    readings.append(reading_row(item, raw))
                    n_readings += 1
                else:
                    if self._reader_key is not None:
                        item = _private(item, self._reader_key)
                    rows.events.append(event_row(item, raw))
                    decoded.append(KafkaRecord(decoded_topic, key, decoded_json(item)))
                    n_events += 1
            if stored_time is not None:
                rows.marks.append(mark(stored_time, raw))
                held += len(raw.payload)
            outcomes[0 if not failed else 1 if stored_time is not None else 2] += 1
        for counter, count in zip((_OK, _PARTIAL, _FAILED), outcomes, strict=True):
            counter.inc(count)
        READINGS.inc(n_readings)
        EVENTS.inc(n_events)
        rows.payload_bytes = held
        return [DecodeOutput(rows, decoded, dlq)]


def _private(event: Event, key: bytes) -> Event:
    """``event`` with a reader's text value replaced by its keyed hash."""
    if event.component.startswith("reader-") and type(event.value) is str:
        return msgspec.structs.replace(event, value=hash_card_id(event.value, key))
    return event
