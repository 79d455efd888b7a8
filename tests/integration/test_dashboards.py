"""Dashboards and alert rules against the live pipeline: both flows run briefly on the shared
stack (their own topics, MQTT session names, metrics ports and recovery directory, so nothing
of the shared flows is touched), the seed fleet publishes for a few seconds, and every metric
named by a Grafana panel or an alert/recording rule must be offered by a live ``/metrics``
(ingest, decode, the health API). The SQL panels must plan against the timeseries database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ops.stack.procs import port_open, wait_until
from schemas.settings import (
    READER_DB_ROLE,
    TIMESERIES_DB,
    Settings,
    local_dsn,
    read_stack_info,
)
from tests.integration.obs_support import (
    BUILTIN_SERIES,
    ROOT,
    SEED_MACS,
    create_topics,
    dashboard_queries,
    exposed_names,
    get_json,
    get_text,
    grafana_sql,
    metric,
    promql_names,
    rule_queries,
    start_flow,
    start_health,
)
from tests.stacks import IsolatedStack

pytestmark = pytest.mark.integration

INGEST_API, DECODE_API, HEALTH_API = 3031, 3032, 8000  # ports at offset 0: stack.port(...)
TOPICS = {"F2_TOPIC_RAW": "obs_raw", "F2_TOPIC_DECODED": "obs_decoded", "F2_TOPIC_DLQ": "obs_dlq"}


@pytest.fixture(scope="module")
def live(
    stack: Settings, session_stack: IsolatedStack, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Both flows, the health API and a short simulator run; ``{process: /metrics text}``."""
    ingest_port, decode_port = session_stack.port(INGEST_API), session_stack.port(DECODE_API)
    health_port = session_stack.port(HEALTH_API)
    workdir = tmp_path_factory.mktemp("obs")
    create_topics(stack, list(TOPICS.values()))
    filters = ",".join(f"{kind}/f2-{mac}/#" for mac in SEED_MACS for kind in ("stat", "tele"))
    env = {
        **os.environ,
        **TOPICS,
        "F2_INGEST_TOPICS": filters,
        "F2_INGEST_PARTITIONS": "1",
        "F2_INGEST_SHARE_GROUP": "f2-obs-test",
        "F2_INGEST_CLIENT_PREFIX": f"f2-obs-test-{os.getpid()}",
        "F2_INGEST_SESSION_EXPIRY_S": "60",
        "F2_SILENT_AFTER_S": "2",
        "F2_INGEST_METRICS_URL": f"http://127.0.0.1:{ingest_port}/metrics",
        "F2_DECODE_METRICS_URL": f"http://127.0.0.1:{decode_port}/metrics",
        "F2_HEALTH_INTERVAL_S": "1",
    }
    procs = [
        start_flow("dataflows.ingest", env, workdir, ingest_port),
        start_flow("dataflows.decode", env, workdir, decode_port),
    ]
    try:
        procs.append(start_health(env, workdir, health_port))
        ingest_log = procs[0].log
        assert wait_until(lambda: "subscribed" in ingest_log.read_text(errors="replace"), 60)
        assert wait_until(lambda: port_open(decode_port), 60), procs[1].log.read_text()[-3000:]
        sim = [sys.executable, "-m", "simulator", "--rate", "60", "--duration", "4"]
        sim += ["--faults", "0.2", "--register", "--seed", "8"]
        subprocess.run(sim, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=True, timeout=60)
        decode_url = f"http://127.0.0.1:{decode_port}/metrics"
        assert wait_until(
            lambda: (
                metric(get_text(decode_url), "f2_store_rows_total", outcome="inserted")
                + metric(get_text(decode_url), "f2_store_rows_total", outcome="duplicate")
                > 0
            ),
            60,
        ), procs[1].log.read_text()[-3000:]
        time.sleep(3)  # silence threshold passes for sensors that did not report
        yield {
            "ingest": get_text(f"http://127.0.0.1:{ingest_port}/metrics"),
            "decode": get_text(decode_url),
            "health": get_text(f"http://127.0.0.1:{health_port}/metrics"),
        }
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_new_metrics_are_live(live: dict[str, str]):
    decode, health = live["decode"], live["health"]
    assert metric(decode, "f2_kafka_consumer_high_watermark", topic="obs_raw") > 0
    assert "f2_kafka_consumer_lag{" in decode
    assert metric(decode, "f2_controllers_tracked") >= 1
    assert metric(decode, "f2_sensors_tracked") >= metric(decode, "f2_controllers_tracked")
    assert "f2_controller_silence_seconds_bucket{" in decode
    assert metric(health, "f2_mqtt_broker_sys_connected") == 1
    assert metric(health, "f2_mqtt_broker_clients_connected") >= 1
    assert "f2_health_component_state{" in health


def test_health_api_reports_every_component(session_stack: IsolatedStack):
    health = f"http://127.0.0.1:{session_stack.port(HEALTH_API)}"
    code, report = get_json(f"{health}/health")
    assert set(report["components"]) == {
        "mqtt", "kafka", "params_db", "timeseries_db", "redis", "ingest", "decode"
    }  # fmt: skip
    assert report["status"] == "ok", report
    assert code == 200
    assert "backend" in report["components"]["timeseries_db"]["detail"]
    code, one = get_json(f"{health}/health/decode")
    assert code == 200 and one["status"] == "ok"
    assert get_json(f"{health}/health/nope")[0] == 404
    _, status = get_json(f"{health}/status")
    assert {"rates", "dlq", "lag", "devices", "broker"} <= set(status)


def test_every_dashboard_and_rule_metric_exists(live: dict[str, str]):
    available = set(BUILTIN_SERIES)
    for text in live.values():
        available |= exposed_names(text)
    exprs, recorded = rule_queries(ROOT / "deploy" / "prometheus" / "rules")
    available |= recorded
    missing = []
    for name, expr in exprs:
        missing += [f"rule {name}: {m}" for m in sorted(promql_names(expr) - available)]
    boards = dashboard_queries(ROOT / "deploy" / "grafana" / "dashboards")
    assert len(boards) >= 6
    for board, queries in boards.items():
        for kind, query in queries:
            if kind == "promql":
                missing += [f"{board}: {m}" for m in sorted(promql_names(query) - available)]
    assert not missing, "queries name metrics no process exposes:\n" + "\n".join(missing)


def test_sql_panels_plan_against_the_timeseries_database(stack: Settings):
    boards = dashboard_queries(ROOT / "deploy" / "grafana" / "dashboards")
    panels = [
        (board, q) for board, queries in boards.items() for kind, q in queries if kind == "sql"
    ]
    assert panels, "the fleet dashboard has SQL panels"
    failures = []
    info = read_stack_info(Path(stack.stack_dir))  # as Grafana logs in: the read-only role
    reader = local_dsn(info, TIMESERIES_DB, READER_DB_ROLE, info.db_reader_password)
    with psycopg.connect(reader, autocommit=True) as conn:
        for board, query in panels:
            try:
                # Dashboard SQL is the project's own file content, composed, not user input.
                conn.execute(sql.SQL("EXPLAIN {}").format(sql.SQL(grafana_sql(query))))
            except psycopg.Error as exc:
                failures.append(f"{board}: {str(exc).splitlines()[0]}\n  {query[:200]}")
    assert not failures, "\n".join(failures)
