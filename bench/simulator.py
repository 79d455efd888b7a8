"""Simulator load benchmark: the simulator's QoS 1 load mode against Mosquitto's QoS 1 ceiling.

All measurements run side by side in one run against one Mosquitto: a private instance of the
local stack's broker (same configuration: auth, ACL, persistence, limits) started with
``F2_STACK_DIR``/``F2_STACK_PORT_OFFSET`` so the shared broker and its subscribers are not flooded;
no subscriber is attached (the ceiling is the rate Mosquitto *accepts*, i.e. success PUBACKs per
second).

1. ``mosquitto_pub -q 1 -d`` (the C client), counting its successful PUBACKs: ``-l`` with 1 and 2
   concurrent publishers, and ``--repeat`` with 4 concurrent publishers.
2. Minimal clients publishing one prebuilt payload as fast as they can: the raw socket client
   (:class:`simulator.fastmqtt.FastPublisher`) with 1 and 2 processes, and paho (1 process) for
   reference. Beside them, not counted as a ceiling, the raw client replaying the simulator's own
   prebuilt traffic (``mix_client``: its 607 topics and their payloads): what Mosquitto accepts
   of these messages, whose cost to the broker differs from one repeated message.
3. The simulator's load mode (``python -m simulator --rate <huge> --qos 1``) with 1 and 2
   processes, on a generated fleet of 100 controllers; its report must agree with its summary.

The machine is shared and noisy, so every measurement is repeated ``--rounds`` times, the rounds
interleaved (each round runs every configuration once); each configuration's best round counts.
Each run lasts at most ``--seconds`` (default 8, capped at 15). The target is the simulator's best
rate ≥ 90 % of the best ceiling (mosquitto_pub or a minimal client) measured in the same run.

Beside each rate, the broker's own CPU over the run (``/proc/<pid>/stat`` of the Mosquitto
process before and after; for the simulator divided by its publishing time, from its summary):
``broker_cores`` near 1.0 means Mosquitto, which runs on one thread, was busy the whole time;
``broker_us_per_msg`` is what each accepted message cost it. Busy is not the same as at its
ceiling: the cost per message also depends on how fast the client refills its in-flight window
(1,000 messages on the local broker), since a broker that catches up reads smaller chunks. The
simulator kept Mosquitto 94-99 % busy in every run so far, at 5.1-6.2 µs per message, while
``mix_client`` replaying the same messages got it to 4.3 µs and 232k against 180k msg/s.

Run: ``.venv/bin/python -m bench.simulator [--port-offset 700]``; prints JSON and writes
``bench/results/simulator.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import proc_stat
from ops.stack.local import Stack
from schemas.settings import Settings, child_environment, load_settings
from simulator.fastmqtt import FastPublisher
from simulator.fleet import generate_fleet
from simulator.load import FAST_SERVICE_EVERY
from simulator.messages import Outgoing, build_sources

RESULTS = Path(__file__).resolve().parent / "results" / "simulator.json"
PORT_OFFSET = "700"
TARGET = 0.9
MAX_SECONDS = 15.0
MIX_MESSAGES = 60_000
FLEET_CONTROLLERS, FLEET_SEED = 100, 4242  # the simulator's fleet in every run here
TOPIC = "tele/f2-0e0000000001/sensor-mode/J1/sensor-1"
PAYLOAD = b'{"timestamp":"2026-11-26 20:00:00.000000","data":"01030609C41388019055 6F"}'
PUBACK = re.compile(rb"received PUBACK \(Mid: \d+, RC:(\d+)\)")
DONE = re.compile(
    r"done: published (\d+) in ([\d.]+) s = ([\d.]+) msg/s .*?(\d+) refused, (\d+) unacknowledged"
)


def f2(env: dict[str, str], *args: str) -> None:
    """Run the ``f2`` CLI against the private stack."""
    subprocess.run([sys.executable, "-m", "ops.cli", *args], env=env, check=True)


def mosquitto_pub_rate(
    settings: Settings, publishers: int, mode: str, count: int, seconds: float, workdir: Path
) -> float:
    """Success PUBACKs per second for ``publishers`` concurrent ``mosquitto_pub -q 1 -d``,
    stopped after ``seconds`` if they have not finished.

    ``mode`` ``lines``: each sends ``count`` prebuilt lines with ``-l`` (pipelined; note that
    mosquitto_pub 2.0.11 stops at end of input without sending every line, which is why only the
    acknowledgements are counted). ``repeat``: each sends one message ``count`` times with
    ``--repeat`` (one at a time, so concurrency is what fills the broker).
    """
    source = workdir / "lines.txt"
    source.write_bytes((PAYLOAD + b"\n") * count)
    argv = [
        "mosquitto_pub",
        *("-h", settings.mqtt_host, "-p", str(settings.mqtt_port), "-V", "mqttv5", "-q", "1"),
        *("-u", settings.sim_username, "-P", settings.sim_password, "-t", TOPIC, "-d"),
    ]
    argv += ["-l"] if mode == "lines" else ["-m", PAYLOAD.decode(), "--repeat", str(count)]
    argv += [] if mode == "lines" else ["--repeat-delay", "0"]
    started = time.perf_counter()
    procs = []
    for _ in range(publishers):
        with open(source, "rb") as stdin:
            procs.append(subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE))
    counts = [0] * publishers
    readers = [
        threading.Thread(target=_count_pubacks, args=(proc, counts, i), daemon=True)
        for i, proc in enumerate(procs)
    ]
    for reader in readers:
        reader.start()
    deadline = started + seconds
    for reader in readers:
        reader.join(max(0.0, deadline - time.perf_counter()))
    elapsed = time.perf_counter() - started
    acked = sum(counts)
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)
    return acked / elapsed


def _count_pubacks(proc: subprocess.Popen[bytes], counts: list[int], index: int) -> None:
    """Count the success PUBACK debug lines of one mosquitto_pub (below 0x80; 16 = "no matching
    subscribers" is a success) into ``counts[index]``."""
    assert proc.stdout is not None
    for line in proc.stdout:
        match = PUBACK.search(line)
        if match is not None and int(match.group(1)) < 0x80:
            counts[index] += 1


def _raw_client(settings: Settings, seconds: float, out: Any) -> None:
    """Publish one prebuilt message at QoS 1 with the raw socket client; put (acked, elapsed)."""
    publisher = FastPublisher(settings, f"f2-bench-raw-{os.getpid()}", 1)
    publisher.connect()
    message = Outgoing(TOPIC, PAYLOAD)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(FAST_SERVICE_EVERY):
            publisher.publish(message)
        publisher.service()
    elapsed = time.perf_counter() - started
    publisher.drain()
    publisher.close()
    out.put((publisher.tally.published, elapsed))


def _mix_client(settings: Settings, seconds: float, out: Any) -> None:
    """The raw socket client replaying the simulator's own traffic (the fleet of
    :func:`simulator_rate`, every source in turn, built before the clock starts) as fast as it
    can: Mosquitto's ceiling for these topics and payloads, without the simulator's per-message
    work. Puts (acked, elapsed)."""
    messages: list[tuple[bytes, bytes, int]] = []
    sources = build_sources(generate_fleet(FLEET_CONTROLLERS, FLEET_SEED))
    now = time.time()
    for k in range(MIX_MESSAGES):
        sources[k % len(sources)].emit(
            lambda topic, payload, kind: messages.append((topic, payload, kind)), now + k * 1e-5
        )
    publisher = FastPublisher(settings, f"f2-bench-mix-{os.getpid()}", 1)
    publisher.connect()
    send, count, k = publisher.send, len(messages), 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(FAST_SERVICE_EVERY):
            send(*messages[k % count])
            k += 1
        publisher.service()
    elapsed = time.perf_counter() - started
    publisher.drain()
    publisher.close()
    out.put((publisher.tally.published, elapsed))


def _paho_client(settings: Settings, seconds: float, out: Any) -> None:
    """Publish one prebuilt payload at QoS 1 as fast as paho allows; put (acked, elapsed)."""
    acked = 0

    def on_publish(*_args: object) -> None:
        nonlocal acked
        acked += 1

    client = Client(CallbackAPIVersion.VERSION2, protocol=5)
    client.username_pw_set(settings.sim_username, settings.sim_password)
    client.on_publish = on_publish
    client.max_inflight_messages_set(1000)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    while not client.is_connected():
        client.loop(0.05)
    sent, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(32):
            if sent - acked < 2000:
                client.publish(TOPIC, PAYLOAD, 1)
                sent += 1
        client.loop(0)
    elapsed = time.perf_counter() - started
    while acked < sent and time.perf_counter() - started < seconds + 10:
        client.loop(0.01)
    out.put((acked, elapsed))
    client.disconnect()


def minimal_client_rate(
    client: Callable[[Settings, float, Any], None],
    settings: Settings,
    processes: int,
    seconds: float,
) -> float:
    """Aggregate acknowledged messages/s of ``processes`` minimal clients."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=client, args=(settings, seconds, results)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    done = [results.get(timeout=seconds + 30) for _ in workers]
    for worker in workers:
        worker.join()
    return sum(acked for acked, _ in done) / max(elapsed for _, elapsed in done)


def simulator_rate(env: dict[str, str], processes: int, seconds: float, workdir: Path) -> dict:
    """The simulator's achieved QoS 1 rate in load mode, from its own summary and report."""
    report = workdir / f"report-{processes}.json"
    argv = [
        sys.executable,
        "-m",
        "simulator",
        *("--controllers", str(FLEET_CONTROLLERS), "--seed", str(FLEET_SEED)),
        *("--rate", "1000000", "--qos", "1"),
        *("--duration", str(seconds), "--processes", str(processes), "--report", str(report)),
    ]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    match = DONE.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"simulator failed:\n{result.stdout}\n{result.stderr}")
    published = json.loads(report.read_text())["published"]
    if published != int(match.group(1)):
        raise RuntimeError(f"report says {published} published, summary {match.group(1)}")
    return {
        "rate": float(match.group(3)),
        "publishing_s": float(match.group(2)),
        "published": published,
        "refused": int(match.group(4)),
        "unacknowledged": int(match.group(5)),
        "command": " ".join(["python", *argv[1:-2]]),
    }


