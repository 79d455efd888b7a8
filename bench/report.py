"""The capacity report of ``python -m bench``: one results document from the stage benchmarks and
the end-to-end run, the targets marked met or not, a Markdown page and PNG plots.

:func:`build_results` is pure (the parts in, the document out) so its shape is unit-tested;
:func:`write_report` writes ``<stamp>.json``, ``latest.json``, ``latest.md`` and the plots
(``latest-throughput.png``, ``latest-latency.png``, ``latest-cpu.png``; matplotlib is optional:
without it the plots are skipped with a message).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from statistics import median
from typing import Any

E2E_RATE_TARGET = 5000
P99_TARGET_MS = 1000.0
LATENCY_BOUNDED_TARGET = 10_000
"""Issue 22: msg/s end to end at p99 ≤ 1 s with zero loss (ingest ×1 + decode ×1, this box)."""
CPU_TARGET_US = 60.0
"""Issue 22: ingest + decode CPU µs per message at 5,000 msg/s."""
SCALE_OUT_TARGET = 0.85
COPY_SHARE_TARGET = 0.6
CPU_ROLES = ("simulator", "mosquitto", "ingest", "kafka", "decode", "postgres", "redis", "bench")
PLOTS = {
    "throughput": "latest-throughput.png",
    "latency": "latest-latency.png",
    "cpu": "latest-cpu.png",
    "waits": "latest-waits.png",
}


def _get(data: Any, *path: str) -> Any:
    """``data[path[0]][path[1]]...``, or None where anything is missing."""
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def _num(value: Any, digits: int = 0) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return round(float(value), digits) if digits else round(float(value))


def decode_section(raw: dict | None) -> dict[str, Any]:
    rate, naive = _num(_get(raw, "msgs_per_s")), _num(_get(raw, "naive_msgs_per_s"))
    return {
        "msgs_per_s": rate,
        "naive_msgs_per_s": naive,
        "ratio_to_naive": _ratio(rate, naive, 2),
        "wall_msgs_per_s": _num(_get(raw, "wall_msgs_per_s")),
        "messages": _num(_get(raw, "messages")),
    }


def ingest_section(raw: dict | None) -> dict[str, Any]:
    one, two = _num(_get(raw, "flow_1p", "rate")), _num(_get(raw, "flow_2p", "rate"))
    ceiling = _num(_get(raw, "bare", "rate"))
    return {
        "msgs_per_s": one,
        "mqtt_ceiling_msgs_per_s": ceiling,
        "share_of_ceiling": _ratio(one, ceiling),
        "msgs_per_s_2p": two,
        "share_of_ceiling_2p": _ratio(two, ceiling),
        "mosquitto_sub_ceiling_msgs_per_s": _num(_get(raw, "ceilings", "mosquitto_sub_msgs_per_s")),
        "own_client_ceiling_msgs_per_s": _num(_get(raw, "ceilings", "own_client_msgs_per_s")),
        "share_of_mosquitto_sub": _get(raw, "flow_over_mosquitto_sub"),
        "share_of_own_client": _get(raw, "flow_over_own_client"),
        "cpu_us_per_msg": _get(raw, "cpu_us_per_msg"),
        "messages": _num(_get(raw, "messages")),
    }


def store_section(flow: dict | None, store: dict | None, scaling: dict | None) -> dict[str, Any]:
    rows, copy = _num(_get(flow, "flow", "rows_per_s")), _num(_get(flow, "ceiling", "rows_per_s"))
    naive = _num(_get(flow, "naive", "rows_per_s"))
    writer = {
        name: _num(value.get("rows_per_s"))
        for name, value in (_get(store, "results") or {}).items()
        if isinstance(value, dict)
    }
    return {
        "rows_per_s": rows,
        "copy_ceiling_rows_per_s": copy,
        "naive_rows_per_s": naive,
        "flow_over_ceiling": _ratio(rows, copy),
        "flow_over_naive": _ratio(rows, naive, 1),
        "kafka_consume_ceiling_msgs_per_s": _num(_get(scaling, "bare_consume", "msgs_per_s")),
        "flow_msgs_per_s": _num(_get(scaling, "flow_1p", "msgs_per_s")),
        "rows": _num(_get(flow, "rows")),
        "writer_rows_per_s": writer,
    }


def simulator_section(raw: dict | None) -> dict[str, Any]:
    rate, ceiling = (
        _num(_get(raw, "best_simulator", "rate")),
        _num(_get(raw, "best_ceiling", "rate")),
    )
    by = _get(raw, "best_simulator", "by")
    return {
        "msgs_per_s": rate,
        "mosquitto_ceiling_msgs_per_s": ceiling,
        "ceiling_client": _get(raw, "best_ceiling", "by"),
        "share_of_ceiling": _ratio(rate, ceiling),
        "broker_cores_during_simulator": (
            _num(_get(raw, "broker_load", by, "broker_cores"), 3) if isinstance(by, str) else None
        ),
    }


def _lost(step: dict) -> int:
    """Rows of a step that never arrived: missing after decode was restarted on the same broker
    (``missing_after_restart``, see ``bench.e2e.Pipeline.recount``), else missing at the end of
    its drain."""
    return int(step.get("missing_after_restart", step.get("missing_rows")) or 0)


def _best_step(ramp: dict) -> dict | None:
    """The highest sustained step of a ramp (else its first step)."""
    steps = ramp.get("steps") or []
    good = [s for s in steps if s.get("sustained")]
    if good:
        return max(good, key=lambda s: s["offered_msgs_per_s"])
    return steps[0] if steps else None


def e2e_section(raw: dict | None) -> dict[str, Any]:
    ramps = _get(raw, "ramps") or []
    main = ramps[0] if ramps else {}
    best = _best_step(main) or {}
    steps = [step for ramp in ramps for step in ramp.get("steps", [])]
    at_target = [s for s in main.get("steps", []) if s.get("offered_msgs_per_s") == E2E_RATE_TARGET]
    profiled = next((s for s in main.get("steps", []) if s.get("role") == "profile"), None)
    return {
        "latency_bounded_msgs_per_s": _num(main.get("latency_bounded_msgs_per_s")),
        "latency_bound_ms": main.get("latency_bound_ms"),
        "knee_msgs_per_s": _num(main.get("knee_msgs_per_s")),
        "knee_repeats_p99_ms": main.get("knee_repeats_p99_ms"),
        "knee_repeats_median_p99_ms": main.get("knee_repeats_median_p99_ms"),
        "knee_confirmed": main.get("knee_confirmed"),
        "knees_repeated": main.get("knees_repeated"),
        "wait_profile": (profiled or {}).get("wait_profile"),
        "wait_profile_at_msgs_per_s": _num((profiled or {}).get("offered_msgs_per_s")),
        "max_sustained_msgs_per_s": _num(main.get("max_sustained_msgs_per_s")),
        "config": main.get("config"),
        "at_msgs_per_s": _num(best.get("offered_msgs_per_s")),
        "p50_ms": _num(best.get("p50_ms"), 1),
        "p95_ms": _num(best.get("p95_ms"), 1),
        "p99_ms": _num(best.get("p99_ms"), 1),
        "share_within_1s": best.get("share_within_1s"),
        "missing_rows_total": sum(_lost(s) for s in steps),
        "late_rows_total": sum(int(s.get("missing_rows") or 0) - _lost(s) for s in steps),
        "offset_gaps": {
            outcome: sum((s.get("decode_offset_gaps") or {}).get(outcome, 0) for s in steps)
            for outcome in ("filled", "skipped")
        },
        "at_5000": {
            key: at_target[0].get(key)
            for key in ("sustained", "p50_ms", "p95_ms", "p99_ms", "missing_rows", "drain_s")
        }
        if at_target
        else None,
        "latency_source": _get(raw, "latency_source"),
        "step_seconds": _get(raw, "step_seconds"),
        "drain_limit_s": _get(raw, "drain_limit_s"),
        "ramps": [
            {key: ramp.get(key) for key in ("config", "max_sustained_msgs_per_s")} for ramp in ramps
        ],
        "steps": steps,
    }


def cpu_section(e2e: dict[str, Any]) -> dict[str, Any]:
    """CPU per process group at the reported e2e step: cores used and share of the total."""
    step = next(
        (
            s
            for s in e2e["steps"]
            if s.get("config") == e2e["config"] and s["offered_msgs_per_s"] == e2e["at_msgs_per_s"]
        ),
        None,
    )
    cores = dict((step or {}).get("cpu_cores") or {})
    total = sum(cores.values())
    return {
        "at_msgs_per_s": e2e["at_msgs_per_s"],
        "cores": cores,
        "share": {role: round(value / total, 3) for role, value in cores.items()} if total else {},
    }


def cpu_per_message_section(raw: dict | None, cpus: int) -> dict[str, Any]:
    """CPU µs per published message of every process at the fixed rate of ``bench.e2e``'s CPU
    steps (×1 processes), the bound it implies for this box (``cpus`` cores ÷ the µs of every
    process but the benchmark's own), and the same at ×2."""
    one = _get(raw, "x1", "us_per_msg") or {}
    two = _get(raw, "x2", "us_per_msg") or {}
    ours = {k: v for k, v in one.items() if k != "bench"}
    total = sum(ours.values())
    both = one.get("ingest", 0.0) + one.get("decode", 0.0) if one else None
    return {
        "fixed_rate_msgs_per_s": _num(_get(raw, "rate_msgs_per_s")),
        "us_per_msg": {**one, "ingest_plus_decode": round(both, 1) if both else None},
        "us_per_msg_x2": two,
        "all_processes_us_per_msg": round(total, 1) if total else None,
        "bound_msgs_per_s": round(cpus * 1e6 / total) if total else None,
    }


def knee_cpu_section(e2e: dict[str, Any], cpus: int) -> dict[str, Any]:
    """CPU µs per published message of every process at the latency-bounded rate (each
    process's median over that rate's steps of the headline's configuration, the profiled step
    left out) and the bound it implies. Per-message costs fall as the rate rises (each process's
    fixed wake-ups spread over more messages), so this bound tells how full the box is at the
    headline, where the fixed-rate figure (:func:`cpu_per_message_section`) compares code."""
    rate = e2e.get("latency_bounded_msgs_per_s")
    steps = [
        s["cpu_us_per_msg"]
        for s in e2e.get("steps") or []
        if rate
        and s.get("config") == e2e.get("config")
        and s.get("offered_msgs_per_s") == rate
        and s.get("role") != "profile"  # sampling costs CPU
        and s.get("cpu_us_per_msg")
    ]
    if not steps:
        return {
            "at_knee_msgs_per_s": None,
            "at_knee_us_per_msg": {},
            "at_knee_all_processes_us_per_msg": None,
            "at_knee_bound_msgs_per_s": None,
        }
    roles = sorted({role for step in steps for role in step})
    per_role = {role: median([step[role] for step in steps if role in step]) for role in roles}
    total = sum(value for role, value in per_role.items() if role != "bench")
    return {
        "at_knee_msgs_per_s": rate,
        "at_knee_us_per_msg": {role: round(value, 1) for role, value in per_role.items()},
        "at_knee_all_processes_us_per_msg": round(total, 1) if total else None,
        "at_knee_bound_msgs_per_s": round(cpus * 1e6 / total) if total else None,
    }


def floor_section(raw: dict | None, ingest: dict | None) -> dict[str, Any]:
    """The floor under ingest + decode per message (:mod:`bench.floor`'s pieces, plus ingest's
    MQTT side: ``bench.ingest``'s own client without Kafka) and what the CPU target leaves
    above it for everything else the flows do. None where either benchmark is missing."""
    pieces = dict(_get(raw, "pieces_us_per_msg") or {})
    mqtt = _get(ingest, "ceilings", "own_client_us_per_msg")
    if pieces and mqtt is not None:
        pieces["ingest_mqtt"] = mqtt
    total = round(sum(pieces.values()), 1) if pieces and mqtt is not None else None
    return {
        "us_per_msg": pieces,
        "ingest_plus_decode_us_per_msg": total,
        "target_us_per_msg": CPU_TARGET_US,
        "left_for_the_flows_us_per_msg": round(CPU_TARGET_US - total, 1) if total else None,
        "records_per_msg": _get(raw, "records_per_msg"),
        "rate_msgs_per_s": _get(raw, "rate_msgs_per_s"),
    }


def scaling_section(ingest: dict, e2e_raw: dict | None, scaling: dict | None) -> dict[str, Any]:
    return {
        "efficiency": _get(e2e_raw, "cpu_per_message", "efficiency") or {},
        "cluster_us_per_msg": _get(e2e_raw, "cpu_per_message", "cluster_us_per_msg") or {},
        "ingest_msgs_per_s": {"1": ingest["msgs_per_s"], "2": ingest["msgs_per_s_2p"]},
        "decode_msgs_per_s": {
            "1": _num(_get(scaling, "flow_1p", "msgs_per_s")),
            "2": _num(_get(scaling, "flow_2p", "msgs_per_s")),
        },
        "decode_rows_per_s": {
            "1": _num(_get(scaling, "flow_1p", "rows_per_s")),
            "2": _num(_get(scaling, "flow_2p", "rows_per_s")),
        },
        "e2e_max_sustained_msgs_per_s": {
            ramp.get("config"): _num(ramp.get("max_sustained_msgs_per_s"))
            for ramp in (_get(e2e_raw, "ramps") or [])
        },
    }


def _target(value: Any, threshold: float, what: str, unit: str, below: bool = False) -> dict:
    met = value is not None and (value <= threshold if below else value >= threshold)
    return {
        "value": value,
        "target": threshold,
        "met": bool(met),
        "what": what,
        "unit": unit,
        "below": below,
    }


def memory_section(raw: dict | None) -> dict[str, Any]:
    """Peak RSS of each flow under the flood during the Kafka outage, against its limit."""
    raw = raw or {}
    ingest, decode = raw.get("ingest", {}), raw.get("decode", {})
    return {
        "messages_64k": raw.get("messages_64k"),
        "distinct_topics": raw.get("distinct_topics"),
        "ingest_max_buffer_bytes": ingest.get("max_buffer_bytes"),
        "ingest_idle_rss_mib": ingest.get("idle_rss_mib"),
        "ingest_peak_rss_mib": ingest.get("peak_rss_mib"),
        "ingest_limit_mib": ingest.get("limit_mib"),
        "ingest_read_paused": ingest.get("read_paused"),
        "decode_idle_rss_mib": decode.get("idle_rss_mib"),
        "decode_peak_rss_mib": decode.get("peak_rss_mib"),
        "decode_limit_mib": decode.get("limit_mib"),
        "readings_missing": raw.get("readings_missing"),
        "dead_letters_missing": raw.get("dead_letters_missing"),
    }


def peer_section(raw: dict | None, ran: bool) -> dict[str, Any]:
    """The decode flow against the Quix Streams peer on the same topic in the same run
    (``bench.peer``); ``ran``: the stage was run (its figures are None if it failed)."""
    flow, quix = _num(_get(raw, "flow_rows_per_s")), _num(_get(raw, "quixstreams_rows_per_s"))
    flow_row, quix_row = _get(raw, "flow_us_per_row"), _get(raw, "quixstreams_us_per_row")
    return {
        "ran": ran,
        "quixstreams_rows_per_s": quix,
        "quixstreams_us_per_msg": _num(_get(raw, "quixstreams_us_per_msg"), 1),
        "quixstreams_us_per_row": _num(quix_row, 1),
        "flow_rows_per_s": flow,
        "flow_us_per_msg": _num(_get(raw, "flow_us_per_msg"), 1),
        "flow_us_per_row": _num(flow_row, 1),
        "flow_over_quixstreams": _ratio(flow, quix),
        "flow_cpu_per_row_over_quixstreams": _ratio(_num(flow_row, 1), _num(quix_row, 1)),
        "flow_us_per_msg_net": _num(_get(raw, "flow_us_per_msg_net"), 1),
        "quixstreams_us_per_msg_net": _num(_get(raw, "quixstreams_us_per_msg_net"), 1),
        "flow_cpu_per_row_net_over_quixstreams": _get(raw, "flow_cpu_per_row_net_over_quixstreams"),
        "group_join_s": _num(_get(raw, "group_join_s"), 1),
        "flow_first_row_s": _num(_get(raw, "flow_first_row_s"), 1),
        "quixstreams_first_row_s": _num(_get(raw, "quixstreams_first_row_s"), 1),
        "messages": _num(_get(raw, "messages")),
        "rows": _num(_get(raw, "rows")),
        "load_average": _get(raw, "load_average"),
        "load_average_end": _get(raw, "load_average_end"),
        "quixstreams_version": _get(raw, "versions", "quixstreams", "quixstreams"),
        "quixstreams_us_per_msg_by_step": {
            step: _num(_get(raw, "quixstreams_cost_parts", step, "us_per_msg"), 1)
            for step in ("consume", "decode", "store")
        },
    }


def peer_targets(peer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 22's peer targets, when the peer benchmark ran (not met if it failed)."""
    if not peer["ran"]:
        return {}
    return {
        "peer_flow_over_quixstreams": _target(
            peer["flow_over_quixstreams"],
            1.5,
            "decode flow / Quix Streams peer, rows/s (same topic, same run)",
            "×",
        ),
        "peer_cpu_per_row": _target(
            peer["flow_cpu_per_row_net_over_quixstreams"],
            1.0,
            "decode flow CPU per row / the Quix Streams peer's (whole drain, startup excluded)",
            "×",
            below=True,
        ),
    }


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every target of issues 3, 5, 6 and 11, with the measured value and met / not met."""
    e2e, at = results["e2e"], results["e2e"]["at_5000"] or {}
    p99_at = at.get("p99_ms") if at.get("sustained") else None
    cpu = results["cpu"]["us_per_msg"].get("ingest_plus_decode")
    return {
        "e2e_latency_bounded": _target(
            e2e["latency_bounded_msgs_per_s"] or None,
            LATENCY_BOUNDED_TARGET,
            "end to end at p99 ≤ 1 s, zero loss (ingest ×1 + decode ×1)",
            "msg/s",
        ),
        "cpu_ingest_plus_decode": _target(
            cpu,
            CPU_TARGET_US,
            "ingest + decode CPU per message at "
            f"{_fmt(results['cpu']['fixed_rate_msgs_per_s'])} msg/s",
            "µs",
            below=True,
        ),
        "scale_out_efficiency": _target(
            results["scaling"]["efficiency"].get("ingest_plus_decode"),
            SCALE_OUT_TARGET,
            "scale-out efficiency, ingest + decode (µs/msg ×1 ÷ ×2)",
            "×",
        ),
        "e2e_sustained": _target(
            e2e["max_sustained_msgs_per_s"], E2E_RATE_TARGET, "end-to-end sustained", "msg/s"
        ),
        "e2e_p99_at_5000": _target(
            p99_at, P99_TARGET_MS, "p99 latency at 5,000 msg/s (sustained)", "ms", below=True
        ),
        "e2e_zero_loss": _target(
            e2e["missing_rows_total"] if e2e["steps"] else None,
            0,
            "rows lost over every step (missing after decode restarted)",
            "rows",
            below=True,
        ),
        "decode_core_rate": _target(
            results["decode"]["msgs_per_s"], 150_000, "decode core, one core", "msg/s"
        ),
        "decode_core_vs_naive": _target(
            results["decode"]["ratio_to_naive"], 3.0, "decode core / naive", "×"
        ),
        "decode_flow_vs_copy": _target(
            results["store"]["flow_over_ceiling"],
            COPY_SHARE_TARGET,
            "decode flow / COPY ceiling",
            "share",
        ),
        "decode_flow_vs_naive": _target(
            results["store"]["flow_over_naive"], 10.0, "decode flow / naive pipeline", "×"
        ),
        **memory_targets(results["memory"]),
        **peer_targets(results["peer"]),
    }


def memory_targets(memory: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 19's memory bounds, when the memory benchmark ran."""
    if memory["ingest_peak_rss_mib"] is None:
        return {}
    return {
        "ingest_rss_under_flood": _target(
            memory["ingest_peak_rss_mib"],
            memory["ingest_limit_mib"],
            "ingest peak RSS, 64 KiB flood during a Kafka outage (max buffer + 256 MiB)",
            "MiB",
            below=True,
        ),
        "decode_rss_under_flood": _target(
            memory["decode_peak_rss_mib"],
            memory["decode_limit_mib"],
            "decode peak RSS draining that flood (idle + 256 MiB)",
            "MiB",
            below=True,
        ),
    }


def build_results(parts: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The results document from the raw parts (``decode``, ``ingest``, ``store``,
    ``decode_flow``, ``simulator``, ``e2e``: each a benchmark's JSON, or ``{"error": ...}``)
    and ``meta`` (``machine``, ``versions``, ``mode``, ``started_at``, ``runtime_s``)."""
    ok = {k: v for k, v in parts.items() if isinstance(v, dict) and "error" not in v}
    scaling = _get(ok, "e2e", "decode_scaling")
    results: dict[str, Any] = {
        "mode": meta.get("mode"),
        "started_at": meta.get("started_at"),
        "runtime_s": meta.get("runtime_s"),
        "decode": decode_section(ok.get("decode")),
        "ingest": ingest_section(ok.get("ingest")),
        "store": store_section(ok.get("decode_flow"), ok.get("store"), scaling),
        "simulator": simulator_section(ok.get("simulator")),
        "e2e": e2e_section(ok.get("e2e")),
        "memory": memory_section(ok.get("memory")),
        "peer": peer_section(ok.get("peer"), "peer" in parts),
    }
    cpus = int(meta.get("machine", {}).get("cpus") or 2)
    results["cpu"] = (
        cpu_section(results["e2e"])
        | cpu_per_message_section(_get(ok, "e2e", "cpu_per_message"), cpus)
        | knee_cpu_section(results["e2e"], cpus)
    )
    results["scaling"] = scaling_section(results["ingest"], ok.get("e2e"), scaling)
    results["floor"] = floor_section(ok.get("floor"), ok.get("ingest"))
    results["targets"] = targets(results)
    results["errors"] = {
        name: part["error"]
        for name, part in parts.items()
        if isinstance(part, dict) and "error" in part
    }
    results["machine"] = meta.get("machine", {})
    results["versions"] = meta.get("versions", {})
    return results


# Markdown ---------------------------------------------------------------------------------------


def _missing_cell(step: dict) -> str:
    """Rows missing at the end of the drain, and how many of them never came."""
    missing = _fmt(step.get("missing_rows"))
    if "missing_after_restart" not in step:
        return missing
    return f"{missing} ({_fmt(step['missing_after_restart'])} after decode restarted)"


def _knees_before(knees: list[float]) -> str:
    """The rates repeated and not confirmed before the last one, as a clause (or nothing)."""
    if len(knees) < 2:
        return ""
    return "; repeated before it and not confirmed: " + ", ".join(_fmt(k) for k in knees[:-1])


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "share":
        return f"{value:.0%}"
    if isinstance(value, float) and not value.is_integer():
        text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = f"{value:,.0f}"
    return f"{text} {unit}".strip() if unit not in ("", "share") else text


def peer_lines(p: dict[str, Any]) -> list[str]:
    """The Markdown of the peer comparison (none if the peer benchmark did not run)."""
    if not p["ran"]:
        return []
    if p["quixstreams_rows_per_s"] is None:
        return ["", "## Peer: Quix Streams (same run)", "", "Failed: see the list below."]

    def one(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    steps = ", ".join(f"{k} {one(v)}" for k, v in p["quixstreams_us_per_msg_by_step"].items())
    return [
        "",
        "## Peer: Quix Streams (same run)",
        "",
        f"The same {_fmt(p['messages'])} messages ({_fmt(p['rows'])} rows) drained from one "
        "pre-filled topic into the same tables, interleaved; timed from the first stored row; "
        f"CPU of the job's processes only. Load average {p['load_average']} at the start, "
        f"{p['load_average_end']} at the end.",
        "",
        "| job | rows/s | CPU µs/msg | CPU µs/row | first row stored after |",
        "|---|---|---|---|---|",
        f"| decode flow (Bytewax; storage + decoded topic + DLQ) | {_fmt(p['flow_rows_per_s'])} "
        f"| {one(p['flow_us_per_msg'])} | {one(p['flow_us_per_row'])} "
        f"| {one(p['flow_first_row_s'])} s |",
        f"| Quix Streams {p['quixstreams_version'] or ''} peer (storage only) "
        f"| {_fmt(p['quixstreams_rows_per_s'])} | {one(p['quixstreams_us_per_msg'])} "
        f"| {one(p['quixstreams_us_per_row'])} | {one(p['quixstreams_first_row_s'])} s "
        f"(consumer-group join {one(p['group_join_s'])} s) |",
        "",
        f"Flow / peer: **{one(p['flow_over_quixstreams'], 2)}×** the rows/s, at "
        f"{one(p['flow_cpu_per_row_over_quixstreams'], 2)}× the peer's CPU per row in that "
        f"window; over the whole drain, startup excluded: flow {one(p['flow_us_per_msg_net'])}, "
        f"peer {one(p['quixstreams_us_per_msg_net'])} CPU µs/msg "
        f"(**{one(p['flow_cpu_per_row_net_over_quixstreams'], 2)}×**). The peer's CPU µs per "
        f"message, measured inside it, up to each step: {steps}.",
    ]


def cpu_per_message_lines(c: dict[str, Any]) -> list[str]:
    """CPU µs per message of every process at the fixed rate, ×1 and ×2, and the bound."""
    one, two = c.get("us_per_msg") or {}, c.get("us_per_msg_x2") or {}
    if not one:
        return []
    lines = [
        "",
        f"## CPU per message at a fixed {_fmt(c.get('fixed_rate_msgs_per_s'))} msg/s",
        "",
        "CPU seconds (user + system) of each process tree over the step ÷ messages published, in "
        "µs. Ours: ingest, decode (and the simulator); third-party: Mosquitto, Kafka (Tansu), "
        "PostgreSQL, Redis.",
        "",
        "| process | ×1 µs/msg | ×2 µs/msg |",
        "|---|---|---|",
    ]
    for role in (*CPU_ROLES, "ingest_plus_decode"):
        if role in one or role in two:
            lines.append(f"| {role} | {_fmt(one.get(role))} | {_fmt(two.get(role))} |")
    lines += [
        "",
        f"All processes but the benchmark's own: {_fmt(c.get('all_processes_us_per_msg'))} µs "
        f"per message, so this box's cores bound end to end near "
        f"**{_fmt(c.get('bound_msgs_per_s'))} msg/s** at this mix.",
    ]
    if c.get("at_knee_bound_msgs_per_s"):
        lines += [
            "",
            f"At the latency-bounded rate ({_fmt(c.get('at_knee_msgs_per_s'))} msg/s, median of "
            f"its steps) the same processes used "
            f"{_fmt(c.get('at_knee_all_processes_us_per_msg'))} µs per message (ingest "
            f"{_fmt(c['at_knee_us_per_msg'].get('ingest'))}, decode "
            f"{_fmt(c['at_knee_us_per_msg'].get('decode'))}): each process's fixed wake-ups "
            f"spread over more messages, so the cores bound end to end near "
            f"**{_fmt(c.get('at_knee_bound_msgs_per_s'))} msg/s** there.",
        ]
    return lines


FLOOR_PIECES = {
    "ingest_mqtt": "ingest: its MQTT side (the flow minus Kafka, `bench.ingest`'s own client)",
    "raw_produce": "ingest: the raw record with its four headers, produced",
    "raw_consume": "decode: the raw record read back and made a raw message",
    "decoding": "decode: decoding (`decode_message`)",
    "decoded_produce": "decode: each reading and event encoded and produced",
    "worker_idle": "decode: an idle Bytewax worker's wake-ups",
}


def floor_lines(f: dict[str, Any]) -> list[str]:
    """The floor under the CPU target: its pieces, their sum and what the target leaves."""
    pieces = f.get("us_per_msg") or {}
    if not f.get("ingest_plus_decode_us_per_msg"):
        return []
    lines = [
        "",
        "## The floor under ingest + decode",
        "",
        "The library calls every message needs, each timed alone (`bench.floor`, per message of "
        f"the decode mix, {_fmt(f.get('records_per_msg'))} readings or events each; the "
        f"idle worker at {_fmt(f.get('rate_msgs_per_s'))} msg/s). Storage, the flows' Bytewax "
        "steps, rows and recovery snapshots are left out, so the sum is a floor.",
        "",
        "| piece | µs/msg |",
        "|---|---|",
    ]
    for name, what in FLOOR_PIECES.items():
        if name in pieces:
            lines.append(f"| {what} | {_fmt(pieces[name])} |")
    left = f.get("left_for_the_flows_us_per_msg")
    lines += [
        f"| **floor** | **{_fmt(f['ingest_plus_decode_us_per_msg'])}** |",
        "",
        f"The target of {_fmt(f.get('target_us_per_msg'))} µs/msg leaves "
        f"**{_fmt(left)} µs** per message for everything else ingest and decode do.",
    ]
    return lines


def wait_lines(e: dict[str, Any]) -> list[str]:
    """The wait profile of each flow's busiest threads at the knee (``bench.waits``)."""
    profile = e.get("wait_profile")
    if not profile:
        return []
    lines = [
        "",
        f"## Where the time goes at {_fmt(e.get('wait_profile_at_msgs_per_s'))} msg/s",
        "",
        "Each thread's wall time: on CPU, and per activity the share on CPU and waiting "
        "(py-spy samples, all and running, with per-thread CPU from /proc; a profiled step, "
        "reported apart). `accounted` = share of samples in a named activity.",
        "",
        "| flow | thread | on CPU | accounted | largest shares of wall time (on CPU + waiting) |",
        "|---|---|---|---|---|",
    ]
    for flow, data in profile.items():
        for thread in data.get("threads", [])[:6]:
            top = sorted(thread["categories"].items(), key=lambda kv: -kv[1]["wall"])[:4]
            shares = "; ".join(
                f"{name} {_fmt(v['wall'], 'share')} ({_fmt(v['on_cpu'], 'share')} + "
                f"{_fmt(v['waiting'], 'share')})"
                for name, v in top
            )
            lines.append(
                f"| {flow} | {thread['thread']} | {_fmt(thread['cpu_share'], 'share')} | "
                f"{_fmt(thread['accounted'], 'share')} | {shares} |"
            )
    return lines


def fleet_lines(f: dict[str, Any] | None) -> list[str]:
    """The ``fleet`` section: the latest ``make bench-fleet`` run (its own run, not this one;
    ``bench/results/fleet.md`` has it all)."""
    if not f:
        return []
    curve = "; ".join(
        f"{c['controllers']:,}: {_fmt(c.get('decode_rss_mib'), 'MiB')},"
        f" p99 {_fmt(c.get('p99_s'), 's')}"
        for c in f.get("curve") or []
    )
    return [
        "",
        f"## Fleet of {_fmt(f.get('controllers'))} controllers",
        "",
        f"From `make bench-fleet` ({f.get('mode')} run of {f.get('started_at')}, "
        f"`fleet.md`): {_fmt(f.get('rate_msgs_per_s'))} msg/s over the fleet, rows lost "
        f"{_fmt(f.get('rows_lost'))}; decode's cold start {_fmt(f.get('cold_start_s'), 's')} to "
        f"the first stored row, registry cache warm after {_fmt(f.get('cache_warm_s'), 's')} "
        f"({_fmt(f.get('registry_lookups_per_s'))} lookups/s); decode RSS "
        f"{_fmt(f.get('decode_rss_mib'), 'MiB')}; p99 {_fmt(f.get('p99_s'), 's')}; freshness "
        f"series {_fmt(f.get('freshness_series'))}. Decode RSS and p99 by fleet size: {curve}.",
    ]


def render_markdown(results: dict[str, Any], plots: list[Path]) -> str:
    """The report page: targets, stages against their ceilings, scaling, the ramp, CPU, plots."""
    r, lines = results, []
    lines += [
        "# F2 pipeline — capacity report",
        "",
        f"Run {r['started_at']} ({r['mode']} mode, {_fmt(r['runtime_s'])} s); machine: "
        f"{r['machine'].get('cpus')} CPUs ({r['machine'].get('cpu_model')}), "
        f"load average at start {r['machine'].get('load_average')}. Every figure and its ceiling "
        "come from this run, on this machine.",
        "",
        "## Targets",
        "",
        "| target | measured | required | |",
        "|---|---|---|---|",
    ]
    for t in r["targets"].values():
        sign = "≤" if t.get("below") else "≥"
        lines.append(
            f"| {t['what']} | {_fmt(t['value'], t['unit'])} | {sign} {_fmt(t['target'], t['unit'])}"
            f" | {'**met**' if t['met'] else '**not met**'} |"
        )
    d, i, s, m = r["decode"], r["ingest"], r["store"], r["simulator"]
    lines += [
        "",
        "## Stages against their ceilings (same run)",
        "",
        "| stage | figure | ceiling | share of ceiling | naive baseline | × naive |",
        "|---|---|---|---|---|---|",
        f"| simulator load mode (QoS 1 publish) | {_fmt(m['msgs_per_s'])} msg/s | "
        f"{_fmt(m['mosquitto_ceiling_msgs_per_s'])} msg/s "
        f"(Mosquitto, {m['ceiling_client'] or '—'}; Mosquitto busy "
        f"{_fmt(m['broker_cores_during_simulator'], 'share')} of a core while the simulator ran) | "
        f"{_fmt(m['share_of_ceiling'], 'share')} | — | — |",
        f"| ingest flow ×1 (MQTT → Kafka, QoS 1) | {_fmt(i['msgs_per_s'])} msg/s | "
        f"{_fmt(i['mosquitto_sub_ceiling_msgs_per_s'])} msg/s (mosquitto_sub, C) / "
        f"{_fmt(i['own_client_ceiling_msgs_per_s'])} msg/s (its own MQTT client, no Kafka) | "
        f"{_fmt(i['share_of_mosquitto_sub'], 'share')} / "
        f"{_fmt(i['share_of_own_client'], 'share')} | "
        f"{_fmt(i['mqtt_ceiling_msgs_per_s'])} msg/s (stock paho, a reference) | "
        f"{_fmt(i['share_of_ceiling'])} |",
        f"| decode core (one core) | {_fmt(d['msgs_per_s'])} msg/s | — | — | "
        f"{_fmt(d['naive_msgs_per_s'])} msg/s | {_fmt(d['ratio_to_naive'])} |",
        f"| decode flow, input (Kafka → decode) | {_fmt(s['flow_msgs_per_s'])} msg/s | "
        f"{_fmt(s['kafka_consume_ceiling_msgs_per_s'])} msg/s (bare Kafka consumer) | "
        f"{_fmt(_ratio(s['flow_msgs_per_s'], s['kafka_consume_ceiling_msgs_per_s']), 'share')}"
        " | — | — |",
        f"| decode flow, output (→ storage, all outputs on) | {_fmt(s['rows_per_s'])} rows/s | "
        f"{_fmt(s['copy_ceiling_rows_per_s'])} rows/s (COPY from Python) | "
        f"{_fmt(s['flow_over_ceiling'], 'share')} | {_fmt(s['naive_rows_per_s'])} rows/s | "
        f"{_fmt(s['flow_over_naive'])} |",
    ]
    if s["writer_rows_per_s"]:
        writer = ", ".join(f"{k} {_fmt(v)}" for k, v in s["writer_rows_per_s"].items())
        lines += ["", f"Storage writer alone (rows/s, `bench.store`): {writer}."]
    lines += peer_lines(r["peer"])
    sc = r["scaling"]
    lines += [
        "",
        "## Scaling (1 and 2 processes)",
        "",
        "| | 1 process | 2 processes |",
        "|---|---|---|",
        f"| ingest flow, msg/s (queued sessions drained) | {_fmt(sc['ingest_msgs_per_s']['1'])} |"
        f" {_fmt(sc['ingest_msgs_per_s']['2'])} |",
        f"| decode flow, msg/s (pre-filled topic drained) | {_fmt(sc['decode_msgs_per_s']['1'])} |"
        f" {_fmt(sc['decode_msgs_per_s']['2'])} |",
        f"| decode flow, rows/s | {_fmt(sc['decode_rows_per_s']['1'])} |"
        f" {_fmt(sc['decode_rows_per_s']['2'])} |",
    ]
    eff, extra = sc["efficiency"], sc["cluster_us_per_msg"]
    if eff:
        lines.append(
            f"| scale-out efficiency at a fixed rate (CPU µs/msg ×1 ÷ ×2) | ingest "
            f"{_fmt(eff.get('ingest'))}, decode {_fmt(eff.get('decode'))}, both "
            f"{_fmt(eff.get('ingest_plus_decode'))} | cluster exchange: ingest "
            f"+{_fmt(extra.get('ingest'))} µs/msg, decode +{_fmt(extra.get('decode'))} µs/msg |"
        )
    for config, rate in sc["e2e_max_sustained_msgs_per_s"].items():
        shown = _fmt(rate) if rate else "none sustained"
        lines.append(f"| end to end ({config}), max sustained msg/s | {shown} | |")
    e = r["e2e"]
    repeats = ", ".join(_fmt(p) for p in e.get("knee_repeats_p99_ms") or [])
    lines += [
        "",
        "## End to end: simulator → Mosquitto → ingest → Kafka → decode → PostgreSQL",
        "",
        f"Latency-bounded throughput: **{_fmt(e.get('latency_bounded_msgs_per_s'))} msg/s** at "
        f"p99 ≤ {_fmt(e.get('latency_bound_ms'))} ms with zero loss ({e['config']}): the knee "
        f"{_fmt(e.get('knee_msgs_per_s'))} msg/s run "
        f"{len(e.get('knee_repeats_p99_ms') or [])} more times, p99 {repeats} ms "
        f"(median {_fmt(e.get('knee_repeats_median_p99_ms'))} ms; "
        f"{'confirmed' if e.get('knee_confirmed') else 'not confirmed: the next lower rate'})"
        + _knees_before(e.get("knees_repeated") or [])
        + ".",
        "",
        f"Maximum sustained (secondary): **{_fmt(e['max_sustained_msgs_per_s'])} msg/s** "
        f"({e['config']}); "
        f"at {_fmt(e['at_msgs_per_s'])} msg/s latency p50 {_fmt(e['p50_ms'])} ms, "
        f"p95 {_fmt(e['p95_ms'])} ms, p99 {_fmt(e['p99_ms'])} ms. Latency: {e['latency_source']}"
        f" (device timestamp → database commit). Steps of {e['step_seconds']} s; sustained = no "
        f"row missing, ≥ 95 % of the offered rate published, backlog drained within "
        f"{e['drain_limit_s']} s of the last publish. Offset gaps met by the decode source over "
        f"all steps: {e['offset_gaps']['filled']} read again and filled (the broker had made a "
        f"later batch readable first), {e['offset_gaps']['skipped']} passed over.",
        "",
        "| config | step | offered | published | stored rows | missing | drain s | p50 ms "
        "| p95 ms | p99 ms | ≤ 1 s | max Kafka backlog | sustained |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for st in e["steps"]:
        lines.append(
            f"| {st['config']} | {st.get('role', 'ramp')} | {_fmt(st['offered_msgs_per_s'])} | "
            f"{_fmt(st['achieved_msgs_per_s'])} | {_fmt(st['stored_rows'])} | "
            f"{_missing_cell(st)} | {st['drain_s']} | {_fmt(st['p50_ms'])} | "
            f"{_fmt(st['p95_ms'])} | {_fmt(st['p99_ms'])} | "
            f"{_fmt(st['share_within_1s'], 'share')} | {_fmt(st['max_kafka_backlog_msgs'])} | "
            f"{'yes' if st['sustained'] else 'no'} |"
        )
    mem = r["memory"]
    if mem["ingest_peak_rss_mib"] is not None:
        lines += [
            "",
            "## Memory under a flood during a Kafka outage",
            "",
            f"Kafka frozen (SIGSTOP) while {_fmt(mem['messages_64k'])} messages of 64 KiB and "
            f"{_fmt(mem['distinct_topics'])} on distinct topics (half of them 256 bytes long) were "
            f"published; then thawed and drained. Ingest (buffer limit "
            f"{_fmt((mem['ingest_max_buffer_bytes'] or 0) / 2**20)} MiB, stopped reading: "
            f"{'yes' if mem['ingest_read_paused'] else 'no'}): idle "
            f"{_fmt(mem['ingest_idle_rss_mib'], 'MiB')}, peak "
            f"{_fmt(mem['ingest_peak_rss_mib'], 'MiB')} (limit "
            f"{_fmt(mem['ingest_limit_mib'], 'MiB')}). Decode: idle "
            f"{_fmt(mem['decode_idle_rss_mib'], 'MiB')}, peak "
            f"{_fmt(mem['decode_peak_rss_mib'], 'MiB')} (limit "
            f"{_fmt(mem['decode_limit_mib'], 'MiB')}). Readings missing: "
            f"{_fmt(mem['readings_missing'])}; dead letters missing: "
            f"{_fmt(mem['dead_letters_missing'])}.",
        ]
    c = r["cpu"]
    if c["cores"]:
        lines += [
            "",
            f"## CPU per process group at {_fmt(c['at_msgs_per_s'])} msg/s",
            "",
            "| process | cores | share |",
            "|---|---|---|",
        ]
        for role, cores in sorted(c["cores"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {role} | {cores:.2f} | {_fmt(c['share'].get(role), 'share')} |")
    lines += cpu_per_message_lines(c)
    lines += floor_lines(r.get("floor") or {})
    lines += wait_lines(e)
    lines += fleet_lines(r.get("fleet"))
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in plots]
    if r["errors"]:
        lines += ["", "## Benchmarks that failed in this run", ""]
        lines += [f"- `{name}`: {error}" for name, error in r["errors"].items()]
    lines += ["", f"Versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}.", ""]
    return "\n".join(lines)


# Plots ------------------------------------------------------------------------------------------


def render_plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """The three PNG plots; [] (and a message) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "bench: matplotlib is not installed; plots skipped "
            "(pip install -e '.[perf]' to get them)",
            flush=True,
        )
        return []
    steps = results["e2e"]["steps"]
    configs = list(dict.fromkeys(s["config"] for s in steps))
    written = []

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    top = max((s["offered_msgs_per_s"] for s in steps), default=1)
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="offered")
    for config in configs:
        mine = [s for s in steps if s["config"] == config]
        x = [s["offered_msgs_per_s"] for s in mine]
        ax.plot(
            x, [s["achieved_msgs_per_s"] for s in mine], marker="o", label=f"{config}: published"
        )
        ax.plot(
            x,
            [s.get("delivered_msgs_per_s", s["decode_msgs_per_s"]) for s in mine],
            marker="x",
            linestyle="--",
            label=f"{config}: delivered to storage (published / (step + drain))",
        )
        bad = [s for s in mine if not s["sustained"]]
        ax.scatter(
            [s["offered_msgs_per_s"] for s in bad],
            [s["achieved_msgs_per_s"] for s in bad],
            s=120,
            facecolors="none",
            edgecolors="red",
        )
    ax.axvline(E2E_RATE_TARGET, color="green", linewidth=0.8, label="target 5,000 msg/s")
    ax.set(
        xlabel="offered msg/s", ylabel="msg/s", title="End-to-end throughput (red: not sustained)"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(plt, fig, folder / PLOTS["throughput"]))

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for config in configs:
        mine = [s for s in steps if s["config"] == config and s["p50_ms"] is not None]
        x = [s["offered_msgs_per_s"] for s in mine]
        for key, style in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", ":")):
            ax.plot(
                x, [s[key] for s in mine], marker="o", linestyle=style, label=f"{config}: {key[:3]}"
            )
    ax.axhline(P99_TARGET_MS, color="red", linewidth=0.8, label="p99 target 1 s")
    ax.set_yscale("log")
    ax.set(xlabel="offered msg/s", ylabel="ms (device time → commit)", title="End-to-end latency")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    written.append(_save(plt, fig, folder / PLOTS["latency"]))

    main = [s for s in steps if s["config"] == results["e2e"]["config"]]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    labels = [f"{s['offered_msgs_per_s']:,.0f}" for s in main]
    bottom = [0.0] * len(main)
    for role in CPU_ROLES:
        values = [s["cpu_cores"].get(role, 0.0) for s in main]
        if any(values):
            ax.bar(labels, values, bottom=bottom, label=role)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.axhline(results["machine"].get("cpus") or 2, color="grey", linestyle=":", label="cores")
    ax.set(
        xlabel="offered msg/s",
        ylabel="cores (CPU s / s)",
        title=f"CPU by process group ({results['e2e']['config']})",
    )
    ax.legend(fontsize=7)
    written.append(_save(plt, fig, folder / PLOTS["cpu"]))
    waits = _waits_plot(plt, results["e2e"])
    if waits is not None:
        written.append(_save(plt, waits, folder / PLOTS["waits"]))
    return written


def _waits_plot(plt: Any, e2e: dict[str, Any]) -> Any:
    """Each profiled thread's wall time by activity: on CPU (solid) and waiting (hatched)."""
    profile = e2e.get("wait_profile")
    if not profile:
        return None
    rows = [
        (f"{flow}: {t['thread']}", t)
        for flow, data in profile.items()
        for t in data.get("threads", [])[:5]
    ]
    activities = list(dict.fromkeys(name for _, t in rows for name in t["categories"]).keys())
    colours = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 2), dpi=100)
    labels = [label for label, _ in rows]
    left = [0.0] * len(rows)
    for index, name in enumerate(activities):
        colour = colours(index % 20)
        for part, hatch in (("on_cpu", None), ("waiting", "//")):
            widths = [t["categories"].get(name, {}).get(part, 0.0) for _, t in rows]
            ax.barh(
                labels, widths, left=left, color=colour, hatch=hatch, edgecolor="white",
                label=name if part == "on_cpu" else None,
            )  # fmt: skip
            left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set(
        xlabel="share of wall time (solid: on CPU, hatched: waiting)",
        xlim=(0, 1),
        title=f"Where the time goes at {_fmt(e2e.get('wait_profile_at_msgs_per_s'))} msg/s",
    )
    ax.legend(fontsize=6, loc="lower center", bbox_to_anchor=(0.5, -0.6), ncol=3)
    return fig


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report [RESULTS_JSON]``: render ``latest.md`` and the plots again from a
    results document (default ``bench/results/latest.json``) without running anything."""
    from bench.common import RESULTS_DIR

    source = Path(argv[0]) if argv else RESULTS_DIR / "latest.json"
    results = json.loads(source.read_text())
    plots = render_plots(results, source.parent)
    (source.parent / "latest.md").write_text(render_markdown(results, plots))
    print(f"wrote {source.parent / 'latest.md'} and {len(plots)} plots")
    return 0


def _with_fleet(results: dict[str, Any], folder: Path) -> None:
    """Carry the latest ``make bench-fleet`` results (``fleet.json``) into ``results``."""
    path = folder / "fleet.json"
    if "fleet" in results or not path.exists():
        return
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        return
    fleet = doc.get("fleet") or {}
    if fleet.get("rows_stored") is not None:
        results["fleet"] = fleet | {"started_at": doc.get("started_at"), "mode": doc.get("mode")}


def write_report(results: dict[str, Any], folder: Path, stamp: str) -> list[Path]:
    """``<stamp>.json``, ``latest.json``, the plots and ``latest.md`` in ``folder`` (with the
    ``fleet`` section of ``fleet.json``, ``make bench-fleet``'s own results, if there are any)."""
    folder.mkdir(parents=True, exist_ok=True)
    _with_fleet(results, folder)
    text = json.dumps(results, indent=2) + "\n"
    (folder / f"{stamp}.json").write_text(text)
    (folder / "latest.json").write_text(text)
    plots = render_plots(results, folder)
    page = render_markdown(results, plots)
    (folder / "latest.md").write_text(page)
    shutil.copyfile(folder / "latest.md", folder / f"{stamp}.md")
    return [folder / f"{stamp}.json", folder / "latest.json", folder / "latest.md", *plots]


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
