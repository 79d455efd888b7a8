"""The project's Prometheus metrics as declared in the code: name, type and labels.

Two sources: every ``Counter``/``Gauge``/``Histogram``/``Summary`` constructed with an ``f2_`` name
in ``connectors/``, ``dataflows/`` and ``ops/`` (read from the source with ``ast``), and the
custom collectors (device freshness, Mosquitto ``$SYS``), whose families are collected from a
populated instance. Names are the ones PromQL uses: counters with their ``_total`` suffix.
"""

from __future__ import annotations

import ast
from pathlib import Path

from schemas.settings import project_root

ROOT = project_root() or Path.cwd()
KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary"}


def declared_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{name: (type, labels)}`` of every f2_ metric constructed in the code."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for folder in ("connectors", "dataflows", "ops"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if kind not in KINDS or not node.args:
                    continue
                first = node.args[0]
                if not (isinstance(first, ast.Constant) and str(first.value).startswith("f2_")):
                    continue
                labels: tuple[str, ...] = ()
                label_node = node.args[2] if len(node.args) > 2 else None
                for keyword in node.keywords:
                    if keyword.arg == "labelnames":
                        label_node = keyword.value
                if isinstance(label_node, ast.List | ast.Tuple):
                    labels = tuple(element.value for element in label_node.elts)
                name = first.value + ("_total" if kind == "Counter" else "")
                found[name] = (KINDS[kind], labels)
    return found


def collected_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{name: (type, labels)}`` of the custom collectors, from populated instances."""
    from connectors.decode_step import DecodeOutput
    from connectors.freshness import FreshnessSettings, FreshnessTracker
    from connectors.store_rows import RowBatch
    from ops.health.broker_stats import BrokerStats
    from schemas.records import ControllerEntry, SensorEntry
    from schemas.settings import load_settings

    tracker = FreshnessTracker(FreshnessSettings(silent_after_s=0.0), clock=lambda: 100.0)
    sensor = SensorEntry(sensor_id=7, template_id=1, model="m", frame_format="f", datapoints=())
    entry = ControllerEntry(mac="aabbccddeeff", controller_id=1, sensors={"1:1": sensor})
    tracker.inspect("freshness", DecodeOutput(RowBatch(entries=[entry]), [], []))
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for collector in (tracker, BrokerStats(load_settings())):
        for family in collector.collect():
            labels = sorted({k for s in family.samples for k in s.labels if k != "le"})
            kind = {"gaugehistogram": "gauge histogram"}.get(family.type, family.type)
            name = family.name + ("_total" if family.type == "counter" else "")
            found[name] = (kind, tuple(labels))
    return found
