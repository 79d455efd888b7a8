"""The fleet benchmark's pieces without running it: a worker's share of the simulator's sources,
the fleet's shape, the summary with its documented keys and checks, the report page, the merge
into ``latest.json``, the port offset it reserves; and (on the session's stack) the simulator's
registration in batches, idempotent, with progress."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import fleet as bench_fleet
from bench.report import build_results, write_report
from schemas.settings import Settings
from simulator.fleet import generate_fleet
from simulator.messages import SensorSource, Source, build_sources
from simulator.registry import register_fleet


def source_key(source: Source) -> tuple[str, str, str, str]:
    where = source.topic if isinstance(source, SensorSource) else source.connector.name
    return type(source).__name__, source.mac, where, source.clock.zone


def test_a_workers_share_of_the_sources_is_the_slice_of_all_of_them() -> None:
    fleet = generate_fleet(40, seed=9)
    everything = [source_key(s) for s in build_sources(fleet, 0.2)]
    for parts in (1, 2, 3):
        for part in range(parts):
            share = [source_key(s) for s in build_sources(fleet, 0.2, part, parts)]
            assert share == everything[part::parts]


def test_the_fleet_shape_counts_what_the_simulator_cycles_over() -> None:
    fleet = generate_fleet(60, seed=3)
    shape = bench_fleet.fleet_shape(fleet)
    assert shape["controllers"] == 60
    assert shape["sources"] == len(build_sources(fleet))
    sensors = sum(len(k.sensors) for c in fleet.controllers for k in c.connectors)
    assert shape["sensors"] == sensors


def phase(name: str, controllers: int, **extra: object) -> dict:
    """A raw phase shaped like ``bench.fleet.Phase.measure``'s."""
    return {
        "name": name,
        "controllers": controllers,
        "fleet": {
            "controllers": controllers,
            "sensors": 4 * controllers,
            "sources": 6 * controllers,
        },
        "registry_cache_bytes": None,
        "publishing_s": 150.0,
        "achieved_msgs_per_s": 4990.0,
        "expected_rows": 1000,
        "stored_rows": 1000,
        "rows_lost": 0,
        "drain_s": 2.0,
        "controllers_unseen": 0,
        "dead_letters": 0,
        "cold_start_s": 9.5,
        "decode_ready_s": 1.2,
        "cache_warm_s": 130.0,
        "registry_lookups": {"hit": 10, "miss": controllers},
        "registry_loads": {"postgres": controllers, "redis": 0},
        "registry_lookups_per_s_warmup": 700.0,
        "registry_lookups_per_s_peak": 900.0,
        "registry_after_warm": {"hit": 10, "miss": 0},
        "decode_msgs_per_s_warmup": 4900.0,
        "max_consumer_lag": 1200,
        "latency": {"p50_s": 0.3, "p99_s": 0.9, "share_within_1s": 0.995},
        "latency_warmup": {"p99_s": 0.95},
        "latency_after_warm": {"p99_s": 0.6},
        "steady_from_s": 140.0,
        "steady_for_s": 30.0,
        "latency_steady": {"p50_s": 0.2, "p99_s": 0.5},
        "decode_msgs_per_s_after_warm_publishing": 5100.0,
        "flush_ms_warmup": 40.0,
        "flush_ms_after_warm": 20.0,
        "decode_rss_mib": 300.0 + controllers / 100,
        "decode_peak_rss_mib": 320.0,
        "freshness_series": 66,
        "decode_scrape_s": {"median": 0.05, "max": 0.3},
        "cpu_cores": {"decode": 0.8, "postgres": 0.3, "redis": 0.05},
        "redis": {"used_memory_mib": 50.0, "keys": controllers, "evicted_keys": 0},
        "dimension_rows": {"controllers": {"inserted": controllers, "updated": 0, "live": 1}},
        "load_average": [1.0, 1.0, 1.0],
        **extra,
    }


