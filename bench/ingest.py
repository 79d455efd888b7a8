"""Ingest benchmark: QoS 1 msgs/s through dataflows.ingest (1 and 2 processes) against two
ceilings measured in the same run: a C subscriber (``mosquitto_sub``) and the flow's own MQTT
client without Kafka.

Method (all in one run, against the stack of ``F2_STACK_DIR``; use an isolated one, e.g.
``F2_STACK_DIR=/tmp/ingest-perf F2_STACK_PORT_OFFSET=1100``, so nobody else's traffic or
subscribers interfere): for each configuration, fresh persistent sessions are created and
subscribed (``$share/<group>/<filter>``, QoS 1), then disconnected; ``--messages`` QoS 1 messages
(simulator-like topics and ~150-byte JSON payloads) are published into their queues; then the
consumer starts and the sustained rate is measured as messages / (time of the last completion −
time of the first receipt). Every configuration but ``bare`` drains as many sessions as the flow
has (``F2_INGEST_PARTITIONS``, 4 by default), with the flow's client ids, session expiry and
receive maximum, logged in as the pipeline's MQTT user (TLS as configured):

- ``mosquitto_sub`` (**ceiling**, C client): one ``mosquitto_sub`` process per session
  (``-V mqttv5 -q 1 -c -x <expiry> -i <prefix>-s<i>``, receive maximum as the flow's, the
  credentials in a private options file, not in argv), printing only each message's receipt
  time (``-F %U``) into a file; stopped (SIGTERM) once the files hold every message. libmosquitto
  sends the PUBACK before its message callback, so completion = receipt; first and last receipt
  are the C process's own timestamps. CPU from ``os.wait4`` (whole lives: start and connect, a
  few ms, included);
- ``own_client`` (**ceiling**, the flow minus Kafka): ``python -m bytewax.run
  "bench.ingest:own_client_flow()" -s 1``, one process: the flow's ``MqttSource``
  (``connectors.mqtt_source``: ``LeanClient``, manual PUBACKs after the epoch closes) into a sink
  that drops every batch: no record building, no Kafka. Chosen over calling the partitions
  without Bytewax because the acks are driven exactly as in the flow (by Bytewax's epoch close),
  so the only difference is Kafka; measured like the flows;
- ``bare`` (a reference, **not** a ceiling: the flow beats it): one stock paho MQTT v5
  subscriber on one session, PUBACK per message right after its ``on_message`` (paho's automatic
  ack), doing nothing else;
- ``flow_1p``: ``python -m bytewax.run dataflows.ingest -s 1`` (completion = ``f2_ingest_acked``,
  i.e. stored in Kafka and PUBACKed; so the last epoch's wait, up to 1 s, is included; so it is
  for ``own_client``);
- ``flow_2p``: the same with two processes (``-i 0/1 -a ...``), partitions split between them.

Each result carries ``cpu_us_per_msg``: CPU time of the consumer process(es) between the first
receipt and the completion (``mosquitto_sub``: their whole lives), per message (less sensitive
than rates to a busy machine). A Bytewax run sees its first receipt when a scrape of its metrics
(every 50 ms) first counts one, by which time a fast drain may have received thousands: its rate
and CPU are taken over the messages received after that scrape (``timed_messages``), not over
all of them (the earlier ones' acks fall in the window: a slight overestimate). The Bytewax runs
also carry ``receive_rate``: those messages / (time every message had been received − first
receipt), without the last epoch's wait. With a local
broker (its pid file in the stack), each result carries ``broker_us_per_msg``: Mosquitto's CPU
per message while that configuration drained, and ``broker_cores_at_rate``: that × the rate, the
share of one core the broker needs at that rate (Mosquitto is one thread: near 1.0, the broker
sets the rate, not the consumer). The flows' metrics and cluster ports are free ports picked at
each start.

``--repeat N`` runs N rounds, configurations alternating within a round; each configuration
reports its median round and the ratios (``flow_over_mosquitto_sub``, ``flow_over_own_client``,
``flow_2p_over_…``, ``flow_1p_vs_bare``) are medians of per-round ratios. ``ceilings`` gathers the
two ceilings' rates and CPU; ``cpu_us_per_msg`` every configuration's CPU per message.

Run: ``.venv/bin/python -m bench.ingest [--messages 60000] [--repeat 3] [--only bare flow_1p]``;
prints JSON and writes ``bench/results/ingest.json`` (only when every configuration ran).
Target: ``flow_1p`` ≥ 70 % of ``bare`` (``target_met``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import bytewax.operators as op
import paho.mqtt.client as mqtt
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.common import interruptible_children, scrape
from connectors.mqtt_source import (
    MqttSource,
    MqttSourceSettings,
    client_id,
    forget_sessions,
    source_settings,
)
from dataflows.entry import flow_entry
from ops.stack.packages import ensure
from ops.stack.procs import read_pid
from schemas.settings import Settings, child_environment, load_config, load_settings

ROOT = Path(__file__).resolve().parent.parent
MACS = [f"0b{index:010x}" for index in range(50)]
CONFIGS = ["bare", "mosquitto_sub", "own_client", "flow_1p", "flow_2p"]
CEILINGS = ("mosquitto_sub", "own_client")
FLOWS = {"flow_1p": "flow", "flow_2p": "flow_2p"}  # configuration -> its ratios' prefix
MOSQUITTO_SUB = "/usr/bin/mosquitto_sub"
INGEST_FLOW = "dataflows.ingest"
OWN_CLIENT_FLOW = "bench.ingest:own_client_flow()"
DRAIN_TIMEOUT_S = 300


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


def drain_rate(messages: int, first: float, last: float) -> float:
    """Messages per second between the first receipt and the last completion (0: nothing timed)."""
    return messages / (last - first) if messages and last > first else 0.0


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
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while got["n"] < count and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu = time.process_time() - cpu
    client.disconnect()
    client.loop_stop()
    return {
        "messages": got["n"],
        "rate": drain_rate(got["n"], got["first"], got["last"]),
        "cpu_us_per_msg": round(cpu * 1e6 / max(got["n"], 1), 1),
    }


# The C ceiling: mosquitto_sub ------------------------------------------------------------------


def mosquitto_sub_argv(
    config: MqttSourceSettings, index: int, binary: str = MOSQUITTO_SUB
) -> list[str]:
    """The command draining session ``s<index>`` like the flow's partition: same client id,
    persistent session (``-c``, expiry ``-x``), MQTT v5, QoS 1, the flow's receive maximum and
    shared subscriptions; it prints only each message's receipt time (``%U``: Unix seconds with
    nanoseconds). The credentials are not here (see :func:`mosquitto_sub_options`)."""
    argv = [binary, "-h", config.host, "-p", str(config.port), "-V", "mqttv5", "-q", "1", "-c"]
    argv += ["-x", str(config.session_expiry_s), "-k", str(config.keepalive_s)]
    argv += ["-i", client_id(config, f"s{index}")]
    argv += ["-D", "connect", "receive-maximum", str(config.receive_maximum), "-F", "%U"]
    for topic_filter in config.topic_filters:
        argv += ["-t", f"$share/{config.share_group}/{topic_filter}"]
    if config.tls:
        argv += ["--cafile", config.ca_file] if config.ca_file else ["--tls-use-os-certs"]
    return argv


def mosquitto_sub_options(config: MqttSourceSettings) -> str:
    """The options file ``$XDG_CONFIG_HOME/mosquitto_sub`` with the credentials (one option per
    line, the value is the rest of the line), so the password is not in argv where ``ps`` shows
    it."""
    lines = []
    if config.username:
        lines.append(f"-u {config.username}")
        if config.password:
            lines.append(f"-P {config.password}")
    if any("\n" in line or "\r" in line for line in lines):
        raise ValueError("an MQTT user name or password with a line break")
    return "".join(f"{line}\n" for line in lines)


def receipt_ns(line: bytes) -> int:
    """A ``%U`` receipt time (``1796629586.589307704``) in integer nanoseconds."""
    seconds, _, fraction = line.strip().partition(b".")
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, b"0")[:9])


def receipts_span(outputs: Sequence[bytes]) -> tuple[int, float, float]:
    """(messages, first receipt, last receipt) over the outputs of several ``-F %U`` subscribers;
    times in seconds."""
    messages, first, last = 0, None, None
    for output in outputs:
        lines = output.split()
        if not lines:
            continue
        messages += len(lines)
        start, end = receipt_ns(lines[0]), receipt_ns(lines[-1])
        first = start if first is None else min(first, start)
        last = end if last is None else max(last, end)
    if first is None or last is None:
        return 0, 0.0, 0.0
    return messages, first / 1e9, last / 1e9


def stop_and_reap(child: subprocess.Popen, timeout_s: float = 10.0) -> float:
    """SIGTERM ``child`` (SIGKILL after ``timeout_s``), reap it; its CPU seconds (user + system,
    from ``os.wait4``)."""
    child.terminate()
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            child.kill()
            pid, status, usage = os.wait4(child.pid, 0)
            break
        time.sleep(0.01)
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def mosquitto_sub(config: MqttSourceSettings, count: int) -> dict:
    """Drain the sessions' queues with one ``mosquitto_sub`` per session (see the module doc)."""
    ensure({"mosquitto-clients": Path(MOSQUITTO_SUB)})
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        home = Path(folder)
        (home / "mosquitto_sub").write_text(mosquitto_sub_options(config))
        # TZ set: with it unset, glibc stats /etc/localtime twice per message while
        # mosquitto_sub formats %U (measured with strace -c); the time zone is irrelevant.
        env = child_environment({"XDG_CONFIG_HOME": folder, "TZ": "UTC"})
        outputs = [home / f"receipts-s{index}" for index in range(config.partitions)]
        errors = [home / f"stderr-s{index}" for index in range(config.partitions)]
        children: list[subprocess.Popen] = []
        cpu = 0.0
        try:
            for index in range(config.partitions):
                with outputs[index].open("wb") as out, errors[index].open("wb") as err:
                    argv = mosquitto_sub_argv(config, index)
                    children.append(subprocess.Popen(argv, stdout=out, stderr=err, env=env))
            line = 0  # bytes per receipt line, from the first one written
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline:
                if not line:
                    line = next((len(o.read_bytes().split(b"\n")[0]) + 1 for o in outputs
                                 if o.stat().st_size), 0)  # fmt: skip
                if line and sum(o.stat().st_size for o in outputs) >= count * line:
                    break
                if any(child.poll() is not None for child in children):
                    failed = "\n".join(e.read_text(errors="replace") for e in errors).strip()
                    raise RuntimeError(f"mosquitto_sub exited early: {failed[-1500:]}")
                time.sleep(0.02)
        finally:
            for child in children:
                if child.returncode is None:
                    cpu += stop_and_reap(child)
        messages, first, last = receipts_span([o.read_bytes() for o in outputs])
    return {
        "messages": messages,
        "rate": drain_rate(messages, first, last),
        "processes": config.partitions,
        "cpu_us_per_msg": round(cpu * 1e6 / messages, 1) if messages else None,
    }


