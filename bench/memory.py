"""Memory benchmark: the flows' resident memory under a hostile flood during a Kafka outage.

Method (against the stack of ``F2_STACK_DIR``; ``python -m bench`` runs it on its isolated stack,
``make bench-memory`` on its own): both flows start on an empty broker and their idle RSS is
read. Then Kafka is frozen (SIGSTOP: it accepts connections and answers nothing, the worst kind
of outage for a producer), and the test rig publishes, with QoS 1:

- ``--big`` messages of 64 KiB (valid sensor messages of the seed fleet, padded to the payload
  limit), far more than ingest may hold (``F2_INGEST_MAX_BUFFER_BYTES``, default 64 MiB);
- ``--topics`` messages on distinct 256-byte topics (dead-lettered by ingest as ``bad_topic``;
  they fill its topic cache), and as many on distinct grammatical topics of unregistered
  controllers (they reach decode: route cache, registry cache, dead letters).

Ingest's RSS is sampled every 0.2 s while it holds what it can and stops reading. Kafka is then
thawed and everything drains through decode into storage while decode's RSS is sampled. Targets:
ingest peak ≤ ``F2_INGEST_MAX_BUFFER_BYTES`` + 256 MiB; decode peak ≤ its idle RSS + 256 MiB; no
message lost (every 64 KiB message's three readings stored, every message in the raw topic or the
dead-letter topic).

Prints JSON (``memory`` in ``latest.json``); standalone it also writes
``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.common import (
    BENCH_STACK,
    RESULTS_DIR,
    f2,
    interruptible_children,
    scrape,
    stack_named,
    use_isolated_stack,
)
from bench.e2e import FlowGroup, topic_census
from ops.stack.procs import wait_until
from schemas.limits import DEFAULT_LIMITS
from schemas.settings import Settings, load_config

MIB = 1 << 20
HEADROOM = 256 * MIB
SEED_MACS = ("e4fd45f654be", "abc123def456", "123456abcdef")
FRAME = "01 03 06 09 C4 13 88 01 90 55 6F"
SAMPLE_S = 0.2


def rss(pids: list[int]) -> int:
    """Resident set size of ``pids`` in bytes (0 for a process that is gone)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            continue
    return total


class PeakRss:
    """The highest RSS of a set of processes, sampled on a thread between start and stop."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak = pids, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak = max(self.peak, rss(self.pids))

    def __enter__(self) -> PeakRss:
        self.peak = rss(self.pids)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pids))


def big_message(seq: int, base: datetime) -> tuple[str, bytes]:
    """A valid sensor message of a seed controller, padded to exactly the payload limit."""
    mac = SEED_MACS[seq % len(SEED_MACS)]
    stamp = (base + timedelta(milliseconds=seq)).strftime("%Y-%m-%d %H:%M:%S.%f")
    head = f'{{"timestamp":"{stamp}","data":"{FRAME}","pad":"'
    pad = DEFAULT_LIMITS.payload_bytes - len(head) - 2
    return f"tele/f2-{mac}/sensor-mode/J1/sensor-1", (head + "x" * pad + '"}').encode()


def long_topic(seq: int) -> str:
    """A distinct topic of exactly the topic limit (256 bytes); off the grammar (6 levels)."""
    head = f"tele/f2-0d{seq:010x}/sensor-mode/J1/sensor-1/"
    return head + "t" * (DEFAULT_LIMITS.topic_bytes - len(head))


def ghost_topic(seq: int) -> str:
    """A grammatical topic of a controller nobody registered (decode: ``unknown_device``)."""
    return f"tele/f2-0c{seq:010x}/sensor-mode/J1/sensor-1"


def publish(settings: Settings, messages: list[tuple[str, bytes]], window: int = 500) -> float:
    """Publish ``messages`` with QoS 1, at most ``window`` unacknowledged; the seconds it took."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(settings.sim_username, settings.sim_password)
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(window)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    started = time.monotonic()
    try:
        pending: list[mqtt.MQTTMessageInfo] = []
        for topic, payload in messages:
            pending.append(client.publish(topic, payload, qos=1))
            if len(pending) >= window:
                for info in pending:
                    info.wait_for_publish(120)
                pending = []
        for info in pending:
            info.wait_for_publish(120)
    finally:
        client.disconnect()
        client.loop_stop()
    return time.monotonic() - started


def stored_readings(settings: Settings, since: datetime) -> int:
    with psycopg.connect(settings.timeseries_dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM readings WHERE time >= %s AND time < %s",
            (since, since + timedelta(hours=1)),
        ).fetchone()[0]


