"""The end-to-end headline's arithmetic: the knee bracket, the latency-bounded rate from the
repeats, and scale-out efficiency; and the wait profile's classification of py-spy samples."""

from __future__ import annotations

from bench.e2e import LATENCY_BOUND_MS, _bracket, latency_bounded, scale_out
from bench.waits import NATIVE, OTHER, category, parse_raw, profile


def step(rate: float, p99: float | None, missing: int = 0, achieved: bool = True) -> dict:
    within = missing == 0 and achieved and p99 is not None and p99 <= LATENCY_BOUND_MS
    return {
        "offered_msgs_per_s": rate,
        "p99_ms": p99,
        "missing_rows": missing,
        "within_latency_bound": within,
    }


def test_bracket_is_highest_within_and_lowest_beyond_it() -> None:
    steps = [step(2000, 300), step(5000, 600), step(7500, 4000), step(10000, 9000)]
    assert _bracket(steps) == (5000, 7500)
    # A noisy failure below the knee does not move the bracket's upper end below it.
    assert _bracket([step(2000, 3000), *steps]) == (5000, 7500)
    assert _bracket([step(2000, 3000)]) == (None, 2000)
    assert _bracket([step(2000, 300)]) == (2000, None)


def test_knee_confirmed_by_median_of_repeats() -> None:
    steps = [step(5000, 600), step(7000, 900)]
    repeats = [step(7000, 950), step(7000, 1200), step(7000, 800)]
    result = latency_bounded(steps, 7000, repeats)
    assert result["latency_bounded_msgs_per_s"] == 7000
    assert result["knee_repeats_median_p99_ms"] == 950
    assert result["knee_confirmed"]


def test_knee_not_confirmed_falls_back_to_the_next_rate_within_the_bound() -> None:
    steps = [step(5000, 600), step(6500, 700), step(7000, 900)]
    slow = [step(7000, 1500), step(7000, 1200), step(7000, 800)]
    assert latency_bounded(steps, 7000, slow)["latency_bounded_msgs_per_s"] == 6500
    lossy = [step(7000, 500), step(7000, 500, missing=3), step(7000, 500)]
    result = latency_bounded(steps, 7000, lossy)
    assert result["latency_bounded_msgs_per_s"] == 6500
    assert result["knee_repeats_missing_rows"] == 3
    assert not result["knee_confirmed"]
    assert latency_bounded([], None, [])["latency_bounded_msgs_per_s"] == 0


def test_scale_out_efficiency_and_cluster_cost() -> None:
    runs = {
        "x1": {"us_per_msg": {"ingest": 20.0, "decode": 30.0}},
        "x2": {"us_per_msg": {"ingest": 25.0, "decode": 30.0}},
    }
    out = scale_out(runs)
    assert out["efficiency"] == {"ingest": 0.8, "decode": 1.0, "ingest_plus_decode": 0.909}
    assert out["cluster_us_per_msg"] == {"ingest": 5.0, "decode": 0.0}
    assert out["ingest_plus_decode_us_per_msg"] == 50.0


RAW = """\
thread (101): MainThread;<module> (bytewax/run.py:1);main (x.py:2) 5
thread (101): MainThread;<module> (bytewax/run.py:1) 10
thread (101): MainThread;<module> (a.py:1);DecodeStep.__call__ (connectors/decode_step.py:9) 20
thread (101): MainThread;<module> (a.py:1);_Delivery.settle (connectors/kafka_sink.py:3) 15
thread (202): f2-store_0;_worker (thread.py:1);TimeseriesWriter._transaction (w.py:1);Connection.wait (c.py:1) 30
thread (202): f2-store_0;_worker (thread.py:1) 20
thread (303) 7
"""  # noqa: E501


def test_samples_are_classified_by_their_innermost_known_frames() -> None:
    parsed = list(parse_raw(RAW))
    assert parsed[0][:2] == ("101", "MainThread")
    assert parsed[-1] == ("303", "thread 303", [], 7)
    kinds = [category(frames) for _, _, frames, _ in parsed]
    assert kinds == [
        OTHER,
        NATIVE,
        "decode: frames and events",
        "kafka: wait for delivery confirmations",
        "database: statements and commits",
        "idle: waiting for work",
        NATIVE,
    ]


def test_profile_splits_wall_time_into_on_cpu_and_waiting() -> None:
    running = "thread (101): MainThread;<module> (a.py:1);DecodeStep.__call__ (d.py:9) 20\n"
    result = profile(RAW, running, {"101": 1.0, "202": 0.0}, {"101": 1.5, "202": 0.1}, 1.0)
    main = next(t for t in result["threads"] if t["thread"] == "MainThread")
    assert main["cpu_share"] == 0.5
    assert main["samples"] == 50
    assert main["accounted"] == 0.9  # 5 of 50 samples in no named category
    decode = main["categories"]["decode: frames and events"]
    assert decode == {"wall": 0.4, "on_cpu": 0.4, "waiting": 0.0}
    settle = main["categories"]["kafka: wait for delivery confirmations"]
    assert settle == {"wall": 0.3, "on_cpu": 0.0, "waiting": 0.3}
    assert result["process_cpu_share"] == 0.6
