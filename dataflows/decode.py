"""dataflows.decode: Kafka raw topic → decode → decoded topic + DLQ + timeseries storage.

    raw (RawKafkaSource) ─┐
                          ├─ merge ─ decode (flat_map_batch, worker-local registry cache)
    registry feed ────────┘              │            │              │
                                  rows by shard   decoded recs    DLQ recs
                                         │            │              │
                     store (StatefulLogic: batch N rows / T ms, COPY, ON CONFLICT DO NOTHING)
                                         │ refused rows → DLQ (stage=store)
                                         └──── keyed by MAC ──────────┴─ CheckedKafkaPartitionedSink

Guarantees: rows in storage exactly once (recovery + idempotent write, see
``connectors.timeseries_writer``); Kafka outputs at least once; a registry edit applies within about
a second (``connectors.registry_feed``).

Why the Kafka sink is a partitioned (stateful) sink: with recovery, the commit of epoch E waits
only for the snapshots of stateful steps (the raw source's offsets, the store's buffer), never for
a ``DynamicSink`` (Bytewax's ``recovery.rs``: the recovery frontier "does not monitor output
progress"). With the dynamic ``CheckedKafkaSink`` the commit of E could be written while some of
E's decoded/DLQ records still wait in the sink's input; a crash then loses them for good, since the
resumed source starts after E (the rows are safe: they are in the store's snapshot). The
partitioned sink's snapshot of E is taken after it wrote E's records and returns only once Kafka
confirmed them, so the commit of E implies they are in Kafka. The window is narrow and was not
observed in testing (notes §8.3); no test provokes it deterministically, because the runtime
exposes no hook between the commit and the sink's next activation. Cost: within the noise of
the shared box (``bench/decode_flow.py``, ``kafka_sink_partitioned_over_dynamic``: 0.94 and 1.24
in two runs): records go to the sink in one chunk per MAC and batch, and the partitions wait for
Kafka once per epoch instead of once per batch. The ingest flow keeps the dynamic sink: it runs
without recovery, where the epoch probe covers outputs.

Design choices (measured; ``bench/decode_flow.py``, 2 shared cores):
- Registry entries are a worker-local cache fed by the change feed, not keyed operator state:
  full decode ran at 126k msg/s with the local cache vs 94k msg/s with ``key_on`` +
  ``stateful_flat_map`` (lookup alone: 2.1M vs 0.22M items/s), because keyed state exchanges every
  message. The cache needs no recovery (re-read after a restart) and each row records the
  registry version that decoded it.
- Resume: Bytewax recovery with the raw source's offsets in the snapshots (not offsets stored with
  the rows: the flow has three outputs and batches mixing partitions, so DB-stored offsets could
  not cover the Kafka outputs). Its cost is negligible: ~40 µs of snapshot time per epoch and a
  few ms of SQLite writes over a 5 s run; a resumed epoch is rewritten idempotently.

Run (from the checkout; ``f2 run decode`` does exactly this)::

    python -m bytewax.recovery <stack>/recovery/decode 4        # once; see connectors.recovery_dir
    python -m bytewax.run dataflows.decode -w 1 -r <stack>/recovery/decode -s 1 -b 10

- ``-r``: recovery is REQUIRED for exactly-once resume: Kafka offsets live only in the recovery
  snapshots (the source never commits to Kafka). Without it a restart re-reads the raw topic from
  the beginning (still no duplicate rows, only wasted work and duplicate Kafka outputs).
- Recovery layout: ``<stack>/recovery/decode/part-{0..3}.sqlite3`` plus ``kafka-incarnation``;
  call ``connectors.recovery_dir.prepare_recovery(dir, 4, <stack>/kafka/incarnation)`` before each
  start (recreates the partitions when the local in-memory broker was restarted). 4 partitions =
  the most workers (processes × ``-w``) the flow may ever run with.
- ``-s 1``: one-second epochs (snapshot + replay window); ``-b 10``: keep 10 s of old snapshots.
- Scale with processes (``-i``/``-a``), not ``-w``: worker threads share the GIL.
- Metrics: Bytewax's API server, enabled here by default on port 3032
  (``BYTEWAX_DATAFLOW_API_ENABLED``/``BYTEWAX_DATAFLOW_API_PORT``; ``/metrics``), run from a
  writable directory (``dataflow.json`` is written to ``BYTEWAX_DATAFLOW_API_CACHE_PATH``).

Configuration: the connection settings of ``schemas.settings`` plus ``F2_DECODE_BATCH_SIZE``,
``F2_DECODE_KAFKA_PARTS`` (Kafka sink partitions, default ``F2_DECODE_RECOVERY_PARTS``, else 4),
``F2_STORE_*`` (``connectors.timeseries_writer``) and ``F2_REGISTRY_*``
(``connectors.registry_store``).
"""

