"""docs/METRICS.md lists exactly the metrics the code declares, with their types and labels."""

from __future__ import annotations

import re

from tests.ops.metrics_catalog import ROOT, collected_metrics, declared_metrics


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    rows = {}
    for line in (ROOT / "docs" / "METRICS.md").read_text().splitlines():
        match = re.match(r"\| `(f2_\w+)` \| ([a-z ]+) \| ([^|]+) \|", line)
        if match:
            labels = {label.strip() for label in match.group(3).split(",")} - {"-", ""}
            rows[match.group(1)] = (match.group(2).strip(), frozenset(labels))
    return rows


def test_metrics_table_matches_the_code():
    code = {
        name: (kind, frozenset(labels))
        for name, (kind, labels) in {**declared_metrics(), **collected_metrics()}.items()
    }
    docs = documented()
    assert len(code) > 40
    assert sorted(set(code) - set(docs)) == [], "in the code, missing from docs/METRICS.md"
    assert sorted(set(docs) - set(code)) == [], "in docs/METRICS.md, not in the code"
    wrong = {name: (docs[name], code[name]) for name in code if docs[name] != code[name]}
    assert wrong == {}, "documented (type, labels) differ from the code's"