def raw_result(plan: bench_fleet.Plan) -> dict:
    return {
        "registration": {str(plan.controllers): {"seconds": 200.0, "again": {"seconds": 20.0}}},
        "phases": [
            phase("cold-1000", 1000),
            phase("cold-100000", 100_000),
            phase("restart-100000", 100_000, registry_cache_bytes=4 << 30),
        ],
        "freshness": {"memory_mib": 130.0, "collect_s": 0.3},
        "cache_fit": {"controllers_that_fit": 14_500},
        "dimension_sync": {"ms_per_controller": 0.4},
        "registry_lookup": {"postgres_ms": 0.9, "store_ms": 0.3},
    }


def test_the_summary_has_the_documented_keys_and_the_curve() -> None:
    plan = bench_fleet.FULL
    summary = bench_fleet.summarize(raw_result(plan), plan)
    for key in ("controllers", "rows_lost", "cold_start_s", "decode_rss_mib", "p99_s"):
        assert summary[key] is not None, key
    assert summary["registry_lookups_per_s"] == 700.0
    assert summary["freshness_series"] == 66
    assert summary["fleet_pass_s"] == 120.0  # 600,000 sources at 5,000 msg/s
    assert summary["p99_steady_s"] == 0.5 and summary["restart"]["steady_from_s"] == 140.0
    assert summary["decode_rss_mib_fleet_cached"] == 1300.0
    assert [p["controllers"] for p in summary["curve"]] == [1000, 100_000]
    assert summary["restart"]["registry_cache_bytes"] == 4 << 30
    checks = bench_fleet.checks(summary, top_n=20)
    assert checks["zero_loss"]["met"] and checks["freshness_series_bounded"]["met"]
    assert not checks["registry_cache_holds_fleet"]["met"]  # 14,500 < 100,000: a finding
    assert checks["decode_caught_up"]["met"] and checks["p99_steady_within_1s"]["met"]
    json.dumps(summary)


def test_lost_rows_fail_the_zero_loss_check_and_the_page_names_them() -> None:
    plan = bench_fleet.FULL
    raw = raw_result(plan)
    raw["phases"][1]["rows_lost"] = 3
    raw["phases"][1]["steady_from_s"] = None  # never caught up
    raw["phases"][1]["latency_steady"] = None
    summary = bench_fleet.summarize(raw, plan)
    checks = bench_fleet.checks(summary, top_n=20)
    assert summary["rows_lost_all_phases"] == 3 and not checks["zero_loss"]["met"]
    doc = {"fleet": summary, "checks": checks, "mode": "full", "machine": {"cpus": 2}}
    page = bench_fleet.render(doc)
    assert page.startswith("# Fleet of 100,000 controllers (full)")
    assert "| zero_loss | 3 | **no** |" in page
    assert "| decode_caught_up | None | **no** |" in page
    assert "| p99_steady_within_1s | None | **no** |" in page
    assert "| 1,000 |" in page


def test_a_phase_publishes_at_least_one_fleet_pass_and_small_fleets_long_enough() -> None:
    plan = bench_fleet.FULL
    shape = {"controllers": 100_000, "sensors": 413_000, "sources": 606_640}
    least, most = bench_fleet.publishing_for(plan, shape, plan.max_passes)
    assert least >= 606_640 / 5000 and most == math.ceil(1.5 * 606_640 / 5000)
    assert bench_fleet.publishing_for(plan, {"sources": 6000}, plan.max_passes) == (2, plan.max_s)


def test_a_failed_run_still_renders() -> None:
    summary = bench_fleet.summarize({"phases": []}, bench_fleet.QUICK)
    page = bench_fleet.render({"fleet": summary, "error": "RuntimeError: boom", "mode": "quick"})
    assert page.startswith("# Fleet of 2,000 controllers (quick)")
    assert "**Failed:** RuntimeError: boom" in page


