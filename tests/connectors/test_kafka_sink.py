"""The checked Kafka sink: every record confirmed before write_batch returns, failures retried."""

from __future__ import annotations

import hashlib
from typing import ClassVar

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import REGISTRY

from connectors import kafka_sink
from connectors.failures import RetryPolicy
from connectors.kafka_sink import (
    CheckedKafkaPartitionedSink,
    CheckedKafkaSink,
    DeadLetters,
    part_key,
)
from schemas.settings import DecodeSettings, kafka_client_settings, load_section
from schemas.wire import DEAD_LETTER_VALUE_BYTES, KafkaRecord

DLQ = DeadLetters("dlq_iot_data", "ingest")


class FakeMessage:
    """A delivery report's message."""

    def __init__(self, record: dict) -> None:
        self._record = record

    def topic(self) -> str:
        return self._record["topic"]

    def key(self) -> bytes | None:
        return self._record["key"]

    def value(self) -> bytes:
        return self._record["value"]

    def headers(self) -> None:
        return None  # confluent-kafka's delivery reports never carry headers (its issue #574)

    def partition(self) -> int:
        partition = self._record["partition"]
        return -1 if partition is None else partition


class FakeProducer:
    """Delivers on flush; the first ``fail`` deliveries get ``error``; BufferError once if asked.

    Reports go to the producer-level ``on_delivery`` (failures only, like
    ``delivery.report.only.error``).
    """

    instances: ClassVar[list[FakeProducer]] = []

    def __init__(
        self,
        config: dict,
        fail: int = 0,
        error: KafkaError | None = None,
        max_bytes: int | None = None,
        fail_topic: str | None = None,
    ) -> None:
        self.config = config
        self.fail, self.error = fail, error
        self.max_bytes, self.fail_topic = max_bytes, fail_topic
        self.queue: list[dict] = []
        self.stored: list[dict] = []
        self.flushes = 0
        self.buffer_full_once = False
        FakeProducer.instances.append(self)

    def produce(self, topic, value, key, partition=None, headers=None, on_delivery=None):
        assert on_delivery is None  # no per-record callback
        if self.buffer_full_once:
            self.buffer_full_once = False
            raise BufferError("queue full")
        if self.max_bytes is not None and len(value) > self.max_bytes:  # librdkafka's own check
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        record = {
            "topic": topic,
            "value": value,
            "key": key,
            "partition": partition,
            "headers": headers,
        }
        self.queue.append(record)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.flushes += 1
        queue, self.queue = self.queue, []
        for record in queue:
            if self.fail and self.fail_topic in (None, record["topic"]):
                self.fail -= 1
                self.config["on_delivery"](self.error, FakeMessage(record))
            else:
                self.stored.append(record)
        return 0


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch):
    FakeProducer.instances = []
    settings: dict = {}
    # Only the first producer misbehaves; a rebuilt one works.
    monkeypatch.setattr(
        kafka_sink,
        "Producer",
        lambda config: FakeProducer(config, **(settings if not FakeProducer.instances else {})),
    )
    monkeypatch.setattr(
        kafka_sink, "RETRY_POLICY", RetryPolicy(first_s=0.001, max_s=0.002, blocked_s=0.003)
    )
    return settings


def records(n: int) -> list[KafkaRecord]:
    return [KafkaRecord("raw_iot_data", b"k", str(i).encode(), [("h", b"v")]) for i in range(n)]


def test_write_batch_returns_after_every_delivery(producers) -> None:
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    part.write_batch(records(5))
    (producer,) = FakeProducer.instances
    assert [r["value"] for r in producer.stored] == [b"0", b"1", b"2", b"3", b"4"]
    assert producer.config["acks"] == "all" and producer.config["enable.idempotence"] is True
    assert producer.config["delivery.report.only.error"] is True


def test_failed_deliveries_are_produced_again_and_counted(producers) -> None:
    producers.update(fail=3, error=KafkaError(KafkaError._MSG_TIMED_OUT))
    before = kafka_sink.RETRIES.labels("raw_iot_data", "msg_timed_out")._value.get()
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    part.write_batch(records(5))
    stored = sorted(r["value"] for p in FakeProducer.instances for r in p.stored)
    assert stored == [b"0", b"1", b"2", b"3", b"4"]  # nothing dropped
    assert all(r["headers"] == [("h", b"v")] for r in FakeProducer.instances[1].stored)
    after = kafka_sink.RETRIES.labels("raw_iot_data", "msg_timed_out")._value.get()
    assert after - before == 3


