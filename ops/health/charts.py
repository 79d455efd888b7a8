"""PNG charts of the pipeline's performance (``f2 performance``; Grafana does not run here).

Source: the local Prometheus (``f2 stack up --monitoring``, port 29090 + the stack's offset, or
``F2_PROMETHEUS_URL``) when it answers: throughput per stage, end-to-end latency percentiles, dead
letters by reason and consumer lag over the last ``--minutes`` (default 30). Otherwise the
benchmark results in ``bench/results/*.json``: every throughput figure (``*_per_s``, ``rate``)
and, where a result has them, latency percentiles. Charts go to ``<stack>/performance/`` (or
``--out``); the command prints their paths.

matplotlib is an optional extra (``pip install -e '.[perf]'``), imported only here; without it the
command says how to install it and exits 3.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

from schemas.settings import DEFAULT_PORTS, Config, read_stack_info

# chart file -> (title, y label, {series label: PromQL})
PROM_CHARTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "throughput": (
        "Throughput per stage",
        "per second",
        {
            "ingest: MQTT received": "sum(rate(f2_ingest_received_total[1m]))",
            "ingest: Kafka raw delivered": (
                'sum(rate(f2_kafka_sink_delivered_total{topic="raw_iot_data"}[1m]))'
            ),
            "decode: messages": "sum(rate(f2_decode_messages_total[1m]))",
            "decode: readings": "sum(rate(f2_decode_readings_total[1m]))",
            "store: rows inserted": 'sum(rate(f2_store_rows_total{outcome="inserted"}[1m]))',
        },
    ),
    "latency": (
        "End-to-end latency (ingest receive → database commit)",
        "seconds",
        {
            f"p{q}": f"histogram_quantile(0.{q}, sum by (le) "
            '(rate(f2_e2e_latency_seconds_bucket{since="receive"}[1m])))'
            for q in ("50", "90", "99")
        },
    ),
    "dlq": (
        "Dead letters by reason",
        "per second",
        {
            "{stage}: {reason}": "sum by (stage, reason) (rate(f2_decode_errors_total[1m]))",
            "ingest: {reason}": "sum by (reason) (rate(f2_ingest_dead_lettered_total[1m]))",
        },
    ),
    "lag": (
        "Decode consumer lag per partition",
        "records",
        {"partition {partition}": "sum by (partition) (f2_kafka_consumer_lag)"},
    ),
}


def prometheus_url(config: Config) -> str:
    """``F2_PROMETHEUS_URL``, else the local stack's Prometheus."""
    info = read_stack_info(Path(config.connections.stack_dir))
    default = f"http://127.0.0.1:{DEFAULT_PORTS['prometheus'] + info.port_offset}"
    return (config.stack.prometheus_url or default).rstrip("/")


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def prometheus_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def query_range(url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    """``/api/v1/query_range`` result series."""
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    return _get_json(f"{url}/api/v1/query_range?{params}")["data"]["result"]


def prometheus_series(url: str, minutes: float) -> dict[str, tuple[str, str, dict]]:
    """Chart name -> (title, y label, {series label: [(epoch s, value)]})."""
    end = time.time()
    start = end - minutes * 60
    step = max(5.0, minutes * 60 / 300)
    charts = {}
    for name, (title, unit, queries) in PROM_CHARTS.items():
        series: dict[str, list[tuple[float, float]]] = {}
        for label, expr in queries.items():
            for result in query_range(url, expr, start, end, step):
                points = [(float(t), float(v)) for t, v in result["values"] if v != "NaN"]
                if any(v for _, v in points):  # an all-zero series only crowds the legend
                    series[label.format(**result["metric"])] = points
        charts[name] = (title, unit, series)
    return charts


def bench_figures(folder: Path) -> dict[str, dict[str, float]]:
    """From ``bench/results/*.json``: {"throughput"|"latency": {"<bench>: <key>": value}}."""
    figures: dict[str, dict[str, float]] = {"throughput": {}, "latency": {}}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        for key, value in _flatten(data):
            label = f"{path.stem}: {key}"
            if "target" in key:  # goals, not measurements
                continue
            if re.search(r"(_per_s|\brate|_per_s\.[\w]+)$", key) or key.endswith("_per_s"):
                figures["throughput"][label] = value
            elif re.search(r"(^|[._])p\d{2,3}(_s|_ms)?$", key):
                figures["latency"][label] = value
    return figures


def _flatten(data: object, prefix: str = "") -> list[tuple[str, float]]:
    if isinstance(data, dict):
        out = []
        for key, value in data.items():
            out += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(data, int | float) and not isinstance(data, bool):
        return [(prefix, float(data))]
    return []


def load_pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def render_prometheus(plt, charts: dict, out: Path) -> list[Path]:
    from datetime import datetime

    written = []
    for name, (title, unit, series) in charts.items():
        fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
        for label, points in sorted(series.items()):
            ax.plot(
                [datetime.fromtimestamp(t) for t, _ in points],
                [v for _, v in points],
                label=label,
                linewidth=1.6,
            )
        if not series:
            ax.text(
                0.5,
                0.5,
                "no data in this range",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=14,
                color="grey",
            )
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(loc="upper left", fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def render_bench(plt, figures: dict[str, dict[str, float]], out: Path) -> list[Path]:
    written = []
    titles = {
        "throughput": ("Benchmark throughput (bench/results)", "per second"),
        "latency": ("Benchmark latency percentiles (bench/results)", "seconds"),
    }
    for name, values in figures.items():
        if not values:
            continue
        labels = list(values)
        fig, ax = plt.subplots(figsize=(10, 0.4 * len(labels) + 1.5), dpi=100)
        bars = ax.barh(labels, [values[k] for k in labels], color="#3b7dd8")
        ax.bar_label(bars, labels=[f"{values[k]:,.0f}" for k in labels], padding=3, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(titles[name][0])
        ax.set_xlabel(titles[name][1])
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        path = out / f"bench_{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
