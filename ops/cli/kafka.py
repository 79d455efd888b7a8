"""``f2 kafka topics | tail TOPIC``: look at the pipeline's topics.

Reads with explicit partition assignment (no consumer group join, nothing committed), so looking
never disturbs the pipeline's own positions.
"""

from __future__ import annotations

import argparse
import sys
import uuid

import msgspec
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.kafka_config import client_config
from schemas.settings import Config


class PrintedRecord(msgspec.Struct):
    topic: str
    partition: int
    offset: int
    key: str | None
    headers: dict[str, str]
    value: str


def register(subparsers: argparse._SubParsersAction) -> None:
    kafka = subparsers.add_parser("kafka", help="look at the pipeline's Kafka topics")
    actions = kafka.add_subparsers(dest="action", required=True)
    actions.add_parser("topics", help="topics, partitions and offsets").set_defaults(
        func=cmd_topics
    )
    tail = actions.add_parser("tail", help="print records of a topic as JSON lines")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail.add_argument("-f", "--follow", action="store_true", help="keep waiting for new records")
    tail.add_argument(
        "--max", type=int, default=0, help="stop after this many records (0: no limit)"
    )
    tail.set_defaults(func=cmd_tail)


def _text(data: bytes | None) -> str:
    if data is None:
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + data.hex()


def cmd_topics(args: argparse.Namespace, config: Config) -> int:
    settings = config.connections
    admin = AdminClient(client_config(settings.kafka_bootstrap, config.kafka_client))
    try:
        metadata = admin.list_topics(timeout=10)
    except Exception as exc:
        print(f"f2 kafka: cannot reach {settings.kafka_bootstrap}: {exc}", file=sys.stderr)
        return 1
    consumer = _consumer(settings.kafka_bootstrap, config.kafka_client)
    print(f"{'TOPIC':<20} {'PARTITION':>9} {'LOW':>10} {'HIGH':>10}")
    for name in sorted(metadata.topics):
        for partition in sorted(metadata.topics[name].partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=5)
            print(f"{name:<20} {partition:>9} {low:>10} {high:>10}")
    consumer.close()
    print("(offsets as reported by the broker; the local broker's can be off: count by reading)")
    return 0


def _consumer(bootstrap: str, client: dict[str, str]) -> Consumer:
    return Consumer(
        client_config(
            bootstrap,
            client,
            **{
                "group.id": f"f2-cli-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )


def cmd_tail(args: argparse.Namespace, config: Config) -> int:
    settings = config.connections
    consumer = _consumer(settings.kafka_bootstrap, config.kafka_client)
    try:
        metadata = consumer.list_topics(args.topic, timeout=10)
    except Exception as exc:
        print(f"f2 kafka: cannot reach {settings.kafka_bootstrap}: {exc}", file=sys.stderr)
        return 1
    partitions = sorted(metadata.topics[args.topic].partitions)
    if not partitions:
        print(f"f2 kafka: no topic {args.topic!r}", file=sys.stderr)
        return 1
    start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    consumer.assign([TopicPartition(args.topic, p, start) for p in partitions])
    encoder = msgspec.json.Encoder()
    printed, at_eof = 0, set()
    try:
        while True:
            message = consumer.poll(0.5)
            if message is None:
                if not args.follow and len(at_eof) == len(partitions):
                    break
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    at_eof.add(message.partition())
                continue
            at_eof.discard(message.partition())
            record = PrintedRecord(
                topic=message.topic(),
                partition=message.partition(),
                offset=message.offset(),
                key=_text(message.key()) if message.key() is not None else None,
                headers={k: _text(v) for k, v in message.headers() or []},
                value=_text(message.value()),
            )
            sys.stdout.write(encoder.encode(record).decode() + "\n")
            sys.stdout.flush()
            printed += 1
            if args.max and printed >= args.max:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
