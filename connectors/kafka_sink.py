"""Checked Kafka sinks for Bytewax: an epoch completes only when Kafka stored every record of it.

Delivery guarantee: at-least-once. Records are produced with ``acks=all`` on an idempotent
producer; only failed deliveries get a report (``delivery.report.only.error``), and a failed
record is never dropped. What happens to it depends on its failure class
(``connectors.failures``):

- *transient* (brokers or leaders unavailable, timeouts): produced again after a capped backoff
  (counted in ``f2_kafka_sink_retries_total``), for as long as it takes, so while Kafka is down the
  worker blocks and upstream acks wait with it.
- *row* (the producer or the broker refuses the record for its size): the record is replaced by a
  dead letter, reason ``undeliverable`` with the sink's ``stage``, on the dead-letter
  topic; where that topic refuses it too, the dead letter holds the first 64 KiB of the value
  (less if that is still refused) with the headers ``original_size`` and ``sha256``. The flow goes
  on; the epoch completes once the dead letter is stored.
- *blocked* (authentication, authorisation, a missing topic, a bad configuration): the flow holds
  (nothing acknowledged, nothing lost), the records are produced again every
  :data:`BLOCKED_RETRY_S` seconds, and ``f2_kafka_blocked`` is 1 with the error in
  ``f2_blocked_reason`` until a delivery succeeds.

A fatal idempotent-producer error (e.g. the broker lost the producer's state) makes every
unconfirmed record of the round be produced again on a new producer. Records can be duplicated (a
retry, a replayed epoch); never lost.

Two sinks, one delivery engine:

- :class:`CheckedKafkaSink` (``DynamicSink``): ``write_batch`` returns only once every record of
  the batch is confirmed. For flows WITHOUT recovery (ingest): there the epoch probe covers the
  outputs, so the MQTT acks of an epoch wait for this sink. Memory: one batch.
- :class:`CheckedKafkaPartitionedSink` (``FixedPartitionedSink``, keyed input): ``write_batch``
  produces, ``snapshot()`` (taken per epoch after the partition wrote that epoch's items) returns
  only once everything written is confirmed, so a recovery commit implies its epoch is in Kafka.
  For flows WITH recovery (decode; why not the dynamic sink: docs/ARCHITECTURE.md, D1). Memory:
  about one epoch of records in the producer's queue (bounded; a full queue waits).

Configuration: the ``config`` dict (any librdkafka setting: the flows pass the client settings of
``F2_KAFKA_<SETTING>`` and ``bootstrap.servers``) over :data:`DEFAULTS`. The producer's queue is
bounded (``queue.buffering.max.kbytes``, 64 MiB by default): a full queue waits.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from operator import attrgetter
from zlib import adler32

import msgspec
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter, Gauge

from connectors import failures
from connectors.failures import (
    BLOCKED,
    ROW,
    TRANSIENT,
    Failure,
    Hold,
    RetryPolicy,
    kafka_failure,
    retry,
)
from connectors.per_thread import PerThread
from schemas.reasons import UNDELIVERABLE
from schemas.wire import KafkaRecord, truncated, undeliverable

log = logging.getLogger("f2.kafka_sink")

DELIVERED = Counter(
    "f2_kafka_sink_delivered",
    'Records Kafka confirmed (partition is "any": only failures get a per-record report)',
    ["topic", "partition"],
)
RETRIES = Counter(
    "f2_kafka_sink_retries", "Records produced again after a failed delivery", ["topic", "reason"]
)
PRODUCER_RESETS = Counter(
    "f2_kafka_sink_producer_resets", "Producers rebuilt after a failed delivery round", ["reason"]
)
CLIENT_ERRORS = Counter(
    "f2_kafka_sink_client_errors", "librdkafka client-level errors (it retries)", ["reason"]
)
IN_FLIGHT = Gauge("f2_kafka_sink_in_flight", "Records produced and not yet confirmed", ["worker"])
KAFKA_BLOCKED = Gauge(
    "f2_kafka_blocked",
    "1 while Kafka refuses this process's records for a setup reason (failure class blocked:"
    " authentication, authorisation, a missing topic): the flow holds; f2_blocked_reason says why",
)
UNDELIVERABLE_RECORDS = Counter(
    "f2_kafka_sink_undeliverable",
    "Records Kafka refused for their size, dead-lettered as undeliverable (stage: the flow's)",
    ["topic", "stage"],
)
TRUNCATED = Counter(
    "f2_kafka_sink_dead_letters_truncated",
    "Dead letters the dead-letter topic refused for their size, stored truncated",
    ["topic"],
)

DEFAULTS: dict[str, object] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
    # Surface a stuck delivery to the retry loop (and its metric) instead of waiting 5 minutes.
    "message.timeout.ms": 10000,
    "queue.buffering.max.messages": 200000,
    # Bounded memory: a full queue waits (BufferError, polled) instead of growing to 1 GiB.
    "queue.buffering.max.kbytes": 65536,
}
BLOCKED_RETRY_S = 15.0
RETRY_POLICY = RetryPolicy(first_s=0.2, max_s=10.0, blocked_s=BLOCKED_RETRY_S)
_TOPIC_OF = attrgetter("topic")


class DeadLetters(msgspec.Struct, frozen=True):
    """Where a sink sends the records Kafka refuses for their size: the dead-letter ``topic``,
    the ``stage`` named in their headers, and ``count`` called once per dead letter (the flow's
    ``undeliverable`` counter)."""

    topic: str
    stage: str
    count: Callable[[], None] | None = None


class DeliveryFailed(Exception):
    """A delivery round left records to produce again, the worst failure class among them."""

    def __init__(self, failure: Failure, error: KafkaError) -> None:
        super().__init__(error.str())
        self.failure = failure
        self.sqlstate = _reason(error)  # read by failures.sqlstate_of: the code in logs and hold


def _delivery_failure(exc: BaseException) -> Failure | None:
    return exc.failure if isinstance(exc, DeliveryFailed) else None


def dead_letter(record: KafkaRecord, error: KafkaError, dlq: DeadLetters) -> KafkaRecord | None:
    """What to produce instead of ``record``, which Kafka refused for its size: for another
    topic, its :func:`~schemas.wire.undeliverable` dead letter; a dead letter,
    :func:`~schemas.wire.truncated` (None: the dead-letter topic cannot hold even its minimum)."""
    if record.topic != dlq.topic:
        detail = f"{error.str()}: {len(record.value)} bytes for {record.topic}"
        return undeliverable(record, detail, dlq.stage, dlq.topic)
    return truncated(record)


def producer_config(config: Mapping[str, object]) -> dict[str, object]:
    """The producer defaults, then ``config`` (the client settings and bootstrap servers: wins)."""
    return {**DEFAULTS, **config}


def _is_fatal(exc: BaseException) -> bool:
    """True if ``exc`` (or its cause) carries a fatal librdkafka error."""
    while exc is not None:
        if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
            return exc.args[0].fatal()
        exc = exc.__cause__ or exc.__context__
    return False


def _reason(error: KafkaError) -> str:
    return (error.name() or str(error.code())).lstrip("_").lower()


class _Delivery:
    """One producer and its delivery bookkeeping (one per worker thread; not thread-safe).

    ``produce`` hands records to librdkafka; ``settle`` returns once every record produced since
    the last ``settle`` is confirmed, producing failed ones again (or their dead letters). Only
    failures get delivery reports (``delivery.report.only.error``, one callback for the producer,
    none per record): a successful record costs no Python call, and a failed one is rebuilt from
    its report.
    """

    def __init__(
        self,
        config: dict[str, object],
        worker: str,
        dead_letters: DeadLetters | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._config = config
        self._dlq = dead_letters
        self._policy = policy or RETRY_POLICY
        self._failed: list[tuple[KafkaError, Message]] = []
        self._producer = self._new_producer()
        self._batch: list[list[KafkaRecord]] = []
        self._in_flight = IN_FLIGHT.labels(worker)
        self._produced = 0
        self._hold = Hold("kafka", KAFKA_BLOCKED)

    def _new_producer(self) -> Producer:
        return Producer(
            {
                **self._config,
                "delivery.report.only.error": True,
                "on_delivery": self._on_failure,
                "error_cb": self._on_client_error,
            }
        )

    def _on_client_error(self, error: KafkaError) -> None:
        CLIENT_ERRORS.labels(_reason(error)).inc()
        log.warning(
            "kafka client error (librdkafka retries)",
            extra={"stage": "kafka_sink", "reason": _reason(error), "detail": error.str()},
        )
        if kafka_failure(error) is BLOCKED:  # e.g. authentication: deliveries will time out
            self._hold.enter(_reason(error), error.str())

    def _on_failure(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed.append((error, message))

    def produce(self, records: list[KafkaRecord]) -> bool:
        """Hand ``records`` to the producer (waiting while its queue is full); True if fatal."""
        self._batch.append(records)
        producer = self._producer
        produce = producer.produce
        replaced = False
        for index, record in enumerate(records):
            while True:
                try:
                    if record.partition is None:
                        if record.headers:
                            produce(record.topic, record.value, record.key, headers=record.headers)
                        else:  # no headers argument at all: half the cost of an empty list
                            produce(record.topic, record.value, record.key)
                    else:
                        produce(
                            record.topic,
                            record.value,
                            record.key,
                            partition=record.partition,
                            headers=record.headers,
                        )
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    error: KafkaError = exc.args[0]
                    if error.fatal():
                        return True
                    record = self._refused(record, error)
                    if not replaced:  # the caller's list stays as it was
                        records = self._batch[-1] = list(records)
                        replaced = True
                    records[index] = record
        self._produced += len(records)
        self._in_flight.set(self._produced)
        return False

    def _refused(self, record: KafkaRecord, error: KafkaError) -> KafkaRecord:
        """What to produce instead of ``record``, which ``produce`` refused with ``error``: its
        dead letter if it is too large, else the record itself after the class's wait."""
        failure = kafka_failure(error)
        if failure is ROW:
            replacement = self._dead_letter(record, error)
            if replacement is not None:
                return replacement
            failure = BLOCKED
        if failure is BLOCKED:
            self._hold.enter(_reason(error), error.str())
            RETRIES.labels(record.topic, _reason(error)).inc()
            failures.pause(self._policy.blocked_s)
        else:
            failures.pause(self._policy.first_s)
        return record

    def _dead_letter(self, record: KafkaRecord, error: KafkaError) -> KafkaRecord | None:
        """The dead letter of a record refused for its size (None: it cannot be stored at all)."""
        if self._dlq is None:
            return None
        replacement = dead_letter(record, error, self._dlq)
        if replacement is None:
            return None
        if record.topic == self._dlq.topic:
            TRUNCATED.labels(record.topic).inc()
            what = "dead letter stored truncated (the dead-letter topic refused its size)"
        else:
            UNDELIVERABLE_RECORDS.labels(record.topic, self._dlq.stage).inc()
            if self._dlq.count is not None:
                self._dlq.count()
            what = "record refused by Kafka for its size; dead-lettered as undeliverable"
        log.warning(
            what,
            extra={
                "stage": self._dlq.stage,
                "reason": UNDELIVERABLE,
                "topic": record.topic,
                "bytes": len(record.value),
                "detail": error.str(),
            },
        )
        return replacement

    def settle(self, fatal: bool = False) -> None:
        """Return once every record produced so far is confirmed (module docstring: failures are
        produced again, dead-lettered, or held, by class)."""
        if not self._batch:
            return
        pending: list[KafkaRecord] = []

        def attempt() -> None:
            nonlocal fatal, pending
            if pending:
                fatal = self.produce(pending) or fatal
                pending = []
            pending, failure, error = self._round(fatal)
            fatal = False
            if pending:
                raise DeliveryFailed(failure, error)

        retry(attempt, _delivery_failure, "kafka", self._policy, self._hold)

    def _round(self, fatal: bool) -> tuple[list[KafkaRecord], Failure, KafkaError | None]:
        """Wait for the outstanding records; the ones to produce again (producer rebuilt), the
        worst failure class among them and its error."""
        left = 1
        while left and not fatal:
            try:
                left = self._producer.flush(1.0)
            except (KafkaException, SystemError) as exc:
                # A fatal producer error surfaces from flush() itself (e.g. a restarted broker
                # that lost the idempotent producer's id).
                if not _is_fatal(exc):
                    raise
                fatal = True
            self._in_flight.set(left)
        self._in_flight.set(0)
        batch, failed = self._batch, self._failed
        self._batch, self._failed, self._produced = [], [], 0
        reasons: Tally[str] = Tally()
        retry_records: list[KafkaRecord] = []
        worst, worst_error = TRANSIENT, None
        behind, alike = _produced_records(batch, failed)
        for (error, _message), record in zip(failed, behind, strict=True):
            failure = kafka_failure(error)
            if failure is ROW:
                replacement = self._dead_letter(record, error)
                if replacement is not None:
                    retry_records.append(replacement)
                    continue
                failure = BLOCKED
            if failure is BLOCKED or worst_error is None:
                worst, worst_error = failure, error
            fatal = fatal or error.fatal()
            reasons[_reason(error)] += 1
            retry_records.append(record)
        if alike:
            reasons["unconfirmed"] += len(alike)
            retry_records.extend(alike)
        if fatal:
            # Which records the broker stored is unknown: produce all of them again.
            retry_records = [record for records in batch for record in records]
            reasons = Tally({"unconfirmed": len(retry_records)})
            worst_error = worst_error or KafkaError(KafkaError._FATAL)
        delivered: Tally[str] = Tally()
        for records in batch:
            delivered.update(map(_TOPIC_OF, records))  # counted in C: this runs per record
        for record in retry_records:
            delivered[record.topic] -= 1
        for topic, count in delivered.items():
            DELIVERED.labels(topic, "any").inc(max(count, 0))
        if retry_records:
            for reason, count in reasons.items():
                RETRIES.labels(retry_records[0].topic, reason).inc(count)
            # After a failed round the idempotent producer's sequence state may no longer match
            # the broker's (a restarted broker forgets producer ids; timed-out batches leave
            # gaps), which can stall its retries: produce the retries on a fresh producer.
            self._reset_producer("fatal" if fatal else "failed_delivery")
        return retry_records, worst, worst_error or KafkaError(KafkaError._FAIL)

    def _reset_producer(self, reason: str) -> None:
        PRODUCER_RESETS.labels(reason).inc()
        log.warning("kafka producer rebuilt", extra={"stage": "kafka_sink", "reason": reason})
        self._producer = self._new_producer()

    def close(self) -> None:
        self.settle()
        self._producer.flush(10.0)


