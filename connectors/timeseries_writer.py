"""Storage writer for the timeseries database: batched, COPY-based, idempotent, never stalled.

Delivery guarantee: exactly-once rows. :class:`StoreBatcher` (a Bytewax ``StatefulLogic``) holds
its buffer and the batch being written in its recovery snapshot, so every row is either committed
or in the snapshot the flow resumes from; the write (binary ``COPY`` into a temp table, then
``INSERT … ON CONFLICT DO NOTHING`` on the natural keys) leaves no duplicate when an epoch is
replayed. A buffer is flushed at ``F2_STORE_BATCH_ROWS`` rows or ``F2_STORE_BATCH_MS`` after its
first row, whichever comes first.

Failures, by class (:mod:`connectors.failures`): *row* — the batch is bisected, the refused rows
are returned as :class:`~connectors.store_rows.Rejected` (dead-lettered ``store_rejected`` with the
SQLSTATE), the rest stored; *transient* — retried with capped backoff, forever; *blocked* (also a
batch of ≥ :data:`UNIFORM_MIN_ROWS` rows all refused with one SQLSTATE, or a smaller one whose
table canary is refused too) — the flow holds, nothing acknowledged or lost, ``f2_store_blocked``
and ``f2_blocked_reason`` say why. A key stored with a different value keeps the stored row and is
counted (``f2_store_conflicts_total``).

Replace mode (``replace_older=True``, ``f2 replay``): readings are upserted where the stored row has
an older registry version and a different value. Partition upkeep and event retention run at
connect and hourly. Design and measurements: docs/ARCHITECTURE.md, D12–D14.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial

import msgspec
import psycopg
from bytewax.operators import StatefulLogic
from prometheus_client import Counter, Gauge, Histogram
from psycopg import sql

from connectors.failures import (
    BLOCKED,
    ROW,
    Failure,
    Hold,
    RetryPolicy,
    db_failure,
    error_detail,
    retry,
    sqlstate_of,
)
from connectors.per_thread import PerThread
from connectors.store_rows import (
    EVENT_COLUMNS,
    EVENT_TYPES,
    READING_COLUMNS,
    READING_TYPES,
    EventRow,
    Mark,
    ReadingRow,
    Rejected,
    Row,
    RowBatch,
    mark_seconds,
    pending_bytes,
    pending_rows,
)
from schemas.reasons import STORE_REJECTED
from schemas.records import ControllerEntry
from schemas.settings import StoreSettings
from schemas.topics import mac_from_topic

log = logging.getLogger("f2.store")

ROWS = Counter(
    "f2_store_rows", "Rows handed to the database, by table and outcome", ["table", "outcome"]
)
BATCH_ROWS = Histogram(
    "f2_store_batch_rows",
    "Rows per storage flush",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000),
)
FLUSH_SECONDS = Histogram(
    "f2_store_flush_seconds",
    "Time to write one flush (including retries and bisection)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STORE_BLOCKED = Gauge(
    "f2_store_blocked",
    "1 while the timeseries database refuses every write (failure class blocked): decode holds,"
    " nothing acknowledged or lost; f2_blocked_reason says why",
)
CONFLICTS = Counter(
    "f2_store_conflicts",
    "Rows whose key was already stored with a different value (the stored row is kept)",
    ["table"],
)
PARTITIONS_CREATED = Counter("f2_store_partitions_created", "Time partitions created ahead")
EVENTS_EXPIRED = Counter(
    "f2_store_events_expired", "Events deleted by the retention setting (F2_EVENT_RETENTION_DAYS)"
)
LATENCY = Histogram(
    "f2_e2e_latency_seconds",
    "From the device timestamp (since=device) or the ingest receive time (since=receive) of a "
    "message to the database commit of its rows (one stored message in 4, over all flushes)",
    ["since"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 30, 60, 300, 900, 3600, 86400),
)
_LATENCY_DEVICE = LATENCY.labels("device")
_LATENCY_RECEIVE = LATENCY.labels("receive")

MAINTENANCE_INTERVAL_S = 3600.0
UNIFORM_MIN_ROWS = 10
"""A batch of at least this many rows of one table, every one refused with the same SQLSTATE, is a
setup fault (blocked), not bad data."""
ONE_BY_ONE_ROWS = 16
"""Bisection tries the rows of a refused sub-batch this small one by one (fewer transactions)."""
CONFLICT_LOG_INTERVAL_S = 10.0
CANARY_MAX_AGE_S = 3600.0
"""A canary older than this is not written again (retention may have removed its row since)."""
WRITE_POLL = timedelta(milliseconds=5)
BUFFER_LIMIT = 1
"""A shard's buffer, in ``F2_STORE_BATCH_ROWS``, at which the flow waits for the write in
flight. Rows keep their raw message (for dead letters), so a larger buffer grows memory with
payload size: 4 took decode from 196 to 532 MiB under ``bench.memory``'s 64 KiB flood."""
BATCH_PAYLOAD_BYTES = 8 << 20
"""A shard's buffer is also full when its rows keep this many payload bytes alive
(:attr:`~connectors.store_rows.RowBatch.payload_bytes`): with rows alone as the bound, 64 KiB
messages (3 rows each) let a write in flight, the buffer behind it and their recovery snapshot
hold ~200 MiB each, and decode peaked at 545 MiB under ``bench.memory``'s flood."""
LATENCY_STRIDE = 4
"""The latency histograms observe every 4th stored message, counted over all flushes: a fixed
share, so a large flush (a backlog draining) weighs as much per message as a small one. The
writer's thread cost ~1.2 µs/msg less at 5,000 msg/s than when it observed every message."""


