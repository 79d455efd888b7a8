"""The peer job: decode-and-store written the way a Quix Streams 3.x user would write it.

Runs in its own virtualenv (:mod:`bench.peer_venv`: Quix Streams pins an older confluent-kafka
than the project), with the checkout on ``PYTHONPATH``; :mod:`bench.peer` starts it beside the
decode flow. What it does, per the Quix Streams documentation's patterns:

- an ``Application`` on the stack's Kafka bootstrap (``F2_KAFKA_BOOTSTRAP``), its own consumer
  group, ``auto_offset_reset="earliest"``, ``processing_guarantee="at-least-once"``,
  ``commit_interval=1.0`` s;
- a ``StreamingDataFrame`` over the raw topic, values and keys as bytes; ``apply(...,
  metadata=True)`` turns each record (its headers carry the MQTT topic and receive time,
  :func:`schemas.wire.raw_message`) into the rows of that message with the project's decoding
  core: the registry entry from :class:`~connectors.registry_store.RegistryStore` (worker cache,
  Redis, PostgreSQL, as the flow's), :func:`schemas.decode.decode_message`, and the same row
  builders as ``connectors.decode_step.DecodeStep`` (``reading_row``, ``event_row``, ``mark``,
  the entries loaded for the dimension tables, reader values hashed when a key is set);
- a ``BatchingSink`` subclass whose ``write(batch)`` (called by each checkpoint, once per topic
  partition) writes the batch's rows with the project's
  :class:`~connectors.timeseries_writer.TimeseriesWriter` (COPY → staging → ``INSERT … ON
  CONFLICT DO NOTHING``) in chunks of ``F2_STORE_BATCH_ROWS``. A checkpoint commits the offsets
  only after every ``write`` returned, so rows are stored at least once and a replay stores no
  duplicate.

It only stores: no ``decoded_iot_data`` records, no dead letters (decode errors and refused rows
are counted), no registry change feed. Settings come from :func:`schemas.settings.load_config`
here, at the entry point; the topic and group from the arguments.

Run (normally through ``python -m bench.peer``)::

    PYTHONPATH=. ~/.cache/f2-bench-peer/venv-*/bin/python -m bench.peer_quix --topic RAW \\
        --group GROUP [--messages N] [--state-dir DIR] [--until consume|decode|store] \\
        [--consumer-config session.timeout.ms=6000 ...]

It stops after ``--messages`` messages (0: on SIGTERM / Ctrl-C, Quix Streams' graceful stop, which
runs a last checkpoint) and prints a JSON report: timestamps (epoch s) of the process start, of
``Application.run`` and of the first message consumed (``join_s`` between the two: the consumer
group join, assignment and first fetch), messages, rows, decode errors, writes, and the rate and
CPU per message of the process after its first message (``after_first_message``; the last
checkpoint included). ``--until consume`` (an ``apply`` that only counts) and ``--until decode``
(no sink) leave out the later steps, to tell their costs apart; ``--consumer-config`` passes
librdkafka settings (``consumer_extra_config``; the benchmark passes none).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from quixstreams import Application, message_context
from quixstreams.sinks import BatchingSink, SinkBatch

from connectors.registry_store import RegistryStore
from connectors.store_rows import RowBatch, event_row, mark, reading_row
from connectors.timeseries_writer import TimeseriesWriter
from schemas.decode import decode_message
from schemas.privacy import hash_card_id
from schemas.records import ControllerEntry, Event, Reading
from schemas.settings import Config, load_config
from schemas.topics import mac_from_topic
from schemas.wire import raw_message

STARTED = time.time()


class Tally(msgspec.Struct):
    """What the peer did, for its report."""

    started_at: float = STARTED
    run_at: float = 0.0
    first_message_at: float = 0.0
    first_message_cpu_s: float = 0.0
    messages: int = 0
    rows: int = 0
    decode_errors: int = 0
    rejected_rows: int = 0
    writes: int = 0
    write_s: float = 0.0

    def count(self) -> None:
        """One more message consumed (the clock and CPU start at the first)."""
        if not self.messages:
            self.first_message_at = time.time()
            self.first_message_cpu_s = time.process_time()
        self.messages += 1


def consumed(tally: Tally) -> Any:
    """``--until consume``: an ``apply`` callback that only counts (the framework's own cost)."""

    def count(value: bytes) -> bytes:
        tally.count()
        return value

    return count


class Rows:
    """``StreamingDataFrame.apply`` callback (``metadata=True``): one raw record → its rows."""

    def __init__(self, config: Config, tally: Tally) -> None:
        s = config.connections
        self._store = RegistryStore(s.params_dsn, s.redis_url, config.registry)
        self._limits = config.limits
        self._reader_key = config.privacy.key
        self._tally = tally

    def __call__(self, value: bytes, key: bytes, timestamp: int, headers: Any) -> RowBatch:
        tally = self._tally
        tally.count()
        context = message_context()
        raw = raw_message(
            dict(headers or ()), value, timestamp, context.topic, context.partition, context.offset
        )
        rows = RowBatch()
        mac = mac_from_topic(raw.topic)
        entry: ControllerEntry | None = None
        if mac is not None:
            entry, loaded = self._store.lookup(mac)
            if loaded and entry is not None:
                rows.entries.append(entry)  # the writer upserts the dimension rows
        stored_time = None
        for item in decode_message(raw, entry, datetime.now(UTC), self._limits):
            kind = type(item)
            if kind is Reading:
                rows.readings.append(reading_row(item, raw))
            elif kind is Event:
                rows.events.append(event_row(self._private(item), raw))
            else:
                tally.decode_errors += 1  # the flow dead-letters these; the peer only stores
                continue
            if stored_time is None:
                stored_time = item.time
        if stored_time is not None:
            rows.marks.append(mark(stored_time, raw))
        return rows

    def _private(self, event: Event) -> Event:
        """As the decode step: a reader's card id stored as its keyed hash when a key is set."""
        key = self._reader_key
        if key is None or not event.component.startswith("reader-") or type(event.value) is not str:
            return event
        return msgspec.structs.replace(event, value=hash_card_id(event.value, key))


class TimeseriesSink(BatchingSink):
    """Writes each checkpoint's rows with the project's writer (duplicate-safe, so at-least-once
    delivery stores every row once)."""

    def __init__(self, writer: TimeseriesWriter, chunk_rows: int, tally: Tally) -> None:
        super().__init__()
        self._writer = writer
        self._chunk_rows = chunk_rows
        self._tally = tally

    def write(self, batch: SinkBatch) -> None:
        chunk = RowBatch()
        for item in batch:
            chunk.extend(item.value)
            if len(chunk) >= self._chunk_rows:
                self._store(chunk)
                chunk = RowBatch()
        if len(chunk) or chunk.entries:
            self._store(chunk)

    def _store(self, rows: RowBatch) -> None:
        started = time.perf_counter()
        rejected = self._writer.write(rows)  # blocks through outages: nothing committed before
        tally = self._tally
        tally.write_s += time.perf_counter() - started
        tally.writes += 1
        tally.rows += len(rows) - len(rejected)
        tally.rejected_rows += len(rejected)


def build(
    config: Config,
    topic: str,
    group: str,
    state_dir: str,
    tally: Tally,
    stop_after: int = 0,
    until: str = "store",
    consumer_config: dict[str, str] | None = None,
) -> Application:
    """The application: raw topic → rows → :class:`TimeseriesSink`; with ``stop_after``, it
    stops itself (a last checkpoint included) once that many messages were processed. ``until``
    ``consume`` or ``decode`` leaves out the steps after that one (to tell the costs apart)."""

    def processed(_topic: str, _partition: int, _offset: int) -> None:
        if tally.messages >= stop_after:
            app.stop()

    app = Application(
        broker_address=config.connections.kafka_bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        commit_interval=1.0,
        state_dir=state_dir,
        loglevel="WARNING",
        on_message_processed=processed if stop_after > 0 else None,
        consumer_extra_config=consumer_config,
    )
    raw = app.topic(topic, key_deserializer="bytes", value_deserializer="bytes")
    sdf = app.dataframe(raw)
    if until == "consume":
        sdf.apply(consumed(tally))
        return app
    sdf = sdf.apply(Rows(config, tally), metadata=True)
    if until == "decode":
        return app
    writer = TimeseriesWriter(config.connections.timeseries_dsn, config.store)
    sdf.sink(TimeseriesSink(writer, config.store.batch_rows, tally))
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True, help="the pre-filled raw topic")
    parser.add_argument("--group", required=True, help="the consumer group (new: from earliest)")
    parser.add_argument("--messages", type=int, default=0, help="stop after N messages (0: never)")
    parser.add_argument("--state-dir", default="state", help="Quix Streams' state directory")
    parser.add_argument(
        "--until",
        choices=("consume", "decode", "store"),
        default="store",
        help="the last step to run: consume only, consume and decode, or everything",
    )
    parser.add_argument(
        "--consumer-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka consumer setting (e.g. session.timeout.ms=6000), repeatable",
    )
    args = parser.parse_args(argv)
    config = load_config()
    tally = Tally()
    extra = dict(item.split("=", 1) for item in args.consumer_config)
    app = build(
        config, args.topic, args.group, args.state_dir, tally, args.messages, args.until, extra
    )
    tally.run_at = time.time()
    app.run()
    report: dict[str, Any] = msgspec.structs.asdict(tally)
    report["until"] = args.until
    if tally.messages:
        seconds = time.time() - tally.first_message_at
        cpu = time.process_time() - tally.first_message_cpu_s
        report["join_s"] = round(tally.first_message_at - tally.run_at, 3)
        report["after_first_message"] = {
            "seconds": round(seconds, 3),
            "cpu_s": round(cpu, 3),
            "msgs_per_s": round(tally.messages / seconds),
            "us_per_msg": round(cpu / tally.messages * 1e6, 1),
        }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