def _produced_records(
    batch: list[list[KafkaRecord]], failed: list[tuple[KafkaError, Message]]
) -> tuple[list[KafkaRecord], list[KafkaRecord]]:
    """The records as produced behind each failed delivery report (in ``failed``'s order), and
    the others that cannot be told apart from a failed one (to be produced again as well).

    A delivery report has no headers (confluent-kafka-python never fills them in: issue #574),
    so a record rebuilt from its report would lose ``mqtt_topic``, ``received_at`` and the rest:
    decode would dead-letter it as a bad topic. The report's topic, key and value find the
    record it came from; when several records share them but differ in headers or partition
    and only some failed, all of them are produced again (a duplicate, never a loss). Runs only
    after a failed round.
    """
    if not failed:
        return [], []
    contents = [(message.topic(), message.key(), message.value()) for _error, message in failed]
    wanted = Tally(contents)
    same: dict[tuple[str, bytes | None, bytes], list[KafkaRecord]] = {}
    for records in batch:
        for record in records:
            content = (record.topic, record.key, record.value)
            if content in wanted:
                same.setdefault(content, []).append(record)
    matched: list[KafkaRecord] = []
    extra: list[KafkaRecord] = []
    taken: Tally[tuple[str, bytes | None, bytes]] = Tally()
    for (_error, message), content in zip(failed, contents, strict=True):
        candidates, index = same.get(content, []), taken[content]
        taken[content] += 1
        if index >= len(candidates):  # not produced in this round (cannot happen)
            matched.append(_from_report(message))
            continue
        matched.append(candidates[index])
        if index == 0 and wanted[content] < len(candidates) and not _alike(candidates):
            extra.extend(candidates[wanted[content] :])  # which ones failed is unknown
    return matched, extra