from __future__ import annotations

import itertools
import os

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.decode_step import ERRORS, DecodeOutput, DecodeStep, rejected_record
from connectors.freshness import process_tracker
from connectors.kafka_sink import (
    CheckedKafkaPartitionedSink,
    CheckedKafkaSink,
    DeadLetters,
    KafkaRecord,
)
from connectors.kafka_source import RawKafkaSource
from connectors.logs import configure_logging
from connectors.registry_feed import RegistryFeedSource
from connectors.registry_store import load_registry_settings, thread_store
from connectors.store_rows import RowBatch
from connectors.timeseries_writer import StoreBatcher, load_store_settings, thread_submitter
from schemas.limits import load_input_limits
from schemas.reasons import UNDELIVERABLE
from schemas.settings import Settings, load_settings

METRICS_PORT = 3032


def build_flow(settings: Settings | None = None, dynamic_kafka_sink: bool = False) -> Dataflow:
    """The decode dataflow for ``settings`` (default: from the environment).

    ``dynamic_kafka_sink`` (benchmark only) writes Kafka through the ``DynamicSink``
    :class:`CheckedKafkaSink`, which has the recovery window this flow must not have (module doc).
    """
    s = settings or load_settings()
    store_settings = load_store_settings()
    registry_settings = load_registry_settings()
    batch_size = int(os.environ.get("F2_DECODE_BATCH_SIZE", "5000"))
    kafka_parts = int(
        os.environ.get("F2_DECODE_KAFKA_PARTS", os.environ.get("F2_DECODE_RECOVERY_PARTS", "4"))
    )
    dlq = s.dlq_topic
    shards = itertools.cycle([str(n) for n in range(store_settings.shards)])

    flow = Dataflow("f2_decode")
    raw = op.input("raw", flow, RawKafkaSource(s.kafka_bootstrap, s.raw_topic, batch_size))
    feed = op.input("registry_feed", flow, RegistryFeedSource(s.params_dsn))
    step = DecodeStep(
        lambda: thread_store(s.params_dsn, s.redis_url, registry_settings),
        s.decoded_topic,
        s.dlq_topic,
        limits=load_input_limits(),
    )
    out = op.flat_map_batch("decode", op.merge("with_feed", raw, feed), step)
    op.inspect("freshness", out, process_tracker().inspect)

    rows = op.filter_map("rows", out, _rows_to_store)
    by_shard = op.key_on("shard", rows, lambda _: next(shards))
    refused = op.stateful(
        "store",
        by_shard,
        lambda resume: StoreBatcher(
            thread_submitter(s.timeseries_dsn, store_settings), store_settings, resume
        ),
    )
    store_dlq = op.map(
        "store_dlq", refused, lambda shard_rejected: _keyed(rejected_record(shard_rejected[1], dlq))
    )
    records = op.flat_map("kafka_records", out, _keyed_records)
    kafka_out = op.merge("kafka_out", records, store_dlq)
    config = {"bootstrap.servers": s.kafka_bootstrap}
    dead_letters = DeadLetters(dlq, "decode", ERRORS.labels("decode", UNDELIVERABLE).inc)
    if dynamic_kafka_sink:
        records = op.flat_map("unkey", kafka_out, lambda key_chunk: key_chunk[1])
        op.output("kafka", records, CheckedKafkaSink(config, dead_letters))
    else:
        sink = CheckedKafkaPartitionedSink(config, kafka_parts, dead_letters)
        op.output("kafka", kafka_out, sink)
    return flow


def _rows_to_store(o: DecodeOutput) -> RowBatch | None:
    return o.rows if len(o.rows) or o.rows.entries else None


def _keyed(record: KafkaRecord) -> tuple[str, list[KafkaRecord]]:
    return (record.key.decode() if record.key else "", [record])


def _keyed_records(o: DecodeOutput) -> list[tuple[str, list[KafkaRecord]]]:
    """The batch's decoded and DLQ records grouped by Kafka key (the MAC), keyed for the sink.

    One item per key and batch instead of one per record: each item crossing a Bytewax step
    costs far more than grouping it here.
    """
    chunks: dict[bytes | None, list[KafkaRecord]] = {}
    for part in (o.decoded, o.dlq):
        for record in part:
            chunk = chunks.get(record.key)
            if chunk is None:
                chunks[record.key] = [record]
            else:
                chunk.append(record)
    return [(key.decode() if key else "", chunk) for key, chunk in chunks.items()]


os.environ.setdefault("BYTEWAX_DATAFLOW_API_ENABLED", "1")
os.environ.setdefault("BYTEWAX_DATAFLOW_API_PORT", str(METRICS_PORT))
configure_logging()
flow = build_flow()
