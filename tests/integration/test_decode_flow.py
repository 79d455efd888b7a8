"""dataflows.decode on an isolated stack (it stops services): raw topic → storage, Kafka, DLQ;
exactly-once rows through SIGKILLs; registry edits applied within 5 s; Redis and PostgreSQL
outages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from ops.stack.procs import wait_until
from schemas.settings import Settings
from tests.integration.decode_support import (
    MACS,
    METRICS_PORT,
    FlowProcess,
    Traffic,
    iso_stack,
    stack_cmd,
)
from tests.stacks import IsolatedStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def iso(decode_stack: IsolatedStack) -> Settings:
    return iso_stack(decode_stack)


@pytest.fixture(scope="module")
def decode(iso: Settings, decode_stack: IsolatedStack, tmp_path_factory) -> Iterator[FlowProcess]:
    workdir, port = tmp_path_factory.mktemp("decode"), decode_stack.port(METRICS_PORT)
    process = FlowProcess(decode_stack, "dataflows.decode", workdir, port, True)
    process.start()
    yield process
    process.kill()


def dlq_headers(settings: Settings, since: datetime, expected: int) -> list[dict[str, bytes]]:
    """Headers of the DLQ records whose payload timestamp is in this traffic's window: the topic
    read from its start to its end, again until ``expected`` distinct source records were seen
    or 30 s passed. Decode confirms an epoch's DLQ records when the epoch ends, which can be
    after its rows are stored, so a first read can end before them."""
    deadline = time.monotonic() + 30
    found: list[dict[str, bytes]] = []
    while time.monotonic() < deadline:
        found = read_dlq(settings, since.strftime("%Y-%m-%d %H").encode())
        if len({(h["source_partition"], h["source_offset"]) for h in found}) >= expected:
            break
        time.sleep(0.5)
    return found


def read_dlq(settings: Settings, prefix: bytes) -> list[dict[str, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "decode-test",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(settings.dlq_topic, p, -2) for p in range(4)])
    found, eof = [], set()
    deadline = time.monotonic() + 30
    while len(eof) < 4 and time.monotonic() < deadline:
        for message in consumer.consume(1000, 1.0):
            if message.error():
                eof.add(message.partition())
            elif prefix in message.value():
                found.append(dict(message.headers() or []))
    consumer.close()
    return found


def test_raw_messages_end_in_storage_kafka_and_dlq(iso: Settings, decode: FlowProcess):
    traffic = Traffic(iso)
    traffic.send(3000)
    assert traffic.wait_stored() == (traffic.readings, traffic.events)
    headers = dlq_headers(iso, traffic.base, traffic.bad_crc)
    assert len({(h["source_partition"], h["source_offset"]) for h in headers}) == traffic.bad_crc
    sample = headers[0]
    assert sample["reason"] == b"bad_crc" and sample["stage"] == b"decode"
    assert sample["source_topic"] == iso.raw_topic.encode()
    assert sample["mqtt_topic"].startswith(b"tele/f2-")
    assert decode.metric("f2_decode_errors_total", 'reason="bad_crc"') >= traffic.bad_crc
    assert decode.metric("f2_store_rows_total", 'outcome="inserted"') > 0


def test_registry_change_applies_within_5_s(iso: Settings, decode: FlowProcess):
    traffic = Traffic(iso)
    traffic.send(30)
    traffic.wait_stored()
    select = (
        "SELECT value, registry_version FROM readings_named WHERE label = 'Temperature'"
        " AND time = %s AND mac = %s"
    )
    with psycopg.connect(iso.timeseries_dsn) as conn:
        before = conn.execute(select, (traffic.time_of(0), MACS[0])).fetchone()
    assert before[0] == 25.0
    update = (
        'UPDATE "DataPoint" SET "Decimals" = %s WHERE "Label" = \'Temperature\''
        ' AND "DeviceTemplateId" = (SELECT "DeviceTemplateId" FROM "DeviceTemplate"'
        " WHERE \"Model\" = 'ENV-S1')"
    )
    with psycopg.connect(iso.params_dsn, autocommit=True) as conn:
        conn.execute(update, (1,))
    changed = time.monotonic()
    try:
        after = None
        while time.monotonic() - changed < 5 and after is None:
            number = traffic.sent - traffic.sent % 3 + 3  # a message of MACS[0]
            traffic.send(number - traffic.sent + 1)
            time.sleep(0.3)
            with psycopg.connect(iso.timeseries_dsn) as conn:
                row = conn.execute(select, (traffic.time_of(number), MACS[0])).fetchone()
            if row is not None and row[0] == 250.0:
                after = row
        assert after is not None, "the new Decimals were not applied within 5 s"
        assert after[1] > before[1]
    finally:
        with psycopg.connect(iso.params_dsn, autocommit=True) as conn:
            conn.execute(update, (2,))


def test_sigkill_twice_leaves_rows_exact(iso: Settings, decode: FlowProcess):
    traffic = Traffic(iso)
    for _ in range(2):
        before = traffic.readings
        traffic.send(20000)
        target = traffic.readings
        wait_until(lambda b=before, t=target: b < traffic.stored()[0] < t - 3000, 60, 0.05)
        decode.kill()  # mid-stream: some of this round stored, most not
        assert traffic.stored()[0] < target
        decode.start()
    traffic.send(2000)
    assert traffic.wait_stored(120) == (traffic.readings, traffic.events)
    with psycopg.connect(iso.timeseries_dsn) as conn:
        dupes = conn.execute(
            "SELECT count(*) - count(DISTINCT (sensor_id, datapoint_id, time)) FROM readings"
            " WHERE time >= %s",
            (traffic.base,),
        ).fetchone()[0]
    assert dupes == 0


def test_redis_down_decoding_continues_from_postgres(
    iso: Settings, decode: FlowProcess, decode_stack: IsolatedStack
):
    stack_cmd(decode_stack, "stop", "redis")
    try:
        flushes = decode.metric("f2_registry_refreshes_total", 'scope="all"')
        with psycopg.connect(iso.params_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_notify('f2_registry', '0:*')")  # empty the local caches
        # Send once the flow applied it, or cached entries answer and Redis is never asked.
        assert wait_until(
            lambda: decode.metric("f2_registry_refreshes_total", 'scope="all"') > flushes, 15
        )
        traffic = Traffic(iso)
        traffic.send(600)
        assert traffic.wait_stored() == (traffic.readings, traffic.events)
        assert decode.metric("f2_registry_failures_total", 'backend="redis"') > 0
    finally:
        stack_cmd(decode_stack, "start", "redis")


@pytest.mark.slow
def test_postgres_down_10_s_nothing_dropped(
    iso: Settings, decode: FlowProcess, decode_stack: IsolatedStack
):
    traffic = Traffic(iso)
    traffic.send(500)
    stack_cmd(decode_stack, "stop", "postgres")
    traffic.send(1500)
    time.sleep(10)
    stack_cmd(decode_stack, "start", "postgres")
    assert traffic.wait_stored(120) == (traffic.readings, traffic.events)
    assert decode.proc is not None and decode.proc.poll() is None