def sample_marks(marks: list[Mark], phase: int) -> tuple[list[tuple[float, float]], int]:
    """Every :data:`LATENCY_STRIDE`-th of ``marks`` in epoch seconds, from index ``phase``; and the
    phase of the next write's marks (so the stride runs on across writes)."""
    sampled = [mark_seconds(m) for m in marks[phase::LATENCY_STRIDE]]
    return sampled, (phase - len(marks)) % LATENCY_STRIDE


class WriteCounts(msgspec.Struct):
    """Rows of one table over a writer's life: inserted, replaced (newer version), left alone
    (already stored, or not newer/different), refused by the database."""

    inserted: int = 0
    replaced: int = 0
    unchanged: int = 0
    rejected: int = 0


def retry_policy(settings: StoreSettings) -> RetryPolicy:
    """How the writer retries (transient failures, blocked database)."""
    return RetryPolicy(max_s=settings.retry_max_s, blocked_s=settings.blocked_retry_s)


_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS f2_readings_stage (time timestamptz, sensor_id int4,"
    " datapoint_id int4, value float8, registry_version int8) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS f2_events_stage (time timestamptz, controller_id int4,"
    " mac text, connector text, component text, field text, value_bool bool, value_num float8,"
    " value_text text, registry_version int8) ON COMMIT DELETE ROWS",
)
_READING_COLS = sql.SQL(", ").join(map(sql.Identifier, READING_COLUMNS))
_EVENT_COLS = sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS))
_COPY_READINGS = sql.SQL("COPY f2_readings_stage ({}) FROM STDIN (FORMAT BINARY)").format(
    _READING_COLS
)
_COPY_EVENTS = sql.SQL("COPY f2_events_stage ({}) FROM STDIN (FORMAT BINARY)").format(_EVENT_COLS)
_MERGE_READINGS = sql.SQL(
    "INSERT INTO readings ({cols}) SELECT {cols} FROM f2_readings_stage ON CONFLICT DO NOTHING"
).format(cols=_READING_COLS)
_UPSERT_READINGS = sql.SQL(
    "INSERT INTO readings AS r ({cols})"
    " SELECT DISTINCT ON (sensor_id, datapoint_id, time) {cols} FROM f2_readings_stage"
    " ORDER BY sensor_id, datapoint_id, time, registry_version DESC"
    " ON CONFLICT (sensor_id, datapoint_id, time) DO UPDATE SET value = EXCLUDED.value,"
    " registry_version = EXCLUDED.registry_version"
    " WHERE r.registry_version < EXCLUDED.registry_version"
    " AND r.value IS DISTINCT FROM EXCLUDED.value"
).format(cols=_READING_COLS)
# Distinct keys of the staged readings and how many of them are stored already (replace mode's
# counts; PostgreSQL cannot tell inserted from updated rows of a partitioned table in RETURNING).
_EXISTING_READINGS = (
    "SELECT count(*), count(r.sensor_id) FROM (SELECT DISTINCT sensor_id, datapoint_id, time"
    " FROM f2_readings_stage) s LEFT JOIN readings r USING (sensor_id, datapoint_id, time)"
)
# Staged rows whose key is stored with another value: run after the merge, in its transaction,
# only when some staged row was not inserted. A key staged twice with two values (a stuck clock
# within one batch) counts too; the row just inserted equals itself and does not.
_READING_CONFLICTS = (
    "SELECT s.sensor_id, s.datapoint_id, s.time, s.value, r.value, count(*) OVER ()"
    " FROM f2_readings_stage s JOIN readings r USING (sensor_id, datapoint_id, time)"
    " WHERE r.value IS DISTINCT FROM s.value LIMIT 1"
)
_EVENT_CONFLICTS = (
    "SELECT s.controller_id, s.connector, s.component, s.field, s.time, count(*) OVER ()"
    " FROM f2_events_stage s"
    " JOIN device_events e USING (controller_id, connector, component, field, time)"
    " WHERE (e.value_bool, e.value_num, e.value_text)"
    " IS DISTINCT FROM (s.value_bool, s.value_num, s.value_text) LIMIT 1"
)
_MERGE_EVENTS = sql.SQL(
    "INSERT INTO device_events ({cols}) SELECT {cols} FROM f2_events_stage ON CONFLICT DO NOTHING"
).format(cols=_EVENT_COLS)
_UPSERT_CONTROLLER = (
    "INSERT INTO controllers AS t (controller_id, mac, time_zone, registry_version, updated_at)"
    " VALUES (%s, %s, %s, %s, now()) ON CONFLICT (controller_id) DO UPDATE SET mac = EXCLUDED.mac,"
    " time_zone = EXCLUDED.time_zone, registry_version = EXCLUDED.registry_version,"
    " updated_at = now() WHERE t.registry_version <= EXCLUDED.registry_version"
)
_UPSERT_SENSOR = (
    "INSERT INTO sensors AS t (sensor_id, controller_id, connector_number, pin, template_id, model,"
    " frame_format, registry_version, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())"
    " ON CONFLICT (sensor_id) DO UPDATE SET controller_id = EXCLUDED.controller_id,"
    " connector_number = EXCLUDED.connector_number, pin = EXCLUDED.pin,"
    " template_id = EXCLUDED.template_id, model = EXCLUDED.model,"
    " frame_format = EXCLUDED.frame_format, registry_version = EXCLUDED.registry_version,"
    " updated_at = now() WHERE t.registry_version <= EXCLUDED.registry_version"
)
_UPSERT_DATAPOINT = (
    "INSERT INTO data_points AS t (datapoint_id, template_id, label, encoding, byte_order, unit,"
    " prepend, append, whole_number, decimals, data_format, realtime_chart, historical_chart,"
    " registry_version, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())"
    " ON CONFLICT (datapoint_id) DO UPDATE SET template_id = EXCLUDED.template_id,"
    " label = EXCLUDED.label, encoding = EXCLUDED.encoding, byte_order = EXCLUDED.byte_order,"
    " unit = EXCLUDED.unit, prepend = EXCLUDED.prepend, append = EXCLUDED.append,"
    " whole_number = EXCLUDED.whole_number, decimals = EXCLUDED.decimals,"
    " data_format = EXCLUDED.data_format, realtime_chart = EXCLUDED.realtime_chart,"
    " historical_chart = EXCLUDED.historical_chart, registry_version = EXCLUDED.registry_version,"
    " updated_at = now() WHERE t.registry_version <= EXCLUDED.registry_version"
)


