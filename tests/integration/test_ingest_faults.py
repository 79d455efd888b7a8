"""Fault tests of dataflows.ingest on an isolated stack (a temporary directory, free ports).

- SIGKILL of the flow process, twice, while the simulator publishes ≥ 20,000 QoS 1 messages:
  every acknowledged message is in ``raw_iot_data`` afterwards (duplicates allowed, reported).
- Kafka outage of 10 s mid-stream: the flow stops acknowledging, retries, and resumes by itself.
- A record over the producer's ``message.max.bytes``: one ``undeliverable`` dead letter, the flow
  goes on.
- Wrong Kafka credentials (a real SASL failure): the flow holds visibly (``f2_kafka_blocked``,
  health ``down``), acknowledges nothing, and with the right ones everything reaches Kafka.
- Kafka frozen while 64 KiB messages flood in: ingest holds at most
  ``F2_INGEST_MAX_BUFFER_BYTES`` of payloads and stops reading; everything arrives afterwards.

Both stop processes, so they never touch the shared stack: the fixture brings up a second,
complete stack through ``f2 stack up`` and stops and deletes it afterwards (``tests.stacks``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ops.health.checks import DOWN
from ops.health.flow_metrics import scrape
from ops.health.rules import FlowWatch
from ops.stack.procs import wait_until
from schemas.settings import Settings, load_settings
from tests.stacks import IsolatedStack, isolated_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
API_PORT = 3031  # ingest's API port at offset 0: ``stack.port(API_PORT)`` on a stack


def stack_env(stack: IsolatedStack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("F2_", "BYTEWAX_"))}
    env.update(
        stack.env,
        F2_INGEST_METRICS_PORT=str(stack.port(API_PORT)),
        PYTHONUNBUFFERED="1",
    )
    return env


def metrics_url(stack: IsolatedStack) -> str:
    return f"http://127.0.0.1:{stack.port(API_PORT)}/metrics"


def f2(stack: IsolatedStack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=stack_env(stack),
        cwd=ROOT,
    )
    assert result.returncode == 0, f"f2 {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def ingest_stack() -> Iterator[IsolatedStack]:
    """A second, complete stack for tests that stop things (``tests.stacks``: a temporary
    directory, free ports), up; stopped and deleted after the module, however it ends."""
    with isolated_stack() as stack:
        f2(stack, "stack", "up")
        yield stack


@pytest.fixture(scope="module")
def isolated(ingest_stack: IsolatedStack) -> Settings:
    """The settings of the isolated stack."""
    return load_settings(stack_env(ingest_stack))


class Flow:
    """The ingest flow as a plain ``bytewax.run`` process (what a pod runs), killable."""

    def __init__(self, stack: IsolatedStack, log: Path, env: dict[str, str] | None = None) -> None:
        self.stack, self.log = stack, log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        port = str(self.stack.port(API_PORT))
        env = {**stack_env(self.stack), "BYTEWAX_DATAFLOW_API_PORT": port, **self.env}
        env["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = str(self.stack.dir)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bytewax.run", "dataflows.ingest", "-s", "1"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            if text.count("mqtt session subscribed") >= 4:
                return
            assert self.proc.poll() is None, f"ingest exited:\n{text[-3000:]}"
            time.sleep(0.1)
        raise AssertionError("ingest did not subscribe within 60 s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def read_topic(bootstrap: str, topic: str, idle_s: float = 4.0) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic`` as (mqtt_topic header, value): all partitions, from the start."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "ingest-test", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[tuple[bytes, bytes]] = []
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        for message in consumer.consume(5000, 0.5):
            if message.error():
                continue
            headers = dict(message.headers() or ())
            out.append((headers.get("mqtt_topic", b""), message.value()))
            last = time.monotonic()
    consumer.close()
    return out


def wait_for(bootstrap: str, topic: str, wanted: set, timeout_s: float) -> list:
    """Read ``topic`` until it holds every record in ``wanted`` (or the timeout); all records."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_topic(bootstrap, topic)
        if wanted <= set(records) or time.monotonic() > deadline:
            return records
        time.sleep(2)