def _alike(records: list[KafkaRecord]) -> bool:
    first = records[0]
    return all(r.headers == first.headers and r.partition == first.partition for r in records)


def _from_report(message: Message) -> KafkaRecord:
    """A record rebuilt from a failed delivery report alone (no headers: reports have none)."""
    partition = message.partition()
    return KafkaRecord(
        message.topic(),
        message.key(),
        message.value(),
        list(message.headers() or ()),
        partition if partition is not None and partition >= 0 else None,
    )


class _CheckedKafkaPartition(StatelessSinkPartition[KafkaRecord]):
    def __init__(
        self, config: dict[str, object], worker: str, dead_letters: DeadLetters | None
    ) -> None:
        self._delivery = _Delivery(config, worker, dead_letters)

    def write_batch(self, items: list[KafkaRecord]) -> None:
        """Produce ``items``; return once Kafka confirmed all of them (retrying failures)."""
        self._delivery.settle(self._delivery.produce(items))

    def close(self) -> None:
        self._delivery.close()


class CheckedKafkaSink(DynamicSink[KafkaRecord]):
    """Produces :class:`KafkaRecord` items; a batch completes only when Kafka stored all of it.

    ``config`` is librdkafka configuration (``bootstrap.servers`` at least); it overrides
    ``F2_KAFKA_*`` variables, which override :data:`DEFAULTS` (``acks=all``, idempotence on).
    One producer per worker. ``dead_letters`` says where records Kafka refuses for their size go
    (without it such a record holds the flow, like a ``blocked`` failure).
    """

    def __init__(self, config: dict, dead_letters: DeadLetters | None = None) -> None:
        self._config = producer_config(config)
        self._dead_letters = dead_letters

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CheckedKafkaPartition:
        return _CheckedKafkaPartition(self._config, str(worker_index), self._dead_letters)


