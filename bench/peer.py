"""Peer benchmark: the decode flow against the same job written with Quix Streams, in one run.

Same box, same hour, same mix, same broker and database: one raw topic is pre-filled with the
mix of :mod:`bench.decode_flow` (``--messages``; 4 partitions), then, interleaved ``--repeat``
times (best of each kept, the box is shared):

- ``flow``: ``python -m bytewax.run dataflows.decode`` (one process, one worker, recovery on, the
  flags of ``bench.decode_flow``): decodes into storage **and** the decoded topic and the DLQ;
- ``quixstreams``: :mod:`bench.peer_quix` in its own virtualenv (:mod:`bench.peer_venv`, created
  on first use): a Quix Streams ``Application`` (new consumer group, earliest, at-least-once,
  commit every 1 s) whose ``BatchingSink`` stores the same rows with the same writer; it only
  stores.

Each drains the whole topic into the same (emptied) time window of the same tables. Timed from
the first row stored to the last (the database is polled every 0.1 s): rows/s, and the job's CPU
(user + system of its process tree, ``/proc``) over that window per message and per row; the time
to the first stored row is reported apart, and for the peer the consumer-group join (``join_s``:
``Application.run`` to the first message consumed). ``flow_over_quixstreams`` = flow rows/s ÷
peer rows/s (target ≥ 1.5). The window's CPU depends on how far a job has decoded ahead of its
first stored row (the flow: a source batch), so each job also gets its CPU over the whole drain
less its startup CPU (the same job started on an empty topic for as long as it took to its first
row): ``*_us_per_msg_net``; ``flow_cpu_per_row_net_over_quixstreams`` = flow ÷ peer CPU per row on
that basis (target ≤ 1). The load average is recorded at the start, before each run and at the end.
Then the peer's cost is split by step (``quixstreams_cost_parts``, CPU per message measured in the
peer after its first message): consuming only, consuming and decoding, everything.

If the peer's virtualenv cannot be created or the peer fails (cannot reach the broker, stores
nothing), the benchmark exits 1 with the error: no numbers are made up.

Run: ``.venv/bin/python -m bench.peer [--messages N] [--repeat R]`` (``F2_STACK_DIR``: the stack to
use; its own ``bench_peer_*`` topics); prints JSON and writes ``bench/results/peer.json``.
``python -m bench`` runs it right after ``decode_flow`` (stage ``peer``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    KEEP_EVENTS,
    interruptible_children,
    last_json_object,
    proc_stat,
    process_tree,
    versions,
)
from bench.decode_flow import (
    FLOW_FLAGS,
    Window,
    decoded_rows,
    entries,
    fill_topic,
    free_port,
    mix,
)
from bench.peer_venv import PeerVenvError, ensure_venv, installed_versions
from connectors.recovery_dir import prepare_recovery
from ops.stack.local import create_topics
from schemas.settings import child_environment, load_config

RESULTS = Path(__file__).resolve().parent / "results" / "peer.json"
ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.1
RUN_TIMEOUT_S = 300.0
STOP_WAIT_S = 30.0
TARGET_RATIO = 1.5
TARGET_CPU_RATIO = 1.0


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds(pid: int) -> float:
    """User + system seconds of ``pid`` and its descendants so far."""
    total = 0.0
    for member in process_tree([pid]):
        stat = proc_stat(member)
        if stat is not None:
            total += stat[1]
    return total


def _stop(proc: subprocess.Popen, graceful: bool) -> None:
    """SIGTERM and a wait (the peer's last checkpoint and report), else SIGKILL."""
    if proc.poll() is None and graceful:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def drain(
    name: str,
    command: list[str],
    env: dict[str, str],
    workdir: Path,
    window: Window,
    expected: tuple[int, int],
    graceful_stop: bool = False,
    timeout_s: float = RUN_TIMEOUT_S,
) -> dict[str, Any]:
    """Run ``command`` until the window holds all ``expected`` (messages, rows) rows; its figures.

    The clock and the CPU meter start at the first row seen in the database and stop when the
    last is there; the startup before it (imports, connections, a consumer group's join) is
    reported as ``first_row_s``.
    """
    messages, rows = expected
    out_path, log_path = workdir / f"{name}.out", workdir / f"{name}.log"
    load_before = load()
    with open(out_path, "wb") as out, open(log_path, "wb") as log:
        began = time.perf_counter()
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=log)
    first: tuple[float, int, float] | None = None
    last: tuple[float, int, float] | None = None
    seen = 0
    try:
        while time.perf_counter() - began < timeout_s and proc.poll() is None:
            seen = window.count()
            sample = (time.perf_counter(), seen, cpu_seconds(proc.pid))
            if seen and first is None:
                first = sample
            if seen >= rows:
                last = sample
                break
            time.sleep(POLL_S)
    finally:
        _stop(proc, graceful_stop)
    tail = log_path.read_text(errors="replace")[-1500:]
    if first is None or last is None:
        exited = f", exited with {proc.returncode}" if proc.returncode else ""
        raise RuntimeError(f"{name} stored {seen} of {rows} rows{exited}: {tail}")
    window_rows, seconds = rows - first[1], last[0] - first[0]
    result: dict[str, Any] = {
        "rows": rows,
        "first_row_s": round(first[0] - began, 3),
        "wall_s": round(last[0] - began, 3),
        "window_s": round(seconds, 3),
        "window_rows": window_rows,
        "load_average": load_before,
        "cpu_total_s": round(last[2], 3),  # from the start: imports, connections, join included
        "us_per_msg_with_startup": round(last[2] / messages * 1e6, 1),
    }
    text = out_path.read_text(errors="replace")
    if graceful_stop and "{" in text:
        result["report"] = last_json_object(text)
    if window_rows <= 0 or seconds <= 0:  # everything landed between two polls: no rate
        return {**result, "rows_per_s": None, "us_per_msg": None, "us_per_row": None}
    cpu = last[2] - first[2]
    window_messages = messages * window_rows / rows
    result |= {
        "rows_per_s": round(window_rows / seconds),
        "msgs_per_s": round(window_messages / seconds),
        "cpu_s": round(cpu, 3),
        "cores": round(cpu / seconds, 3),
        "us_per_msg": round(cpu / window_messages * 1e6, 1),
        "us_per_row": round(cpu / window_rows * 1e6, 1),
    }
    return result


