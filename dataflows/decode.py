"""dataflows.decode: Kafka raw topic → decode → decoded topic + DLQ + timeseries storage.

    raw (RawKafkaSource) ─┐
                          ├─ merge ─ decode (flat_map_batch, worker-local registry cache)
    registry feed ────────┘              │            │              │
                                  rows by shard   decoded recs    DLQ recs
                                         │            │              │
                     store (StatefulLogic: batch N rows / T ms, COPY, ON CONFLICT DO NOTHING)
                                         │ refused rows → DLQ (stage=store)
                                         └──── chunked by the MAC's sink part ┴─ CheckedKafka-
                                                                    PartitionedSink

Guarantees: rows in storage exactly once (recovery + idempotent write, see
``connectors.timeseries_writer``); Kafka outputs at least once, confirmed before the epoch's
recovery commit (the partitioned sink, docs/ARCHITECTURE.md); a registry edit applies within
about a second (``connectors.registry_feed``).

:func:`build_flow` is the factory: ``build_flow(config, connectors)`` with every source, sink and
external service injectable (:class:`DecodeConnectors`; tests use Bytewax's testing sources and
sinks); ``build_flow()`` is the entry point: it reads the settings once and sets up logging and
the metrics API. Run (``f2 run decode`` does this)::

    python -m bytewax.recovery <stack>/recovery/decode 4        # once; see connectors.recovery_dir
    python -m bytewax.run "dataflows.decode:build_flow()" -w 1 -r <stack>/recovery/decode -s 1 -b 10

(``python -m bytewax.run dataflows.decode`` works too.) Recovery (``-r``) is required for
exactly-once resume: the Kafka offsets live only in its snapshots. Metrics: Bytewax's API server
on ``F2_DECODE_METRICS_PORT`` (3032), ``/metrics``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition

from connectors.decode_step import ERRORS, DecodeOutput, DecodeStep, rejected_record
from connectors.freshness import process_tracker
from connectors.kafka_config import client_config
from connectors.kafka_sink import (
    CheckedKafkaPartitionedSink,
    CheckedKafkaSink,
    DeadLetters,
    part_key,
)
from connectors.kafka_source import RawKafkaSource
from connectors.registry_feed import RegistryFeedSource
from connectors.registry_store import RegistryStore, thread_store
from connectors.store_rows import Rejected, RowBatch
from connectors.timeseries_writer import StoreBatcher, thread_submitter
from dataflows.entry import flow_entry
from schemas.reasons import UNDELIVERABLE
from schemas.settings import Config
from schemas.wire import KafkaRecord

Submit = Callable[[RowBatch], Future[list[Rejected]]]


@dataclass(frozen=True)
class DecodeConnectors:
    """What the decode flow reads from and writes to; :func:`connectors` builds the real ones.

    ``kafka`` takes ``(key, [KafkaRecord, ...])`` items (one chunk per sink part and batch);
    ``registry`` returns this worker thread's registry store, ``store`` its write submitter.
    """

    raw: Source[Any]
    registry_feed: Source[Any] | None
    registry: Callable[[], RegistryStore]
    store: Callable[[], Submit]
    kafka: Sink[Any]


def connectors(config: Config, dynamic_kafka_sink: bool = False) -> DecodeConnectors:
    """The flow's real connectors for ``config``. ``dynamic_kafka_sink`` (benchmark only) writes
    Kafka through the ``DynamicSink`` :class:`CheckedKafkaSink`, which has the recovery window this
    flow must not have (docs/ARCHITECTURE.md)."""
    s, client = config.connections, config.kafka_client
    dead_letters = DeadLetters(s.dlq_topic, "decode", ERRORS.labels("decode", UNDELIVERABLE).inc)
    producer = client_config(s.kafka_bootstrap, client)
    kafka: Sink[Any] = CheckedKafkaPartitionedSink(producer, config.decode.sink_parts, dead_letters)
    if dynamic_kafka_sink:
        kafka = _Unchunked(CheckedKafkaSink(producer, dead_letters))
    return DecodeConnectors(
        raw=RawKafkaSource(
            s.kafka_bootstrap,
            s.raw_topic,
            config.decode.batch_size,
            gap_wait_s=config.decode.gap_wait_ms / 1000,
            client=client,
            batch_wait_s=config.decode.batch_wait_ms / 1000,
        ),
        registry_feed=RegistryFeedSource(s.params_dsn),
        registry=lambda: thread_store(s.params_dsn, s.redis_url, config.registry),
        store=lambda: thread_submitter(s.timeseries_dsn, config.store),
        kafka=kafka,
    )


class _Unchunked(DynamicSink[Any]):
    """The dynamic Kafka sink fed with the flow's chunks (the benchmark's comparison)."""

    def __init__(self, inner: CheckedKafkaSink) -> None:
        self._inner = inner

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _UnchunkedPart:
        return _UnchunkedPart(self._inner.build(step_id, worker_index, worker_count))


class _UnchunkedPart(StatelessSinkPartition[Any]):
    def __init__(self, inner: StatelessSinkPartition[KafkaRecord]) -> None:
        self._inner = inner

    def write_batch(self, items: list[tuple[str, list[KafkaRecord]]]) -> None:
        self._inner.write_batch([record for _, chunk in items for record in chunk])

    def close(self) -> None:
        self._inner.close()


def build_flow(
    config: Config | None = None,
    io: DecodeConnectors | None = None,
    dynamic_kafka_sink: bool = False,
) -> Dataflow:
    """The decode dataflow. Without ``config``: the entry point (settings from the environment,
    logging, metrics API); without ``io``: the real connectors of ``config``
    (``dynamic_kafka_sink``: see :func:`connectors`)."""
    if config is None:
        config = flow_entry("decode")
    io = io or connectors(config, dynamic_kafka_sink)
    dlq = config.connections.dlq_topic
    shards = itertools.cycle([str(n) for n in range(config.store.shards)])

    flow = Dataflow("f2_decode")
    raw = op.input("raw", flow, io.raw)
    if io.registry_feed is not None:
        raw = op.merge("with_feed", raw, op.input("registry_feed", flow, io.registry_feed))
    step = DecodeStep(
        io.registry,
        config.connections.decoded_topic,
        dlq,
        config.privacy,
        config.limits,
    )
    out = op.flat_map_batch("decode", raw, step)
    op.inspect("freshness", out, process_tracker(config.freshness).inspect)

    rows = op.filter_map("rows", out, _rows_to_store)
    by_shard = op.key_on("shard", rows, lambda _: next(shards))
    refused = op.stateful(
        "store",
        by_shard,
        lambda resume: StoreBatcher(io.store(), config.store, resume),
    )
    chunks = SinkChunks(config.decode.sink_parts)
    store_dlq = op.map(
        "store_dlq",
        refused,
        lambda shard_rejected: chunks.one(rejected_record(shard_rejected[1], dlq)),
    )
    records = op.flat_map("kafka_records", out, chunks)
    op.output("kafka", op.merge("kafka_out", records, store_dlq), io.kafka)
    return flow


def _rows_to_store(o: DecodeOutput) -> RowBatch | None:
    return o.rows if len(o.rows) or o.rows.entries else None


class SinkChunks:
    """The Kafka records of a batch as one item per partition of the Kafka sink.

    Keyed by :func:`~connectors.kafka_sink.part_key` of each record's key (the MAC), in the
    batch's order: each device's records stay in order on one partition. One item per partition
    and batch instead of one per record (or per device: a batch of a large fleet has about one
    record per device): each item crossing a Bytewax step costs far more than grouping it here.
    """

    def __init__(self, parts: int) -> None:
        self._parts = parts

    def one(self, record: KafkaRecord) -> tuple[str, list[KafkaRecord]]:
        return (part_key(record.key, self._parts), [record])

    def __call__(self, o: DecodeOutput) -> list[tuple[str, list[KafkaRecord]]]:
        parts = self._parts
        by_key: dict[bytes | None, str] = {}
        chunks: dict[str, list[KafkaRecord]] = {}
        for part in (o.decoded, o.dlq):
            for record in part:
                key = by_key.get(record.key)
                if key is None:
                    key = by_key[record.key] = part_key(record.key, parts)
                chunk = chunks.get(key)
                if chunk is None:
                    chunks[key] = [record]
                else:
                    chunk.append(record)
        return list(chunks.items())


def __getattr__(name: str) -> Dataflow:
    """``python -m bytewax.run dataflows.decode`` reads ``flow``: built on first access, so
    importing this module has no side effects."""
    if name == "flow":
        return build_flow()
    raise AttributeError(name)