def test_sigkill_twice_loses_nothing(
    isolated: Settings, ingest_stack: IsolatedStack, tmp_path: Path
) -> None:
    flow = Flow(ingest_stack, tmp_path / "ingest.log")
    report = tmp_path / "sim.json"
    flow.start()
    sim = subprocess.Popen(
        [
            *(sys.executable, "-m", "simulator", "--rate", "900", "--duration", "25"),
            *("--qos", "1", "--faults", "0", "--report", str(report)),
        ],
        env=stack_env(ingest_stack),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for pause in (6, 4):  # kill at ~6 s and ~15 s into the 25 s run, restart after 2 s
            time.sleep(pause)
            flow.kill()
            time.sleep(2)
            flow.start()
        _, err = sim.communicate(timeout=120)
        assert sim.returncode == 0, err.decode()[-2000:]
        published = json.loads(report.read_text())["published"]
        assert published >= 20000, f"simulator published only {published}"
        deadline = time.monotonic() + 90
        while True:
            records = read_topic(isolated.kafka_bootstrap, isolated.raw_topic)
            distinct = set(records)
            if len(distinct) >= published or time.monotonic() > deadline:
                break
            time.sleep(3)
    finally:
        flow.stop()
        sim.kill()
    duplicates = len(records) - len(distinct)
    print(f"published {published}, in raw_iot_data {len(records)}, duplicates {duplicates}")
    assert published - len(distinct) <= 0, f"{published - len(distinct)} messages missing"


class Publisher:
    """QoS 1 publisher of numbered payloads; remembers when each acknowledged one was sent."""

    def __init__(self, settings: Settings, rate: float) -> None:
        self.settings, self.period = settings, 1.0 / rate
        self.acked: dict[int, float] = {}
        self._sent_at: dict[int, tuple[int, float]] = {}
        self._stop = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="ingest-outage-pub",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(settings.sim_username, settings.sim_password)
        self.client.on_publish = self._on_publish
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, _c, _u, mid: int, reason_code, _p) -> None:
        seq, sent = self._sent_at.pop(mid, (None, 0.0))
        if seq is not None and not reason_code.is_failure:
            self.acked[seq] = sent

    def _run(self) -> None:
        self.client.connect(self.settings.mqtt_host, self.settings.mqtt_port)
        self.client.loop_start()
        seq = 0
        while not self._stop.is_set():
            sent = time.time()
            info = self.client.publish(TOPIC, payload(seq), qos=1)
            self._sent_at[info.mid] = (seq, sent)
            seq += 1
            time.sleep(self.period)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        time.sleep(1)
        self.client.disconnect()
        self.client.loop_stop()


TOPIC = "tele/f2-0e0e0e0e0e01/sensor-mode/J1/sensor-1"


def payload(seq: int) -> bytes:
    return b'{"timestamp":"2026-01-01 00:00:00.000000","data":"outage-%d"}' % seq


def test_kafka_outage_stops_acks_and_recovers(
    isolated: Settings, ingest_stack: IsolatedStack, tmp_path: Path
) -> None:
    """Stop the Kafka broker for 10 s mid-stream, then start it again.

    The local broker (Tansu) keeps topics in memory: what it stored before the stop is gone after
    the restart (the stack recreates empty topics). So the assertion covers every message
    published from the moment the broker was down: the flow could not store any of them before
    the restart, so each one must be in the new topic afterwards. A message acknowledged to MQTT
    without being stored would be missing here. Duplicates are allowed.
    """
    flow = Flow(ingest_stack, tmp_path / "ingest.log")
    flow.start()
    publisher = Publisher(isolated, rate=300)
    publisher.start()
    try:
        time.sleep(4)
        f2(ingest_stack, "stack", "stop", "kafka")
        down_at = time.time()
        time.sleep(10)
        f2(ingest_stack, "stack", "start", "kafka")
        back_at = time.time()
        time.sleep(8)
        publisher.stop()
        wanted = {(TOPIC.encode(), payload(s)) for s, t in publisher.acked.items() if t >= down_at}
        after = sum(1 for t in publisher.acked.values() if t >= back_at)
        records = wait_for(isolated.kafka_bootstrap, isolated.raw_topic, wanted, 90)
        assert flow.proc is not None and flow.proc.poll() is None, "the flow died in the outage"
    finally:
        flow.stop()
    missing = wanted - set(records)
    print(
        f"published since the stop {len(wanted)} (after restart {after}); in raw_iot_data "
        f"{len(records)}; duplicates {len(records) - len(set(records))}"
    )
    assert len(wanted) > 3000 and after > 1000
    assert not missing, f"{len(missing)} messages acknowledged but not stored"