def flow_command(workdir: Path) -> list[str]:
    recovery = workdir / "recovery"
    prepare_recovery(recovery, 4, None)
    return [sys.executable, "-m", "bytewax.run", "dataflows.decode", *FLOW_FLAGS, str(recovery)]


def peer_command(python: Path, topic: str, group: str, workdir: Path) -> list[str]:
    module = [str(python), "-m", "bench.peer_quix"]
    return [*module, "--topic", topic, "--group", group, "--state-dir", str(workdir / "state")]


def cost_parts(
    python: Path, topic: str, env: dict[str, str], messages: int, suffix: str, timeout_s: float
) -> dict[str, Any]:
    """The peer's CPU per message by step, measured inside it after its first message: only
    consuming (an ``apply`` that counts), consuming and decoding (no sink); ``store`` is added
    from the timed runs. Each on a new group with ``session.timeout.ms=6000``, which only
    shortens the join on the local broker (its join waits about half the session timeout)."""
    parts: dict[str, Any] = {}
    for until in ("consume", "decode"):
        with tempfile.TemporaryDirectory(prefix=f"f2-peer-{until}-") as tmp:
            workdir = Path(tmp)
            command = peer_command(python, topic, f"f2-bench-peer-{suffix}-{until}", workdir)
            command += ["--until", until, "--messages", str(messages)]
            command += ["--consumer-config", "session.timeout.ms=6000"]
            done = subprocess.run(
                command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout_s
            )
        if done.returncode != 0:
            raise RuntimeError(f"peer --until {until} failed: {done.stderr[-1500:]}")
        parts[until] = last_json_object(done.stdout)["after_first_message"]
    return parts


def startup_cpu(command: list[str], env: dict[str, str], workdir: Path, seconds: float) -> float:
    """CPU seconds a job uses in its first ``seconds`` when its topic is empty: its startup
    (imports, connections, a group join) and idle polling, to take out of its whole-drain CPU."""
    proc = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(seconds)
        return cpu_seconds(proc.pid)
    finally:
        _stop(proc, graceful=False)


def net_cpu(job: dict[str, Any], idle_cpu_s: float, expected: tuple[int, int]) -> None:
    """Add to ``job`` its CPU per message and per row over the whole drain, startup excluded:
    unlike the window's figures, these do not depend on how far the job decodes ahead of its
    first stored row."""
    cpu = max(job["cpu_total_s"] - idle_cpu_s, 0.0)
    job["startup_cpu_s"] = round(idle_cpu_s, 3)
    job["us_per_msg_net"] = round(cpu / expected[0] * 1e6, 1)
    job["us_per_row_net"] = round(cpu / expected[1] * 1e6, 1)


