"""``f2 health``: the pipeline's health for humans; ``f2 health serve``: the health API.

- ``f2 health [--json]``: asks the running health API (``F2_HEALTH_PORT``) for ``/health`` and
  ``/status``; when none answers, checks once from this process (rates over a 2 s gap, no "stuck"
  judgement). Exit 0 ok, 1 degraded, 2 down.
- ``f2 health status [--json]``: the ``/status`` summary only (rates, lag, DLQ, silent devices).
- ``f2 health serve [--host H] [--port P]``: serve the API (``ops.health.server``).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

import msgspec

from ops.health.checks import DEGRADED, DOWN
from ops.health.rules import one_shot
from schemas.settings import Config

EXIT = {"ok": 0, DEGRADED: 1, DOWN: 2}


def register(subparsers: argparse._SubParsersAction) -> None:
    health = subparsers.add_parser("health", help="pipeline health (components, rates, devices)")
    health.add_argument("--json", action="store_true", help="print the JSON documents")
    health.set_defaults(func=cmd_health)
    actions = health.add_subparsers(dest="action")
    status = actions.add_parser("status", help="rates, lag, DLQ rate, silent devices")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    serve = actions.add_parser("serve", help="serve the health API (default 127.0.0.1:8000)")
    serve.add_argument("--host", help="bind address (F2_HEALTH_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (F2_HEALTH_PORT, default 8000 + offset)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from connectors.logs import configure_logging
    from ops.health.server import serve

    configure_logging(config.connections.log_level)
    health = config.health
    health = msgspec.structs.replace(
        health, host=args.host or health.host, port=args.port or health.port
    )
    return serve(msgspec.structs.replace(config, health=health))


def fetch(config: Config) -> tuple[dict, dict, str]:
    """``(/health, /status, source)`` from the running API, else computed here."""
    base = f"http://127.0.0.1:{config.health.port}"
    try:
        return _get(f"{base}/health"), _get(f"{base}/status"), base
    except OSError:
        report, status = one_shot(config)
        return report, status, "this process (no health API answering on " + base + ")"


def _get(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:  # 503 still carries the report
        return json.load(exc)


def cmd_health(args: argparse.Namespace, config: Config) -> int:
    report, status, source = fetch(config)
    if args.json:
        print(json.dumps({"health": report, "status": status}, indent=1))
    else:
        print(f"pipeline: {report['status'].upper()}    (from {source})")
        for name, comp in report["components"].items():
            print(
                f"  {name:<14} {comp['status']:<9} {comp['latency_ms']:>8.1f} ms  {comp['detail']}"
            )
        print()
        print_status(status)
    return EXIT.get(report["status"], 2)


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    _report, status, _source = fetch(config)
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        print(f"pipeline: {status['status'].upper()}    (details: f2 health)")
        print_status(status)
    return 0


def print_status(status: dict) -> None:
    """The ``/status`` document as a few readable lines."""
    window = status.get("window_s")
    print(f"rates (per second{f', last {window:.0f}s' if window else ''}):")
    for name, value in status.get("rates", {}).items():
        print(f"  {name.removesuffix('_per_s'):<20} {value:>12,.1f}")
    if not status.get("rates"):
        print("  (no flow answered twice: none; are the flows running? f2 stack up --flows)")
    dlq = status.get("dlq", {})
    reasons = ", ".join(f"{k} {v:.1f}/s" for k, v in dlq.get("by_reason", {}).items()) or "none"
    print(f"dead letters: {dlq.get('per_s', 0):.1f}/s ({reasons})")
    lag = status.get("lag")
    if lag:
        parts = " ".join(f"{k}={v:.0f}" for k, v in lag["partitions"].items()) or "unknown yet"
        print(f"consumer lag: {lag['total']:.0f} ({parts})")
    for since, q in status.get("latency_s", {}).items():
        p50, p99 = (f"{v:.2f}s" if v is not None else "-" for v in (q["p50"], q["p99"]))
        print(f"end-to-end latency since {since}: p50 {p50}  p99 {p99}")
    devices = status.get("devices")
    if devices:
        print(
            f"controllers: {devices['controllers_tracked']:.0f} tracked, "
            f"{devices['controllers_silent']:.0f} silent (> {devices['silent_after_s']:.0f}s); "
            f"sensors: {devices['sensors_tracked']:.0f} tracked, {devices['sensors_silent']:.0f} "
            f"silent ({devices['sensors_silent_live_controller']:.0f} behind a live controller)"
        )
        stalest = ", ".join(f"{d['mac']} {d['age_s']:.0f}s" for d in devices["stalest_controllers"])
        if stalest:
            print(f"stalest controllers: {stalest}")
    broker = status.get("broker")
    if broker:
        print(
            f"broker: {broker['clients_connected']:.0f} clients, {broker['messages_stored']:.0f} "
            f"messages stored, {broker['messages_dropped']:.0f} dropped since start"
        )