def dimension_rows(
    entries: Iterable[ControllerEntry],
) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Controller, sensor and data point rows of ``entries`` (newest version per controller)."""
    newest: dict[str, ControllerEntry] = {}
    for entry in entries:
        if entry.mac not in newest or newest[entry.mac].version < entry.version:
            newest[entry.mac] = entry
    controllers, sensors, points = [], [], {}
    for entry in newest.values():
        version = entry.version
        controllers.append((entry.controller_id, entry.mac, entry.timezone, version))
        for key, sensor in entry.sensors.items():
            connector, pin = (int(part) for part in key.split(":"))
            sensors.append(
                (
                    sensor.sensor_id,
                    entry.controller_id,
                    connector,
                    pin,
                    sensor.template_id,
                    sensor.model,
                    sensor.frame_format,
                    version,
                )
            )
            for p in sensor.datapoints:
                points[p.datapoint_id] = (
                    p.datapoint_id,
                    sensor.template_id,
                    p.label,
                    p.encoding,
                    p.byte_order,
                    p.unit,
                    p.prepend,
                    p.append,
                    p.whole_number,
                    p.decimals,
                    p.data_format,
                    p.realtime_chart,
                    p.historical_chart,
                    version,
                )
    return controllers, sensors, list(points.values())


class UniformRefusal(Exception):
    """Every row of a batch of at least :data:`UNIFORM_MIN_ROWS` rows of one table was refused
    with one SQLSTATE: a setup fault (a new constraint, a trigger refusing everything), so the
    batch is held (class ``blocked``) instead of dead-lettered row by row."""

    def __init__(self, table: str, sqlstate: str, detail: str, rows: int) -> None:
        super().__init__(f"all {rows} {table} rows of the batch refused with {sqlstate}: {detail}")
        self.sqlstate = sqlstate


def write_failure(exc: BaseException) -> Failure | None:
    """The failure class of an exception that escaped a whole write: the row errors were handled
    inside, so a row-class error here (in maintenance or in the dimension tables) is setup."""
    if isinstance(exc, UniformRefusal):
        return BLOCKED
    failure = db_failure(exc)
    return BLOCKED if failure is ROW else failure


class _ConflictLog:
    """Logs conflicting keys at most every ``interval_s`` per table, with the count in between."""

    def __init__(self, interval_s: float = CONFLICT_LOG_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def record(self, table: str, count: int, key: dict[str, object]) -> None:
        CONFLICTS.labels(table).inc(count)
        now = time.monotonic()
        if now < self._next.get(table, 0.0):
            self._suppressed[table] = self._suppressed.get(table, 0) + count
            return
        self._next[table] = now + self._interval_s
        earlier = self._suppressed.pop(table, 0)
        log.warning(
            "rows already stored with a different value; kept the stored ones",
            extra={
                "stage": "store",
                "table": table,
                "conflicts": count,
                "conflicts_not_logged": earlier,
                "key": {name: str(value) for name, value in key.items()},
            },
        )


class TimeseriesWriter:
    """Writes :class:`RowBatch` es to the timeseries database (one connection, one thread)."""

    def __init__(
        self,
        dsn: str,
        settings: StoreSettings | None = None,
        sleep: Callable[[float], None] | None = None,
        replace_older: bool = False,
    ) -> None:
        self._dsn = dsn
        self._settings = settings or StoreSettings()
        self._sleep = sleep
        self._replace = replace_older
        self.counts = {"readings": WriteCounts(), "device_events": WriteCounts()}
        self._conn: psycopg.Connection | None = None
        self._next_maintenance = 0.0
        self._hold = Hold("store", STORE_BLOCKED)
        self._conflicts = _ConflictLog()
        # table -> (last stored row, when)
        self._canaries: dict[str, tuple[ReadingRow | EventRow, float]] = {}
        self._latency_phase = 0  # where in this write's marks the next sampled one is

    def write(self, batch: RowBatch) -> list[Rejected]:
        """Store ``batch``; return the rows the database refused. Blocks until stored: through
        transient failures and while the database is blocked (module docstring)."""
        started = time.perf_counter()
        if self._replace and batch.readings:
            batch = self._newest_per_key(batch)
        rejected = retry(
            partial(self._write_once, batch),
            write_failure,
            "store",
            retry_policy(self._settings),
            self._hold,
            self._sleep,
        )
        committed = time.time()
        sampled, self._latency_phase = sample_marks(batch.marks, self._latency_phase)
        for device_s, receive_s in sampled:
            _LATENCY_DEVICE.observe(committed - device_s)
            if receive_s > 0:
                _LATENCY_RECEIVE.observe(committed - receive_s)
        BATCH_ROWS.observe(len(batch))
        FLUSH_SECONDS.observe(time.perf_counter() - started)
        return rejected

    def _newest_per_key(self, batch: RowBatch) -> RowBatch:
        """Replace mode: of readings staged twice under one key, only the newest registry
        version is written (the others count as unchanged), however bisection splits the batch."""
        newest: dict[tuple, ReadingRow] = {}
        for row in batch.readings:
            key = (row.sensor_id, row.datapoint_id, row.time)
            kept = newest.get(key)
            if kept is None or kept.registry_version <= row.registry_version:
                newest[key] = row
        dropped = len(batch.readings) - len(newest)
        if not dropped:
            return batch
        self._count("readings", dropped, 0, 0)
        return msgspec.structs.replace(batch, readings=list(newest.values()))

    def _write_once(self, batch: RowBatch) -> list[Rejected]:
        try:
            conn = self._connection()
            if batch.entries:
                self._upsert_dimensions(conn, batch.entries)
            return self._store(conn, batch.readings, batch.events)
        except Exception:
            self.close()  # the next attempt starts on a new connection
            raise

    def close(self) -> None:
        """Drop the connection (the next write reconnects)."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self._dsn, autocommit=True)
            for ddl in _STAGE_DDL:
                conn.execute(ddl)
            self._conn = conn
            self._next_maintenance = 0.0
        if time.monotonic() >= self._next_maintenance:
            row = self._conn.execute(
                "SELECT f2_ensure_partitions(%s, 1)", (self._settings.partitions_ahead_days,)
            ).fetchone()
            PARTITIONS_CREATED.inc(row[0] if row and row[0] else 0)
            self.expire_events()
            self._next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_S
        return self._conn

    def expire_events(self) -> int:
        """Delete events older than ``F2_EVENT_RETENTION_DAYS`` (0 keeps them); rows removed."""
        days = self._settings.event_retention_days
        if days <= 0 or self._conn is None:
            return 0
        row = self._conn.execute(
            "SELECT f2_expire_events(make_interval(days => %s))", (days,)
        ).fetchone()
        removed = row[0] if row and row[0] else 0
        EVENTS_EXPIRED.inc(removed)
        return removed

    def _upsert_dimensions(self, conn: psycopg.Connection, entries: list[ControllerEntry]) -> None:
        controllers, sensors, points = dimension_rows(entries)
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_UPSERT_CONTROLLER, controllers)
                cur.executemany(_UPSERT_SENSOR, sensors)
                cur.executemany(_UPSERT_DATAPOINT, points)
        except Exception as exc:
            if db_failure(exc) is not ROW:
                raise
            ROWS.labels("dimensions", "rejected").inc(len(controllers))
            log.warning(
                "dimension rows refused",
                extra={"stage": "store", "reason": "store_rejected", "detail": error_detail(exc)},
            )

    def _store(
        self, conn: psycopg.Connection, readings: list[ReadingRow], events: list[EventRow]
    ) -> list[Rejected]:
        """Write both row lists in one transaction; if a row is refused, table by table with the
        refused rows isolated."""
        try:
            self._transaction(conn, readings, events)
            return []
        except Exception as exc:
            if db_failure(exc) is not ROW:
                raise
        rejected = self._isolate(conn, "readings", readings) if readings else []
        if events:
            rejected += self._isolate(conn, "device_events", events)
        return rejected

    def _isolate(self, conn: psycopg.Connection, table: str, rows: list[Row]) -> list[Rejected]:
        """Store what the database accepts of ``rows`` (one table); the refused ones.

        The refused rows are tried again until the set stops shrinking: a setup fault fixed
        while the batch was bisected (a dropped trigger, a restored grant) must not leave the
        rows it refused earlier dead-lettered.
        """
        refused = self._bisect(conn, table, rows)
        while refused:
            again = self._bisect(conn, table, [row for row, _ in refused])
            if len(again) == len(refused):
                break
            refused = again
        codes = {sqlstate_of(exc) for _, exc in refused}
        if len(refused) == len(rows) and len(codes) == 1:
            code = codes.pop()
            if len(rows) >= UNIFORM_MIN_ROWS or self._canary_refused(conn, table, code):
                raise UniformRefusal(table, code, error_detail(refused[0][1]), len(rows))
        return [self._rejected(table, row, exc) for row, exc in refused]

    def _canary_refused(self, conn: psycopg.Connection, table: str, code: str) -> bool:
        """Whether the table's canary (its last stored row, written again) is refused with
        ``code`` too: then the table refuses everything, not just these rows."""
        canary = self._canaries.get(table)
        if canary is None or time.monotonic() - canary[1] > CANARY_MAX_AGE_S:
            return False
        try:
            if table == "readings":
                self._transaction(conn, [canary[0]], [], count=False)
            else:
                self._transaction(conn, [], [canary[0]], count=False)
        except Exception as exc:
            if db_failure(exc) is not ROW:
                raise
            return sqlstate_of(exc) == code
        return False

    def _bisect(
        self, conn: psycopg.Connection, table: str, rows: list[Row]
    ) -> list[tuple[Row, BaseException]]:
        """The rows of ``rows`` the database refuses, with why; the others are stored."""
        try:
            if table == "readings":
                self._transaction(conn, rows, [])
            else:
                self._transaction(conn, [], rows)
            return []
        except Exception as exc:
            if db_failure(exc) is not ROW:
                raise
            if len(rows) == 1:
                return [(rows[0], exc)]
        if len(rows) <= ONE_BY_ONE_ROWS:
            return [refused for row in rows for refused in self._bisect(conn, table, [row])]
        half = len(rows) // 2
        return self._bisect(conn, table, rows[:half]) + self._bisect(conn, table, rows[half:])

    def _transaction(
        self,
        conn: psycopg.Connection,
        readings: list[ReadingRow],
        events: list[EventRow],
        count: bool = True,
    ) -> None:
        """Write ``readings`` and ``events`` in one transaction (COPY, then merge); ``count``
        False for a canary (not the batch's rows)."""
        conflicts: list[tuple[str, tuple]] = []
        with conn.transaction(), conn.cursor() as cur:
            inserted_r = replaced_r = inserted_e = 0
            if readings:
                with cur.copy(_COPY_READINGS) as copy:
                    copy.set_types(READING_TYPES)
                    write_row = copy.write_row
                    for row in readings:
                        write_row(row.columns())
                if self._replace:
                    keys, existing = cur.execute(_EXISTING_READINGS).fetchone()
                    cur.execute(_UPSERT_READINGS)
                    inserted_r = max(keys - existing, 0)
                    replaced_r = max(cur.rowcount - inserted_r, 0)
                else:
                    cur.execute(_MERGE_READINGS)
                    inserted_r = cur.rowcount
                    if inserted_r < len(readings):
                        conflict = cur.execute(_READING_CONFLICTS).fetchone()
                        if conflict is not None:
                            conflicts.append(("readings", conflict))
            if events:
                with cur.copy(_COPY_EVENTS) as copy:
                    copy.set_types(EVENT_TYPES)
                    write_row = copy.write_row
                    for row in events:
                        write_row(row.columns())
                cur.execute(_MERGE_EVENTS)
                inserted_e = cur.rowcount
                if inserted_e < len(events):
                    conflict = cur.execute(_EVENT_CONFLICTS).fetchone()
                    if conflict is not None:
                        conflicts.append(("device_events", conflict))
        if not count:
            return
        now = time.monotonic()
        if readings:
            self._count("readings", len(readings), inserted_r, replaced_r)
            self._canaries["readings"] = (readings[-1], now)
        if events:
            self._count("device_events", len(events), inserted_e, 0)
            self._canaries["device_events"] = (events[-1], now)
        for table, found in conflicts:
            self._record_conflict(table, found)

    def _record_conflict(self, table: str, found: tuple) -> None:
        if table == "readings":
            sensor_id, datapoint_id, moment, value, stored, count = found
            key = {"sensor_id": sensor_id, "datapoint_id": datapoint_id, "time": moment}
            key |= {"value": value, "stored": stored}
        else:
            controller_id, connector, component, field, moment, count = found
            key = {"controller_id": controller_id, "connector": connector}
            key |= {"component": component, "field": field, "time": moment}
        self._conflicts.record(table, count, key)

    def _count(self, table: str, rows: int, inserted: int, replaced: int) -> None:
        unchanged = max(rows - inserted - replaced, 0)
        counts = self.counts[table]
        counts.inserted += inserted
        counts.replaced += replaced
        counts.unchanged += unchanged
        ROWS.labels(table, "inserted").inc(inserted)
        ROWS.labels(table, "duplicate").inc(unchanged)
        if replaced:
            ROWS.labels(table, "replaced").inc(replaced)

    def _rejected(self, table: str, row: Row, exc: BaseException) -> Rejected:
        """The dead letter of one refused row: ``detail`` starts with the SQLSTATE."""
        detail = f"{sqlstate_of(exc)}: {error_detail(exc)}"
        self.counts[table].rejected += 1
        ROWS.labels(table, "rejected").inc()
        log.warning(
            "row refused by the database",
            extra={
                "stage": "store",
                "mac": mac_from_topic(row.raw.topic),
                "reason": STORE_REJECTED,
                "table": table,
                "detail": detail,
            },
        )
        return Rejected(raw=row.raw, label=row.label, table=table, detail=detail)