def _better(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    return old is None or (new["rows_per_s"] or 0) > (old["rows_per_s"] or 0)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summary(flow: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """The figures ``bench.report`` reads (``peer.*`` in ``latest.json``)."""
    return {
        "flow_rows_per_s": flow["rows_per_s"],
        "flow_us_per_msg": flow["us_per_msg"],
        "flow_us_per_row": flow["us_per_row"],
        "quixstreams_rows_per_s": peer["rows_per_s"],
        "quixstreams_us_per_msg": peer["us_per_msg"],
        "quixstreams_us_per_row": peer["us_per_row"],
        "flow_over_quixstreams": _ratio(flow["rows_per_s"], peer["rows_per_s"]),
        "flow_cpu_per_row_over_quixstreams": _ratio(flow["us_per_row"], peer["us_per_row"]),
        "flow_us_per_msg_net": flow.get("us_per_msg_net"),
        "quixstreams_us_per_msg_net": peer.get("us_per_msg_net"),
        "flow_cpu_per_row_net_over_quixstreams": _ratio(
            flow.get("us_per_row_net"), peer.get("us_per_row_net")
        ),
        "group_join_s": (peer.get("report") or {}).get("join_s"),
        "flow_first_row_s": flow["first_row_s"],
        "quixstreams_first_row_s": peer["first_row_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each job (best kept)")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT_S, help="per run, seconds")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    interruptible_children()
    load_start = load()
    try:
        python = ensure_venv()
    except PeerVenvError as exc:
        return _failed(f"PeerVenvError: {exc} (offline: {exc.offline})", load_start, args.results)
    config = load_config()
    settings = config.connections
    suffix = str(int(time.time()))
    topics = {
        "F2_TOPIC_RAW": f"bench_peer_raw_{suffix}",
        "F2_TOPIC_DECODED": f"bench_peer_decoded_{suffix}",
        "F2_TOPIC_DLQ": f"bench_peer_dlq_{suffix}",
    }
    empty = f"bench_peer_empty_{suffix}"  # for the startup CPU of each job
    create_topics(settings.kafka_bootstrap, [*topics.values(), empty], 4)
    base = datetime(2002, 1, 1, tzinfo=UTC) + timedelta(days=int(suffix) % 300)
    messages = mix(args.messages, base)
    window = Window(settings.timeseries_dsn, base, base + timedelta(milliseconds=args.messages))
    expected = (args.messages, len(decoded_rows(messages, entries(settings))))
    window.delete()
    fill_topic(settings, topics["F2_TOPIC_RAW"], messages)
    flow_env = child_environment({**topics, **KEEP_EVENTS, "PYTHONPATH": str(ROOT)})
    peer_env = child_environment({**KEEP_EVENTS, "PYTHONPATH": str(ROOT)})
    runs: dict[str, list[dict[str, Any]]] = {"flow": [], "quixstreams": []}
    best: dict[str, dict[str, Any] | None] = {"flow": None, "quixstreams": None}
    for round_ in range(args.repeat):  # interleaved: the box is shared and noisy
        for name in ("flow", "quixstreams"):
            with tempfile.TemporaryDirectory(prefix=f"f2-peer-{name}-") as tmp:
                workdir = Path(tmp)
                try:
                    if name == "flow":
                        env = {**flow_env, "BYTEWAX_DATAFLOW_API_PORT": str(free_port())}
                        result = drain(name, flow_command(workdir), env, workdir, window, expected)
                    else:
                        group = f"f2-bench-peer-{suffix}-{round_}"
                        command = peer_command(python, topics["F2_TOPIC_RAW"], group, workdir)
                        result = drain(
                            name, command, peer_env, workdir, window, expected, True, args.timeout
                        )
                except RuntimeError as exc:
                    window.delete()
                    return _failed(f"{name}: {exc}", load_start, args.results)
            window.delete()
            runs[name].append(result)
            if _better(result, best[name]):
                best[name] = result
    flow, peer = best["flow"], best["quixstreams"]
    assert flow is not None and peer is not None
    try:
        parts = cost_parts(
            python, topics["F2_TOPIC_RAW"], peer_env, args.messages, suffix, args.timeout
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return _failed(f"quixstreams: {exc}", load_start, args.results)
    parts["store"] = (peer.get("report") or {}).get("after_first_message")
    with tempfile.TemporaryDirectory(prefix="f2-peer-idle-") as tmp:
        workdir = Path(tmp)
        env = {**flow_env, "F2_TOPIC_RAW": empty, "BYTEWAX_DATAFLOW_API_PORT": str(free_port())}
        idle = startup_cpu(flow_command(workdir), env, workdir, flow["first_row_s"])
        net_cpu(flow, idle, expected)
        command = peer_command(python, empty, f"f2-bench-peer-{suffix}-idle", workdir)
        net_cpu(peer, startup_cpu(command, peer_env, workdir, peer["first_row_s"]), expected)
    result = {
        "benchmark": "peer",
        "messages": args.messages,
        "rows": expected[1],
        "load_average": load_start,
        "load_average_end": load(),
        "cpus": os.cpu_count(),
        "versions": {"flow": versions(), "quixstreams": installed_versions(python)},
        **summary(flow, peer),
        "flow": flow,
        "quixstreams": peer,
        "runs": runs,
        "quixstreams_cost_parts": parts,
        "targets": {
            "flow_over_quixstreams": TARGET_RATIO,
            "flow_cpu_per_row_net_over_quixstreams_at_most": TARGET_CPU_RATIO,
        },
        "note": (
            "rows/s and us_per_msg/us_per_row: from the first stored row to the last; "
            "*_net: CPU of the whole drain less the job's startup CPU on an empty topic; CPU = "
            "the job's process tree only (not Kafka, PostgreSQL, Redis); the flow also writes "
            "the decoded topic and the DLQ, the peer only stores"
        ),
    }
    _write(result, args.results)
    return 0


def _failed(error: str, load_start: list[float], path: Path) -> int:
    """Record and print the error (the stage reports it; no figures); exit status 1."""
    _write({"benchmark": "peer", "error": error[:2000], "load_average": load_start}, path)
    print(f"bench.peer: {error}", file=sys.stderr, flush=True)
    return 1


def _write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    sys.exit(main())