def test_a_full_local_queue_waits_instead_of_failing(producers) -> None:
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    FakeProducer.instances[0].buffer_full_once = True
    part.write_batch(records(2))
    assert len(FakeProducer.instances[0].stored) == 2


def test_authorisation_failures_hold_visibly_until_delivered(producers, monkeypatch) -> None:
    producers.update(fail=4, error=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    seen: list[tuple[float, float | None]] = []
    monkeypatch.setattr(
        "connectors.failures.pause",
        lambda s: seen.append((s, REGISTRY.get_sample_value("f2_kafka_blocked"))),
    )
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    part.write_batch(records(4))
    stored = sorted(r["value"] for p in FakeProducer.instances for r in p.stored)
    assert stored == [b"0", b"1", b"2", b"3"]  # held, then delivered: nothing dropped
    assert seen == [(0.003, 1.0)]  # the blocked wait, with the gauge up meanwhile
    assert REGISTRY.get_sample_value("f2_kafka_blocked") == 0.0
    labels = {"dependency": "kafka", "code": "topic_authorization_failed"}
    assert not any(
        sample.labels.items() >= labels.items()
        for metric in REGISTRY.collect()
        if metric.name == "f2_blocked_reason"
        for sample in metric.samples
    )


def test_a_record_the_producer_refuses_for_its_size_is_dead_lettered(producers) -> None:
    producers.update(max_bytes=100_000)
    before = REGISTRY.get_sample_value(
        "f2_kafka_sink_undeliverable_total", {"topic": "raw_iot_data", "stage": "ingest"}
    )
    counted: list[int] = []
    dlq = DeadLetters("dlq_iot_data", "ingest", lambda: counted.append(1))
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}, dlq).build("kafka", 0, 1)
    big = KafkaRecord("raw_iot_data", b"k", b"x" * 90_000, [("mqtt_topic", b"stat/t")])
    huge = KafkaRecord("raw_iot_data", b"k", b"y" * 300_000, [("mqtt_topic", b"stat/t")])
    part.write_batch([*records(2), big, huge])
    (producer,) = FakeProducer.instances
    assert [r["topic"] for r in producer.stored] == ["raw_iot_data"] * 3 + ["dlq_iot_data"]
    dead = producer.stored[3]
    headers = dict(dead["headers"])
    assert headers["reason"] == b"undeliverable" and headers["stage"] == b"ingest"
    assert headers["mqtt_topic"] == b"stat/t" and headers["target_topic"] == b"raw_iot_data"
    # The dead-letter topic refused the whole value too: its first 64 KiB and how to check it.
    assert dead["value"] == b"y" * DEAD_LETTER_VALUE_BYTES
    assert headers["original_size"] == b"300000"
    assert headers["sha256"] == hashlib.sha256(b"y" * 300_000).hexdigest().encode()
    after = REGISTRY.get_sample_value(
        "f2_kafka_sink_undeliverable_total", {"topic": "raw_iot_data", "stage": "ingest"}
    )
    assert after - (before or 0) == 1 and counted == [1]


def test_a_dead_letter_is_halved_while_still_too_large(producers) -> None:
    producers.update(max_bytes=10_000)
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}, DLQ).build("kafka", 0, 1)
    part.write_batch([KafkaRecord("raw_iot_data", b"k", b"z" * 50_000)])
    (dead,) = FakeProducer.instances[0].stored
    assert dead["topic"] == "dlq_iot_data" and len(dead["value"]) == 6_250  # 25,000 then 12,500
    assert dict(dead["headers"])["original_size"] == b"50000"


def test_a_size_refusal_reported_by_the_broker_is_dead_lettered(producers) -> None:
    producers.update(fail=1, error=KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}, DLQ).build("kafka", 0, 1)
    part.write_batch(records(3))
    stored = [(r["topic"], r["value"]) for p in FakeProducer.instances for r in p.stored]
    assert sorted(stored) == [
        ("dlq_iot_data", b"0"),
        ("raw_iot_data", b"1"),
        ("raw_iot_data", b"2"),
    ]