_submitters: PerThread[Callable[[RowBatch], Future[list[Rejected]]]] = PerThread()


def thread_submitter(
    dsn: str, settings: StoreSettings
) -> Callable[[RowBatch], Future[list[Rejected]]]:
    """This worker thread's ``submit``: writes run on one writer thread with its own connection.

    Built once per worker thread (:mod:`connectors.per_thread`), not once per batcher: a shard's
    batcher is rebuilt whenever it went idle, and a writer per rebuild meant a new connection, a
    new thread and the hourly maintenance (partitions, event retention) on every rebuild.
    """

    def build() -> Callable[[RowBatch], Future[list[Rejected]]]:
        writer = TimeseriesWriter(dsn, settings)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="f2-store")
        return partial(pool.submit, writer.write)

    return _submitters.get((dsn, settings), build)


def utc_now() -> datetime:
    return datetime.now(UTC)


class StoreBatcher(StatefulLogic[RowBatch, Rejected, bytes]):
    """Buffers one shard's rows and writes them at N rows or T ms after the first buffered row.

    Writes are pipelined: a full buffer is handed to the writer's own thread (``submit``) and the
    next buffer fills while it runs (PostgreSQL works on the other core meanwhile). At most one
    write is in flight: a buffer whose deadline passes while one runs keeps filling, and goes as
    one larger write as soon as that one ends (polled every ``WRITE_POLL``), so the flow's thread
    goes on decoding instead of waiting for the database; it waits (backpressure) when the buffer
    reaches ``BUFFER_LIMIT`` × N rows (or × :data:`BATCH_PAYLOAD_BYTES`). The recovery snapshot
    is the in-flight batch plus the buffer (as :func:`~connectors.store_rows.pending_bytes`), so
    an epoch never commits rows that are not stored yet; after a crash they are written again
    (idempotent). Resumes from such bytes or from a pickled :class:`RowBatch` (the snapshots of
    earlier versions). Emits the rows the database refused.
    """

    def __init__(
        self,
        submit: Callable[[RowBatch], Future[list[Rejected]]],
        settings: StoreSettings,
        resume: bytes | RowBatch | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        if isinstance(resume, bytes):
            resume = pending_rows(resume)
        self._submit = submit
        self._max_rows = settings.batch_rows
        self._timeout = timedelta(milliseconds=settings.batch_ms)
        self._now = now
        self._buf = resume if resume is not None and (len(resume) or resume.entries) else None
        self._deadline = now() + self._timeout if self._buf is not None else None
        self._inflight: tuple[Future[list[Rejected]], RowBatch] | None = None

    def on_item(self, value: RowBatch) -> tuple[list[Rejected], bool]:
        if self._buf is None:
            self._buf = RowBatch()
            self._deadline = self._now() + self._timeout
        self._buf.extend(value)
        out = self._collect(wait=False)
        if self._full():
            out += self._start(block=self._full(BUFFER_LIMIT))
        return out, self._keep()

    def on_notify(self) -> tuple[list[Rejected], bool]:
        out = self._collect(wait=False)
        if self._due():
            out += self._start(block=False)
        return out, self._keep()

    def on_eof(self) -> tuple[list[Rejected], bool]:
        out = self._start(block=True)
        out += self._collect(wait=True)
        return out, self._keep()

    def notify_at(self) -> datetime | None:
        # With a write in flight nothing can start before it ends: poll it (a deadline passed
        # meanwhile would wake the operator in a loop).
        return self._deadline if self._inflight is None else self._now() + WRITE_POLL

    def snapshot(self) -> bytes:
        snap = RowBatch()
        if self._inflight is not None:
            snap.extend(self._inflight[1])
        if self._buf is not None:
            snap.extend(self._buf)
        return pending_bytes(snap)

    def _due(self) -> bool:
        if self._buf is None:
            return False
        late = self._deadline is not None and self._now() >= self._deadline
        return late or self._full()

    def _full(self, times: int = 1) -> bool:
        """Whether the buffer holds ``times`` × N rows, or × :data:`BATCH_PAYLOAD_BYTES`."""
        buf = self._buf
        if buf is None:
            return False
        return (
            len(buf) >= self._max_rows * times or buf.payload_bytes >= BATCH_PAYLOAD_BYTES * times
        )

    def _start(self, block: bool) -> list[Rejected]:
        """Hand the buffer to the writer. With a write in flight: wait for it if ``block``, else
        leave the buffer to fill until it has ended."""
        if self._inflight is not None and not block and not self._inflight[0].done():
            return []
        out = self._collect(wait=True)
        buf, self._buf, self._deadline = self._buf, None, None
        if buf is not None and (len(buf) or buf.entries):
            self._inflight = (self._submit(buf), buf)
        return out

    def _collect(self, wait: bool) -> list[Rejected]:
        if self._inflight is None or (not wait and not self._inflight[0].done()):
            return []
        future, self._inflight = self._inflight[0], None
        return future.result()

    def _keep(self) -> bool:
        idle = self._buf is None and self._inflight is None
        return StatefulLogic.DISCARD if idle else StatefulLogic.RETAIN
