"""The health API through outages, on an isolated stack (``/tmp/obs-stack``, ports + 600) with
its flows and health API supervised by ``f2 stack up --flows``: stopping Redis makes the pipeline
``degraded`` (HTTP 200), stopping PostgreSQL (the timeseries database) makes it ``down`` (503),
and both recover by themselves once the service is back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ops.procs import wait_until
from tests.integration.obs_support import ROOT, get_json

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OFFSET = 600
ENV = {
    **os.environ,
    "F2_STACK_DIR": "/tmp/obs-stack",
    "F2_STACK_PORT_OFFSET": str(OFFSET),
    "F2_INGEST_METRICS_PORT": str(3031 + OFFSET),
    "F2_DECODE_METRICS_PORT": str(3032 + OFFSET),
    "F2_HEALTH_INTERVAL_S": "1",
    "F2_REGISTRY_REDIS_BACKOFF_S": "1",
}
HEALTH = f"http://127.0.0.1:{8000 + OFFSET}"


def f2(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The ``f2`` CLI on the isolated stack."""
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300, check=check,
    )  # fmt: skip


@pytest.fixture(scope="module")
def isolated():
    result = f2("stack", "up", "--flows", check=False)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield
    finally:
        f2("stack", "down", "--purge", check=False)


def health() -> tuple[int, dict]:
    try:
        return get_json(f"{HEALTH}/health", timeout=30)
    except OSError:
        return 0, {"status": "unreachable", "components": {}}


def wait_status(status: str, timeout_s: float = 90) -> dict:
    seen: list[dict] = []

    def check() -> bool:
        seen[:] = [health()[1]]
        return seen[0]["status"] == status

    assert wait_until(check, timeout_s, interval_s=1), f"never {status}: {seen}"
    return seen[0]


def test_stack_runs_the_health_api(isolated):
    status = f2("stack", "status", check=False).stdout
    assert any(line.startswith("health ") and "ready" in line for line in status.splitlines())
    report = wait_status("ok")
    assert len(report["components"]) == 7
    human = f2("health", check=False)
    assert human.returncode == 0 and "pipeline: OK" in human.stdout, human.stdout
    assert f2("stack", "logs", "-n", "3", "health", check=False).returncode == 0


def test_redis_down_is_degraded_and_recovers(isolated):
    wait_status("ok")
    f2("stack", "stop", "redis")
    try:
        report = wait_status("degraded")
        assert report["components"]["redis"]["status"] == "down"
        assert health()[0] == 200
    finally:
        f2("stack", "start", "redis")
    wait_status("ok")


def test_timeseries_db_down_is_down_and_recovers(isolated):
    wait_status("ok")
    f2("stack", "stop", "postgres")
    try:
        report = wait_status("down")
        assert report["components"]["timeseries_db"]["status"] == "down"
        code, one = get_json(f"{HEALTH}/health/timeseries_db", timeout=30)
        assert code == 503 and one["status"] == "down"
    finally:
        f2("stack", "start", "postgres")
    wait_status("ok", timeout_s=120)