def test_a_broker_refusal_dead_letters_the_record_with_its_headers(producers) -> None:
    producers.update(fail=1, error=KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}, DLQ).build("kafka", 0, 1)
    part.write_batch([KafkaRecord("raw_iot_data", b"k", b"v", [("mqtt_topic", b"tele/x")])])
    (dead,) = [r for p in FakeProducer.instances for r in p.stored]
    assert dead["topic"] == "dlq_iot_data"
    assert dict(dead["headers"])["mqtt_topic"] == b"tele/x"  # not lost with the report


def test_records_alike_but_for_their_headers_are_all_produced_again(producers) -> None:
    """Which of two records with the same topic, key and value failed cannot be told from the
    report: both go again (a duplicate, never the wrong headers on the one that failed)."""
    producers.update(fail=1, error=KafkaError(KafkaError._MSG_TIMED_OUT))
    first = KafkaRecord("raw_iot_data", b"k", b"same", [("mqtt_topic", b"tele/a")])
    second = KafkaRecord("raw_iot_data", b"k", b"same", [("mqtt_topic", b"tele/b")])
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    part.write_batch([first, second, *records(2)])
    first_try, retries = FakeProducer.instances
    assert [dict(r["headers"])["mqtt_topic"] for r in first_try.stored[:1]] == [b"tele/b"]
    assert sorted(dict(r["headers"])["mqtt_topic"] for r in retries.stored) == [
        b"tele/a",
        b"tele/b",
    ]