# The flow's own client without Kafka -----------------------------------------------------------


class _DropPartition(StatelessSinkPartition):
    def write_batch(self, items: list) -> None:
        pass


class DropSink(DynamicSink):
    """A sink that drops every batch (the epoch closes as soon as the source's batches passed)."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DropPartition:
        return _DropPartition()


def own_client_flow() -> Dataflow:
    """The ingest flow minus Kafka: its MQTT source (same settings, same manual acks after the
    epoch closes) into :class:`DropSink`. Entry point for ``python -m bytewax.run``: settings,
    logging and the metrics API as for the ingest flow."""
    config = flow_entry("ingest")
    flow = Dataflow("f2_ingest_own_client")
    source = MqttSource(source_settings(config.connections, config.ingest))
    op.output("drop", op.input("mqtt", flow, source), DropSink())
    return flow


# The flows (Bytewax processes) -----------------------------------------------------------------


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


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free right now (the kernel's choice), for the flows' metrics API and
    cluster: fixed ports collided with other stacks' flows on a shared machine."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def flow(env: dict[str, str], count: int, processes: int, target: str = INGEST_FLOW) -> dict:
    """Drain the queues through the Bytewax flow ``target`` with ``processes`` processes."""
    picked = free_ports(2 * processes)
    ports = picked[:processes]
    addresses = ";".join(f"127.0.0.1:{port}" for port in picked[processes:])
    children = []
    for index, port in enumerate(ports):
        cluster = ["-i", str(index), "-a", addresses] if processes > 1 else []
        child_env = {**env, "BYTEWAX_DATAFLOW_API_PORT": str(port), "F2_LOG_LEVEL": "WARNING"}
        child_env["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = env["F2_STACK_DIR"]
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "bytewax.run", target, "-s", "1", *cluster],
                env=child_env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    first = received_all = last = 0.0
    cpu = 0.0
    before = 0  # messages already received when the first receipt was seen (untimed)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            totals = [counts(port) for port in ports]
            received = sum(t[0] for t in totals)
            acked = sum(t[1] for t in totals)
            now = time.monotonic()
            if received and not first:
                first, before = now, round(received)
                cpu = -sum(cpu_seconds(child.pid) for child in children)
            if received >= count and not received_all:
                received_all = now
            if acked >= count:
                last = now
                cpu += sum(cpu_seconds(child.pid) for child in children)
                break
            if any(child.poll() is not None for child in children):
                break  # a flow died: nothing timed
            time.sleep(0.05)
    finally:
        for child in children:
            child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
    return {**timed_drain(count, before, (first, received_all, last), cpu), "processes": processes}


def timed_drain(
    count: int, before: int, times: tuple[float, float, float], cpu: float
) -> dict[str, object]:
    """A Bytewax drain of ``count`` messages timed from the scrape that first saw a receipt, when
    ``before`` had been received: rates and CPU (``cpu`` seconds from then to the completion)
    over the ``count - before`` messages received since. ``times``: (that scrape, every message
    received, every message acked); a drain that never completed (acked 0) is untimed."""
    first, received_all, last = times
    if not last:
        return {
            "messages": 0,
            "timed_messages": 0,
            "rate": 0.0,
            "receive_rate": 0,
            "cpu_us_per_msg": None,
        }
    timed = max(count - before, 1)
    return {
        "messages": count,
        "timed_messages": timed,
        "rate": drain_rate(timed, first, last),
        "receive_rate": round(drain_rate(timed, first, received_all)),
        "cpu_us_per_msg": round(cpu * 1e6 / timed, 1),
    }


def broker_load(cpu_s: float, messages: int, rate: float) -> dict[str, float]:
    """Mosquitto's CPU per message delivered while a configuration drained (``cpu_s`` over
    ``messages``), and the share of one core it needs at that configuration's ``rate``: Mosquitto
    runs on one thread, so near 1.0 the broker, not the consumer, sets the rate."""
    us_per_msg = cpu_s * 1e6 / messages
    return {
        "broker_us_per_msg": round(us_per_msg, 1),
        "broker_cores_at_rate": round(us_per_msg * rate / 1e6, 2),
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
        broker = read_pid(Path(settings.stack_dir) / "run" / "mosquitto.pid")
        broker_cpu = -cpu_seconds(broker) if broker else 0.0
        if name == "bare":
            result = bare(config, count)
        elif name == "mosquitto_sub":
            result = mosquitto_sub(config, count)
        elif name == "own_client":
            result = flow(env, count, 1, OWN_CLIENT_FLOW)
        else:
            result = flow(env, count, 1 if name == "flow_1p" else 2)
        broker_cpu += cpu_seconds(broker) if broker else 0.0
    finally:
        forget_sessions(config)
    if broker and result["messages"]:
        result.update(broker_load(broker_cpu, result["messages"], result["rate"]))
    result["publish_rate"] = round(publish_rate)
    result["partitions"] = config.partitions
    return result


def lower_median(values: Sequence[float]) -> float:
    """The median (the lower one for an even count)."""
    return sorted(values)[(len(values) - 1) // 2]


def round_ratios(numerators: Sequence[dict], denominators: Sequence[dict]) -> list[float]:
    """Per round: rate of one configuration / rate of another (0 where the other timed nothing)."""
    pairs = zip(numerators, denominators, strict=True)
    return [n["rate"] / d["rate"] if d["rate"] else 0.0 for n, d in pairs]


def summarize(runs: dict[str, list[dict]]) -> dict[str, object]:
    """Each configuration's median round, the ceilings, and the median per-round ratios."""
    results: dict[str, object] = {}
    for name, done in runs.items():
        # The round with the median rate (the lower median for an even count).
        median = sorted(done, key=lambda r: r["rate"])[(len(done) - 1) // 2]
        results[name] = {**median, "rates": [round(r["rate"]) for r in done]}
    if "bare" in runs:
        for name in FLOWS:
            if name in runs:
                ratios = round_ratios(runs[name], runs["bare"])
                results[f"{name}_vs_bare"] = round(lower_median(ratios), 3)
                results[f"{name}_vs_bare_per_round"] = [round(r, 3) for r in ratios]
    if "flow_1p_vs_bare" in results:
        results["target_met"] = results["flow_1p_vs_bare"] >= 0.70  # type: ignore[operator]
    ceilings: dict[str, object] = {}
    for ceiling in CEILINGS:
        if ceiling not in runs:
            continue
        median = results[ceiling]
        ceilings[f"{ceiling}_msgs_per_s"] = round(median["rate"])  # type: ignore[index]
        ceilings[f"{ceiling}_us_per_msg"] = median["cpu_us_per_msg"]  # type: ignore[index]
        for name, prefix in FLOWS.items():
            if name in runs:
                ratios = round_ratios(runs[name], runs[ceiling])
                results[f"{prefix}_over_{ceiling}"] = round(lower_median(ratios), 3)
                results[f"{prefix}_over_{ceiling}_per_round"] = [round(r, 3) for r in ratios]
    if ceilings:
        results["ceilings"] = ceilings
    results["cpu_us_per_msg"] = {name: results[name]["cpu_us_per_msg"] for name in runs}  # type: ignore[index]
    return results


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
    load_start = [round(x, 2) for x in os.getloadavg()]
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
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
        **summarize(runs),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if sorted(args.only) == sorted(CONFIGS):
        out = ROOT / "bench" / "results" / "ingest.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
