"""``f2 health serve``: the health API over HTTP (stdlib ``ThreadingHTTPServer``).

Routes (JSON unless noted):

- ``GET /health``: ``{"status", "components": {name: {"status", "latency_ms", "detail"}}}``;
  HTTP 200 for ``ok``/``degraded``, 503 for ``down``. Checks run when asked (at most once a second:
  concurrent requests share a report).
- ``GET /health/<component>``: that component alone (``{"status", "component", ...}``), 503 when
  it is down, 404 for an unknown name.
- ``GET /status``: rates, consumer lag, DLQ rate by reason, end-to-end latency, silent devices and
  the broker's counters (``ops.health.rules.summarize``). Always 200.
- ``GET /metrics``: this process's Prometheus metrics (text format; always 200: liveness probes
  use it): ``f2_health_*`` and Mosquitto's ``$SYS`` counters (``f2_mqtt_broker_*``). The flows'
  metrics are scraped from the flows themselves, not re-exported here.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ops.health.broker_stats import BrokerStats
from ops.health.checks import DEPENDENCY_CHECKS, DOWN
from ops.health.rules import FLOW_NAMES, HealthMonitor
from schemas.settings import Config

log = logging.getLogger("f2.health")
COMPONENTS = (*DEPENDENCY_CHECKS, *FLOW_NAMES)
REPORT_TTL_S = 1.0


class _Reports:
    """The latest full report, shared by requests arriving within :data:`REPORT_TTL_S`."""

    def __init__(self, monitor: HealthMonitor) -> None:
        self.monitor = monitor
        self._lock = threading.Lock()
        self._report: dict[str, object] | None = None
        self._at = 0.0

    def get(self) -> dict[str, object]:
        with self._lock:
            if self._report is None or time.monotonic() - self._at > REPORT_TTL_S:
                self._report = self.monitor.report()
                self._at = time.monotonic()
            return self._report


def make_handler(reports: _Reports) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``reports``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "f2-health"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/health":
                report = reports.get()
                self._json(_code(report["status"]), report)
            elif path.startswith("/health/"):
                self._component(path.removeprefix("/health/"))
            elif path == "/status":
                self._json(HTTPStatus.OK, reports.monitor.status(reports.get()))
            elif path == "/":
                self._json(
                    HTTPStatus.OK,
                    {
                        "endpoints": ["/health", "/health/{component}", "/status", "/metrics"],
                        "components": list(COMPONENTS),
                    },
                )
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no route {path}"})

        def _component(self, name: str) -> None:
            if name not in COMPONENTS:
                self._json(
                    HTTPStatus.NOT_FOUND,
                    {"error": f"unknown component {name!r}", "components": list(COMPONENTS)},
                )
                return
            component = reports.monitor.report(only=name)["components"][name]
            self._json(_code(component["status"]), {"component": name, **component})

        def _json(self, code: int, body: object) -> None:
            self._send(code, json.dumps(body, indent=1).encode() + b"\n", "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # no access log: probes hit it every few seconds

    return Handler


def _code(status: object) -> int:
    return HTTPStatus.SERVICE_UNAVAILABLE if status == DOWN else HTTPStatus.OK


def serve(config: Config) -> int:
    """Serve until SIGTERM/SIGINT; the ``$SYS`` subscriber and the monitor run meanwhile."""
    settings = config.health
    broker = BrokerStats(config.connections)
    REGISTRY.register(broker)
    broker.start()
    monitor = HealthMonitor(config, broker)
    monitor.start()
    server = ThreadingHTTPServer((settings.host, settings.port), make_handler(_Reports(monitor)))
    server.daemon_threads = True

    def shutdown(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, shutdown)
    log.info(
        "health API serving",
        extra={"stage": "health", "address": f"{settings.host}:{settings.port}"},
    )
    print(f"health ready: http://{settings.host}:{settings.port}/health", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        monitor.stop()
        broker.stop()
        server.server_close()
    return 0
