"""The pipeline's health: dependency checks, the flows' progress, and a status summary.

:class:`HealthMonitor` is the state behind ``f2 health serve``: every ``F2_HEALTH_INTERVAL_S`` it
scrapes both flows' ``/metrics`` (``F2_INGEST_METRICS_URL``, ``F2_DECODE_METRICS_URL``), runs the
dependency checks (``ops.health.checks``) and keeps a short history for rates and for the
"stuck" rule: a flow whose input is waiting while its progress counters stand still for
``F2_HEALTH_STUCK_AFTER_S`` is ``degraded``; an idle flow with nothing waiting is ``ok``.

- ingest: progress = messages received + acknowledged; waiting = messages held unacknowledged
  (``f2_ingest_unacked``) or one of its own MQTT sessions disconnected
  (``f2_ingest_mqtt_connected``). Only the pipeline's own sessions count: the broker's global
  counters move with ``$SYS`` and other clients' state, and judged an idle pipeline stuck.
  A session the broker answered with a new, empty session although ingest had created it before
  (``f2_ingest_session_lost_time_seconds``) makes ingest ``degraded`` for
  :data:`SESSION_LOST_DEGRADED_S`: the messages queued in it are gone.
- decode: progress = raw messages decoded; waiting = consumer lag > 0 (``f2_kafka_consumer_lag``).

A flow held by a dependency that refuses every write (``f2_store_blocked``, ``f2_kafka_blocked``,
``f2_registry_blocked`` above 0: failure class ``blocked`` of ``connectors.failures``) is
``down``, with the dependency, code and message of ``f2_blocked_reason`` in the detail: nothing
moves until someone fixes the dependency's setup.

Without the server (``f2 health`` when nothing serves), :func:`one_shot` checks once and scrapes
the flows twice a couple of seconds apart: rates are over that gap and "stuck" is not judged.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import msgspec
from prometheus_client import Gauge

from ops.health import flow_metrics
from ops.health.broker_stats import BrokerStats
from ops.health.checks import DEGRADED, DEPENDENCY_CHECKS, DOWN, OK, Component, overall, timed
from ops.health.flow_metrics import Scrape
from schemas.settings import Config

FLOW_NAMES = ("ingest", "decode")
STATES = (OK, DEGRADED, DOWN)

COMPONENT_STATE = Gauge(
    "f2_health_component_state",
    "1 for the component's current state (ok, degraded, down), else 0",
    ["component", "state"],
)
COMPONENT_LATENCY = Gauge(
    "f2_health_check_latency_seconds", "Duration of the component's last check", ["component"]
)
PIPELINE_STATE = Gauge(
    "f2_health_status", "1 for the pipeline's current overall state, else 0", ["state"]
)


def progress(name: str, scrape: Scrape) -> float:
    """The flow's progress counter: it moves whenever the flow does work."""
    if name == "ingest":
        return scrape.total("f2_ingest_received_total") + scrape.total("f2_ingest_acked_total")
    return scrape.total("f2_decode_messages_total")


BLOCKED_GAUGES = {
    "f2_store_blocked": "timeseries database",
    "f2_kafka_blocked": "Kafka",
    "f2_registry_blocked": "registry database",
}


def blocked(scrape: Scrape) -> str:
    """Why the flow is held by a dependency that refuses every write ('' if it is not)."""
    held = [what for gauge, what in BLOCKED_GAUGES.items() if scrape.total(gauge) > 0]
    if not held:
        return ""
    reasons = sorted(
        f"{labels['dependency']} {labels['code']}: {labels['detail']}"
        for name, pairs, value in scrape.samples
        if name == "f2_blocked_reason" and value > 0
        for labels in (dict(pairs),)
    )
    why = "; ".join(reasons) if reasons else "no reason reported"
    verb = "refuses" if len(held) == 1 else "refuse"
    return f"blocked: the {' and the '.join(held)} {verb} every write ({why})"


SESSION_LOST_DEGRADED_S = 600.0


def waiting(name: str, scrape: Scrape) -> str:
    """Why input is waiting for the flow ('' if nothing is), from the flow's own metrics."""
    if name == "ingest":
        unacked = scrape.total("f2_ingest_unacked")
        if unacked > 0:
            return f"{unacked:.0f} messages unacknowledged"
        down = sorted(
            partition
            for partition, value in scrape.by_label("f2_ingest_mqtt_connected", "partition").items()
            if value == 0
        )
        return f"MQTT sessions {', '.join(down)} disconnected" if down else ""
    lag = scrape.total("f2_kafka_consumer_lag")
    return f"consumer lag {lag:.0f}" if lag > 0 else ""


def sessions_lost(scrape: Scrape) -> str:
    """Which of ingest's MQTT sessions the broker lost in the last
    :data:`SESSION_LOST_DEGRADED_S` ('' if none)."""
    lost = {
        partition: at
        for partition, at in scrape.by_label(
            "f2_ingest_session_lost_time_seconds", "partition"
        ).items()
        if at > 0 and scrape.at - at < SESSION_LOST_DEGRADED_S
    }
    if not lost:
        return ""
    when = time.strftime("%H:%M:%S", time.gmtime(max(lost.values())))
    return (
        f"MQTT sessions {', '.join(sorted(lost))} were lost (last at {when} UTC): the broker "
        "answered with new, empty sessions, so the messages queued in them are gone"
    )


