"""Ingest benchmark: QoS 1 msgs/s through dataflows.ingest (1 and 2 processes) vs a bare subscriber.

Method (all in one run, against the stack of ``F2_STACK_DIR``; use an isolated one, e.g.
``F2_STACK_DIR=/tmp/ingest-perf F2_STACK_PORT_OFFSET=1100``, so nobody else's traffic or
subscribers interfere): for each configuration, fresh persistent sessions are created and
subscribed, then disconnected; ``--messages`` QoS 1 messages (simulator-like topics and ~150-byte
JSON payloads) are published into their queues; then the consumer starts and the sustained rate is
measured as messages / (time of the last completion − time of the first receipt):

- ``bare``: one stock paho MQTT v5 subscriber, QoS 1, PUBACK per message right after its
  ``on_message`` (paho's automatic ack), doing nothing else: the ceiling of stock paho here;
- ``flow_1p``: ``python -m bytewax.run dataflows.ingest -s 1`` (completion = ``f2_ingest_acked``,
  i.e. stored in Kafka and PUBACKed; so the last epoch's wait, up to 1 s, is included);
- ``flow_2p``: the same with two processes (``-i 0/1 -a ...``), partitions split between them.

Each result also carries ``cpu_us_per_msg``: CPU time of the consumer process(es) between the
first receipt and the completion, per message (less sensitive than rates to a busy machine).
``--repeat N`` runs N rounds, configurations alternating within a round; each configuration
reports its median round and the ratios are medians of per-round ratios.

Run: ``.venv/bin/python -m bench.ingest [--messages 60000] [--repeat 3] [--only bare flow_1p]``;
prints JSON and writes ``bench/results/ingest.json`` (only when every configuration ran).
Target: ``flow_1p`` ≥ 70 % of ``bare``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.common import interruptible_children, scrape
from connectors.mqtt_source import MqttSourceSettings, forget_sessions, source_settings
from schemas.settings import Settings, child_environment, load_config, load_settings

ROOT = Path(__file__).resolve().parent.parent
MACS = [f"0b{index:010x}" for index in range(50)]
CONFIGS = ["bare", "flow_1p", "flow_2p"]


def payload(seq: int) -> bytes:
    return (
        b'{"timestamp":"2026-11-26 12:00:00.%06d","data":"01 03 08 00 e6 01 c2 00 00 00 00 4a 31",'
        b'"seq":%d}' % (seq % 1_000_000, seq)
    )


def topic(seq: int) -> str:
    return f"tele/f2-{MACS[seq % len(MACS)]}/sensor-mode/J1/sensor-{seq % 6 + 1}"


def prepare_sessions(config: MqttSourceSettings) -> None:
    """Create the persistent sessions and their shared subscriptions, then go offline."""
    for index in range(config.partitions):
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{config.client_prefix}-s{index}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.username_pw_set(config.username, config.password)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect(config.host, config.port, clean_start=True, properties=props)
        client.loop_start()
        filters = [(f"$share/{config.share_group}/{f}", SubscribeOptions(qos=1))
                   for f in config.topic_filters]  # fmt: skip
        client.subscribe(filters)
        time.sleep(0.3)
        client.disconnect()
        client.loop_stop()


def publish(settings: Settings, count: int) -> float:
    """Publish ``count`` QoS 1 messages; returns the publish rate (PUBACKs/s)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id="bench-ingest-pub",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(settings.sim_username, settings.sim_password)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    started = time.monotonic()
    infos = [client.publish(topic(seq), payload(seq), qos=1) for seq in range(count)]
    for info in infos:
        info.wait_for_publish(120)
    rate = count / (time.monotonic() - started)
    client.disconnect()
    client.loop_stop()
    return rate