def test_results_go_to_fleet_json_and_into_latest_json(tmp_path: Path) -> None:
    plan = bench_fleet.FULL
    summary = bench_fleet.summarize(raw_result(plan), plan)
    doc = {"fleet": summary, "checks": {}, "mode": "full", "started_at": "2026-12-07T08:00:00"}
    meta = {"mode": "quick", "started_at": "x", "runtime_s": 1, "machine": {"cpus": 2}}
    stages = build_results({}, {**meta, "versions": {}})
    (tmp_path / "latest.json").write_text(json.dumps(stages))
    written = bench_fleet.write(doc, tmp_path)
    assert {p.name for p in written} == {"fleet.json", "fleet.md", "latest.json", "latest.md"}
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["e2e"] == stages["e2e"]
    assert latest["fleet"]["controllers"] == 100_000
    assert latest["fleet"]["started_at"] == "2026-12-07T08:00:00"
    assert "## Fleet of 100,000 controllers" in (tmp_path / "latest.md").read_text()


def test_the_stage_report_carries_the_latest_fleet_results(tmp_path: Path) -> None:
    plan = bench_fleet.FULL
    doc = {"fleet": bench_fleet.summarize(raw_result(plan), plan), "mode": "full"}
    bench_fleet.write({**doc, "checks": {}, "started_at": "2026-12-07T08:00:00"}, tmp_path)
    meta = {"mode": "quick", "started_at": "x", "runtime_s": 1, "machine": {"cpus": 2}}
    results = build_results({}, {**meta, "versions": {}})
    write_report(results, tmp_path, "20261207T090000Z")
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["fleet"]["rows_lost"] == 0 and latest["fleet"]["curve"]
    assert "## Fleet of 100,000 controllers" in (tmp_path / "latest.md").read_text()


def test_peak_rate_is_the_steepest_step_before_the_limit() -> None:
    timeline = [{"t": 0.0, "miss": 0}, {"t": 5.0, "miss": 1000}, {"t": 10.0, "miss": 6000}]
    timeline.append({"t": 20.0, "miss": 30000})
    assert bench_fleet.peak_rate(timeline, "miss") == 2400.0
    assert bench_fleet.peak_rate(timeline, "miss", until=10.0) == 1000.0


def test_a_reserved_port_offset_is_locked_and_its_ports_free() -> None:
    offset, fd = bench_fleet.reserve_offset()
    try:
        assert offset >= bench_fleet.OFFSET_FIRST and offset != 1000
        again, fd2 = bench_fleet.reserve_offset()
        try:
            assert again != offset  # the first one is locked
        finally:
            bench_fleet.release_offset(again, fd2)
    finally:
        bench_fleet.release_offset(offset, fd)


def test_registration_in_batches_is_idempotent_and_reports_progress(stack: Settings) -> None:
    fleet = generate_fleet(23, seed=424242)
    seen: list[tuple[int, int]] = []
    first = register_fleet(stack.params_dsn, fleet, batch=10, progress=lambda *p: seen.append(p))
    assert seen == [(10, 23), (20, 23), (23, 23)]
    connectors = sum(len(c.connectors) for c in fleet.controllers)
    assert first.inserted["Connector"] == connectors and not first.mismatches
    again = register_fleet(stack.params_dsn, fleet, batch=7)
    assert sum(again.inserted.values()) == 0 and not again.mismatches


@pytest.mark.parametrize("parts", [2, 5])
def test_every_source_is_in_exactly_one_share(parts: int) -> None:
    fleet = generate_fleet(15, seed=1)
    shares = [build_sources(fleet, 0.1, part, parts) for part in range(parts)]
    assert sum(len(share) for share in shares) == len(build_sources(fleet, 0.1))


def test_decode_cpu_per_message_between_timeline_points() -> None:
    bench = SimpleNamespace(plan=bench_fleet.FULL)
    phase = bench_fleet.Phase(bench, "cold-1", 1, None, Path("r"), Path("s"), None)  # type: ignore[arg-type]
    phase.timeline = [
        {"t": 5.0, "cpu_s": 3.0, "decoded": 1000},
        {"t": 10.0, "cpu_s": 4.0, "decoded": 6000},
        {"t": 15.0, "cpu_s": 4.5, "decoded": 16000},
    ]
    assert phase.cpu_per_msg(None, 10.0) == 200.0  # 1 s for 5,000 messages
    assert phase.cpu_per_msg(10.0, None) == 50.0
    assert phase.cpu_per_msg(15.0, None) is None  # one point: no window
