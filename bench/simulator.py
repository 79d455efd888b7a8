"""Simulator load benchmark: the simulator's QoS 1 load mode against Mosquitto's QoS 1 ceiling.

All measurements run side by side in one run against one Mosquitto: a private instance of the
local stack's broker (same configuration: auth, ACL, persistence, limits) started with
``F2_STACK_DIR``/``F2_STACK_PORT_OFFSET`` so the shared broker and its subscribers are not flooded;
no subscriber is attached (the ceiling is the rate Mosquitto *accepts*, i.e. PUBACKs per second).

1. ``mosquitto_pub -q 1 -d`` (the C client), counting its successful PUBACKs per second:
   ``-l`` with 1 and 2 concurrent publishers, and ``--repeat`` with 4 concurrent publishers.
2. A minimal Python client: paho, one prebuilt payload, single-threaded loop, QoS 1 (the best a
   paho-based publisher can do), with 1 and 2 processes.
3. The simulator's load mode (``python -m simulator --rate <huge> --qos 1``) with 1 and 2
   processes, on a generated fleet of 100 controllers.

Each run lasts at most ``--seconds`` (default 8; every run ≤ 20 s: the machine is shared).

Run: ``.venv/bin/python -m bench.simulator``; prints JSON, writes ``bench/results/simulator.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from schemas.settings import Settings, load_settings

RESULTS = Path(__file__).resolve().parent / "results" / "simulator.json"
PORT_OFFSET = "700"
TOPIC = "tele/f2-0e0000000001/sensor-mode/J1/sensor-1"
PAYLOAD = b'{"timestamp":"2026-11-26 20:00:00.000000","data":"01030609C41388019055 6F"}'
PUBACK = re.compile(rb"received PUBACK \(Mid: \d+, RC:(\d+)\)")
DONE = re.compile(r"done: published (\d+) in ([\d.]+) s = ([\d.]+) msg/s")


def f2(env: dict[str, str], *args: str) -> None:
    """Run the ``f2`` CLI against the private stack."""
    subprocess.run([sys.executable, "-m", "ops.cli", *args], env=env, check=True)


def mosquitto_pub_rate(
    settings: Settings, publishers: int, mode: str, count: int, workdir: Path
) -> float:
    """PUBACKs (success) per second for ``publishers`` concurrent ``mosquitto_pub -q 1 -d``.

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
    acked = 0
    for proc in procs:
        assert proc.stdout is not None
        acked += sum(1 for line in proc.stdout if _success_puback(line))
        proc.wait(timeout=60)
    return acked / (time.perf_counter() - started)


def _success_puback(line: bytes) -> bool:
    """True for a debug line of a PUBACK with a success reason code (below 0x80; 16 = "no
    matching subscribers" is a success)."""
    match = PUBACK.search(line)
    return match is not None and int(match.group(1)) < 0x80


def _minimal_client(settings: Settings, seconds: float, out: Any) -> None:
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
    while acked < sent and time.perf_counter() - started < seconds + 10:
        client.loop(0.01)
    out.put((acked, time.perf_counter() - started))
    client.disconnect()


def minimal_client_rate(settings: Settings, processes: int, seconds: float) -> float:
    """Aggregate acknowledged messages/s of ``processes`` minimal paho clients."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=_minimal_client, args=(settings, seconds, results))
        for _ in range(processes)
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
        *("--controllers", "100", "--seed", "4242", "--rate", "1000000", "--qos", "1"),
        *("--duration", str(seconds), "--processes", str(processes), "--report", str(report)),
    ]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    match = DONE.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"simulator failed:\n{result.stdout}\n{result.stderr}")
    published = json.loads(report.read_text())["published"]
    return {"rate": float(match.group(3)), "published": published, "command": " ".join(argv[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--lines", type=int, default=300_000)
    args = parser.parse_args()
    seconds = min(args.seconds, 20.0)
    workdir = Path(tempfile.mkdtemp(prefix="f2-bench-simulator-"))
    env = {
        **os.environ,
        "F2_STACK_DIR": str(workdir / "stack"),
        "F2_STACK_PORT_OFFSET": PORT_OFFSET,
    }
    f2(env, "stack", "start", "mosquitto")
    try:
        settings = load_settings(env)
        result: dict[str, Any] = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg_before": os.getloadavg(),
            },
            "broker": f"private mosquitto (local stack config) on port {settings.mqtt_port}",
            "qos": 1,
            "mosquitto_pub_ceiling": {
                f"{mode}_{n}_publishers": round(
                    mosquitto_pub_rate(settings, n, mode, count, workdir)
                )
                for mode, n, count in (
                    ("lines", 1, args.lines),
                    ("lines", 2, args.lines),
                    ("repeat", 4, args.lines // 10),
                )
            },
            "minimal_paho_client": {
                f"{n}_processes": round(minimal_client_rate(settings, n, seconds)) for n in (1, 2)
            },
            "simulator_load_mode": {
                f"{n}_processes": simulator_rate(env, n, seconds, workdir) for n in (1, 2)
            },
        }
        ceiling = max(result["mosquitto_pub_ceiling"].values())
        best = max(run["rate"] for run in result["simulator_load_mode"].values())
        paho = max(result["minimal_paho_client"].values())
        result["simulator_vs_mosquitto_ceiling"] = round(best / ceiling, 3)
        result["simulator_vs_minimal_paho_client"] = round(best / paho, 3)
        result["machine"]["loadavg_after"] = os.getloadavg()
    finally:
        f2(env, "stack", "down", "--purge")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
