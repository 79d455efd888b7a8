"""``f2 performance``: PNG charts of the pipeline's performance; see :mod:`ops.health.charts`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ops.health.charts import (
    bench_figures,
    load_pyplot,
    prometheus_ready,
    prometheus_series,
    prometheus_url,
    render_bench,
    render_prometheus,
)
from schemas.settings import Config, project_root


def register(subparsers: argparse._SubParsersAction) -> None:
    perf = subparsers.add_parser("performance", help="render performance charts (PNG)")
    perf.add_argument("--minutes", type=float, default=30.0, help="Prometheus time range")
    perf.add_argument("--out", type=Path, help="output folder (default <stack>/performance)")
    perf.add_argument(
        "--source", choices=["auto", "prometheus", "bench"], default="auto", help="data source"
    )
    perf.set_defaults(func=cmd_performance)


def cmd_performance(args: argparse.Namespace, config: Config) -> int:
    plt = load_pyplot()
    if plt is None:
        print(
            "f2 performance: matplotlib is not installed (optional extra). Install it with:\n"
            f"  {sys.executable} -m pip install -e '.[perf]'    (or: pip install matplotlib)",
            file=sys.stderr,
        )
        return 3
    out = args.out or Path(config.connections.stack_dir) / "performance"
    out.mkdir(parents=True, exist_ok=True)
    url = prometheus_url(config)
    use_prom = args.source == "prometheus" or (args.source == "auto" and prometheus_ready(url))
    if use_prom:
        written = render_prometheus(plt, prometheus_series(url, args.minutes), out)
        source = f"Prometheus {url}, last {args.minutes:.0f} min"
    else:
        results = (project_root() or Path.cwd()) / "bench" / "results"
        written = render_bench(plt, bench_figures(results), out)
        source = f"benchmark results in {results} (no Prometheus answering at {url})"
    if not written:
        print(f"f2 performance: nothing to chart from {source}", file=sys.stderr)
        return 1
    print(f"charts from {source}:")
    for path in written:
        print(f"  {path}")
    return 0