class FlowWatch:
    """History of one flow's scrapes and the time its progress last moved."""

    def __init__(self, name: str, url: str, keep_s: float) -> None:
        self.name, self.url, self.keep_s = name, url, keep_s
        self.history: deque[Scrape] = deque()
        self.progress_at: float | None = None
        self.progress_value: float | None = None

    def add(self, scrape: Scrape) -> None:
        self.history.append(scrape)
        while self.history and self.history[0].at < scrape.at - self.keep_s:
            self.history.popleft()
        if not scrape.ok:
            return
        value = progress(self.name, scrape)
        if self.progress_value is None or value != self.progress_value:
            self.progress_value, self.progress_at = value, scrape.at

    def latest_ok(self) -> Scrape | None:
        return next((s for s in reversed(self.history) if s.ok), None)

    def component(self, stuck_after_s: float, latency_ms: float) -> Component:
        """The flow's state from its latest scrape and its progress history."""
        if not self.history:
            return Component(DOWN, latency_ms, "not scraped yet")
        last = self.history[-1]
        if not last.ok:
            return Component(DOWN, latency_ms, f"metrics endpoint not answering: {last.error}")
        held = blocked(last)
        if held:
            return Component(DOWN, latency_ms, held)
        lost = sessions_lost(last)
        if lost:
            return Component(DEGRADED, latency_ms, lost)
        why = waiting(self.name, last)
        still = last.at - (self.progress_at or last.at)
        counter = (
            "f2_ingest_received_total" if self.name == "ingest" else "f2_decode_messages_total"
        )
        detail = f"{last.total(counter):.0f} messages since start"
        if why and still >= stuck_after_s:
            return Component(DEGRADED, latency_ms, f"stuck: {why}, no progress for {still:.0f}s")
        if why:
            detail += f"; {why}"
        return Component(OK, latency_ms, detail)


class HealthMonitor:
    """Checks and flow scrapes refreshed in the background; reports ``/health``, ``/status``."""

    def __init__(self, config: Config, broker: BrokerStats | None = None) -> None:
        settings = config.health
        self.settings = settings
        self.config = config
        self.broker = broker
        keep = max(settings.window_s, settings.stuck_after_s) + 4 * settings.interval_s
        self.flows = {
            "ingest": FlowWatch("ingest", settings.ingest_metrics_url, keep),
            "decode": FlowWatch("decode", settings.decode_metrics_url, keep),
        }
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="f2-health")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Refresh every ``interval_s`` in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="f2-health-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.report()
            self._stop.wait(self.settings.interval_s)

    def scrape_flows(self) -> dict[str, float]:
        """Scrape both flows now (in parallel); their latencies in ms."""
        futures = {
            name: self._pool.submit(_timed_scrape, watch.url, self.settings.timeout_s)
            for name, watch in self.flows.items()
        }
        latencies = {}
        with self._lock:
            for name, future in futures.items():
                result, latencies[name] = future.result()
                self.flows[name].add(result)
        return latencies

    def report(self, only: str | None = None) -> dict[str, object]:
        """Run every check (or only ``only``) now; the ``/health`` document."""
        timeout = self.settings.timeout_s
        names = [only] if only else [*DEPENDENCY_CHECKS, *FLOW_NAMES]
        checks = {
            name: self._pool.submit(
                timed, lambda c=DEPENDENCY_CHECKS[name]: c(self.config, timeout)
            )
            for name in names
            if name in DEPENDENCY_CHECKS
        }
        components: dict[str, Component] = {}
        if any(name in FLOW_NAMES for name in names):
            latencies = self.scrape_flows()
            with self._lock:
                for name in FLOW_NAMES:
                    if name in names:
                        components[name] = self.flows[name].component(
                            self.settings.stuck_after_s, latencies[name]
                        )
        for name, future in checks.items():
            try:
                components[name] = future.result(timeout=timeout + 5)
            except TimeoutError:
                components[name] = Component(DOWN, (timeout + 5) * 1000, "check timed out")
        ordered = {name: components[name] for name in names}
        status = overall(ordered)
        _export(ordered, status if only is None else None)
        return {
            "status": status,
            "components": {name: msgspec.to_builtins(c) for name, c in ordered.items()},
        }

    def status(self, report: dict[str, object] | None = None) -> dict[str, object]:
        """The ``/status`` document: rates over the window, lag, DLQ, silent devices, broker."""
        with self._lock:
            windows = {
                name: _window(watch, self.settings.window_s) for name, watch in self.flows.items()
            }
        report = report or self.report()
        return summarize(report, windows, self.broker.values() if self.broker else None)


def _timed_scrape(url: str, timeout_s: float) -> tuple[Scrape, float]:
    started = time.perf_counter()
    result = flow_metrics.scrape(url, timeout_s)
    return result, round((time.perf_counter() - started) * 1000, 1)