class _CheckedKafkaPart(StatefulSinkPartition[KafkaRecord | list[KafkaRecord], None]):
    """One partition of :class:`CheckedKafkaPartitionedSink` (its worker's producer, shared)."""

    def __init__(self, delivery: _Delivery) -> None:
        self._delivery = delivery

    def write_batch(self, values: list[KafkaRecord | list[KafkaRecord]]) -> None:
        """Produce ``values``; their delivery is confirmed by this epoch's :meth:`snapshot`."""
        records = [r for v in values for r in (v if type(v) is list else (v,))]
        if self._delivery.produce(records):
            self._delivery.settle(fatal=True)

    def snapshot(self) -> None:
        """Return once every record written so far is confirmed by Kafka; no resume state."""
        self._delivery.settle()

    def close(self) -> None:
        self._delivery.close()


PART_PREFIX = "kafka-"


def part_key(record_key: bytes | None, parts: int) -> str:
    """The item key that sends records with Kafka key ``record_key`` to the partition of
    :class:`CheckedKafkaPartitionedSink` (with ``parts`` partitions) that keying them by
    ``record_key`` itself would (``adler32``): records of many devices bound for one partition
    can travel as one chunk, each device's records still on one partition."""
    return f"{PART_PREFIX}{adler32(record_key or b'') % parts}"


