"""dataflows.decode against a database that refuses rows, on the isolated decode stack.

- a 4,000-character field name (its index row is over PostgreSQL's limit, ``54000``) is one
  ``store_rejected`` dead letter, and good traffic after it is stored within 5 s;
- every row refused with one SQLSTATE (a trigger) holds the flow instead of dead-lettering;
- a revoked ``INSERT`` privilege: decode is ``down`` in the health report with the SQLSTATE,
  nothing is stored or lost, a restart while blocked changes nothing, and everything is stored
  once the grant is back;
- the autumn clock change: a Europe/Berlin controller reporting every 30 s across it has every
  reading stored once, both passes of the repeated hour included.

The decode process here runs with ``F2_LIMIT_FIELD_NAME_CHARS=5000`` (so the long field name
reaches the database rather than being refused by decode's input limits) and a 1 s blocked retry.
"""

from __future__ import annotations

import json
import random
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ops.health.checks import DOWN
from ops.health.flow_metrics import scrape
from ops.health.rules import FlowWatch
from ops.stack.procs import wait_until
from schemas.settings import Settings
from schemas.topics import ACCESS_MODE, SENSOR_MODE
from simulator.fleet import Connector, Controller, Fleet, Sensor
from simulator.registry import register_fleet
from tests.integration.decode_support import MACS, FlowProcess, Traffic, iso_stack
from tests.stacks import IsolatedStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORT = 3036  # at offset 0: the decode process's API is on ``decode_stack.port(PORT)``
ENV = {"F2_LIMIT_FIELD_NAME_CHARS": "5000", "F2_STORE_BLOCKED_RETRY_S": "1"}
STRIKE = f"stat/f2-{MACS[0]}/{ACCESS_MODE}/J3/strike-1"


@pytest.fixture(scope="module")
def iso(decode_stack: IsolatedStack) -> Settings:
    return iso_stack(decode_stack)


@pytest.fixture(scope="module")
def decode(iso: Settings, decode_stack: IsolatedStack, tmp_path_factory) -> Iterator[FlowProcess]:
    workdir, port = tmp_path_factory.mktemp("decode-failures"), decode_stack.port(PORT)
    process = FlowProcess(decode_stack, "dataflows.decode", workdir, port, True, ENV)
    process.start()
    assert wait_until(lambda: _answers(process), 60)
    yield process
    process.kill()


def _answers(process: FlowProcess) -> bool:
    try:
        process.metric("f2_store_blocked")
        return True
    except OSError:
        return False


def produce(settings: Settings, topic: str, body: dict, received: datetime | None = None) -> None:
    mac = topic.split("/")[1][3:]
    received_ms = int((received or datetime.now(UTC)).timestamp() * 1000)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    headers = [("mqtt_topic", topic.encode()), ("received_at", str(received_ms).encode())]
    producer.produce(settings.raw_topic, msgspec.json.encode(body), mac.encode(), headers=headers)
    assert producer.flush(30) == 0


