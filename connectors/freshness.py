"""Device freshness: seconds since each controller and sensor was last seen, bounded labels.

Delivery guarantee: none (metrics only; an ``op.inspect`` step of the decode flow that reads the
decode step's outputs and never changes them). "Seen" is processing time in this process:

- a controller is seen when a message from it is decoded (a reading, an event, or a dead letter
  keyed by its MAC: a controller that sends garbage is still alive);
- a sensor is seen when a reading of it is decoded. Every sensor of a registered controller is
  tracked from the moment the controller's registry entry is loaded, so a sensor that never sends
  (dead behind a live controller) becomes silent after the threshold too.

Only registered controllers are tracked (their entry was loaded), so unknown MACs cannot grow the
state. State is per process and starts empty: after a restart a controller is tracked again once
it sends; with several decode processes each one tracks the controllers of its partitions (sum the
gauges across processes).

Cardinality stays bounded for any fleet size: per-device labels only for the ``F2_FRESHNESS_TOP_N``
stalest controllers and sensors; the rest is counts and gauge histograms (devices by age bucket).
Silent = not seen for ``F2_SILENT_AFTER_S`` seconds. Values are computed when /metrics is scraped.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from connectors.decode_step import DecodeOutput
from schemas.records import ControllerEntry
from schemas.settings import FreshnessSettings

AGE_BUCKETS = (60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 24 * 3600.0, 7 * 24 * 3600.0)


class FreshnessTracker(Collector):
    """Last-seen times of controllers and sensors; a Prometheus collector of their ages."""

    def __init__(self, settings: FreshnessSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._controllers: dict[str, float] = {}
        self._sensors: dict[int, float] = {}
        self._where: dict[int, tuple[str, str, str]] = {}  # sensor id -> (mac, connector, pin)
        self._sensors_of: dict[str, set[int]] = {}

    def inspect(self, _step_id: str, output: DecodeOutput) -> None:
        """``op.inspect`` callback: mark what ``output`` shows as seen now."""
        now = self._clock()
        macs = {record.key for record in output.decoded}
        macs.update(record.key for record in output.dlq)
        sensors = {row.sensor_id for row in output.rows.readings}
        with self._lock:
            for entry in output.rows.entries:
                self._register(entry, now)
            controllers = self._controllers
            for key in macs:
                if key is not None:
                    mac = key.decode()
                    if mac in self._sensors_of:
                        controllers[mac] = now
            tracked = self._sensors
            for sensor_id in sensors:
                if sensor_id in tracked:
                    tracked[sensor_id] = now

    def _register(self, entry: ControllerEntry, now: float) -> None:
        """Track the controller and sensors of ``entry``; forget sensors it no longer has."""
        self._controllers.setdefault(entry.mac, now)
        current = set()
        for key, sensor in entry.sensors.items():
            connector, _, pin = key.partition(":")
            current.add(sensor.sensor_id)
            self._sensors.setdefault(sensor.sensor_id, now)
            self._where[sensor.sensor_id] = (entry.mac, f"J{connector}", pin)
        for gone in self._sensors_of.get(entry.mac, set()) - current:
            self._sensors.pop(gone, None)
            self._where.pop(gone, None)
        self._sensors_of[entry.mac] = current

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        limit = self._settings.silent_after_s
        with self._lock:
            controllers = {mac: now - seen for mac, seen in self._controllers.items()}
            sensors = {sid: now - seen for sid, seen in self._sensors.items()}
            where = dict(self._where)
        yield _gauge(
            "f2_freshness_silent_after_seconds", "Silence threshold (F2_SILENT_AFTER_S)", limit
        )
        yield _gauge("f2_controllers_tracked", "Registered controllers tracked", len(controllers))
        yield _gauge(
            "f2_controllers_silent",
            "Tracked controllers not seen for F2_SILENT_AFTER_S seconds",
            sum(age > limit for age in controllers.values()),
        )
        yield _age_histogram(
            "f2_controller_silence_seconds",
            "Tracked controllers by seconds since last seen",
            controllers.values(),
        )
        stalest = GaugeMetricFamily(
            "f2_controller_last_seen_age_seconds",
            "Seconds since last seen, for the F2_FRESHNESS_TOP_N stalest controllers",
            labels=["mac"],
        )
        for mac, age in _top(controllers, self._settings.top_n):
            stalest.add_metric([mac], age)
        yield stalest
        yield _gauge("f2_sensors_tracked", "Sensors of tracked controllers", len(sensors))
        silent = GaugeMetricFamily(
            "f2_sensors_silent",
            "Sensors not seen for F2_SILENT_AFTER_S seconds, by whether their controller is silent "
            "(controller=live: a dead sensor behind a live controller)",
            labels=["controller"],
        )
        counts = {"live": 0, "silent": 0}
        for sid, age in sensors.items():
            if age > limit:
                mac = where[sid][0] if sid in where else ""
                counts["silent" if controllers.get(mac, 0.0) > limit else "live"] += 1
        for state, count in counts.items():
            silent.add_metric([state], count)
        yield silent
        yield _age_histogram(
            "f2_sensor_silence_seconds", "Sensors by seconds since last seen", sensors.values()
        )
        stalest_sensors = GaugeMetricFamily(
            "f2_sensor_last_seen_age_seconds",
            "Seconds since last seen, for the F2_FRESHNESS_TOP_N stalest sensors",
            labels=["mac", "connector", "pin"],
        )
        for sid, age in _top(sensors, self._settings.top_n):
            stalest_sensors.add_metric(list(where.get(sid, ("", "", str(sid)))), age)
        yield stalest_sensors


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _top(ages: Mapping, n: int) -> list[tuple]:
    return heapq.nlargest(n, ages.items(), key=lambda item: item[1])


def _age_histogram(name: str, documentation: str, ages: Iterable[float]) -> Metric:
    counts = [0] * (len(AGE_BUCKETS) + 1)
    total = 0.0
    for age in ages:
        total += age
        for index, bound in enumerate(AGE_BUCKETS):
            if age <= bound:
                counts[index] += 1
                break
        else:
            counts[-1] += 1
    buckets, running = [], 0
    for bound, count in zip((*map(str, AGE_BUCKETS), "+Inf"), counts, strict=True):
        running += count
        buckets.append((bound, running))
    return GaugeHistogramMetricFamily(name, documentation, buckets=buckets, gsum_value=total)


_tracker: FreshnessTracker | None = None
_tracker_lock = threading.Lock()


def process_tracker(settings: FreshnessSettings) -> FreshnessTracker:
    """This process's tracker, registered with the default Prometheus registry on first use
    (a later call's ``settings`` are ignored: one tracker per process)."""
    global _tracker
    with _tracker_lock:
        if _tracker is None:
            _tracker = FreshnessTracker(settings)
            REGISTRY.register(_tracker)
        return _tracker
