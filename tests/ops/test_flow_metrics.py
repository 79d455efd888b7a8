"""Rates and quantiles from two scrapes, and the PromQL name extraction of the dashboard test."""

from __future__ import annotations

import pytest

from ops.health import flow_metrics
from ops.health.checks import DEGRADED, DOWN, OK, Component, overall
from tests.integration.obs_support import exposed_names, promql_names

TEXT = """# TYPE f2_x counter
f2_x_total{reason="a"} {a}
f2_x_total{reason="b"} 1
# TYPE f2_h histogram
f2_h_bucket{le="1.0"} {h1}
f2_h_bucket{le="2.0"} {h2}
f2_h_bucket{le="+Inf"} {h2}
f2_h_sum 0
f2_h_count {h2}
"""


def scrape(at: float, a: int, h1: int, h2: int) -> flow_metrics.Scrape:
    text = TEXT.replace("{a}", str(a)).replace("{h1}", str(h1)).replace("{h2}", str(h2))
    return flow_metrics.parse(text, at)


def test_rate_and_quantile_between_scrapes():
    old, new = scrape(0, 10, 0, 0), scrape(10, 30, 50, 100)
    assert flow_metrics.rate(old, new, "f2_x_total", reason="a") == 2.0
    assert flow_metrics.rates_by(old, new, "f2_x_total", "reason") == {"a": 2.0, "b": 0.0}
    assert flow_metrics.quantile(old, new, 0.5, "f2_h") == 1.0
    assert flow_metrics.quantile(old, new, 0.75, "f2_h") == pytest.approx(1.5)
    assert flow_metrics.quantile(new, new, 0.5, "f2_h") is None


def test_overall_status_rules():
    ok, down = Component(OK, 1, ""), Component(DOWN, 1, "")
    assert overall({"mqtt": ok, "redis": ok}) == OK
    assert overall({"mqtt": ok, "redis": down}) == DEGRADED
    assert overall({"timeseries_db": down, "redis": ok}) == DOWN
    assert overall({"decode": Component(DEGRADED, 1, "stuck")}) == DEGRADED


def test_promql_names_and_exposed_names():
    expr = 'sum by (le) (rate(f2_h_bucket{since="x"}[5m])) / on(job) f2:rec offset 5m > 1e3'
    assert promql_names(expr) == {"f2_h_bucket", "f2:rec"}
    names = exposed_names(TEXT)
    assert {"f2_x_total", "f2_h_bucket", "f2_h_count"} <= names
    assert "f2_nope" not in names