def _window(watch: FlowWatch, window_s: float) -> tuple[Scrape, Scrape] | None:
    """The oldest scrape within the window and the latest one, both answered."""
    ok = [s for s in watch.history if s.ok]
    if len(ok) < 2:
        return None
    newest = ok[-1]
    oldest = next((s for s in ok if s.at >= newest.at - window_s), ok[0])
    return (oldest, newest) if oldest is not newest else (ok[-2], newest)


def _export(components: Mapping[str, Component], status: str | None) -> None:
    for name, component in components.items():
        for state in STATES:
            COMPONENT_STATE.labels(name, state).set(1.0 if component.status == state else 0.0)
        COMPONENT_LATENCY.labels(name).set(component.latency_ms / 1000)
    if status is not None:
        for state in STATES:
            PIPELINE_STATE.labels(state).set(1.0 if status == state else 0.0)


def summarize(
    report: Mapping[str, object],
    windows: Mapping[str, tuple[Scrape, Scrape] | None],
    broker: Mapping[str, float] | None,
) -> dict[str, object]:
    """Rates, lag, DLQ, latency and silent devices from each flow's (old, new) scrapes."""
    out: dict[str, object] = {"status": report["status"]}
    ingest, decode = windows.get("ingest"), windows.get("decode")
    rates: dict[str, object] = {}
    dlq: dict[str, float] = {}
    if ingest:
        old, new = ingest
        rates["ingest_received_per_s"] = flow_metrics.rate(old, new, "f2_ingest_received_total")
        rates["ingest_acked_per_s"] = flow_metrics.rate(old, new, "f2_ingest_acked_total")
        for reason, value in flow_metrics.rates_by(
            old, new, "f2_ingest_dead_lettered_total", "reason"
        ).items():
            dlq[reason] = dlq.get(reason, 0.0) + value
    if decode:
        old, new = decode
        rates["decode_messages_per_s"] = flow_metrics.rate(old, new, "f2_decode_messages_total")
        rates["readings_per_s"] = flow_metrics.rate(old, new, "f2_decode_readings_total")
        rates["events_per_s"] = flow_metrics.rate(old, new, "f2_decode_events_total")
        rates["rows_inserted_per_s"] = flow_metrics.rate(
            old, new, "f2_store_rows_total", outcome="inserted"
        )
        for reason, value in flow_metrics.rates_by(
            old, new, "f2_decode_errors_total", "reason"
        ).items():
            dlq[reason] = dlq.get(reason, 0.0) + value
        out["lag"] = _lag(new)
        out["latency_s"] = {
            since: {
                "p50": flow_metrics.quantile(old, new, 0.5, "f2_e2e_latency_seconds", since=since),
                "p99": flow_metrics.quantile(old, new, 0.99, "f2_e2e_latency_seconds", since=since),
            }
            for since in ("device", "receive")
        }
        out["devices"] = _devices(new)
        out["window_s"] = round(new.at - old.at, 1)
    out["rates"] = {k: round(v, 2) if isinstance(v, float) else v for k, v in rates.items()}
    out["dlq"] = {
        "per_s": round(sum(dlq.values()), 2),
        "by_reason": {k: round(v, 2) for k, v in sorted(dlq.items()) if v > 0},
    }
    if broker is not None:
        out["broker"] = {k.removeprefix("f2_mqtt_broker_"): v for k, v in broker.items()}
    return out


def _lag(scrape: Scrape) -> dict[str, object]:
    partitions = {
        f"{dict(labels)['topic']}/{dict(labels)['partition']}": value
        for name, labels, value in scrape.samples
        if name == "f2_kafka_consumer_lag"
    }
    return {"total": sum(partitions.values()), "partitions": dict(sorted(partitions.items()))}


def _devices(scrape: Scrape) -> dict[str, object]:
    stalest = sorted(
        (
            (value, dict(labels)["mac"])
            for name, labels, value in scrape.samples
            if name == "f2_controller_last_seen_age_seconds"
        ),
        reverse=True,
    )[:5]
    return {
        "silent_after_s": scrape.total("f2_freshness_silent_after_seconds"),
        "controllers_tracked": scrape.total("f2_controllers_tracked"),
        "controllers_silent": scrape.total("f2_controllers_silent"),
        "sensors_tracked": scrape.total("f2_sensors_tracked"),
        "sensors_silent_live_controller": scrape.total("f2_sensors_silent", controller="live"),
        "sensors_silent": scrape.total("f2_sensors_silent"),
        "stalest_controllers": [{"mac": mac, "age_s": round(age, 1)} for age, mac in stalest],
    }


def one_shot(config: Config, gap_s: float = 2.0) -> tuple[dict, dict]:
    """``(/health, /status)`` computed in this process: one check, two scrapes ``gap_s`` apart."""
    monitor = HealthMonitor(config)
    monitor.scrape_flows()
    time.sleep(gap_s)
    report = monitor.report()
    return report, monitor.status(report)