def read_records(bootstrap: str, topic: str, idle_s: float = 3.0) -> list:
    """Every record of ``topic`` (all partitions, from the start) as confluent Message objects."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "ingest-test", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out, last = [], time.monotonic()
    while time.monotonic() - last < idle_s:
        for message in consumer.consume(1000, 0.5):
            if not message.error():
                out.append(message)
                last = time.monotonic()
    consumer.close()
    return out


def test_f2_run_ingest_end_to_end(isolated: Settings, ingest_stack: IsolatedStack) -> None:
    """``f2 run ingest``: ready line, one instance per stack, records, DLQ, metrics, clean stop."""
    run = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "run", "ingest"],
        env=stack_env(ingest_stack),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert run.stdout is not None
        line = run.stdout.readline()
        assert "ready" in line and "4 MQTT sessions" in line, line
        second = subprocess.run(
            [sys.executable, "-m", "ops.cli", "run", "ingest"],
            env=stack_env(ingest_stack),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1 and "already running" in second.stderr

        good = "stat/f2-0E0E0E0E0E02/access-control-mode/J2/door-sensors"
        bad = "tele/f2-0e0e0e0e0e02/sensor-mode/J9/sensor-1"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        client.username_pw_set(isolated.sim_username, isolated.sim_password)
        client.connect(isolated.mqtt_host, isolated.mqtt_port)
        client.loop_start()
        sent_ms = time.time() * 1000
        client.publish(good, b'{"e2e": 1}', qos=1, retain=False).wait_for_publish(10)
        client.publish(bad, b'{"e2e": 2}', qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()

        deadline = time.monotonic() + 30
        raw: list = []
        dlq: list = []
        while time.monotonic() < deadline and not (raw and dlq):
            raw = [m for m in read_records(isolated.kafka_bootstrap, isolated.raw_topic)
                   if m.value() == b'{"e2e": 1}']  # fmt: skip
            dlq = [m for m in read_records(isolated.kafka_bootstrap, isolated.dlq_topic)
                   if m.value() == b'{"e2e": 2}']  # fmt: skip
        assert raw and dlq
        headers = dict(raw[0].headers())
        assert raw[0].key() == b"0e0e0e0e0e02"
        assert headers["mqtt_topic"] == good.encode()
        assert headers["mqtt_qos"] == b"1" and headers["mqtt_retain"] == b"0"
        assert abs(int(headers["received_at"]) - sent_ms) < 10_000
        dlq_headers = dict(dlq[0].headers())
        assert dlq[0].key() == b"0e0e0e0e0e02"
        assert dlq_headers["reason"] == b"bad_topic" and dlq_headers["stage"] == b"ingest"
        assert dlq_headers["mqtt_topic"] == bad.encode() and dlq_headers["detail"]
        for name in ("source_topic", "source_partition", "source_offset"):
            assert name in dlq_headers

        with urllib.request.urlopen(metrics_url(ingest_stack), timeout=5) as response:
            metrics = response.read().decode()
        assert 'f2_ingest_dead_lettered_total{reason="bad_topic"}' in metrics
        assert 'f2_ingest_acked_total{partition="s0"}' in metrics

        run.send_signal(signal.SIGTERM)
        assert run.wait(20) == 0
        assert not (ingest_stack.dir / "run" / "ingest.pid").exists()
    finally:
        if run.poll() is None:
            run.kill()


def metric(stack: IsolatedStack, name: str, labels: str = "") -> float:
    """The sum of ingest's samples of ``name`` whose labels contain ``labels``."""
    with urllib.request.urlopen(metrics_url(stack), timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and labels in line
    )


