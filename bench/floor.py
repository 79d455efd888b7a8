"""The floor under ingest + decode: the library calls every message needs, each timed alone.

The CPU target is ingest + decode ≤ 60 µs of CPU per message at a fixed 5,000 msg/s. Part of
that cost is not the flows' own code but calls no implementation in this stack can skip: the
raw record's four headers handed to librdkafka, the record read back, the decoding, one Kafka
record per reading or event, and a Bytewax 0.21 worker that wakes about a thousand times a
second whatever the load. This benchmark times each of them alone, on the isolated stack's Kafka,
for :func:`bench.decode.build_mix`'s mix (the decode core benchmark's; per message of the mix):

- ``raw_produce``: each message as its raw record (:func:`schemas.wire.raw_record`: key and the
  raw topic's four headers, built before timing) handed to ``Producer.produce`` with the flows'
  client settings, then ``flush``: CPU of the whole process, librdkafka's threads included;
- ``raw_consume``: the same records read back by one ``Consumer`` (``assign``, as the decode
  source) and made :class:`~schemas.records.RawMessage`
  (:func:`connectors.kafka_source.raw_message`): CPU of the whole process;
- ``decoding``: :func:`schemas.decode.decode_message` with the mix's registry entries, this
  thread's CPU (what ``bench.decode`` reports as a rate);
- ``decoded_produce``: each reading or event as its ``decoded_iot_data`` JSON
  (:func:`schemas.wire.decoded_json`, encoded in the timing) produced without headers, then
  ``flush``: CPU of the whole process;
- ``worker_idle``: one Bytewax worker with nothing to do (:func:`idle_flow` under ``python -m
  bytewax.run``) for :data:`IDLE_S` seconds: its CPU per second, spread over :data:`RATE`
  messages per second, per flow process.

Left out, so the sum is a floor, not an estimate: ingest's MQTT side (``bench.ingest``'s
``own_client``, the flow minus Kafka, measured at its drain rate: the report adds it), storage
(COPY and PostgreSQL's share), the flows' Bytewax steps, rows and recovery snapshots. Each piece
is the median of :data:`ROUNDS` rounds.

Run: ``.venv/bin/python -m bench.floor [--messages N]``; prints JSON and writes
``bench/results/floor.json``. Uses the stack of ``F2_STACK_DIR`` (its Kafka only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import ROOT, proc_stat
from bench.decode import build_fleet, build_mix
from bench.e2e import CPU_RATE
from bench.ingest import DropSink
from connectors.kafka_config import client_config
from connectors.kafka_source import raw_message
from ops.stack.local import create_topics
from ops.stack.supervisor import stop_child
from schemas.decode import decode_message
from schemas.records import DecodeError, RawMessage
from schemas.settings import Config, child_environment, load_config
from schemas.topics import mac_from_topic
from schemas.wire import KafkaRecord, decoded_json, raw_record, topic_header

RESULTS = Path(__file__).resolve().parent / "results" / "floor.json"
RATE = CPU_RATE
"""The fixed rate of the CPU target: the worker's idle cost is per second, so per message it
depends on the rate."""
IDLE_S = 5.0
ROUNDS = 3
CONTROLLERS = 200


# A Bytewax worker with nothing to do -------------------------------------------------------------


class _Nothing(StatelessSourcePartition[None]):
    def next_batch(self) -> list[None]:
        return []

    def next_awake(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=1)


class _NothingSource(DynamicSource[None]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Nothing:
        return _Nothing()


def idle_flow() -> Dataflow:
    """A source that never emits (and asks to be polled once a second) into a sink: all a worker
    then does is Bytewax's own loop."""
    flow = Dataflow("f2_floor_idle")
    op.output("drop", op.input("nothing", flow, _NothingSource()), DropSink())
    return flow


