"""``python -m bench.fleet --quick`` end to end, on a stack of its own (a test stack's directory
and port offset, so it never meets another session's): 2,000 controllers (and a curve point of
500) registered, published at QoS 1 through the whole pipeline, reconciled with the simulator's
report. Zero loss, every controller stored, and every documented key of the ``fleet`` section
(docs/PERFORMANCE.md, "Fleet of 100,000 controllers") present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stacks import ROOT, isolated_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCUMENTED = (
    "controllers",
    "sensors",
    "rate_msgs_per_s",
    "register_s",
    "register_again_s",
    "rows_expected",
    "rows_stored",
    "rows_lost",
    "controllers_unseen",
    "cold_start_s",
    "cache_warm_s",
    "decode_rss_mib",
    "decode_peak_rss_mib",
    "decode_rss_mib_fleet_cached",
    "p99_s",
    "registry_lookups_per_s",
    "registry_loads",
    "registry_cache_fits_controllers",
    "redis_used_memory_mib",
    "redis_keys",
    "postgres_cpu_cores",
    "redis_cpu_cores",
    "freshness_series",
    "freshness_memory_mib",
    "dimension_sync_ms_per_controller",
    "dimension_rows",
    "load_average",
    "restart",
    "curve",
)


def test_quick_fleet_run_loses_nothing_and_reports_every_key(tmp_path: Path) -> None:
    with isolated_stack() as iso:
        argv = [sys.executable, "-m", "bench.fleet", "--quick", "--results-dir", str(tmp_path)]
        argv += ["--stack-dir", str(iso.dir), "--port-offset", str(iso.offset)]
        run = subprocess.run(
            argv, cwd=ROOT, env=iso.environ(), capture_output=True, text=True, timeout=900
        )
    assert run.returncode == 0, run.stderr[-4000:]
    doc = json.loads((tmp_path / "fleet.json").read_text())
    fleet = doc["fleet"]
    missing = [key for key in DOCUMENTED if fleet.get(key) is None]
    assert not missing, missing
    assert fleet["controllers"] == 2000
    assert fleet["rows_lost"] == 0 and fleet["rows_lost_all_phases"] == 0
    assert fleet["rows_stored"] == fleet["rows_expected"] > 0
    assert fleet["controllers_unseen"] == 0
    assert [point["controllers"] for point in fleet["curve"]] == [500, 2000]
    assert all(point["rows_lost"] == 0 for point in fleet["curve"])
    assert fleet["restart"]["rows_lost"] == 0
    assert doc["checks"]["freshness_series_bounded"]["met"]
    assert fleet["registry_loads"]["postgres"] >= 2000  # Redis was flushed: a cold start
    assert (tmp_path / "fleet.md").read_text().startswith("# Fleet of 2,000 controllers")
