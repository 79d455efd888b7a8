"""MQTT source partition logic without a broker: what is acked, when, and in which order."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from connectors import mqtt_source
from connectors.mqtt_source import MqttSource, MqttSourceSettings, load_source_settings
from schemas.settings import load_settings


class FakeClient:
    def __init__(self) -> None:
        self.acks: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        assert qos == 1
        self.acks.append(mid)


def message(mid: int, topic: str = "tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1", qos: int = 1):
    return SimpleNamespace(mid=mid, topic=topic, payload=b"{}", qos=qos, retain=False)


@pytest.fixture
def part(monkeypatch: pytest.MonkeyPatch):
    client = FakeClient()
    monkeypatch.setattr(mqtt_source._MqttPartition, "_connect", lambda self: client)
    config = MqttSourceSettings("127.0.0.1", 1, "u", "p", partitions=2, batch_size=3)
    partition = MqttSource(config).build_part("mqtt", "s1", None)
    partition._generation = 1
    return partition, client


def receive(partition, *mids: int, qos: int = 1) -> None:
    for mid in mids:
        partition._on_message(None, None, message(mid, qos=qos))


def test_lists_one_partition_per_session() -> None:
    config = MqttSourceSettings("h", 1, "u", "p", partitions=3)
    assert MqttSource(config).list_parts() == ["s0", "s1", "s2"]
    assert mqtt_source.client_id(config, "s2") == "f2-ingest-s2"


def test_acks_only_after_the_epoch_closed_in_receive_order(part) -> None:
    partition, client = part
    receive(partition, 5, 6, 7, 8)
    first = partition.next_batch()
    assert [m.topic for m in first] and len(first) == 3  # batch_size bounds a batch
    assert partition.next_batch()  # the 4th message, same epoch
    assert client.acks == []  # emitted, epoch still open: nothing acknowledged
    partition.snapshot()  # epoch end
    assert client.acks == []  # not before the runtime calls next_batch again
    assert partition.next_batch() == []
    assert client.acks == [5, 6, 7, 8]
    partition.snapshot()
    partition.next_batch()
    assert client.acks == [5, 6, 7, 8]  # nothing acked twice


def test_messages_of_an_open_epoch_wait_for_the_next_snapshot(part) -> None:
    partition, client = part
    receive(partition, 1)
    partition.next_batch()
    partition.snapshot()
    receive(partition, 2)
    partition.next_batch()  # acks 1, emits 2
    assert client.acks == [1]
    partition.next_batch()
    assert client.acks == [1]
    partition.snapshot()
    partition.next_batch()
    assert client.acks == [1, 2]


def test_messages_from_an_earlier_connection_are_not_acked(part) -> None:
    partition, client = part
    receive(partition, 1, 2)
    partition.next_batch()
    partition._generation = 2  # reconnected: the broker re-sends 1 and 2 on the new connection
    receive(partition, 1, 2)
    partition.next_batch()
    partition.snapshot()
    partition.next_batch()
    assert client.acks == [1, 2]  # only the new connection's deliveries
    assert mqtt_source.ACKS_SKIPPED.labels("s1")._value.get() >= 2


def test_qos0_messages_need_no_ack(part) -> None:
    partition, client = part
    receive(partition, 0, qos=0)
    assert len(partition.next_batch()) == 1
    partition.snapshot()
    partition.next_batch()
    assert client.acks == []


def test_emits_raw_messages_with_receive_time(part) -> None:
    partition, _ = part
    receive(partition, 9)
    (raw,) = partition.next_batch()
    assert raw.topic.startswith("tele/") and raw.payload == b"{}" and raw.qos == 1
    assert raw.received_at_ms > 1_600_000_000_000


def test_next_awake_polls_soon_when_idle_and_at_once_when_busy(part) -> None:
    partition, _ = part
    assert partition.next_awake() is not None
    receive(partition, 1)
    assert partition.next_awake() is None


def test_settings_from_environment() -> None:
    env = {
        "F2_STACK_DIR": "/nonexistent",
        "F2_INGEST_PARTITIONS": "6",
        "F2_INGEST_TOPICS": "stat/#, tele/#, x/#",
        "F2_INGEST_RECEIVE_MAXIMUM": "500",
        "F2_MQTT_TLS": "1",
    }
    config = load_source_settings(load_settings(env), env)
    assert config.partitions == 6
    assert config.topic_filters == ("stat/#", "tele/#", "x/#")
    assert config.receive_maximum == 500 and config.tls
    assert load_source_settings(load_settings(env), {}).topic_filters == ("stat/#", "tele/#")
