"""``python -m bench`` (``make benchmarks``): every stage benchmark and the end-to-end ramp in one
run, on an isolated stack, into one report.

Order: decode core (pure CPU), the floor under the CPU target (:mod:`bench.floor`), storage
writer, decode flow vs COPY ceiling vs naive, ingest flow vs bare subscriber (1 and 2 processes),
simulator vs Mosquitto ceiling (its own private broker), the flows' memory under a flood during a
Kafka outage (:mod:`bench.memory`), then :mod:`bench.e2e` (ramps and decode scaling). Each stage
benchmark runs as a subprocess and its JSON
is read from its output; one that fails is reported as failed and the rest still run.

The isolated stack (``--stack-dir``, default ``/tmp/bench-stack``; ports shifted by
``--port-offset``, default 1000) is brought up with ``f2 stack up`` and purged at the end unless
``--keep-stack``. Results: ``bench/results/<stamp>.json``, ``latest.json``, ``latest.md`` and the
plots (see :mod:`bench.report`). Exit status 1 if a benchmark failed (targets not met do not
change it: they are findings, marked in the report).

``--quick``: small sizes, two rates, no simulator ceiling rounds beyond one short one (under 3
minutes, for CI smoke use). The full run takes about 12-18 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import e2e
from bench.common import (
    BENCH_STACK,
    RESULTS_DIR,
    f2,
    interruptible_children,
    machine_info,
    run_stage,
    use_isolated_stack,
    versions,
)
from bench.report import build_results, write_report

# name → (module, full-run arguments, quick arguments, timeout in seconds)
STAGES: dict[str, tuple[str, list[str], list[str], float]] = {
    "decode": ("bench.decode", ["--messages", "50000"], ["--messages", "5000"], 300),
    # the library calls every message needs, each alone: the floor under the CPU target
    "floor": ("bench.floor", ["--messages", "30000"], ["--messages", "3000"], 300),
    "store": ("bench.store", ["--rows", "100000"], ["--rows", "10000"], 300),
    "decode_flow": (
        "bench.decode_flow",
        ["--messages", "60000", "--naive-messages", "3000"],
        ["--messages", "15000", "--naive-messages", "600"],
        600,
    ),
    # the decode flow against the same job in Quix Streams (its own virtualenv, made on first use)
    "peer": ("bench.peer", ["--repeat", "2"], ["--messages", "15000", "--repeat", "1"], 900),
    "ingest": ("bench.ingest", ["--messages", "40000"], ["--messages", "10000"], 600),
    "simulator": (
        "bench.simulator",
        ["--seconds", "6", "--rounds", "2"],
        ["--seconds", "2", "--rounds", "1", "--lines", "60000"],
        600,
    ),
    "memory": ("bench.memory", [], ["--big", "1536", "--topics", "2000"], 900),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: small sizes, two rates")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {', '.join([*STAGES, 'e2e'])}"
    )
    parser.add_argument("--stack-dir", default=BENCH_STACK["F2_STACK_DIR"])
    parser.add_argument("--port-offset", default=BENCH_STACK["F2_STACK_PORT_OFFSET"])
    parser.add_argument("--keep-stack", action="store_true", help="leave the isolated stack up")
    args = parser.parse_args(argv)
    interruptible_children()
    wanted = [n for n in args.only.split(",") if n] or [*STAGES, "e2e"]
    use_isolated_stack(args.stack_dir, args.port_offset)
    started, stamp = time.monotonic(), datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    meta: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
    }
    workdir = Path(tempfile.mkdtemp(prefix="f2-bench-"))
    parts: dict[str, Any] = {}
    try:
        f2("stack", "up")
        for name in wanted:
            say(f"{name} ...")
            began = time.monotonic()
            try:
                if name == "e2e":
                    parts[name] = e2e.run(args.quick, workdir)
                else:
                    module, full, quick, timeout = STAGES[name]
                    stage_args = quick if args.quick else full
                    if name == "simulator":  # its own private broker, on free ports
                        stage_args = [*stage_args, "--port-offset", str(free_port_offset())]
                    log = workdir / f"{name}.log"
                    parts[name] = run_stage(module, stage_args, timeout, log)
            except Exception as exc:  # a failed benchmark is a finding; the others still run
                parts[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            say(f"{name}: {time.monotonic() - began:.0f} s" + _failed(parts[name]))
    finally:
        if not args.keep_stack:
            f2("stack", "down", "--purge")
    meta["runtime_s"] = round(time.monotonic() - started)
    meta["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results = build_results(parts, meta)
    for path in write_report(results, RESULTS_DIR, stamp):
        say(f"wrote {path}")
    for key, target in results["targets"].items():
        say(f"{key}: {target['value']} (target {target['target']}) {_met(target['met'])}")
    say(f"done in {meta['runtime_s']} s (log files in {workdir})")
    return 1 if results["errors"] else 0


def free_port_offset() -> int:
    """A stack port offset (from 1600 up, in hundreds) whose MQTT ports nobody listens on."""
    from ops.stack.procs import port_open
    from schemas.settings import DEFAULT_PORTS

    for offset in range(1600, 5000, 100):
        if not any(port_open(DEFAULT_PORTS["mosquitto"] + offset + n) for n in range(3)):
            return offset
    raise RuntimeError("no free port offset for the simulator benchmark's broker")


def say(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def _failed(part: dict[str, Any]) -> str:
    return f" FAILED: {part['error'][:300]}" if "error" in part else ""


def _met(met: bool) -> str:
    return "met" if met else "NOT MET"


if __name__ == "__main__":
    sys.exit(main())