def dlq_records(settings: Settings, marker: bytes) -> list[dict[str, bytes]]:
    """Headers of the DLQ records whose value contains ``marker``."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "failures"})
    partitions = consumer.list_topics(settings.dlq_topic, timeout=10).topics[settings.dlq_topic]
    consumer.assign([TopicPartition(settings.dlq_topic, p, 0) for p in partitions.partitions])
    found, idle_until = [], time.monotonic() + 3
    while time.monotonic() < idle_until:
        for message in consumer.consume(500, 0.5):
            if message.error() is None:
                idle_until = time.monotonic() + 3
                if marker in (message.value() or b""):
                    found.append(dict(message.headers() or []))
    consumer.close()
    return found


@contextmanager
def timeseries(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.timeseries_dsn, autocommit=True) as conn:
        yield conn


def health_of(process: FlowProcess) -> tuple[str, str]:
    watch = FlowWatch("decode", f"http://127.0.0.1:{process.port}/metrics", 60)
    watch.add(scrape(watch.url, 5))
    component = watch.component(60, 1.0)
    return component.status, component.detail


def test_a_field_name_over_the_index_limit_is_one_dead_letter_and_good_rows_flow(
    iso: Settings, decode: FlowProcess
) -> None:
    traffic = Traffic(iso)
    marker = "".join(random.choices(string.ascii_letters, k=12))
    name = marker + "".join(random.choices(string.ascii_letters + string.digits, k=3988))
    stamp = traffic.time_of(0) + timedelta(microseconds=500)
    produce(
        iso, STRIKE, {"timestamp": stamp.strftime("%Y-%m-%d %H:%M:%S.%f"), "status": 1, name: 1}
    )
    started = time.monotonic()
    traffic.send(30)
    traffic.events += 1  # the crafted message's status is stored, its long field is refused
    assert traffic.wait_stored(5) == (traffic.readings, traffic.events)
    assert time.monotonic() - started < 5 + 1  # good rows stored within 5 s of their sending
    assert wait_until(lambda: len(dlq_records(iso, marker.encode())) >= 1, 30, 1)
    (letter,) = dlq_records(iso, marker.encode())
    assert letter["reason"] == b"store_rejected" and letter["stage"] == b"store"
    assert letter["detail"].startswith(b"54000")


def test_rows_all_refused_with_one_sqlstate_hold_instead_of_dead_lettering(
    iso: Settings, decode: FlowProcess
) -> None:
    first = Traffic(iso)
    first.send(20)  # rows stored first: the writer has a canary for small batches
    first.wait_stored(30)
    rejected_before = decode.metric("f2_decode_errors_total", 'reason="store_rejected"')
    traffic = Traffic(iso)
    with timeseries(iso) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION f2_test_refuse_all() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE ="
            " 'check_violation'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER f2_test_refuse_all BEFORE INSERT ON readings FOR EACH ROW"
            " EXECUTE FUNCTION f2_test_refuse_all()"
        )
        try:
            traffic.send(300)
            assert wait_until(lambda: decode.metric("f2_store_blocked") >= 1, 30, 0.5)
            status, detail = health_of(decode)
            assert status == DOWN and "23514" in detail, detail
            time.sleep(3)  # several retries while blocked: still nothing dead-lettered
            assert decode.metric("f2_store_blocked") >= 1
        finally:
            # The writer retries its INSERT meanwhile (parent table, then partition); DROP
            # TRIGGER alone locked a partition before the parent and could deadlock with it (and
            # leave the trigger for the next tests). The table lock first keeps the writer's order.
            with conn.transaction():
                conn.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
                conn.execute("DROP TRIGGER IF EXISTS f2_test_refuse_all ON readings")
            conn.execute("DROP FUNCTION IF EXISTS f2_test_refuse_all()")
    assert traffic.wait_stored(60) == (traffic.readings, traffic.events)
    assert wait_until(lambda: decode.metric("f2_store_blocked") == 0, 30, 0.5)
    rejected = decode.metric("f2_decode_errors_total", 'reason="store_rejected"')
    assert rejected == rejected_before


def test_a_revoked_insert_privilege_holds_visibly_through_a_restart(
    iso: Settings, decode: FlowProcess
) -> None:
    traffic = Traffic(iso)
    with timeseries(iso) as conn:
        conn.execute("REVOKE INSERT ON readings FROM CURRENT_USER")
        try:
            traffic.send(200)
            assert wait_until(lambda: decode.metric("f2_store_blocked") >= 1, 30, 0.5)
            assert decode.metric("f2_blocked_reason", 'code="42501"') >= 1
            status, detail = health_of(decode)
            assert status == DOWN and "42501" in detail and "permission denied" in detail
            assert traffic.stored()[0] == 0
            decode.kill()  # a restart while blocked: the rows are in the recovery snapshot
            decode.start()
            assert wait_until(lambda: _answers(decode), 60)
            assert wait_until(lambda: decode.metric("f2_store_blocked") >= 1, 60, 0.5)
            assert traffic.stored()[0] == 0
        finally:
            conn.execute("GRANT INSERT ON readings TO CURRENT_USER")
    assert traffic.wait_stored(60) == (traffic.readings, traffic.events)
    assert wait_until(lambda: health_of(decode)[0] != DOWN, 30, 0.5)
    assert decode.metric("f2_decode_errors_total", 'reason="store_rejected"') == 0


BERLIN = ZoneInfo("Europe/Berlin")
FOLD_START = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # 01:00 CEST; clocks go back at 01:00 UTC


def test_the_repeated_hour_of_a_clock_change_is_stored_once_per_pass(
    iso: Settings, decode: FlowProcess
) -> None:
    mac = f"02f01d{random.randrange(16**6):06x}"
    controller = Controller(
        mac, (Connector(1, SENSOR_MODE, (Sensor(1, "ENV-S1"),)),), timezone="Europe/Berlin"
    )
    register_fleet(iso.params_dsn, Fleet((controller,), (), 0))
    topic = f"tele/f2-{mac}/{SENSOR_MODE}/J1/sensor-1"
    producer = Producer({"bootstrap.servers": iso.kafka_bootstrap, "linger.ms": 20})
    steps = 3 * 3600 // 30  # 01:00 CEST to 03:00 CET: the repeated hour seen twice
    for step in range(steps):
        moment = FOLD_START + timedelta(seconds=30 * step)
        local = moment.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M:%S.%f")
        body = {"timestamp": local, "data": "01 03 06 09 C4 13 88 01 90 55 6F"}
        received = str(int(moment.timestamp() * 1000) + 700).encode()
        headers = [("mqtt_topic", topic.encode()), ("received_at", received)]
        producer.produce(iso.raw_topic, json.dumps(body).encode(), mac.encode(), headers=headers)
    assert producer.flush(30) == 0

    def stored() -> tuple[int, int]:
        with psycopg.connect(iso.timeseries_dsn) as conn:
            return conn.execute(
                "SELECT count(*), count(DISTINCT time) FROM readings r"
                " JOIN sensors s USING (sensor_id) JOIN controllers c USING (controller_id)"
                " WHERE c.mac = %s",
                (mac,),
            ).fetchone()

    assert wait_until(lambda: stored() == (3 * steps, steps), 60, 1), stored()
    with psycopg.connect(iso.timeseries_dsn) as conn:
        first, last = conn.execute(
            "SELECT min(time), max(time) FROM readings r JOIN sensors s USING (sensor_id)"
            " JOIN controllers c USING (controller_id) WHERE c.mac = %s",
            (mac,),
        ).fetchone()
    assert (first, last) == (FOLD_START, FOLD_START + timedelta(seconds=30 * (steps - 1)))