class CheckedKafkaPartitionedSink(FixedPartitionedSink[KafkaRecord | list[KafkaRecord], None]):
    """The checked sink as a stateful (partitioned) sink, for flows that run with recovery.

    Why: with recovery, an epoch's commit waits for the snapshots of stateful steps only. A
    :class:`CheckedKafkaSink` is a ``DynamicSink``, outside the recovery frontier (``recovery.rs``:
    it "does not monitor output progress"): the commit of epoch E can be written while E's records
    still wait in the sink's input, and a crash right then loses them, because the source resumes
    after E. This sink's partitions snapshot E only after they wrote E's items, and
    :meth:`_CheckedKafkaPart.snapshot` returns only once Kafka confirmed every record written so
    far (retrying failures like the dynamic sink), so the commit of E implies E is in Kafka.

    Input: a keyed stream ``(key, KafkaRecord)`` or ``(key, [KafkaRecord, ...])`` (a chunk: one
    Bytewax item for many records, much cheaper per record); key by the records' key (the MAC), or
    by :func:`part_key` of it (then one chunk can carry every record bound for a partition), so
    one device's records stay in order on one partition, and partitions spread over workers.
    ``parts`` is the number of partitions (the flow passes ``F2_DECODE_KAFKA_PARTS``): at least
    the most workers the flow may run with. All partitions on one worker share one producer.
    ``write_batch`` only produces; the wait for Kafka happens once per epoch in ``snapshot``
    (memory: about one epoch of records in the producer's queue; a full queue waits).
    """

    def __init__(self, config: dict, parts: int, dead_letters: DeadLetters | None = None) -> None:
        self._config = producer_config(config)
        self._parts = parts
        self._dead_letters = dead_letters
        self._deliveries: PerThread[_Delivery] = PerThread()

    def list_parts(self) -> list[str]:
        return [f"{PART_PREFIX}{n}" for n in range(self._parts)]

    def part_fn(self, item_key: str) -> int:
        """A :func:`part_key` routes to its partition; any other key as Bytewax's default does
        (``adler32``), which is the partition :func:`part_key` gives for that key."""
        if item_key.startswith(PART_PREFIX):
            return int(item_key[len(PART_PREFIX) :])
        return adler32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _CheckedKafkaPart:
        delivery = self._deliveries.get(
            None, lambda: _Delivery(self._config, for_part, self._dead_letters)
        )
        return _CheckedKafkaPart(delivery)
