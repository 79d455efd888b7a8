"""``f2 replay``: re-decode the raw archive for a time range with the current registry.

Reads ``raw_iot_data`` (every partition from its oldest record, :mod:`connectors.replay_reader`),
keeps the records whose ``received_at`` lies in ``[since, until]`` (and whose controller is
``--controller``, if given), decodes them exactly as the decode flow does
(:class:`connectors.decode_step.DecodeStep` with a fresh registry store, so current entries and the
current registry version) and writes the rows with the production writer in replace mode
(:class:`connectors.timeseries_writer.TimeseriesWriter` ``replace_older=True``): a reading whose
stored row has an older registry version and a different value is replaced (value and version), a
missing one is inserted, every other row is left alone. Events are written ``DO NOTHING``: their
values do not depend on the registry.

Safe while the live pipeline runs: both write through the unique keys; the live flow never
overwrites (``DO NOTHING``) and the replay only overwrites rows of an older registry version, so a
row the live flow decoded with a newer registry than the replay's is kept, and no key is ever
stored twice. Decode errors are counted, not dead-lettered again (the live flow dead-lettered them
when they first arrived); nothing is produced to Kafka. Running it twice changes nothing the
second time.

The replay horizon is the raw topic's retention: the command says when the requested range starts
before the oldest record the topic still holds. This module also holds what ``f2 dlq redrive``
(:mod:`ops.recovery.redrive`) shares with it: time parsing, the ``F2_REPLAY_*`` settings, progress
output and the horizon note.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import Counter as Tally
from datetime import UTC, datetime, timedelta

import msgspec
from prometheus_client import Counter, start_http_server

from connectors.decode_step import DecodeStep
from connectors.kafka_source import raw_message
from connectors.registry_store import RegistryStore
from connectors.replay_reader import TopicReader, header, record_time_ms, retention_ms
from connectors.store_rows import RowBatch
from connectors.timeseries_writer import TimeseriesWriter, WriteCounts
from schemas.settings import Config, ReplaySettings
from schemas.topics import mac_from_topic

log = logging.getLogger("f2.replay")

MESSAGES = Counter("f2_replay_messages", "Raw archive records seen by f2 replay", ["outcome"])
ROWS = Counter("f2_replay_rows", "Rows written by f2 replay", ["table", "outcome"])
ERRORS = Counter(
    "f2_replay_errors", "Decode errors met by f2 replay (not dead-lettered)", ["reason"]
)

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: datetime) -> datetime:
    """A time argument: ISO 8601 (no zone = UTC), ``now``, or an age like ``90m``/``36h``/``2d``."""
    value = text.strip()
    if value == "now":
        return now
    match = _RELATIVE.match(value)
    if match:
        return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a time: {text!r} (ISO 8601, 'now', or an age like 36h)") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class TimeWindow(msgspec.Struct, frozen=True):
    """``[since, until]`` in epoch ms (None: unbounded on that side)."""

    since_ms: int | None
    until_ms: int | None

    def contains(self, at_ms: int) -> bool:
        return (self.since_ms is None or at_ms >= self.since_ms) and (
            self.until_ms is None or at_ms <= self.until_ms
        )


def window(since: datetime | None, until: datetime | None) -> TimeWindow:
    """The window of two optional times (``until`` before ``since`` is refused)."""
    since_ms = None if since is None else int(since.timestamp() * 1000)
    until_ms = None if until is None else int(until.timestamp() * 1000)
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        raise ValueError("--until is before --since")
    return TimeWindow(since_ms, until_ms)


def iso_ms(at_ms: int | None) -> str | None:
    """Epoch ms as ISO 8601 UTC (None stays None)."""
    if at_ms is None:
        return None
    return datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="seconds")


def horizon_note(
    topic: str, since_ms: int | None, oldest_ms: int | None, retention: int | None
) -> str | None:
    """The warning when the range starts before the oldest record the topic holds, else None."""
    kept = "retention unknown" if retention is None else f"retention.ms {retention}"
    if oldest_ms is None:
        return f"{topic} holds no records ({kept}): nothing to read"
    if since_ms is None or since_ms >= oldest_ms:
        return None
    return (
        f"the requested range starts at {iso_ms(since_ms)}, before the oldest record in {topic} "
        f"({iso_ms(oldest_ms)}; {kept}): anything older is no longer in the archive"
    )


class Progress:
    """Progress lines on stderr, at most every ``every_s`` seconds or ``every_records`` records."""

    def __init__(self, command: str, settings: ReplaySettings, enabled: bool = True) -> None:
        self._command = command
        self._every_s = settings.progress_s
        self._every_records = settings.progress_records
        self._enabled = enabled
        self._started = self._last_at = time.monotonic()
        self._last_records = 0

    def tick(self, reader: TopicReader, detail: str) -> None:
        """Print a line if it is time (``detail``: the command's own counts so far)."""
        now = time.monotonic()
        due = now - self._last_at >= self._every_s
        if not self._enabled or not (
            due or reader.records - self._last_records >= self._every_records
        ):
            return
        self._last_at, self._last_records = now, reader.records
        left = reader.remaining()
        rate = reader.records / max(now - self._started, 1e-6)
        tail = "" if left is None else f", about {left} left"
        print(
            f"{self._command}: {reader.records} records read ({rate:.0f}/s{tail}); {detail}",
            file=sys.stderr,
            flush=True,
        )


def serve_metrics(settings: ReplaySettings) -> None:
    """Serve /metrics on ``F2_REPLAY_METRICS_PORT`` for the run (0: do not)."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port)


class ReplayReport(msgspec.Struct):
    """What one ``f2 replay`` run did."""

    since: str | None
    until: str | None
    controller: str | None
    records_read: int = 0
    replayed: int = 0
    readings: WriteCounts = msgspec.field(default_factory=WriteCounts)
    events: WriteCounts = msgspec.field(default_factory=WriteCounts)
    errors: dict[str, int] = msgspec.field(default_factory=dict)
    registry_version: int = 0
    oldest_record: str | None = None
    horizon: str | None = None
    complete: bool = True
    unfinished_partitions: list[int] = msgspec.field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_changed(self) -> int:
        """Rows inserted or replaced."""
        return (
            self.readings.inserted
            + self.readings.replaced
            + self.events.inserted
            + self.events.replaced
        )


def selected(msg: object, span: TimeWindow, mac: str | None) -> bool:
    """True if a raw/DLQ record is in ``span`` and (when given) from controller ``mac``."""
    if not span.contains(record_time_ms(msg)):
        return False
    if mac is None:
        return True
    topic = header(msg, "mqtt_topic")
    return topic is not None and mac_from_topic(topic.decode("utf-8", "replace")) == mac


def registry_store(config: Config) -> RegistryStore:
    """A fresh registry store (current entries, stamped with the current registry version)."""
    s = config.connections
    return RegistryStore(s.params_dsn, s.redis_url, config.registry)


def archive_reader(config: Config, topic: str, span: TimeWindow) -> TopicReader:
    """A reader of ``topic`` from its oldest record to ``--until`` (default now) + the margin."""
    rs = config.replay
    end_ms = span.until_ms if span.until_ms is not None else int(time.time() * 1000)
    return TopicReader(
        config.connections.kafka_bootstrap,
        topic,
        end_ms + int(rs.margin_s * 1000),
        rs.idle_s,
        client=config.kafka_client,
    )


def decode_step(config: Config, store: RegistryStore) -> DecodeStep:
    """The decode flow's step, with the configured privacy and input limits."""
    s = config.connections
    return DecodeStep(lambda: store, s.decoded_topic, s.dlq_topic, config.privacy, config.limits)


def run_replay(
    config: Config, span: TimeWindow, mac: str | None, progress: bool = True
) -> ReplayReport:
    """Replay ``span`` of the raw archive (optionally one controller); the report of the run."""
    settings, rs = config.connections, config.replay
    started = time.monotonic()
    reader = archive_reader(config, settings.raw_topic, span)
    report = ReplayReport(iso_ms(span.since_ms), iso_ms(span.until_ms), mac)
    store = registry_store(config)
    step = decode_step(config, store)
    writer = TimeseriesWriter(settings.timeseries_dsn, config.store, replace_older=True)
    shown = Progress("replay", rs, progress)
    errors: Tally[str] = Tally()
    pending = RowBatch()
    try:
        for batch in reader.batches():
            raws = [
                raw_message(msg, settings.raw_topic, msg.partition())
                for msg in batch
                if selected(msg, span, mac)
            ]
            report.replayed += len(raws)
            if raws:
                out = step(raws)[0]
                for record in out.dlq:
                    errors[dict(record.headers)["reason"].decode()] += 1
                out.rows.marks.clear()  # no end-to-end latency samples for archive data
                pending.extend(out.rows)
                for entry in out.rows.entries:
                    report.registry_version = max(report.registry_version, entry.version)
            if len(pending) >= rs.batch_rows:
                writer.write(pending)
                pending = RowBatch()
            shown.tick(reader, _counts_text(writer))
        if len(pending) or pending.entries:
            writer.write(pending)
    finally:
        writer.close()
        store.close()
    report.records_read = reader.records
    report.readings = writer.counts["readings"]
    report.events = writer.counts["device_events"]
    report.errors = dict(sorted(errors.items()))
    report.oldest_record = iso_ms(reader.oldest_ms)
    retention = retention_ms(settings.kafka_bootstrap, settings.raw_topic, config.kafka_client)
    report.horizon = horizon_note(settings.raw_topic, span.since_ms, reader.oldest_ms, retention)
    report.unfinished_partitions = reader.unfinished
    report.complete = not reader.unfinished
    report.seconds = round(time.monotonic() - started, 3)
    _record(report)
    return report


def _counts_text(writer: TimeseriesWriter) -> str:
    r = writer.counts["readings"]
    return f"readings inserted {r.inserted}, replaced {r.replaced}, unchanged {r.unchanged}"


def _record(report: ReplayReport) -> None:
    """Metrics and the run's log line."""
    MESSAGES.labels("replayed").inc(report.replayed)
    MESSAGES.labels("filtered").inc(report.records_read - report.replayed)
    for table, counts in (("readings", report.readings), ("device_events", report.events)):
        for outcome in ("inserted", "replaced", "unchanged", "rejected"):
            ROWS.labels(table, outcome).inc(getattr(counts, outcome))
    for reason, count in report.errors.items():
        ERRORS.labels(reason).inc(count)
    log.info(
        "replay finished",
        extra={
            "stage": "replay",
            "since": report.since,
            "until": report.until,
            "mac": report.controller,
            "records_read": report.records_read,
            "replayed": report.replayed,
            "readings_inserted": report.readings.inserted,
            "readings_replaced": report.readings.replaced,
            "readings_unchanged": report.readings.unchanged,
            "rows_rejected": report.readings.rejected + report.events.rejected,
            "events_inserted": report.events.inserted,
            "errors": sum(report.errors.values()),
            "registry_version": report.registry_version,
            "complete": report.complete,
            "horizon": report.horizon,
            "seconds": report.seconds,
        },
    )
