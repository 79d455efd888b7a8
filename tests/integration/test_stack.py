"""The local stack is real: every service answers with the settings `f2 stack env` exports."""

from __future__ import annotations

import os
import shlex
import time
import uuid

import paho.mqtt.client as mqtt
import psycopg
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from schemas.settings import Settings, load_settings
from tests.conftest import f2

pytestmark = pytest.mark.integration


def exported_settings() -> Settings:
    """Settings built only from what `f2 stack env` prints (not from the stack files)."""
    env: dict[str, str] = {"F2_STACK_DIR": "/nonexistent"}
    for line in f2("stack", "env").stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0]
    env["F2_STACK_DIR"] = "/nonexistent"  # prove the exported values alone are enough
    return load_settings(env)


def test_env_exports_every_variable(stack: Settings) -> None:
    names = {
        line.split("=")[0].removeprefix("export ")
        for line in f2("stack", "env").stdout.splitlines()
    }
    assert {
        "F2_MQTT_HOST", "F2_MQTT_PORT", "F2_MQTT_USERNAME", "F2_MQTT_PASSWORD", "F2_SIM_USERNAME",
        "F2_SIM_PASSWORD", "F2_KAFKA_BOOTSTRAP", "F2_PARAMS_DSN", "F2_TIMESERIES_DSN",
        "F2_REDIS_URL",
    } <= names  # fmt: skip


def test_both_databases_answer_sql(stack: Settings) -> None:
    settings = exported_settings()
    with psycopg.connect(settings.params_dsn) as conn:
        macs = {
            row[0]
            for row in conn.execute(
                'SELECT "MacAddress" FROM "Device" WHERE "MacAddress" IS NOT NULL'
            )
        }
        assert {"e4fd45f654be", "abc123def456", "123456abcdef"} <= macs
        pins = conn.execute('SELECT count(*) FROM "Pin"').fetchone()[0]
        assert pins >= 9
    with psycopg.connect(settings.timeseries_dsn) as conn:
        conn.execute("CREATE TEMP TABLE probe (x int)")
        conn.execute("INSERT INTO probe VALUES (42)")
        assert conn.execute("SELECT x FROM probe").fetchone() == (42,)


def test_redis_round_trip(stack: Settings) -> None:
    client = redis.Redis.from_url(exported_settings().redis_url)
    key = f"f2:test:{uuid.uuid4().hex}"
    client.set(key, b"value", ex=60)
    assert client.get(key) == b"value"
    client.delete(key)


def read_until(consumer: Consumer, wanted: bytes, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        if message.value() == wanted:
            return {"key": message.key(), "headers": dict(message.headers() or [])}
    raise AssertionError(f"{wanted!r} not read back within {timeout_s}s")


@pytest.mark.parametrize("topic_attr", ["raw_topic", "decoded_topic", "dlq_topic"])
def test_kafka_round_trip_on_each_topic(stack: Settings, topic_attr: str) -> None:
    settings = exported_settings()
    topic = getattr(settings, topic_attr)
    value = f"probe-{uuid.uuid4().hex}".encode()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    reports: list = []
    producer.produce(
        topic,
        value=value,
        key=b"e4fd45f654be",
        partition=0,
        headers=[("mqtt_topic", b"tele/probe")],
        on_delivery=lambda e, m: reports.append(e),
    )
    assert producer.flush(20) == 0
    assert reports == [None]
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "f2-test",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    try:
        got = read_until(consumer, value)
    finally:
        consumer.close()
    assert got == {"key": b"e4fd45f654be", "headers": {"mqtt_topic": b"tele/probe"}}


def mqtt_connect(
    settings: Settings, username: str | None, password: str | None
) -> tuple[mqtt.Client, object]:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if username is not None:
        client.username_pw_set(username, password)
    result: dict[str, object] = {}
    client.on_connect = lambda c, u, flags, reason, props: result.setdefault("reason", reason)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    deadline = time.monotonic() + 10
    while "reason" not in result and time.monotonic() < deadline:
        time.sleep(0.05)
    return client, result.get("reason")


def test_mosquitto_rejects_anonymous_and_wrong_password(stack: Settings) -> None:
    settings = exported_settings()
    for username, password in ((None, None), (settings.mqtt_username, "wrong-password")):
        client, reason = mqtt_connect(settings, username, password)
        client.loop_stop()
        client.disconnect()
        assert reason is not None and reason.is_failure, (username, reason)


def test_mosquitto_delivers_rig_publish_to_pipeline_user(stack: Settings) -> None:
    settings = exported_settings()
    sub, reason = mqtt_connect(settings, settings.mqtt_username, settings.mqtt_password)
    assert reason is not None and not reason.is_failure
    received: list[bytes] = []
    granted: list = []
    sub.on_message = lambda c, u, m: received.append(m.payload)
    sub.on_subscribe = lambda c, u, mid, codes, props: granted.extend(codes)
    sub.subscribe("tele/#", qos=1)
    deadline = time.monotonic() + 10
    while not granted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert granted and not granted[0].is_failure
    pub, reason = mqtt_connect(settings, settings.sim_username, settings.sim_password)
    assert reason is not None and not reason.is_failure
    payload = f"probe-{uuid.uuid4().hex}".encode()
    pub.publish("tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1", payload, qos=1).wait_for_publish(10)
    deadline = time.monotonic() + 10
    while payload not in received and time.monotonic() < deadline:
        time.sleep(0.05)
    for client in (sub, pub):
        client.loop_stop()
        client.disconnect()
    assert payload in received


def test_second_up_is_a_fast_no_op(stack: Settings) -> None:
    started = time.monotonic()
    result = f2("stack", "up")
    assert time.monotonic() - started < 10
    assert "started" not in result.stderr and "applied" not in result.stderr


def test_status_lists_every_service_ready(stack: Settings) -> None:
    result = f2("stack", "status", check=False)
    assert result.returncode == 0, result.stdout
    for name in ("postgres", "mosquitto", "kafka", "redis"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(name))
        assert " ready " in line and str(os.sep) in line


def test_down_then_up_keeps_registry_rows(stack: Settings) -> None:
    marker = f"probe-{uuid.uuid4().hex[:12]}"
    with psycopg.connect(stack.params_dsn) as conn:
        conn.execute('INSERT INTO "DeviceType" ("Name") VALUES (%s)', (marker,))
    f2("stack", "down")
    assert "down" in f2("stack", "status", check=False).stdout
    f2("stack", "up")
    with psycopg.connect(stack.params_dsn) as conn:
        assert conn.execute(
            'SELECT count(*) FROM "DeviceType" WHERE "Name" = %s', (marker,)
        ).fetchone() == (1,)
        conn.execute('DELETE FROM "DeviceType" WHERE "Name" = %s', (marker,))
