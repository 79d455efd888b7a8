"""``f2 dlq redrive``: send dead-lettered messages back through decoding and storage.

Reads ``dlq_iot_data`` completely first (every partition from its oldest record up to ``--until``,
:mod:`connectors.replay_reader`), keeping the records that match the filters (``reason`` header,
the controller of the ``mqtt_topic`` header, the record's ``received_at`` header or Kafka timestamp
within ``[since, until]``). Records of one message count once: a message is identified by its
source record (``source_topic``/``source_partition``/``source_offset`` headers, i.e. its place in
the raw archive) or, without one, by ``mqtt_topic`` + value; so a message with several data-point
errors (``label`` headers) or dead-lettered twice is redriven once.

Each message (its original value and ``mqtt_topic``) is decoded as the decode flow does
(:class:`connectors.decode_step.DecodeStep`, current registry entries) and its rows are written by
the production writer (``INSERT ... ON CONFLICT DO NOTHING``): running it twice stores nothing
twice, and rows already stored are reported as such. A message that fails again is dead-lettered
again only when the failure is new: a (message, reason, label) the DLQ already holds is counted as
"failed again" and not produced twice, so repeated redrives do not grow the DLQ. New dead-letter
records keep the docs/PROTOCOL.md §5 headers with ``stage`` = where it failed this time (``decode``
or ``store``, as in the live flow) and the original ``source_*`` headers (they still point into the
raw archive), plus a ``redriven_at`` header (epoch ms of the run) telling them apart. The DLQ
itself is never rewritten (Kafka topics are append-only): redriven records stay in it until its
retention drops them.

Bounded memory is not a goal: the matched messages are held in memory between the two phases.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally

import msgspec
from prometheus_client import Counter

from connectors.decode_step import rejected_record
from connectors.kafka_config import client_config
from connectors.kafka_sink import CheckedKafkaSink
from connectors.replay_reader import header, retention_ms
from connectors.store_rows import RowBatch
from connectors.timeseries_writer import TimeseriesWriter, WriteCounts
from ops.recovery.replay import (
    Progress,
    TimeWindow,
    archive_reader,
    decode_step,
    horizon_note,
    iso_ms,
    registry_store,
    selected,
)
from schemas.records import RawMessage
from schemas.settings import Config
from schemas.wire import (
    LABEL,
    MQTT_TOPIC,
    REASON,
    REDRIVEN_AT,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    KafkaRecord,
    raw_message,
)

log = logging.getLogger("f2.redrive")

MESSAGES = Counter(
    "f2_redrive_messages", "Dead-lettered messages re-driven, by outcome", ["outcome"]
)
ROWS = Counter("f2_redrive_rows", "Rows written by f2 dlq redrive", ["table", "outcome"])
DEAD_LETTERED = Counter(
    "f2_redrive_dead_lettered", "Records dead-lettered again with a new reason", ["reason"]
)

Identity = tuple[object, ...]


class RedriveReport(msgspec.Struct):
    """What one ``f2 dlq redrive`` run did (messages = distinct dead-lettered messages)."""

    reason: str | None
    controller: str | None
    since: str | None
    until: str | None
    records_read: int = 0
    matched: int = 0
    messages: int = 0
    stored: int = 0
    dead_lettered: int = 0
    failed_again: int = 0
    empty: int = 0
    skipped: int = 0
    readings: WriteCounts = msgspec.field(default_factory=WriteCounts)
    events: WriteCounts = msgspec.field(default_factory=WriteCounts)
    new_reasons: dict[str, int] = msgspec.field(default_factory=dict)
    oldest_record: str | None = None
    horizon: str | None = None
    complete: bool = True
    unfinished_partitions: list[int] = msgspec.field(default_factory=list)
    seconds: float = 0.0


def identity(headers: dict[str, bytes], value: bytes | None) -> Identity:
    """The message a DLQ record is about: its raw-archive record, else ``mqtt_topic`` + value."""
    source, offset = headers.get(SOURCE_TOPIC), headers.get(SOURCE_OFFSET) or b"-1"
    try:
        place = (int(headers.get(SOURCE_PARTITION) or b"-1"), int(offset))
    except ValueError:
        place = (-1, -1)
    if source and place[1] >= 0:
        return ("source", source, *place)
    return ("mqtt", headers.get(MQTT_TOPIC), value or b"")


def dlq_key(headers: dict[str, bytes], value: bytes | None) -> Identity:
    """(message, reason, label): what makes a dead-letter record new."""
    return (identity(headers, value), headers.get(REASON), headers.get(LABEL))


def raw_of(headers: dict[str, bytes], value: bytes | None) -> RawMessage:
    """The original message of a DLQ record (``source_*`` kept, so new records point back)."""
    ident = identity(headers, value)
    source = ident[0] == "source"
    return raw_message(
        headers,
        value,
        0,
        (headers.get(SOURCE_TOPIC) or b"").decode("utf-8", "replace"),
        ident[2] if source else -1,
        ident[3] if source else -1,
    )


def run_redrive(
    config: Config,
    span: TimeWindow,
    reason: str | None,
    mac: str | None,
    progress: bool = True,
) -> RedriveReport:
    """Re-drive the matching DLQ records; the report of the run."""
    settings, rs = config.connections, config.replay
    started = time.monotonic()
    run_ms = int(time.time() * 1000)
    reader = archive_reader(config, settings.dlq_topic, span)
    report = RedriveReport(reason, mac, iso_ms(span.since_ms), iso_ms(span.until_ms))
    shown = Progress("redrive", rs, progress)
    present: set[Identity] = set()
    todo: dict[Identity, RawMessage] = {}
    wanted = None if reason is None else reason.encode()
    for batch in reader.batches():
        for msg in batch:
            headers = dict(msg.headers() or ())
            present.add(dlq_key(headers, msg.value()))
            if (wanted is not None and headers.get(REASON) != wanted) or not selected(
                msg, span, mac
            ):
                continue
            report.matched += 1
            if not header(msg, MQTT_TOPIC):
                report.skipped += 1
                continue
            todo.setdefault(identity(headers, msg.value()), raw_of(headers, msg.value()))
        shown.tick(reader, f"{len(todo)} messages to re-drive")
    report.records_read = reader.records
    report.messages = len(todo)
    _drive(config, list(todo.values()), present, run_ms, report)
    report.oldest_record = iso_ms(reader.oldest_ms)
    retention = retention_ms(settings.kafka_bootstrap, settings.dlq_topic, config.kafka_client)
    report.horizon = horizon_note(settings.dlq_topic, span.since_ms, reader.oldest_ms, retention)
    report.unfinished_partitions = reader.unfinished
    report.complete = not reader.unfinished
    report.seconds = round(time.monotonic() - started, 3)
    _record(report)
    return report


def _drive(
    config: Config,
    messages: list[RawMessage],
    present: set[Identity],
    run_ms: int,
    report: RedriveReport,
) -> None:
    """Decode and store ``messages``; dead-letter the new failures."""
    settings, rs = config.connections, config.replay
    store = registry_store(config)
    step = decode_step(config, store)
    writer = TimeseriesWriter(settings.timeseries_dsn, config.store)
    producer = client_config(settings.kafka_bootstrap, config.kafka_client)
    sink = CheckedKafkaSink(producer).build("redrive", 0, 1)
    stamp = str(run_ms).encode()
    reasons: Tally[str] = Tally()
    pending, outbox = RowBatch(), []

    def dead_letter(record: KafkaRecord) -> bool:
        headers = dict(record.headers)
        key = dlq_key(headers, record.value)
        if key in present:
            return False
        present.add(key)
        reasons[headers[REASON].decode()] += 1
        outbox.append(
            msgspec.structs.replace(record, headers=[*record.headers, (REDRIVEN_AT, stamp)])
        )
        return True

    def flush() -> None:
        for rejected in writer.write(pending):
            dead_letter(rejected_record(rejected, settings.dlq_topic))
        sink.write_batch(outbox)
        outbox.clear()

    try:
        for raw in messages:
            out = step([raw])[0]
            new = [dead_letter(record) for record in out.dlq]
            if len(out.rows):
                report.stored += 1
            elif any(new):
                report.dead_lettered += 1
            elif new:
                report.failed_again += 1
            else:
                report.empty += 1
            out.rows.marks.clear()  # no end-to-end latency samples for old messages
            pending.extend(out.rows)
            if len(pending) >= rs.batch_rows:
                flush()
                pending = RowBatch()
        flush()
    finally:
        writer.close()
        store.close()
        sink.close()
    report.readings = writer.counts["readings"]
    report.events = writer.counts["device_events"]
    report.new_reasons = dict(sorted(reasons.items()))


def _record(report: RedriveReport) -> None:
    """Metrics and the run's log line."""
    for outcome in ("stored", "dead_lettered", "failed_again", "empty", "skipped"):
        MESSAGES.labels(outcome).inc(getattr(report, outcome))
    MESSAGES.labels("duplicate").inc(report.matched - report.skipped - report.messages)
    for table, counts in (("readings", report.readings), ("device_events", report.events)):
        ROWS.labels(table, "inserted").inc(counts.inserted)
        ROWS.labels(table, "already_stored").inc(counts.unchanged)
        ROWS.labels(table, "rejected").inc(counts.rejected)
    for reason, count in report.new_reasons.items():
        DEAD_LETTERED.labels(reason).inc(count)
    log.info(
        "redrive finished",
        extra={
            "stage": "redrive",
            "reason": report.reason,
            "mac": report.controller,
            "since": report.since,
            "until": report.until,
            "records_read": report.records_read,
            "matched": report.matched,
            "messages": report.messages,
            "stored": report.stored,
            "dead_lettered": report.dead_lettered,
            "failed_again": report.failed_again,
            "skipped": report.skipped,
            "rows_inserted": report.readings.inserted + report.events.inserted,
            "rows_already_stored": report.readings.unchanged + report.events.unchanged,
            "rows_rejected": report.readings.rejected + report.events.rejected,
            "complete": report.complete,
            "horizon": report.horizon,
            "seconds": report.seconds,
        },
    )
