"""The benchmark report builder: the results document's shape and target marking from a small
synthetic run (shaped like the stage benchmarks' JSON), the histogram arithmetic behind the latency
figures, and the files the report writes. No benchmark is run here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import e2e
from bench.common import last_json_object
from bench.report import build_results, render_markdown, write_report
from bench.simulator import broker_load, summarize
from ops.health.flow_metrics import buckets, parse, quantile_of, share_at_or_below

REQUIRED = {
    "decode": ("msgs_per_s", "naive_msgs_per_s"),
    "ingest": ("msgs_per_s", "mqtt_ceiling_msgs_per_s"),
    "store": ("rows_per_s", "copy_ceiling_rows_per_s", "naive_rows_per_s"),
    "e2e": ("max_sustained_msgs_per_s", "p50_ms", "p95_ms", "p99_ms"),
}


def step(rate: int, sustained: bool, p99: float, missing: int = 0) -> dict:
    return {
        "config": "ingest x1, decode x1",
        "offered_msgs_per_s": rate,
        "achieved_msgs_per_s": float(rate),
        "published": rate * 10,
        "expected_rows": rate * 22,
        "stored_rows": rate * 22 - missing,
        "missing_rows": missing,
        "extra_rows": 0,
        "drain_s": 0.5 if sustained else 9.0,
        "sustained": sustained,
        "delivered_msgs_per_s": rate,
        "stored_rows_per_s": rate * 2,
        "ingest_msgs_per_s": rate,
        "decode_msgs_per_s": rate,
        "max_kafka_backlog_msgs": 100,
        "latency_observations": 1000,
        "p50_ms": p99 / 3,
        "p95_ms": p99 * 0.9,
        "p99_ms": p99,
        "share_within_1s": 0.995 if p99 <= 1000 else 0.5,
        "window_s": 11.0,
        "cpu_s": {"ingest": 4.0, "decode": 3.0},
        "cpu_cores": {"ingest": 0.4, "decode": 0.3, "simulator": 0.1},
    }


def parts() -> dict:
    """A small quick run's raw parts, shaped like each benchmark's printed JSON."""
    return {
        "decode": {"msgs_per_s": 170000, "naive_msgs_per_s": 30000, "messages": 5000},
        "ingest": {
            "messages": 10000,
            "bare": {"rate": 14000.0},
            "flow_1p": {"rate": 11000.0},
            "flow_2p": {"rate": 12000.0},
        },
        "store": {"results": {"copy_merge_5000": {"rows_per_s": 110000}}},
        "decode_flow": {
            "rows": 40000,
            "flow": {"rows_per_s": 60000.0},
            "ceiling": {"rows_per_s": 100000.0},
            "naive": {"rows_per_s": 2000.0},
        },
        "simulator": {
            "best_simulator": {"rate": 80000.0, "by": "simulator_1_processes"},
            "best_ceiling": {"rate": 150000, "by": "raw_client_2_processes"},
            "broker_load": {"simulator_1_processes": {"broker_cores": 0.962}},
        },
        "e2e": {
            "latency_source": "histogram",
            "step_seconds": 8.0,
            "drain_limit_s": 3.0,
            "ramps": [
                {
                    "config": "ingest x1, decode x1",
                    "latency_bound_ms": 1000.0,
                    "latency_bounded_msgs_per_s": 5000,
                    "knee_msgs_per_s": 5000,
                    "knee_repeats_p99_ms": [900.0],
                    "knee_repeats_median_p99_ms": 900.0,
                    "knee_confirmed": True,
                    "max_sustained_msgs_per_s": 5000,
                    "steps": [step(2000, True, 600.0), step(5000, True, 900.0)],
                }
            ],
            "cpu_per_message": {
                "rate_msgs_per_s": 5000,
                "x1": {"us_per_msg": {"ingest": 25.0, "decode": 30.0, "kafka": 20.0}},
                "x2": {"us_per_msg": {"ingest": 27.5, "decode": 33.0, "kafka": 20.0}},
                "efficiency": {"ingest": 0.909, "decode": 0.909, "ingest_plus_decode": 0.909},
                "cluster_us_per_msg": {"ingest": 2.5, "decode": 3.0},
            },
            "decode_scaling": {
                "bare_consume": {"msgs_per_s": 500000},
                "flow_1p": {"msgs_per_s": 8000, "rows_per_s": 22000},
                "flow_2p": {"msgs_per_s": 9000, "rows_per_s": 25000},
            },
        },
    }


META = {
    "mode": "quick",
    "started_at": "2026-11-26T20:00:00+00:00",
    "runtime_s": 80,
    "machine": {"cpus": 2},
    "versions": {"python": "3.11"},
}


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_results_have_the_required_shape_with_numbers():
    results = build_results(parts(), META)
    for section, keys in REQUIRED.items():
        assert isinstance(results[section], dict)
        for key in keys:
            assert is_number(results[section][key]), (section, key, results[section][key])
    assert isinstance(results["machine"], dict) and isinstance(results["versions"], dict)
    assert results["e2e"]["p99_ms"] == 900.0  # at the highest sustained step
    assert results["scaling"]["decode_msgs_per_s"] == {"1": 8000, "2": 9000}
    assert results["scaling"]["ingest_msgs_per_s"] == {"1": 11000, "2": 12000}
    assert results["cpu"]["share"]["ingest"] == pytest.approx(0.5)
    assert results["simulator"]["broker_cores_during_simulator"] == 0.962
    assert "Mosquitto busy 96% of a core" in render_markdown(results, [])
    json.dumps(results)  # serialisable as is


def test_targets_are_marked_met_and_not_met():
    results = build_results(parts(), META)
    met = {name: target["met"] for name, target in results["targets"].items()}
    assert met == {
        "e2e_latency_bounded": False,  # 5000 < 10000
        "cpu_ingest_plus_decode": True,  # 55 µs ≤ 60
        "scale_out_efficiency": True,  # 0.909
        "e2e_sustained": True,
        "e2e_p99_at_5000": True,
        "e2e_zero_loss": True,
        "decode_core_rate": True,
        "decode_core_vs_naive": True,
        "decode_flow_vs_copy": True,  # 0.6
        "decode_flow_vs_naive": True,  # 30×
    }
    assert results["cpu"]["us_per_msg"]["ingest_plus_decode"] == 55.0
    assert results["cpu"]["bound_msgs_per_s"] == round(2 * 1e6 / 75.0)
    slow = parts()
    slow["e2e"]["cpu_per_message"]["x1"]["us_per_msg"]["decode"] = 40.0  # 65 µs together
    slow["e2e"]["ramps"][0]["steps"][1] = step(5000, True, 1500.0, missing=3)
    marked = build_results(slow, META)["targets"]
    assert not marked["cpu_ingest_plus_decode"]["met"]
    assert not marked["e2e_p99_at_5000"]["met"]
    assert not marked["e2e_zero_loss"]["met"]
    assert marked["e2e_zero_loss"]["value"] == 3


def test_rows_that_arrive_after_decode_restarts_are_late_not_lost():
    late = parts()
    stalled = step(3500, False, 4000.0, missing=15)
    late["e2e"]["ramps"][0]["steps"].append({**stalled, "missing_after_restart": 0})
    results = build_results(late, META)
    assert results["targets"]["e2e_zero_loss"]["met"]
    assert results["e2e"]["late_rows_total"] == 15
    assert "15 (0 after decode restarted)" in render_markdown(results, [])
    late["e2e"]["ramps"][0]["steps"][-1]["missing_after_restart"] = 2
    results = build_results(late, META)
    assert results["targets"]["e2e_zero_loss"]["value"] == 2
    assert results["e2e"]["late_rows_total"] == 13


def test_a_failed_benchmark_keeps_the_shape_and_is_listed():
    broken = parts()
    broken["ingest"] = {"error": "RuntimeError: no broker"}
    results = build_results(broken, META)
    assert results["ingest"]["msgs_per_s"] is None
    assert results["errors"] == {"ingest": "RuntimeError: no broker"}
    assert results["ingest"]["share_of_ceiling"] is None
    assert "no broker" in render_markdown(results, [])


def test_histogram_quantiles_from_a_diff_of_two_scrapes():
    before = parse(
        'f2_e2e_latency_seconds_bucket{since="device",le="0.5"} 10\n'
        'f2_e2e_latency_seconds_bucket{since="device",le="1.0"} 10\n'
        'f2_e2e_latency_seconds_bucket{since="device",le="+Inf"} 10\n'
        'f2_e2e_latency_seconds_bucket{since="receive",le="+Inf"} 99\n',
        1.0,
    )
    after = parse(
        'f2_e2e_latency_seconds_bucket{since="device",le="0.5"} 60\n'
        'f2_e2e_latency_seconds_bucket{since="device",le="1.0"} 108\n'
        'f2_e2e_latency_seconds_bucket{since="device",le="+Inf"} 110\n',
        2.0,
    )
    diff = buckets(before, after, "f2_e2e_latency_seconds", since="device")
    assert diff == [(0.5, 50.0), (1.0, 98.0), (float("inf"), 100.0)]
    assert quantile_of(diff, 0.5) == pytest.approx(0.5)
    assert quantile_of(diff, 0.75) == pytest.approx(0.5 + 0.5 * 25 / 48)
    assert quantile_of(diff, 0.99) == pytest.approx(1.0)  # in +Inf: the largest finite bound
    assert quantile_of([], 0.5) is None
    assert share_at_or_below(diff, 0.5) == pytest.approx(0.5)


def test_last_json_object_after_other_output():
    text = 'mosquitto: started\n{"a": 1}\nstopped\n{\n  "b": {"c": 2}\n}\n'
    assert last_json_object(text) == {"b": {"c": 2}}


def test_write_report_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("bench.report.render_plots", lambda _results, _folder: [])  # optional
    results = build_results(parts(), META)
    written = write_report(results, tmp_path, "20261126T200000Z")
    names = {path.name for path in written}
    assert {"20261126T200000Z.json", "latest.json", "latest.md"} <= names
    assert json.loads((tmp_path / "latest.json").read_text()) == results
    page = (tmp_path / "latest.md").read_text()
    assert "| end-to-end sustained | 5,000 msg/s | ≥ 5,000 msg/s | **met** |" in page


def test_simulator_summary_takes_each_configurations_best_round_with_its_broker_load():
    rounds = [
        {"raw_client_1_processes": 100, "simulator_1_processes": {"rate": 95.0}},
        {"raw_client_1_processes": 120, "simulator_1_processes": {"rate": 90.0}},
    ]
    for mix, r in zip((100, 130), rounds, strict=True):  # the replayed mix is no ceiling
        r["mix_client_1_processes"] = mix
    loads = [
        {"raw_client_1_processes": broker_load(1.0, 800, 1.0), "simulator_1_processes": {}},
        {"raw_client_1_processes": broker_load(0.5, 960, 0.5), "simulator_1_processes": {}},
    ]
    for load in loads:
        load["mix_client_1_processes"] = broker_load(1.0, 1000, 1.0)
    loads[0]["simulator_1_processes"] = broker_load(0.97, 760, 1.0)
    loads[1]["simulator_1_processes"] = broker_load(0.9, 720, 1.0)
    summary = summarize(rounds, loads)
    assert summary["best_ceiling"] == {"rate": 120, "by": "raw_client_1_processes"}
    assert summary["best_simulator"] == {"rate": 95.0, "by": "simulator_1_processes"}
    assert summary["simulator_vs_best_ceiling"] == pytest.approx(95 / 120, abs=1e-3)
    assert summary["target_met"] is False
    assert summary["simulator_vs_mix_client"] == pytest.approx(95 / 130, abs=1e-3)
    # the broker's load is the one of the round each best figure came from
    assert summary["broker_load"]["raw_client_1_processes"] == {
        "broker_cores": 1.0,
        "broker_us_per_msg": pytest.approx(520.83, abs=0.01),
    }
    assert summary["broker_load"]["simulator_1_processes"]["broker_cores"] == 0.97
    assert summary["rounds_broker_cores"][1]["simulator_1_processes"] == 0.9


class FakePipeline:
    """Records what a ramp asks of the pipeline: a step is sustained below ``limit`` msg/s and
    within the latency bound below ``bound``."""

    def __init__(self, limit: float, bound: float | None = None) -> None:
        self.limit, self.bound, self.calls = limit, bound or limit, []
        self.ingest = self.decode = type("Group", (), {"processes": 1})()
        self.name = "fake"

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def step(self, rate: float, duration: float, register: bool = False) -> dict:
        self.calls.append(("step", rate, register))
        missing = 0 if rate < self.limit or rate == e2e.WARMUP_RATE else 7
        return {
            "offered_msgs_per_s": rate,
            "sustained": rate < self.limit,
            "within_latency_bound": rate < self.bound and not missing,
            "missing_rows": missing,
            "p99_ms": 500.0 if rate < self.bound else 5000.0,
            **{k: 0 for k in ("config", "achieved_msgs_per_s", "drain_s", "p50_ms")},
        }

    def recount(self, step: dict) -> None:
        self.calls.append(("recount", step["offered_msgs_per_s"]))
        step["missing_after_restart"] = 0

    def rates(self) -> list[float]:
        return [c[1] for c in self.calls if c[0] == "step" and c[1] != e2e.WARMUP_RATE]


def test_ramp_refines_the_knee_and_repeats_it_on_fresh_brokers():
    pipeline = FakePipeline(limit=4000, bound=3500)
    result = e2e.ramp(pipeline, (2000, 3000, 5000), 30.0, refine=True)  # type: ignore[arg-type]
    # coarse (5000 tried twice), then halfway twice down to 500 apart, then the knee 3 times
    assert pipeline.rates() == [2000, 3000, 5000, 5000, 4000, 3500, 3000, 3000, 3000]
    registers = [c for c in pipeline.calls if c[0] == "step" and c[2]]
    assert registers == [("step", e2e.WARMUP_RATE, True)]  # the fleet is registered once
    assert pipeline.calls.count("start") == 9 and pipeline.calls[-1] == "stop"
    assert [c for c in pipeline.calls if c[0] == "recount"] == [
        ("recount", 5000), ("recount", 5000), ("recount", 4000)
    ]  # fmt: skip
    assert result["latency_bounded_msgs_per_s"] == 3000 and result["knee_confirmed"]
    assert result["knee_repeats_p99_ms"] == [500.0, 500.0, 500.0]
    assert result["max_sustained_msgs_per_s"] == 3500
    assert [s["role"] for s in result["steps"]][-4:] == ["refine", "repeat", "repeat", "repeat"]


def test_ramp_can_keep_one_broker():
    pipeline = FakePipeline(limit=2500)
    e2e.ramp(pipeline, (2000, 3000), 15.0, refine=False, fresh_broker=False, repeats=1)  # type: ignore[arg-type]
    assert pipeline.calls == [
        "start", ("step", e2e.WARMUP_RATE, True), ("step", 2000, False),
        ("step", 3000, False), ("step", 3000, False), ("step", 2000, False),
        "stop", ("recount", 3000), ("recount", 3000),
    ]  # fmt: skip


def test_offset_gaps_of_every_step_are_summed_and_reported():
    gapped = parts()
    steps = gapped["e2e"]["ramps"][0]["steps"]
    steps[0]["decode_offset_gaps"] = {"filled": 2, "skipped": 0}
    steps[1]["decode_offset_gaps"] = {"filled": 1, "skipped": 1}
    results = build_results(gapped, META)
    assert results["e2e"]["offset_gaps"] == {"filled": 3, "skipped": 1}
    assert "3 read again and filled" in render_markdown(results, [])


def test_memory_bounds_are_targets_when_the_memory_benchmark_ran():
    memory = {
        "messages_64k": 3072,
        "distinct_topics": 20000,
        "ingest": {"max_buffer_bytes": 64 << 20, "peak_rss_mib": 125.2, "limit_mib": 320.0},
        "decode": {"idle_rss_mib": 72.2, "peak_rss_mib": 196.4, "limit_mib": 328.2},
        "readings_missing": 0,
        "dead_letters_missing": 0,
    }
    results = build_results({**parts(), "memory": memory}, META)
    assert results["targets"]["ingest_rss_under_flood"]["met"]
    assert results["targets"]["decode_rss_under_flood"]["met"]
    assert "## Memory under a flood during a Kafka outage" in render_markdown(results, [])
    assert "| ingest peak RSS" in render_markdown(results, []) and "≤ 320 MiB" in render_markdown(
        results, []
    )
    memory["decode"]["peak_rss_mib"] = 400.0
    assert not build_results({**parts(), "memory": memory}, META)["targets"][
        "decode_rss_under_flood"
    ]["met"]


class NoisyPipeline(FakePipeline):
    """Within the bound below ``bound``, and at each ``lucky`` rate the first time only."""

    def __init__(self, limit: float, bound: float, *lucky: float) -> None:
        super().__init__(limit, bound)
        self.lucky = set(lucky)

    def step(self, rate: float, duration: float, register: bool = False) -> dict:
        out = super().step(rate, duration, register)
        if rate in self.lucky:
            self.lucky.discard(rate)
            out.update(within_latency_bound=True, p99_ms=900.0)
        return out


def test_an_unconfirmed_knee_is_followed_by_repeats_of_the_rates_just_below_it():
    pipeline = NoisyPipeline(20000, 9600, 10000)
    rates = (2000, 5000, 7500, 10000, 12500)
    result = e2e.ramp(pipeline, rates, 30.0, refine=True)  # type: ignore[arg-type]
    # 12,500 twice, 11,000 and 10,500 refine; 10,000 fails twice (a third cannot confirm it)
    assert pipeline.rates()[-7:] == [11000, 10500, 10000, 10000, 9500, 9500, 9500]
    assert result["knees_repeated"] == [10000, 9500]
    assert result["latency_bounded_msgs_per_s"] == 9500 and result["knee_confirmed"]
    worse = NoisyPipeline(20000, 7000, 10000)
    result = e2e.ramp(worse, rates, 30.0, refine=True)  # type: ignore[arg-type]
    assert result["knees_repeated"] == [10000, 9500, 9000, 8500]  # FALLBACK_LEVELS below
    assert result["latency_bounded_msgs_per_s"] == 5000 and not result["knee_confirmed"]


def test_a_rate_below_the_knee_that_one_ramp_step_passed_is_repeated_too():
    # 12,500 passed the coarse ramp once and 13,000 a refining step once; the box holds 11,800
    pipeline = NoisyPipeline(20000, 11800, 12500, 13000)
    rates = (2000, 5000, 7500, 10000, 12500, 15000)
    result = e2e.ramp(pipeline, rates, 30.0, refine=True)  # type: ignore[arg-type]
    assert result["knees_repeated"] == [13000, 12500, 12000, 11500]
    assert result["latency_bounded_msgs_per_s"] == 11500 and result["knee_confirmed"]
    assert pipeline.rates()[-7:] == [12500, 12500, 12000, 12000, 11500, 11500, 11500]


def test_the_report_names_the_knees_repeated_before_the_headline():
    repeated = parts()
    repeated["e2e"]["ramps"][0]["knees_repeated"] = [10000, 9500]
    results = build_results(repeated, META)
    assert results["e2e"]["knees_repeated"] == [10000, 9500]
    assert "repeated before it and not confirmed: 10" in render_markdown(results, [])


def test_the_bound_at_the_knee_takes_each_process_median_over_the_knee_rate_steps():
    raw = parts()
    steps = raw["e2e"]["ramps"][0]["steps"]
    costs = [
        {"ingest": 20.0, "decode": 40.0, "kafka": 20.0, "bench": 9.0},
        {"ingest": 24.0, "decode": 50.0, "kafka": 30.0, "bench": 9.0},
        {"ingest": 22.0, "decode": 44.0, "kafka": 10.0, "bench": 9.0},
    ]
    steps[0]["cpu_us_per_msg"] = {"ingest": 99.0, "decode": 99.0}  # another rate: not counted
    steps[1:] = [step(5000, True, 900.0) | {"cpu_us_per_msg": c} for c in costs]
    profiled = {"ingest": 90.0, "decode": 90.0, "kafka": 90.0, "bench": 9.0}
    steps.append(step(5000, True, 900.0) | {"role": "profile", "cpu_us_per_msg": profiled})
    cpu = build_results(raw, META)["cpu"]
    assert cpu["at_knee_msgs_per_s"] == 5000
    assert cpu["at_knee_us_per_msg"] == {
        "bench": 9.0,
        "decode": 44.0,
        "ingest": 22.0,
        "kafka": 20.0,
    }
    assert cpu["at_knee_all_processes_us_per_msg"] == 86.0  # the benchmark's own left out
    assert cpu["at_knee_bound_msgs_per_s"] == round(2 * 1e6 / 86.0)
    assert "near **23,256 msg/s** there" in render_markdown(build_results(raw, META), [])


def test_without_cpu_figures_at_the_knee_the_report_states_no_bound_there():
    results = build_results(parts(), META)
    assert results["cpu"]["at_knee_bound_msgs_per_s"] is None
    assert "At the latency-bounded rate" not in render_markdown(results, [])


FLOOR = {
    "rate_msgs_per_s": 5000,
    "records_per_msg": 2.5,
    "pieces_us_per_msg": {
        "raw_produce": 5.0,
        "raw_consume": 10.0,
        "decoding": 10.0,
        "decoded_produce": 10.0,
        "worker_idle": 3.0,
    },
}


def test_the_floor_adds_ingests_mqtt_side_to_the_pieces_and_states_what_the_target_leaves():
    raw = parts() | {"floor": FLOOR}
    raw["ingest"]["ceilings"] = {"own_client_us_per_msg": 22.5}
    results = build_results(raw, META)
    floor = results["floor"]
    assert floor["us_per_msg"]["ingest_mqtt"] == 22.5
    assert floor["ingest_plus_decode_us_per_msg"] == 60.5
    assert floor["left_for_the_flows_us_per_msg"] == -0.5
    text = render_markdown(results, [])
    assert "| **floor** | **60.50** |" in text
    assert "leaves **-0.50 µs** per message" in text


def test_without_ingests_own_client_there_is_no_floor_sum():
    results = build_results(parts() | {"floor": FLOOR}, META)
    assert results["floor"]["ingest_plus_decode_us_per_msg"] is None
    assert results["floor"]["left_for_the_flows_us_per_msg"] is None
    assert "The floor under" not in render_markdown(results, [])
