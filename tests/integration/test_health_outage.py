"""The health API through outages, on an isolated stack (a temporary directory, free ports) with
its flows and health API supervised by ``f2 stack up --flows``: stopping Redis makes the pipeline
``degraded`` (HTTP 200), stopping PostgreSQL (the timeseries database) makes it ``down`` (503),
and both recover by themselves once the service is back; an idle pipeline stays ``ok`` after
such restarts; a session of ingest deleted at the broker is an alarm (counter, error log, ingest
``degraded``)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ops.stack.procs import wait_until
from schemas.settings import load_settings
from tests.integration.obs_support import ROOT, get_json, get_text
from tests.stacks import IsolatedStack, isolated_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INGEST_API, DECODE_API, HEALTH_API = 3031, 3032, 8000  # ports at offset 0: stack.port(...)


def stack_env(stack: IsolatedStack) -> dict[str, str]:
    """The environment of the programs on the isolated stack (flows on its own ports)."""
    return stack.environ(
        F2_INGEST_METRICS_PORT=str(stack.port(INGEST_API)),
        F2_DECODE_METRICS_PORT=str(stack.port(DECODE_API)),
        F2_HEALTH_INTERVAL_S="1",
        F2_HEALTH_STUCK_AFTER_S="15",
        F2_REGISTRY_REDIS_BACKOFF_S="1",
    )


def f2(stack: IsolatedStack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The ``f2`` CLI on the isolated stack."""
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env=stack_env(stack), cwd=ROOT, capture_output=True, text=True, timeout=300, check=check,
    )  # fmt: skip


@pytest.fixture(scope="module")
def isolated() -> Iterator[IsolatedStack]:
    """The isolated stack (``tests.stacks``) up with its flows and health API; stopped and
    deleted after the module, however it ends."""
    with isolated_stack() as stack:
        result = f2(stack, "stack", "up", "--flows", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        yield stack


def health_url(stack: IsolatedStack) -> str:
    return f"http://127.0.0.1:{stack.port(HEALTH_API)}"


def health(stack: IsolatedStack) -> tuple[int, dict]:
    try:
        return get_json(f"{health_url(stack)}/health", timeout=30)
    except OSError:
        return 0, {"status": "unreachable", "components": {}}


def wait_status(
    stack: IsolatedStack, status: str, timeout_s: float = 90, ingest_says: str = ""
) -> dict:
    """The first health report with ``status`` (and ``ingest_says`` in ingest's detail)."""
    seen: list[dict] = []

    def check() -> bool:
        seen[:] = [health(stack)[1]]
        detail = seen[0].get("components", {}).get("ingest", {}).get("detail") or ""
        return seen[0]["status"] == status and ingest_says in detail

    assert wait_until(check, timeout_s, interval_s=1), f"never {status}: {seen}"
    return seen[0]


def test_stack_runs_the_health_api(isolated):
    status = f2(isolated, "stack", "status", check=False).stdout
    assert any(line.startswith("health ") and "ready" in line for line in status.splitlines())
    report = wait_status(isolated, "ok")
    assert len(report["components"]) == 7
    human = f2(isolated, "health", check=False)
    assert human.returncode == 0 and "pipeline: OK" in human.stdout, human.stdout
    assert f2(isolated, "stack", "logs", "-n", "3", "health", check=False).returncode == 0


def test_redis_down_is_degraded_and_recovers(isolated):
    wait_status(isolated, "ok")
    f2(isolated, "stack", "stop", "redis")
    try:
        report = wait_status(isolated, "degraded")
        assert report["components"]["redis"]["status"] == "down"
        assert health(isolated)[0] == 200
    finally:
        f2(isolated, "stack", "start", "redis")
    wait_status(isolated, "ok")


def test_timeseries_db_down_is_down_and_recovers(isolated):
    wait_status(isolated, "ok")
    f2(isolated, "stack", "stop", "postgres")
    try:
        report = wait_status(isolated, "down")
        assert report["components"]["timeseries_db"]["status"] == "down"
        code, one = get_json(f"{health_url(isolated)}/health/timeseries_db", timeout=30)
        assert code == 503 and one["status"] == "down"
    finally:
        f2(isolated, "stack", "start", "postgres")
    wait_status(isolated, "ok", timeout_s=120)


def test_an_idle_pipeline_stays_ok_through_dependency_restarts(isolated):
    """No traffic; Redis, then PostgreSQL stopped and started: once back, the report stays ok for
    longer than the stuck window (the broker's own counters moved meanwhile: not the pipeline's)."""
    wait_status(isolated, "ok")
    for service in ("redis", "postgres"):
        f2(isolated, "stack", "stop", service)
        f2(isolated, "stack", "start", service)
    wait_status(isolated, "ok", timeout_s=120)
    deadline = time.monotonic() + 30  # twice F2_HEALTH_STUCK_AFTER_S
    while time.monotonic() < deadline:
        assert health(isolated)[1]["status"] == "ok", health(isolated)
        time.sleep(2)


def test_a_deleted_ingest_session_is_an_alarm(isolated):
    """Delete ingest's session s0 at the broker on purpose (clean start under its client id, as a
    takeover would): ingest counts it, logs an error and the health report says degraded."""
    wait_status(isolated, "ok")
    settings = load_settings(stack_env(isolated))
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="f2-ingest-s0", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(settings.mqtt_host, settings.mqtt_port, clean_start=True, properties=props)
    client.loop_start()
    assert wait_until(client.is_connected, 10, 0.1)
    client.disconnect()
    client.loop_stop()
    # Degraded at first for s0 being disconnected (the takeover), then for its lost session.
    report = wait_status(isolated, "degraded", timeout_s=60, ingest_says="lost")
    ingest = report["components"]["ingest"]
    assert ingest["status"] == "degraded" and "s0" in ingest["detail"]
    assert "lost" in ingest["detail"]
    metrics = get_text(f"http://127.0.0.1:{isolated.port(INGEST_API)}/metrics")
    assert 'f2_ingest_sessions_lost_total{partition="s0"} 1.0' in metrics
    log = isolated.dir / "logs" / "ingest.log"
    assert '"msg":"mqtt session lost' in log.read_text(errors="replace")