class BrokerMeter:
    """CPU seconds (user + system) of the broker process between two readings."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def seconds(self) -> float:
        stat = proc_stat(self.pid)
        if stat is None:
            raise RuntimeError(f"the broker (pid {self.pid}) is gone")
        return stat[1]

    def measure(self, run: Callable[[], Any]) -> tuple[Any, float]:
        """``run()``'s result and the broker's CPU seconds while it ran."""
        before = self.seconds()
        result = run()
        return result, self.seconds() - before


def broker_load(cpu_s: float, messages: float, active_s: float) -> dict[str, float]:
    """The broker's share of a core over ``active_s`` and its CPU per accepted message."""
    return {
        "broker_cores": round(cpu_s / active_s, 3) if active_s > 0 else 0.0,
        "broker_us_per_msg": round(cpu_s / messages * 1e6, 2) if messages else 0.0,
    }


def one_round(
    env: dict[str, str],
    settings: Settings,
    args: argparse.Namespace,
    workdir: Path,
    broker: BrokerMeter,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Every configuration measured once: name → rate (the simulator's: its run details), and
    name → the broker's load during that run (:func:`broker_load`)."""
    seconds, lines = args.seconds, args.lines
    rates: dict[str, Any] = {}
    load: dict[str, dict[str, float]] = {}

    def timed(name: str, run: Callable[[], float]) -> None:
        started = time.perf_counter()
        rate, cpu_s = broker.measure(run)
        elapsed = time.perf_counter() - started
        rates[name] = round(rate)
        load[name] = broker_load(cpu_s, rate * min(elapsed, seconds), elapsed)

    for mode, n, count in (("lines", 1, lines), ("lines", 2, lines), ("repeat", 4, lines // 10)):
        timed(
            f"mosquitto_pub_{mode}_{n}_publishers",
            partial(mosquitto_pub_rate, settings, n, mode, count, seconds, workdir),
        )
    for n in (1, 2):
        timed(
            f"raw_client_{n}_processes",
            partial(minimal_client_rate, _raw_client, settings, n, seconds),
        )
    timed(
        "paho_client_1_processes", partial(minimal_client_rate, _paho_client, settings, 1, seconds)
    )
    timed("mix_client_1_processes", partial(minimal_client_rate, _mix_client, settings, 1, seconds))
    for n in (1, 2):
        name = f"simulator_{n}_processes"
        run, cpu_s = broker.measure(partial(simulator_rate, env, n, seconds, workdir))
        rates[name] = run
        load[name] = broker_load(cpu_s, run["published"], run["publishing_s"])
    return rates, load


def _rate(value: Any) -> float:
    return value["rate"] if isinstance(value, dict) else value


def summarize(
    rounds: list[dict[str, Any]], loads: list[dict[str, dict[str, float]]]
) -> dict[str, Any]:
    """Best round of each configuration (with the broker's load in that round), the best
    ceiling and the simulator's ratio to it."""
    best_round = {
        name: max(range(len(rounds)), key=lambda i, n=name: _rate(rounds[i][n]))
        for name in rounds[0]
    }
    best = {name: rounds[i][name] for name, i in best_round.items()}
    ceilings = {n: v for n, v in best.items() if not n.startswith(("simulator", "paho", "mix"))}
    ceiling_name = max(ceilings, key=lambda n: ceilings[n])
    simulator = {n: v for n, v in best.items() if n.startswith("simulator")}
    sim_name = max(simulator, key=lambda n: simulator[n]["rate"])
    ratio = simulator[sim_name]["rate"] / ceilings[ceiling_name]
    return {
        "mosquitto_pub_ceiling": {n: v for n, v in best.items() if n.startswith("mosquitto_pub")},
        "minimal_clients": {n: v for n, v in best.items() if "client" in n},
        "simulator_load_mode": simulator,
        "broker_load": {name: loads[i][name] for name, i in best_round.items()},
        "best_ceiling": {"rate": ceilings[ceiling_name], "by": ceiling_name},
        "best_simulator": {"rate": simulator[sim_name]["rate"], "by": sim_name},
        "simulator_vs_best_ceiling": round(ratio, 3),
        "simulator_vs_mix_client": (
            round(simulator[sim_name]["rate"] / best["mix_client_1_processes"], 3)
            if best.get("mix_client_1_processes")
            else None
        ),
        "target": TARGET,
        "target_met": ratio >= TARGET,
        "rounds": [{n: _rate(v) for n, v in r.items()} for r in rounds],
        "rounds_broker_cores": [{n: v["broker_cores"] for n, v in r.items()} for r in loads],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--lines", type=int, default=600_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port-offset", default=PORT_OFFSET, help="of the private stack's ports")
    args = parser.parse_args()
    args.seconds = min(args.seconds, MAX_SECONDS)
    workdir = Path(tempfile.mkdtemp(prefix="f2-bench-simulator-"))
    env = child_environment(
        {"F2_STACK_DIR": str(workdir / "stack"), "F2_STACK_PORT_OFFSET": args.port_offset}
    )
    f2(env, "stack", "start", "mosquitto")
    try:
        settings = load_settings(env)
        machine: dict[str, Any] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": os.getloadavg(),
        }
        pid = Stack(Path(env["F2_STACK_DIR"])).services["mosquitto"].pid()
        if pid is None:
            raise RuntimeError("the private Mosquitto is not running")
        measured = [
            one_round(env, settings, args, workdir, BrokerMeter(pid)) for _ in range(args.rounds)
        ]
        machine["loadavg_after"] = os.getloadavg()
    finally:
        f2(env, "stack", "down", "--purge")
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "machine": machine,
        "broker": f"private mosquitto (local stack config) on port {settings.mqtt_port}",
        "qos": 1,
        "seconds_per_run": args.seconds,
        **summarize([rates for rates, _ in measured], [load for _, load in measured]),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