def bare(config: MqttSourceSettings, count: int) -> dict:
    """Drain one session's queue with a bare paho subscriber (automatic PUBACK)."""
    got = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(_c, _u, _m) -> None:
        now = time.monotonic()
        if not got["n"]:
            got["first"] = now
        got["n"] += 1
        got["last"] = now

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{config.client_prefix}-s0",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(config.username, config.password)
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = config.receive_maximum
    cpu = time.process_time()
    client.connect(config.host, config.port, clean_start=False, properties=props)
    client.loop_start()
    deadline = time.monotonic() + 300
    while got["n"] < count and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu = time.process_time() - cpu
    client.disconnect()
    client.loop_stop()
    return {
        "messages": got["n"],
        "rate": got["n"] / max(got["last"] - got["first"], 1e-9),
        "cpu_us_per_msg": round(cpu * 1e6 / max(got["n"], 1), 1),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counts(port: int) -> tuple[float, float]:
    """(received, acked) summed over partitions from one flow process's /metrics."""
    metrics = scrape([port])
    return metrics.total("f2_ingest_received_total"), metrics.total("f2_ingest_acked_total")


def flow(env: dict[str, str], count: int, processes: int) -> dict:
    """Drain the queues through the ingest flow with ``processes`` processes."""
    ports = [3431 + index for index in range(processes)]
    addresses = ";".join(f"127.0.0.1:{2201 + index}" for index in range(processes))
    children = []
    for index, port in enumerate(ports):
        cluster = ["-i", str(index), "-a", addresses] if processes > 1 else []
        child_env = {**env, "BYTEWAX_DATAFLOW_API_PORT": str(port), "F2_LOG_LEVEL": "WARNING"}
        child_env["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = env["F2_STACK_DIR"]
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "bytewax.run", "dataflows.ingest", "-s", "1", *cluster],
                env=child_env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    first = last = 0.0
    cpu = 0.0
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            totals = [counts(port) for port in ports]
            received = sum(t[0] for t in totals)
            acked = sum(t[1] for t in totals)
            now = time.monotonic()
            if received and not first:
                first = now
                cpu = -sum(cpu_seconds(child.pid) for child in children)
            if acked >= count:
                last = now
                cpu += sum(cpu_seconds(child.pid) for child in children)
                break
            time.sleep(0.05)
    finally:
        for child in children:
            child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
    rate = count / (last - first) if last else 0.0
    return {
        "messages": count if last else 0,
        "rate": rate,
        "processes": processes,
        "cpu_us_per_msg": round(cpu * 1e6 / count, 1) if last else None,
    }


def run_one(name: str, settings: Settings, count: int) -> dict:
    """One configuration on fresh sessions: prepare, publish ``count`` messages, drain."""
    env = child_environment(
        {
            "F2_STACK_DIR": settings.stack_dir,
            "F2_INGEST_SHARE_GROUP": f"bench-{name}",
            "F2_INGEST_CLIENT_PREFIX": f"bench-{name}",
        }
    )
    if name == "bare":
        env["F2_INGEST_PARTITIONS"] = "1"
    pipeline = load_config(env)
    config = source_settings(pipeline.connections, pipeline.ingest)
    prepare_sessions(config)
    try:
        publish_rate = publish(settings, count)
        if name == "bare":
            result = bare(config, count)
        else:
            result = flow(env, count, 1 if name == "flow_1p" else 2)
    finally:
        forget_sessions(config)
    result["publish_rate"] = round(publish_rate)
    result["partitions"] = config.partitions
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest")
    parser.add_argument("--messages", type=int, default=60000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; configurations alternate within a round"
    )
    parser.add_argument(
        "--only", nargs="+", choices=CONFIGS, default=CONFIGS, help="configurations to run"
    )
    args = parser.parse_args(argv)
    interruptible_children()
    settings = load_settings()
    runs: dict[str, list[dict]] = {name: [] for name in args.only}
    for _ in range(args.repeat):
        for name in args.only:
            result = run_one(name, settings, args.messages)
            runs[name].append(result)
            print(json.dumps({name: result}), file=sys.stderr, flush=True)
    results: dict[str, object] = {
        "messages": args.messages,
        "repeat": args.repeat,
        "stack": settings.stack_dir,
    }
    for name, done in runs.items():
        # The round with the median rate (the lower median for an even count).
        median = sorted(done, key=lambda r: r["rate"])[(len(done) - 1) // 2]
        results[name] = {**median, "rates": [round(r["rate"]) for r in done]}
    if "bare" in runs:
        for name in ("flow_1p", "flow_2p"):
            if name in runs:
                pairs = zip(runs[name], runs["bare"], strict=True)
                ratios = [f["rate"] / b["rate"] for f, b in pairs]
                results[f"{name}_vs_bare"] = round(sorted(ratios)[(len(ratios) - 1) // 2], 3)
                results[f"{name}_vs_bare_per_round"] = [round(r, 3) for r in ratios]
    if "flow_1p_vs_bare" in results:
        results["target_met"] = results["flow_1p_vs_bare"] >= 0.70  # type: ignore[operator]
    text = json.dumps(results, indent=2)
    print(text)
    if args.only == CONFIGS:
        out = ROOT / "bench" / "results" / "ingest.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
