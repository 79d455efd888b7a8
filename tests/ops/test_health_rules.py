"""The health report's flow rules on synthetic scrapes: blocked dependencies, lost sessions, and
"waiting" judged only from the pipeline's own sessions."""

from __future__ import annotations

import time

from ops.health.checks import DEGRADED, DOWN, OK
from ops.health.flow_metrics import Scrape
from ops.health.rules import FlowWatch, sessions_lost, waiting


def scrape(at: float, **samples: float) -> Scrape:
    rows = []
    for key, value in samples.items():
        name, _, partition = key.partition("__")
        labels = (("partition", partition),) if partition else ()
        rows.append((name, labels, value))
    return Scrape(at, True, "", rows)


def test_an_idle_ingest_with_its_sessions_connected_waits_for_nothing() -> None:
    idle = scrape(
        1000.0,
        f2_ingest_unacked__s0=0,
        f2_ingest_mqtt_connected__s0=1,
        f2_ingest_mqtt_connected__s1=1,
        f2_ingest_received_total__s0=5,
    )
    assert waiting("ingest", idle) == ""
    watch = FlowWatch("ingest", "x", 300)
    for at in range(0, 200, 10):  # idle for 200 s: progress never moves, and that is fine
        watch.add(scrape(1000.0 + at, **{"f2_ingest_mqtt_connected__s0": 1}))
    assert watch.component(60, 1.0).status == OK


def test_a_disconnected_session_or_held_messages_are_waiting_and_then_stuck() -> None:
    down = scrape(1000.0, f2_ingest_mqtt_connected__s0=1, f2_ingest_mqtt_connected__s1=0)
    assert waiting("ingest", down) == "MQTT sessions s1 disconnected"
    held = scrape(1000.0, f2_ingest_unacked__s0=7)
    assert waiting("ingest", held) == "7 messages unacknowledged"
    watch = FlowWatch("ingest", "x", 300)
    for at in (0, 30, 61):
        watch.add(scrape(1000.0 + at, f2_ingest_unacked__s0=7, f2_ingest_received_total__s0=3))
    component = watch.component(60, 1.0)
    assert component.status == DEGRADED and "stuck: 7 messages unacknowledged" in component.detail


def test_a_lost_session_degrades_ingest_for_ten_minutes() -> None:
    now = time.time()
    recent = scrape(now, f2_ingest_session_lost_time_seconds__s2=now - 30)
    assert "s2" in sessions_lost(recent) and "gone" in sessions_lost(recent)
    watch = FlowWatch("ingest", "x", 300)
    watch.add(recent)
    assert watch.component(60, 1.0).status == DEGRADED
    old = scrape(now, f2_ingest_session_lost_time_seconds__s2=now - 601)
    assert sessions_lost(old) == ""
    never = scrape(now, f2_ingest_session_lost_time_seconds__s2=0)
    assert sessions_lost(never) == ""


def test_a_blocked_dependency_makes_the_flow_down_with_its_reason() -> None:
    rows = [
        ("f2_store_blocked", (), 1.0),
        (
            "f2_blocked_reason",
            (("code", "42501"), ("dependency", "store"), ("detail", "permission denied")),
            1.0,
        ),
    ]
    watch = FlowWatch("decode", "x", 300)
    watch.add(Scrape(1000.0, True, "", rows))
    component = watch.component(60, 1.0)
    assert component.status == DOWN
    assert "timeseries database refuses every write" in component.detail
    assert "store 42501: permission denied" in component.detail