def worker_idle_cores(seconds: float = IDLE_S) -> float:
    """Cores one idle Bytewax worker process uses (``python -m bytewax.run``, epoch 1 s as the
    flows), measured over ``seconds`` after a 2 s start."""
    argv = [sys.executable, "-m", "bytewax.run", "bench.floor:idle_flow()", "-s", "1"]
    child = subprocess.Popen(argv, cwd=ROOT, env=child_environment(), stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        before = proc_stat(child.pid)
        time.sleep(seconds)
        after = proc_stat(child.pid)
        if before is None or after is None:
            raise RuntimeError("the idle Bytewax worker exited")
        return (after[1] - before[1]) / seconds
    finally:
        stop_child(child, 10)


# The Kafka calls and the decoding -----------------------------------------------------------------


def produce_all(producer: Producer, records: list[KafkaRecord]) -> None:
    """Hand every record to ``producer`` (waiting while its queue is full), then flush."""
    produce = producer.produce
    for record in records:
        while True:
            try:
                if record.headers:
                    produce(record.topic, record.value, record.key, headers=record.headers)
                else:
                    produce(record.topic, record.value, record.key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("kafka did not confirm the floor benchmark's records in 60 s")


def consume_all(config: dict[str, Any], topic: str, count: int) -> list[RawMessage]:
    """``count`` records of partition 0 of ``topic`` as raw messages, read as the decode source
    reads them (``assign``, batches of up to 5,000)."""
    consumer = Consumer({**config, "group.id": f"f2-floor-{uuid.uuid4().hex[:8]}"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[RawMessage] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"read {len(out)} of {count} records back in 60 s")
            for msg in consumer.consume(5000, 0.5):
                if msg.error() is None:
                    out.append(raw_message(msg, topic, 0))
    finally:
        consumer.close()
    return out


def cpu_us(
    clock: Callable[[], float], messages: int, action: Callable[..., Any], *args: Any
) -> float:
    """CPU µs per message of ``action(*args)`` on ``clock`` (``time.process_time``: every thread
    of this process, librdkafka's included; ``time.thread_time``: this one)."""
    started = clock()
    action(*args)
    return (clock() - started) / messages * 1e6


def decode_all(messages: list[RawMessage], fleet: dict) -> None:
    """Decode every message with its controller's entry."""
    for raw in messages:
        decode_message(raw, fleet.get(mac_from_topic(raw.topic) or ""))


def decoded_records(topic: str, items: list[tuple[bytes | None, Any]]) -> list[KafkaRecord]:
    """The ``decoded_iot_data`` records of ``items`` (key, reading or event)."""
    return [KafkaRecord(topic, key, decoded_json(item)) for key, item in items]


def produce_decoded(producer: Producer, topic: str, items: list[tuple[bytes | None, Any]]) -> None:
    """Encode and produce the records of ``items``, then flush."""
    produce_all(producer, decoded_records(topic, items))


def decoded_items(messages: list[RawMessage], fleet: dict) -> list[tuple[bytes | None, Any]]:
    """(key, reading or event) of every reading and event of ``messages``."""
    now = datetime.now(UTC)
    out = []
    for raw in messages:
        mac = mac_from_topic(raw.topic)
        key = mac.encode() if mac else None
        out += [
            (key, item)
            for item in decode_message(raw, fleet.get(mac or ""), now)
            if type(item) is not DecodeError
        ]
    return out


# The run ------------------------------------------------------------------------------------------


def one_round(
    client: dict[str, Any], bootstrap: str, mix: list[RawMessage], fleet: dict, idle_s: float
) -> dict:
    """Every piece once, on fresh topics: µs per message, and the decoded records per message."""
    run = uuid.uuid4().hex[:8]
    raw_topic, decoded_topic = f"f2-floor-raw-{run}", f"f2-floor-decoded-{run}"
    create_topics(bootstrap, [raw_topic, decoded_topic], 1)
    raws = [
        raw_record(m, raw_topic, (mac_from_topic(m.topic) or "").encode(), topic_header(m.topic))
        for m in mix
    ]
    producer = Producer({**client, "delivery.report.only.error": True})
    count = len(mix)
    read: list[RawMessage] = []
    pieces = {
        "raw_produce": cpu_us(time.process_time, count, produce_all, producer, raws),
        "raw_consume": cpu_us(
            time.process_time, count, lambda: read.extend(consume_all(client, raw_topic, count))
        ),
    }
    pieces["decoding"] = cpu_us(time.thread_time, count, decode_all, read, fleet)
    items = decoded_items(read, fleet)
    pieces["decoded_produce"] = cpu_us(
        time.process_time, count, produce_decoded, producer, decoded_topic, items
    )
    pieces["worker_idle"] = worker_idle_cores(idle_s) * 1e6 / RATE
    return {"pieces": pieces, "records_per_msg": len(items) / count}


def measure(
    config: Config, messages: int, rounds: int = ROUNDS, idle_s: float = IDLE_S
) -> dict[str, Any]:
    """Every piece, ``rounds`` times on fresh topics of ``config``'s Kafka; the medians."""
    settings = config.connections
    client = client_config(settings.kafka_bootstrap, config.kafka_client)
    fleet = build_fleet(CONTROLLERS)
    received = int(time.time() * 1000)
    mix = [RawMessage(m.topic, m.payload, received) for m in build_mix(fleet, messages)]
    done = [one_round(client, settings.kafka_bootstrap, mix, fleet, idle_s) for _ in range(rounds)]
    names = list(done[0]["pieces"])
    return {
        "pieces_us_per_msg": {
            name: round(statistics.median(r["pieces"][name] for r in done), 2) for name in names
        },
        "rounds_us_per_msg": {name: [round(r["pieces"][name], 2) for r in done] for name in names},
        "records_per_msg": round(done[0]["records_per_msg"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000)
    args = parser.parse_args(argv)
    result = {
        "benchmark": "floor",
        "messages": args.messages,
        "controllers": CONTROLLERS,
        "rounds": ROUNDS,
        "rate_msgs_per_s": RATE,
        **measure(load_config(), args.messages),
        "load_average": os.getloadavg()[0],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