def run(big: int, topics: int, workdir: Path) -> dict[str, Any]:
    """The whole benchmark on the (already isolated) stack; its JSON result."""
    from connectors.mqtt_source import forget_sessions, source_settings

    f2("stack", "up")
    config = load_config()
    settings = config.connections
    root = Path(settings.stack_dir)
    budget = config.ingest.max_buffer_bytes
    sessions = source_settings(settings, config.ingest)
    f2("stack", "stop", "kafka")
    f2("stack", "start", "kafka")
    forget_sessions(sessions)
    ingest = FlowGroup("ingest", 1, root, workdir, config)
    decode = FlowGroup("decode", 1, root, workdir, config)
    base = datetime(2002, 6, 1, tzinfo=UTC) + timedelta(hours=int(time.time()) % 5000)
    bigs = [big_message(seq, base) for seq in range(big)]
    smalls = [(long_topic(n), b"{}") for n in range(topics)]
    smalls += [(ghost_topic(n), b'{"timestamp":"2026-01-01 00:00:00.000000","data":"01"}')
               for n in range(topics)]  # fmt: skip
    kafka_pid = int((root / "run" / "kafka.pid").read_text())
    result: dict[str, Any] = {"messages_64k": big, "distinct_topics": 2 * topics}
    ingest.start()
    decode.start()
    try:
        time.sleep(3)
        idle = {"ingest": rss(ingest.pids), "decode": rss(decode.pids)}
        os.kill(kafka_pid, signal.SIGSTOP)
        try:
            with PeakRss(ingest.pids) as ingest_peak:
                published_s = publish(settings, bigs + smalls)
                paused = wait_until(
                    lambda: scrape(ingest.ports).total("f2_ingest_read_paused") >= 1, 30, 0.5
                )
                time.sleep(5)  # ingest holds what it may and reads no more
                held = scrape(ingest.ports).total("f2_ingest_buffer_bytes")
        finally:
            os.kill(kafka_pid, signal.SIGCONT)
        expected = 3 * big
        with PeakRss(decode.pids) as decode_peak:
            drained = wait_until(lambda: stored_readings(settings, base) >= expected, 300, 1)
            decode_idle_after = wait_until(
                lambda: scrape(decode.ports).total("f2_kafka_consumer_lag") == 0, 120, 1
            )
        stored = stored_readings(settings, base)
        raw = topic_census(settings, settings.raw_topic).records
        dlq = topic_census(settings, settings.dlq_topic).records
    finally:
        ingest.stop()
        decode.stop()
        forget_sessions(sessions)
    ingest_limit = budget + HEADROOM
    decode_limit = idle["decode"] + HEADROOM
    result.update(
        {
            "published_s": round(published_s, 1),
            "ingest": {
                "max_buffer_bytes": budget,
                "idle_rss_mib": round(idle["ingest"] / MIB, 1),
                "peak_rss_mib": round(ingest_peak.peak / MIB, 1),
                "limit_mib": round(ingest_limit / MIB, 1),
                "held_bytes": int(held),
                "read_paused": paused,
                "within_limit": ingest_peak.peak <= ingest_limit,
            },
            "decode": {
                "idle_rss_mib": round(idle["decode"] / MIB, 1),
                "peak_rss_mib": round(decode_peak.peak / MIB, 1),
                "limit_mib": round(decode_limit / MIB, 1),
                "drained": drained and decode_idle_after,
                "within_limit": decode_peak.peak <= decode_limit,
            },
            "readings_expected": expected,
            "readings_stored": stored,
            "raw_records": raw,
            "dlq_records": dlq,
            # Every 64 KiB message's readings stored; every small one dead-lettered (ingest:
            # bad_topic; decode: unknown_device). Duplicates may add records, never rows.
            "readings_missing": max(0, expected - stored),
            "dead_letters_missing": max(0, 2 * topics - dlq),
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--big", type=int, default=3072, help="64 KiB messages (3 × 64 MiB)")
    parser.add_argument("--topics", type=int, default=10_000, help="distinct topics of each kind")
    parser.add_argument("--stack-dir", default=None, help="default: an isolated bench stack")
    parser.add_argument("--port-offset", default=BENCH_STACK["F2_STACK_PORT_OFFSET"])
    parser.add_argument("--keep-stack", action="store_true")
    args = parser.parse_args(argv)
    interruptible_children()
    standalone = args.stack_dir is None and not stack_named()
    if standalone:
        use_isolated_stack(BENCH_STACK["F2_STACK_DIR"], args.port_offset)
    elif args.stack_dir:
        use_isolated_stack(args.stack_dir, args.port_offset)
    workdir = Path(tempfile.mkdtemp(prefix="f2-bench-memory-"))
    try:
        result = run(args.big, args.topics, workdir)
    finally:
        if standalone and not args.keep_stack:
            f2("stack", "down", "--purge")
    text = json.dumps(result, indent=2)
    if standalone:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "memory.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
