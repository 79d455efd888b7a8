"""The checked Kafka sink: every record confirmed before write_batch returns, failures retried."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import pytest
from confluent_kafka import KafkaError

from connectors import kafka_sink
from connectors.kafka_sink import CheckedKafkaSink, KafkaRecord, KafkaSinkError, env_config


class FakeProducer:
    """Delivers on flush; the first ``fail`` deliveries get ``error``; BufferError once if asked."""

    instances: ClassVar[list[FakeProducer]] = []

    def __init__(self, config: dict, fail: int = 0, error: KafkaError | None = None) -> None:
        self.config = config
        self.fail, self.error = fail, error
        self.queue: list[tuple[dict, object]] = []
        self.stored: list[dict] = []
        self.buffer_full_once = False
        FakeProducer.instances.append(self)

    def produce(self, topic, value, key, partition=None, headers=None, on_delivery=None):
        if self.buffer_full_once:
            self.buffer_full_once = False
            raise BufferError("queue full")
        record = {"topic": topic, "value": value, "key": key, "partition": partition}
        self.queue.append((record, on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        queue, self.queue = self.queue, []
        for record, callback in queue:
            if self.fail:
                self.fail -= 1
                callback(self.error, SimpleNamespace(partition=lambda: -1))
            else:
                self.stored.append(record)
                callback(None, SimpleNamespace(partition=lambda: 0))
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
    monkeypatch.setattr(kafka_sink, "RETRY_BACKOFF_S", (0.001, 0.002))
    return settings


def records(n: int) -> list[KafkaRecord]:
    return [KafkaRecord("raw_iot_data", b"k", str(i).encode(), [("h", b"v")]) for i in range(n)]


def test_write_batch_returns_after_every_delivery(producers) -> None:
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    part.write_batch(records(5))
    (producer,) = FakeProducer.instances
    assert [r["value"] for r in producer.stored] == [b"0", b"1", b"2", b"3", b"4"]
    assert producer.config["acks"] == "all" and producer.config["enable.idempotence"] is True


def test_failed_deliveries_are_produced_again_and_counted(producers) -> None:
    producers.update(fail=3, error=KafkaError(KafkaError._MSG_TIMED_OUT))
    before = kafka_sink.RETRIES.labels("raw_iot_data", "msg_timed_out")._value.get()
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    part.write_batch(records(5))
    stored = sorted(r["value"] for p in FakeProducer.instances for r in p.stored)
    assert stored == [b"0", b"1", b"2", b"3", b"4"]  # nothing dropped
    after = kafka_sink.RETRIES.labels("raw_iot_data", "msg_timed_out")._value.get()
    assert after - before == 3


def test_a_full_local_queue_waits_instead_of_failing(producers) -> None:
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    FakeProducer.instances[0].buffer_full_once = True
    part.write_batch(records(2))
    assert len(FakeProducer.instances[0].stored) == 2


def test_not_retriable_errors_raise(producers) -> None:
    producers.update(fail=1, error=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    part = CheckedKafkaSink({"bootstrap.servers": "x:1"}).build("kafka", 0, 1)
    with pytest.raises(KafkaSinkError, match="not retriable"):
        part.write_batch(records(1))


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
    assert env_config(env) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.password": "s3cret",
    }


def test_delivers_through_librdkafka_mock_cluster() -> None:
    part = CheckedKafkaSink({"test.mock.num.brokers": 1}).build("kafka", 0, 1)
    part.write_batch(records(50))
    assert part._pending == 0