def test_real_failure_reports_are_produced_again_with_their_headers() -> None:
    """librdkafka's own delivery reports (a broker nobody listens on, a short message timeout)
    carry no headers; the records produced again must have them."""
    delivery = kafka_sink._Delivery(
        {"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 300, "log_level": 0}, "w"
    )
    sent = [
        KafkaRecord("raw_iot_data", b"k", b"a", [("mqtt_topic", b"tele/a"), ("n", b"1")]),
        KafkaRecord("raw_iot_data", b"k", b"b", [("mqtt_topic", b"tele/b"), ("n", b"2")]),
        KafkaRecord("raw_iot_data", None, b"c"),
    ]
    assert delivery.produce(sent) is False
    again, failure, error = delivery._round(False)
    assert error.code() == KafkaError._MSG_TIMED_OUT and failure is not None
    assert sorted(again, key=lambda r: r.value) == sent


def test_without_a_dead_letter_topic_a_refused_record_holds(producers, monkeypatch) -> None:
    producers.update(fail=1, error=KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    seen: list[float | None] = []
    monkeypatch.setattr(
        "connectors.failures.pause",
        lambda _s: seen.append(REGISTRY.get_sample_value("f2_kafka_blocked")),
    )
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    part.write_batch(records(1))
    assert seen == [1.0]  # held once, then the healthy producer delivered it
    assert [r["value"] for r in FakeProducer.instances[1].stored] == [b"0"]


def test_fatal_error_rebuilds_the_producer_and_delivers(producers) -> None:
    producers.update(fail=2, error=KafkaError(KafkaError._FATAL, fatal=True))
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    part.write_batch(records(2))
    assert len(FakeProducer.instances) == 2
    assert len(FakeProducer.instances[1].stored) == 2


def test_explicit_partition_is_kept(producers) -> None:
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    part.write_batch([KafkaRecord("t", None, b"v", partition=2)])
    assert FakeProducer.instances[0].stored[0]["partition"] == 2


def test_env_passes_librdkafka_settings_through(tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    env = {
        "F2_KAFKA_BOOTSTRAP": "b:9092",
        "F2_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "F2_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "F2_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "F2_KAFKA_PARTITIONS": "4",
        "F2_KAFKA_RETENTION_MS": "3600000",
    }
    assert kafka_client_settings(env) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.password": "s3cret",
    }


def test_delivers_through_librdkafka_mock_cluster() -> None:
    part = CheckedKafkaSink({"test.mock.num.brokers": 1}).build("kafka", 0, 1)
    part.write_batch(records(50))
    assert part._delivery._produced == 0


def keyed(n: int, macs: int = 3) -> list[tuple[str, KafkaRecord]]:
    out = []
    for i in range(n):
        mac = f"{i % macs:012x}"
        out.append((mac, KafkaRecord("decoded_iot_data", mac.encode(), str(i).encode())))
    return out


def test_partitioned_sink_confirms_delivery_in_the_snapshot(producers) -> None:
    sink = CheckedKafkaPartitionedSink({"bootstrap.servers": "x:1"}, parts=4)
    assert sink.list_parts() == ["kafka-0", "kafka-1", "kafka-2", "kafka-3"]
    first, second = (sink.build_part("kafka", p, None) for p in ("kafka-0", "kafka-3"))
    (producer,) = FakeProducer.instances  # one producer per worker, shared by its partitions
    first.write_batch([r for _, r in keyed(3)])
    second.write_batch([r for _, r in keyed(2)])
    assert producer.stored == [] and producer.flushes == 0  # produced, not yet waited for
    assert first.snapshot() is None
    assert [r["value"] for r in producer.stored] == [b"0", b"1", b"2", b"0", b"1"]
    assert second.snapshot() is None and producer.flushes == 1  # nothing left to wait for


def test_partitioned_sink_snapshot_retries_failed_deliveries(producers) -> None:
    producers.update(fail=2, error=KafkaError(KafkaError._MSG_TIMED_OUT))
    part = CheckedKafkaPartitionedSink({"bootstrap.servers": "x:1"}, parts=2).build_part(
        "kafka", "kafka-0", None
    )
    part.write_batch([r for _, r in keyed(4)])
    assert part.snapshot() is None
    stored = sorted(r["value"] for p in FakeProducer.instances for r in p.stored)
    assert stored == [b"0", b"1", b"2", b"3"]


def test_partitioned_sink_spreads_keys_and_keeps_each_key_on_one_part() -> None:
    sink = CheckedKafkaPartitionedSink({"bootstrap.servers": "x:1"}, parts=4)
    macs = [f"f2{n:010x}" for n in range(400)]
    parts = [sink.part_fn(mac) % 4 for mac in macs]
    assert all(parts.count(p) > 40 for p in range(4))  # every part gets a share
    assert parts == [sink.part_fn(mac) % 4 for mac in macs]  # deterministic (not hash())


def test_a_part_key_routes_like_the_record_key_itself() -> None:
    sink = CheckedKafkaPartitionedSink({"bootstrap.servers": "x:1"}, parts=4)
    for n in range(300):
        mac = f"f2{n:010x}"
        assert sink.part_fn(part_key(mac.encode(), 4)) % 4 == sink.part_fn(mac) % 4
    assert part_key(None, 4) == part_key(b"", 4)


def test_partitioned_sink_parts_default_to_the_recovery_partitions() -> None:
    decode = load_section(DecodeSettings, {"F2_DECODE_RECOVERY_PARTS": "6"})
    sink = CheckedKafkaPartitionedSink({"bootstrap.servers": "x:1"}, decode.sink_parts)
    assert len(sink.list_parts()) == 6
    decode = load_section(DecodeSettings, {"F2_DECODE_KAFKA_PARTS": "3"})
    assert len(CheckedKafkaPartitionedSink({}, decode.sink_parts).list_parts()) == 3


def test_partitioned_sink_in_a_dataflow_delivers_every_record(producers) -> None:
    flow = Dataflow("partitioned_sink")
    items = op.input("in", flow, TestingSource(keyed(500, macs=17), batch_size=50))
    op.output("kafka", items, CheckedKafkaPartitionedSink({"bootstrap.servers": "x:1"}, parts=4))
    run_main(flow)
    stored = sorted(int(r["value"]) for p in FakeProducer.instances for r in p.stored)
    assert stored == list(range(500))


def test_partitioned_sink_accepts_chunks_of_records(producers) -> None:
    flow = Dataflow("partitioned_sink_chunks")
    chunks = [(key, [record, record]) for key, record in keyed(100, macs=7)]
    items = op.input("in", flow, TestingSource(chunks, batch_size=10))
    op.output("kafka", items, CheckedKafkaPartitionedSink({"bootstrap.servers": "x:1"}, parts=3))
    run_main(flow)
    stored = sorted(int(r["value"]) for p in FakeProducer.instances for r in p.stored)
    assert stored == sorted(list(range(100)) * 2)
