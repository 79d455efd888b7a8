"""A checked Kafka sink for Bytewax: a batch is done only when Kafka stored every record of it.

Delivery guarantee: at-least-once. ``write_batch`` produces every record with a delivery callback
(``acks=all``, idempotent producer) and returns only once every record of the batch has a
successful delivery report. A failed delivery is never dropped: the failed records are produced
again after a backoff (counted in ``f2_kafka_sink_retries_total``), for as long as it takes, so
while Kafka is down the worker blocks here, its epoch does not complete and upstream acks (the
MQTT PUBACKs of the ingest flow, the recovery commit of the decode flow) wait with it. Memory stays
bounded: only the current batch is held. Only errors that retrying cannot fix (authentication,
authorisation, a record larger than the broker accepts, a bad configuration) raise, which stops
the flow loudly. A fatal idempotent-producer error (e.g. the broker lost the producer's state) is
handled like any failed delivery round: the records Kafka did not confirm are produced again on a
new producer. Records can be duplicated (a retry after a lost delivery report, a replayed epoch);
never lost.

Configuration: any librdkafka setting passes through, from the ``config`` dict and from
``F2_KAFKA_<SETTING>`` environment variables (``F2_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` →
``security.protocol``); ``F2_KAFKA_BOOTSTRAP`` is ``bootstrap.servers`` (see ``schemas.settings``).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Mapping
from functools import partial

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter, Gauge

log = logging.getLogger("f2.kafka_sink")

DELIVERED = Counter(
    "f2_kafka_sink_delivered",
    "Records Kafka confirmed (delivery report OK)",
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

DEFAULTS: dict[str, object] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
    # Surface a stuck delivery to the retry loop (and its metric) instead of waiting 5 minutes.
    "message.timeout.ms": 10000,
    "queue.buffering.max.messages": 200000,
}
ENV_PREFIX = "F2_KAFKA_"
_PENDING = object()
# F2_KAFKA_* variables that configure the local stack's topics, not the client.
_NOT_CLIENT_SETTINGS = frozenset(
    {"PARTITIONS", "BOOTSTRAP_FILE", "RETENTION_MS", "RETENTION_BYTES"}
)
RETRY_BACKOFF_S = (0.2, 10.0)

_NOT_RETRIABLE = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_CONFIG,
        KafkaError._INVALID_ARG,
        KafkaError.INVALID_REQUIRED_ACKS,
    }
)


class KafkaRecord(msgspec.Struct, frozen=True):
    """One record to produce. ``partition`` None = by key (librdkafka's default partitioner)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = []
    partition: int | None = None


class KafkaSinkError(RuntimeError):
    """A delivery failed for a reason retrying cannot fix (configuration, authorisation, size)."""


def env_config(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka settings from ``F2_KAFKA_*`` variables (``F2_KAFKA_BOOTSTRAP`` excluded).

    ``F2_KAFKA_SASL_PASSWORD_FILE`` reads the value from a file, like every ``*_FILE`` variable.
    """
    env = os.environ if environ is None else environ
    config: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == "F2_KAFKA_BOOTSTRAP":
            continue
        setting = name[len(ENV_PREFIX) :]
        if setting in _NOT_CLIENT_SETTINGS:
            continue
        if setting.endswith("_FILE"):
            with open(value) as handle:
                value = handle.read().strip()
            setting = setting[: -len("_FILE")]
        config[setting.lower().replace("_", ".")] = value
    return config


def producer_config(config: Mapping[str, object]) -> dict[str, object]:
    """Defaults, then ``F2_KAFKA_*`` from the environment, then ``config`` (wins)."""
    return {**DEFAULTS, **env_config(), **config}


def _is_fatal(exc: BaseException) -> bool:
    """True if ``exc`` (or its cause) carries a fatal librdkafka error."""
    while exc is not None:
        if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
            return exc.args[0].fatal()
        exc = exc.__cause__ or exc.__context__
    return False


def _reason(error: KafkaError) -> str:
    return (error.name() or str(error.code())).lstrip("_").lower()


class _CheckedKafkaPartition(StatelessSinkPartition[KafkaRecord]):
    def __init__(self, config: dict[str, object], worker: str) -> None:
        self._config = config
        self._producer = self._new_producer()
        self._reports: list[object] = []
        self._pending = 0
        self._in_flight = IN_FLIGHT.labels(worker)

    def _new_producer(self) -> Producer:
        return Producer({**self._config, "error_cb": self._on_client_error})

    def _on_client_error(self, error: KafkaError) -> None:
        CLIENT_ERRORS.labels(_reason(error)).inc()
        log.warning(
            "kafka client error (librdkafka retries)",
            extra={"stage": "kafka_sink", "reason": _reason(error), "detail": error.str()},
        )

    def _on_delivery(self, index: int, error: KafkaError | None, message: Message) -> None:
        self._pending -= 1
        self._reports[index] = error if error is not None else message.partition()

    def write_batch(self, items: list[KafkaRecord]) -> None:
        """Produce ``items``; return once Kafka confirmed all of them (retrying failures)."""
        backoff = RETRY_BACKOFF_S[0]
        records = items
        while records:
            records = self._deliver(records)
            if records:
                time.sleep(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_S[1])

    def _deliver(self, records: list[KafkaRecord]) -> list[KafkaRecord]:
        """Produce ``records`` and wait for every report; the records Kafka did not confirm."""
        self._reports = [_PENDING] * len(records)
        self._pending = 0
        fatal = self._produce(records)
        while self._pending > 0 and not fatal:
            try:
                self._producer.flush(1.0)
            except (KafkaException, SystemError) as exc:
                # A fatal producer error surfaces from flush() itself (e.g. a restarted broker
                # that lost the idempotent producer's id); the unconfirmed records are retried.
                if not _is_fatal(exc):
                    raise
                fatal = True
            self._in_flight.set(self._pending)
        self._in_flight.set(0)
        retry: list[KafkaRecord] = []
        delivered: Tally[tuple[str, int]] = Tally()
        reasons: Tally[str] = Tally()
        for record, report in zip(records, self._reports, strict=True):
            if isinstance(report, int):
                delivered[(record.topic, report)] += 1
                continue
            if isinstance(report, KafkaError):
                if report.code() in _NOT_RETRIABLE:
                    raise KafkaSinkError(
                        f"kafka delivery to {record.topic} failed, not retriable: {report.str()}"
                    )
                fatal = fatal or report.fatal()
                reasons[_reason(report)] += 1
            else:
                reasons["unconfirmed"] += 1
            retry.append(record)
        for (topic, partition), count in delivered.items():
            DELIVERED.labels(topic, str(partition)).inc(count)
        if retry:
            self._count_retries(retry, reasons)
        if retry:
            # After a failed round the idempotent producer's sequence state may no longer match
            # the broker's (a restarted broker forgets producer ids; timed-out batches leave gaps),
            # which can stall its retries: produce the retries on a fresh producer.
            self._reset_producer("fatal" if fatal else "failed_delivery")
        return retry

    def _produce(self, records: list[KafkaRecord]) -> bool:
        """Produce every record (waiting while the local queue is full); True on a fatal error."""
        producer = self._producer
        for index, record in enumerate(records):
            callback = partial(self._on_delivery, index)
            while True:
                try:
                    if record.partition is None:
                        producer.produce(
                            record.topic,
                            record.value,
                            record.key,
                            headers=record.headers,
                            on_delivery=callback,
                        )
                    else:
                        producer.produce(
                            record.topic,
                            record.value,
                            record.key,
                            partition=record.partition,
                            headers=record.headers,
                            on_delivery=callback,
                        )
                    self._pending += 1
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    error: KafkaError = exc.args[0]
                    if error.fatal():
                        return True
                    raise KafkaSinkError(f"kafka produce refused: {error.str()}") from exc
        self._in_flight.set(self._pending)
        return False

    def _count_retries(self, retry: list[KafkaRecord], reasons: Tally[str]) -> None:
        for reason, count in reasons.items():
            RETRIES.labels(retry[0].topic, reason).inc(count)
        log.warning(
            "kafka delivery failed; producing again",
            extra={"stage": "kafka_sink", "reason": ",".join(reasons), "records": len(retry)},
        )

    def _reset_producer(self, reason: str) -> None:
        PRODUCER_RESETS.labels(reason).inc()
        log.warning("kafka producer rebuilt", extra={"stage": "kafka_sink", "reason": reason})
        self._producer = self._new_producer()

    def close(self) -> None:
        self._producer.flush(10.0)


class CheckedKafkaSink(DynamicSink[KafkaRecord]):
    """Produces :class:`KafkaRecord` items; a batch completes only when Kafka stored all of it.

    ``config`` is librdkafka configuration (``bootstrap.servers`` at least); it overrides
    ``F2_KAFKA_*`` variables, which override :data:`DEFAULTS` (``acks=all``, idempotence on).
    One producer per worker.
    """

    def __init__(self, config: dict) -> None:
        self._config = producer_config(config)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CheckedKafkaPartition:
        return _CheckedKafkaPartition(self._config, str(worker_index))