def publish(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    """Publish ``messages`` with QoS 1 as the test rig, each acknowledged by the broker."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(settings.sim_username, settings.sim_password)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        infos = [client.publish(topic, body, qos=1) for topic, body in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


LIMIT_TOPIC = "tele/f2-0e0e0e0e0e03/sensor-mode/J1/sensor-1"


def numbered(marker: str, seq: int, size: int = 0) -> bytes:
    return f'{{"m":"{marker}","seq":{seq},"pad":"{"x" * size}"}}'.encode()


def test_a_record_over_the_producers_limit_is_one_dead_letter(
    isolated: Settings, ingest_stack: IsolatedStack, tmp_path: Path
) -> None:
    flow = Flow(ingest_stack, tmp_path / "ingest.log", {"F2_KAFKA_MESSAGE_MAX_BYTES": "20000"})
    flow.start()
    marker = f"limit-{os.getpid()}-{time.time_ns()}"
    big = numbered(marker, 999, 30000)
    try:
        publish(isolated, [(LIMIT_TOPIC, numbered(marker, n)) for n in range(5)])
        publish(isolated, [(LIMIT_TOPIC, big)])
        publish(isolated, [(LIMIT_TOPIC, numbered(marker, n)) for n in range(5, 10)])
        wanted = {(LIMIT_TOPIC.encode(), numbered(marker, n)) for n in range(10)}
        records = wait_for(isolated.kafka_bootstrap, isolated.raw_topic, wanted, 60)
        assert wanted <= set(records)
        assert flow.proc is not None and flow.proc.poll() is None, "ingest stopped"
        dead = [
            m
            for m in read_records(isolated.kafka_bootstrap, isolated.dlq_topic)
            if marker.encode() in m.value()
        ]
    finally:
        flow.stop()
    assert len(dead) == 1, [dict(m.headers()) for m in dead]
    headers = dict(dead[0].headers())
    assert headers["reason"] == b"undeliverable" and headers["stage"] == b"ingest"
    assert headers["mqtt_topic"] == LIMIT_TOPIC.encode()
    assert headers["target_topic"] == isolated.raw_topic.encode()
    # The dead-letter topic refused the whole value too (the same producer limit): its head.
    assert int(headers["original_size"]) == len(big) and len(dead[0].value()) < 20000
    assert big.startswith(dead[0].value())
    assert headers["sha256"] == hashlib.sha256(big).hexdigest().encode()


def test_wrong_kafka_credentials_hold_ingest_visibly_and_lose_nothing(
    isolated: Settings, ingest_stack: IsolatedStack, tmp_path: Path
) -> None:
    sasl = {
        "F2_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "F2_KAFKA_SASL_MECHANISM": "PLAIN",
        "F2_KAFKA_SASL_USERNAME": "nobody",
        "F2_KAFKA_SASL_PASSWORD": "wrong",
    }
    marker = f"auth-{os.getpid()}-{time.time_ns()}"
    held = Flow(ingest_stack, tmp_path / "ingest-held.log", sasl)
    held.start()
    try:
        publish(isolated, [(LIMIT_TOPIC, numbered(marker, n)) for n in range(50)])
        assert wait_until(lambda: metric(ingest_stack, "f2_kafka_blocked") >= 1, 30, 0.5)
        watch = FlowWatch("ingest", metrics_url(ingest_stack), 60)
        watch.add(scrape(watch.url, 5))
        component = watch.component(60, 1.0)
        assert component.status == DOWN and "authentication" in component.detail
        # nothing acknowledged to the broker
        assert metric(ingest_stack, "f2_ingest_acked_total") == 0
    finally:
        held.stop()
    flow = Flow(ingest_stack, tmp_path / "ingest.log")
    flow.start()
    try:
        wanted = {(LIMIT_TOPIC.encode(), numbered(marker, n)) for n in range(50)}
        records = wait_for(isolated.kafka_bootstrap, isolated.raw_topic, wanted, 60)
    finally:
        flow.stop()
    assert wanted <= set(records), f"{len(wanted - set(records))} messages lost"


@contextmanager
def kafka_frozen(stack: IsolatedStack) -> Iterator[None]:
    """The stack's Kafka stopped with SIGSTOP (it accepts connections and answers nothing) while
    inside; thawed on the way out, also when the body fails."""
    kafka_pid = int((stack.dir / "run" / "kafka.pid").read_text())
    os.kill(kafka_pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(kafka_pid, signal.SIGCONT)


def flood_of(prefix: str, count: int, size: int = 0) -> tuple[str, list[tuple[str, bytes]], set]:
    """A marker of this run, ``count`` numbered messages on ``LIMIT_TOPIC`` padded with ``size``
    bytes, and the (topic, payload) pairs ingest must store."""
    marker = f"{prefix}-{os.getpid()}-{time.time_ns()}"
    messages = [(LIMIT_TOPIC, numbered(marker, n, size)) for n in range(count)]
    return marker, messages, {(topic.encode(), body) for topic, body in messages}


def test_ingest_holds_at_most_its_byte_budget_while_kafka_is_frozen(
    isolated: Settings, ingest_stack: IsolatedStack, tmp_path: Path
) -> None:
    budget = 8 << 20
    flow = Flow(ingest_stack, tmp_path / "ingest.log", {"F2_INGEST_MAX_BUFFER_BYTES": str(budget)})
    _marker, messages, wanted = flood_of("flood", 400, 60_000)  # 24 MB
    flow.start()
    try:
        with kafka_frozen(ingest_stack):
            publish(isolated, messages)
            assert wait_until(lambda: metric(ingest_stack, "f2_ingest_read_paused") >= 1, 30, 0.5)
            time.sleep(3)
            held = metric(ingest_stack, "f2_ingest_buffer_bytes")
            # Each of the 4 sessions sums the process's bytes after each 1/64 of the budget it
            # receives; past that it still hands over the chunk in hand, and the rest of a packet
            # the chunk cut: seen up to 0.80 MB past 8 MiB (CI, 2026-12-07), so two chunks each.
            chunk = 65536  # connectors.mqtt_source.READ_CHUNK
            assert budget / 2 < held <= budget + 4 * (budget // 64 + 2 * chunk), held
            assert metric(ingest_stack, "f2_ingest_acked_total") == 0
        records = wait_for(isolated.kafka_bootstrap, isolated.raw_topic, wanted, 120)
        assert wait_until(lambda: metric(ingest_stack, "f2_ingest_read_paused") == 0, 30, 0.5)
        assert metric(ingest_stack, "f2_ingest_read_pauses_total") >= 1
    finally:
        flow.stop()
    assert wanted <= set(records), f"{len(wanted - set(records))} messages lost"


def test_records_timed_out_in_a_kafka_freeze_keep_their_headers(
    isolated: Settings, ingest_stack: IsolatedStack, tmp_path: Path
) -> None:
    """Kafka frozen past the producer's message timeout: the records in flight fail and are
    produced again after it thaws. Delivery reports carry no headers, so a retry rebuilt from
    them reached Kafka without ``mqtt_topic`` (and decode dead-lettered it): each record must
    arrive with its MQTT topic."""
    timeout_ms = 3000
    flow = Flow(
        ingest_stack, tmp_path / "ingest.log", {"F2_KAFKA_MESSAGE_TIMEOUT_MS": str(timeout_ms)}
    )
    marker, messages, wanted = flood_of("timeout", 300)
    flow.start()
    try:
        with kafka_frozen(ingest_stack):
            publish(isolated, messages)
            assert wait_until(
                lambda: metric(ingest_stack, "f2_kafka_sink_retries_total") > 0,
                4 * timeout_ms / 1000,
                0.5,
            ), "no delivery timed out while Kafka was frozen"
        records = wait_for(isolated.kafka_bootstrap, isolated.raw_topic, wanted, 90)
    finally:
        flow.stop()
    ours = [record for record in records if marker.encode() in record[1]]
    headless = [body for topic, body in ours if topic != LIMIT_TOPIC.encode()]
    assert not headless, f"{len(headless)} records without their MQTT topic"
    assert wanted <= set(records), f"{len(wanted - set(records))} messages lost"


def test_a_device_cannot_take_over_ingests_sessions(
    isolated: Settings, ingest_stack: IsolatedStack, tmp_path: Path
) -> None:
    """The takeover of the identity issue: ingest stopped with messages queued in its sessions,
    a registered device tries every ingest client id with clean start; after the restart every
    message reaches Kafka and no session was lost."""
    device = json.loads(f2(ingest_stack, "devices", "register", "0e0e0e0e0e04", "--json").stdout)
    flow = Flow(ingest_stack, tmp_path / "ingest.log")
    flow.start()
    flow.stop()  # the sessions exist at the broker; ingest is down
    marker = f"takeover-{os.getpid()}-{time.time_ns()}"
    messages = [(LIMIT_TOPIC, numbered(marker, n)) for n in range(400)]
    publish(isolated, messages)
    refused = []
    for index in range(8):
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"f2-ingest-s{index}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.username_pw_set(device["username"], device["password"])
        answers: list[int] = []
        client.on_connect = lambda _c, _u, _f, code, _p, answers=answers: answers.append(code.value)
        client.connect(isolated.mqtt_host, isolated.mqtt_port, clean_start=True)
        client.loop_start()
        wait_until(lambda answers=answers: bool(answers), 5, 0.05)
        client.disconnect()
        client.loop_stop()
        refused.append(bool(answers) and answers[0] >= 128)
    assert all(refused), refused
    flow.start()
    try:
        wanted = {(topic.encode(), body) for topic, body in messages}
        records = wait_for(isolated.kafka_bootstrap, isolated.raw_topic, wanted, 60)
        lost = metric(ingest_stack, "f2_ingest_sessions_lost_total")
    finally:
        flow.stop()
    assert wanted <= set(records), f"{len(wanted - set(records))} of 400 queued messages lost"
    assert lost == 0
