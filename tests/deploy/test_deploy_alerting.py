"""The alerting, network-policy and broker-sizing rules of ``make deploy-check`` on small inputs
(each rule must be able to fail), and the checks on the project's files when the deploy tools
are installed (``make deploy-check`` installs them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.stack import broker_sizing
from tools import deploy_alerting as alerting
from tools.deploy_check import (
    Tools,
    check_alert_selectors,
    check_alert_tests,
    check_alertmanager,
    check_broker_sizing,
    compose_broker_problems,
    rule_copy_problems,
    tools_dir,
)
from tools.deploy_netpol import network_policy_problems

ROOT = Path(__file__).resolve().parents[2]
GROUPS = [
    {
        "name": "g",
        "rules": [
            {"alert": "FlowDown", "expr": 'up{job=~"ingest|decode"} == 0', "labels": {}},
            {"alert": "HealthDown", "expr": "up{job='health'} == 0", "labels": {}},
            {"alert": "Lag", "expr": "sum by (job) (lag) > 0", "labels": {"severity": "warning"}},
        ],
    }
]


# --- relabelling and discovery -----------------------------------------------------------------


def test_relabel_follows_prometheus() -> None:
    labels = {"__meta_a": "x-ingest", "job": "j"}
    configs = [{"source_labels": ["__meta_a"], "regex": "x-(.*)", "target_label": "job"}]
    assert alerting.relabel(labels, configs)["job"] == "ingest"  # type: ignore[index]
    unanchored = [{"source_labels": ["__meta_a"], "regex": "ingest", "target_label": "job"}]
    assert alerting.relabel(labels, unanchored)["job"] == "j"  # type: ignore[index]
    keep = [{"source_labels": ["__meta_a"], "regex": "y.*", "action": "keep"}]
    assert alerting.relabel(labels, keep) is None
    emptied = [{"source_labels": ["missing"], "target_label": "job"}]
    assert "job" not in alerting.relabel(labels, emptied)  # type: ignore[operator]
    braces = [{"source_labels": ["__meta_a"], "regex": "(x)-(.*)", "replacement": "${2}_$1",
               "target_label": "job"}]  # fmt: skip
    assert alerting.relabel(labels, braces)["job"] == "ingest_x"  # type: ignore[index]
    labelmap = [{"regex": "__meta_(.*)", "action": "labelmap"}]
    assert alerting.relabel(labels, labelmap)["a"] == "x-ingest"  # type: ignore[index]
    with pytest.raises(ValueError, match="hashmod"):
        alerting.relabel(labels, [{"action": "hashmod", "modulus": 2, "target_label": "h"}])


def test_job_matchers_are_parsed_from_promql() -> None:
    expr = 'up{job=~"ingest|decode", instance!="x"} == 0 or max by (job) (up{job = `health`})'
    assert alerting.job_matchers(expr) == [("=~", "ingest|decode"), ("=", "health")]
    assert alerting.matcher_selects("=~", "ingest|decode", "decode")
    assert not alerting.matcher_selects("=~", "ingest", "ingest-0")  # anchored


def _chart(job_label: str | None) -> list[dict]:
    labels = {"app.kubernetes.io/instance": "f2", "app.kubernetes.io/component": "ingest"}
    monitor_spec: dict = {
        "selector": {"matchLabels": labels},
        "endpoints": [{"port": "metrics", "path": "/metrics"}],
    }
    if job_label:
        monitor_spec["jobLabel"] = job_label
    return [
        {"kind": "Service", "metadata": {"name": "f2-f2-pipeline-ingest", "namespace": "f2",
                                         "labels": labels},
         "spec": {"selector": {"app.kubernetes.io/component": "ingest"},
                  "ports": [{"name": "metrics", "port": 3031, "targetPort": "metrics"}]}},
        {"kind": "StatefulSet", "metadata": {"name": "f2-f2-pipeline-ingest", "namespace": "f2"},
         "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [
             {"name": "ingest", "args": ["ingest"],
              "ports": [{"name": "metrics", "containerPort": 3031}]}]}}}},
        {"kind": "ServiceMonitor", "metadata": {"name": "f2-ingest", "namespace": "f2"},
         "spec": monitor_spec},
    ]  # fmt: skip


def test_a_service_monitor_without_job_label_cannot_fire_the_flow_alert() -> None:
    docs = _chart(None)
    targets = alerting.monitor_targets(docs, alerting.pods_of(docs))
    assert [(t.component, t.job) for t in targets] == [("ingest", "f2-f2-pipeline-ingest")]
    path = alerting.ScrapePath("chart", tuple(targets), frozenset({"ingest"}))
    problems = alerting.alert_selector_problems(GROUPS, [path])
    assert any("scraped as job='f2-f2-pipeline-ingest'" in p for p in problems)
    assert any(
        p.startswith('FlowDown: job=~"ingest|decode" matches no series of chart') for p in problems
    )

    docs = _chart("app.kubernetes.io/component")
    targets = alerting.monitor_targets(docs, alerting.pods_of(docs))
    assert [t.job for t in targets] == ["ingest"]
    path = alerting.ScrapePath("chart", tuple(targets), frozenset({"ingest"}))
    assert alerting.alert_selector_problems(GROUPS, [path]) == []


def test_bytewax_pod_monitor_jobs() -> None:
    def pod(release: str) -> dict:
        labels = {
            "app.kubernetes.io/name": "bytewax",
            "app.kubernetes.io/instance": release,
            "bytewax.io/dataflow-info": release,
        }
        return {
            "namespace": "f2",
            "name": f"{release}-0",
            "workload": f"StatefulSet/{release}",
            "labels": labels,
            "annotations": {},
            "containers": [
                {
                    "name": "process",
                    "ports": [
                        {"name": "process", "containerPort": 9999},
                        {"name": "api", "containerPort": 3030},
                    ],
                }
            ],
        }

    pods = [pod("f2-decode"), pod("ingest"), pod("wordcount")]
    official = {
        "kind": "PodMonitor",
        "metadata": {"name": "f2-decode", "namespace": "f2"},
        "spec": {
            "selector": {"matchLabels": pods[0]["labels"]},
            "podMetricsEndpoints": [{"port": "api", "path": "/metrics"}],
        },
    }
    flow = {
        "sourceLabels": ["__meta_kubernetes_pod_label_bytewax_io_dataflow_info"],
        "regex": "(.+-)?(ingest|decode)",
    }
    ours = {"kind": "PodMonitor", "metadata": {"name": "flows", "namespace": "f2"},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "bytewax"}},
                     "podMetricsEndpoints": [{"port": "api", "relabelings": [
                         {**flow, "action": "keep"},
                         {**flow, "replacement": "$2", "targetLabel": "job"}]}]}}  # fmt: skip
    assert [t.job for t in alerting.monitor_targets([official], pods)] == ["f2/f2-decode"]
    assert [(t.component, t.job) for t in alerting.monitor_targets([ours], pods)] == [
        ("decode", "decode"),
        ("ingest", "ingest"),
    ]


def test_every_alert_needs_a_firing_and_a_quiet_case() -> None:
    tests = [{"tests": [{"alert_rule_test": [
        {"alertname": "FlowDown", "exp_alerts": [{"exp_labels": {}}]},
        {"alertname": "FlowDown", "exp_alerts": []},
        {"alertname": "HealthDown", "exp_alerts": [{"exp_labels": {}}]},
        {"alertname": "Gone", "exp_alerts": []},
    ]}]}]  # fmt: skip
    assert alerting.alert_test_problems(GROUPS, tests) == [
        "HealthDown: no test case where it stays quiet",
        "Lag: no test case where it fires",
        "Lag: no test case where it stays quiet",
        "Gone: tested but not an alert of the rules",
    ]


def test_inhibitions_must_name_what_exists() -> None:
    config = {"inhibit_rules": [
        {"source_matchers": ['alertname="FlowDown"', 'job="decode"'],
         "target_matchers": ['alertname=~"Lag|HealthDown"']},
        {"source_matchers": ['alertname="DependencyDown"', 'component="postgres"'],
         "target_matchers": ['alertname=~"Lag|Typo"']},
        {"source_matchers": ['component="kafka"'], "target_matchers": ['alertname="Lag"']},
    ]}  # fmt: skip
    assert alerting.inhibit_problems(config, alerting.alerts_of(GROUPS), ["kafka", "mqtt"]) == [
        'inhibit rule 2: source alertname="DependencyDown" selects nothing',
        "inhibit rule 2: source names unknown alertname DependencyDown",
        'inhibit rule 2: source component="postgres" selects nothing',
        "inhibit rule 2: source names unknown component postgres",
        "inhibit rule 2: target names unknown alertname Typo",
        "inhibit rule 3: its source names no alertname",
    ]


def test_rule_copies_must_be_identical(tmp_path: Path) -> None:
    (tmp_path / "prometheus" / "rules").mkdir(parents=True)
    chart = tmp_path / "k8s" / "f2-pipeline" / "files" / "prometheus-rules"
    chart.mkdir(parents=True)
    (tmp_path / "prometheus" / "rules" / "a.yml").write_text("groups: []\n")
    (chart / "a.yml").write_text("groups: []\n")
    assert rule_copy_problems(tmp_path) == []
    (chart / "a.yml").write_text("groups: [] # edited\n")
    (chart / "b.yml").write_text("groups: []\n")
    assert len(rule_copy_problems(tmp_path)) == 2
    assert rule_copy_problems(ROOT / "deploy") == []


# --- network policies --------------------------------------------------------------------------


def _flow_docs(cluster_from: list[dict]) -> list[dict]:
    ingest = {"app.kubernetes.io/name": "f2-pipeline", "app.kubernetes.io/component": "ingest"}
    health = {"app.kubernetes.io/name": "f2-pipeline", "app.kubernetes.io/component": "health"}
    dns = {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"port": 53, "protocol": "UDP"}],
    }

    def policy(name: str, labels: dict, ingress: list, egress: list) -> dict:
        return {
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "f2"},
            "spec": {
                "podSelector": {"matchLabels": labels},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": egress,
            },
        }

    def workload(kind: str, labels: dict, ports: list) -> dict:
        return {
            "kind": kind,
            "metadata": {"name": labels["app.kubernetes.io/component"], "namespace": "f2"},
            "spec": {
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "ports": ports}]},
                }
            },
        }

    return [
        workload("StatefulSet", ingest, [{"name": "cluster", "containerPort": 2101},
                                         {"name": "metrics", "containerPort": 3031}]),
        workload("Deployment", health, [{"name": "http", "containerPort": 8000}]),
        policy("ingest", ingest,
               [{"from": cluster_from, "ports": [{"port": 2101}]},
                {"from": [{"podSelector": {"matchLabels": health}}], "ports": [{"port": 3031}]}],
               [{"to": [{"podSelector": {"matchLabels": ingest}}], "ports": [{"port": 2101}]},
                dns]),
        policy("health", health, [],
               [{"to": [{"podSelector": {"matchLabels": ingest}}], "ports": [{"port": 3031}]},
                dns]),
    ]  # fmt: skip


def test_network_policies_keep_the_cluster_port_to_its_flow() -> None:
    ingest = {"app.kubernetes.io/name": "f2-pipeline", "app.kubernetes.io/component": "ingest"}
    assert network_policy_problems(_flow_docs([{"podSelector": {"matchLabels": ingest}}])) == []
    everyone = network_policy_problems(_flow_docs([]))
    assert "StatefulSet/ingest: Deployment/health reaches its cluster port 2101" in everyone
    assert any("a stranger pod of its namespace reaches its cluster port" in p for p in everyone)
    release = {"app.kubernetes.io/name": "f2-pipeline"}
    wide = network_policy_problems(_flow_docs([{"podSelector": {"matchLabels": release}}]))
    assert (
        "NetworkPolicy/ingest: the cluster port of StatefulSet/ingest admits Deployment/health"
        in wide
    )
    other_ns = network_policy_problems(_flow_docs([{"namespaceSelector": {}}]))
    assert any("admits a peer that is not a podSelector" in p for p in other_ns)
    unselected = _flow_docs([{"podSelector": {"matchLabels": ingest}}])[:-1]
    problems = network_policy_problems(unselected)
    assert "Deployment/health: no NetworkPolicy isolates its ingress" in problems
    assert any("may reach any outside address" in p for p in problems)


# --- broker sizing -----------------------------------------------------------------------------


def test_broker_sizing_rule(tmp_path: Path) -> None:
    mib = broker_sizing.MIB
    assert broker_sizing.parse_size("1536m") == 1536 * mib
    assert broker_sizing.parse_size("2Gi") == broker_sizing.parse_size("2g") == 2048 * mib
    assert broker_sizing.required_memory(4, 56 * mib) == (4 * 56 * 7.5 + 256) * mib
    assert broker_sizing.conf_limits("max_queued_bytes 10\n") == {
        "max_queued_bytes": 10,
        "max_queued_messages": 1000,  # Mosquitto's default
    }
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("max_queued_messages 3000000\nmax_queued_bytes 1073741824\n")
    model = {
        "services": {
            "mosquitto": {
                "volumes": [f"{conf}:/mosquitto/config/mosquitto.conf:ro"],
                "deploy": {"resources": {"limits": {"memory": "1536m"}}},
            },
            "ingest": {"environment": {"F2_INGEST_PARTITIONS": "4"}},
        }
    }
    problems, _ = compose_broker_problems(model, tmp_path)
    assert problems == [
        "compose mosquitto: memory limit 1536 MiB < 30976 MiB needed by 4 sessions x "
        "max_queued_bytes 1024 MiB x 7.5 + 256 MiB (ops/stack/broker_sizing.py)"
    ]
    conf.write_text("max_queued_messages 917505\nmax_queued_bytes 58720256\n")
    model["services"]["mosquitto"]["deploy"]["resources"]["limits"]["memory"] = "2g"
    problems, _ = compose_broker_problems(model, tmp_path)
    assert len(problems) == 1 and "max_queued_messages 917505 > 917504" in problems[0]
    conf.write_text("max_queued_messages 900000\nmax_queued_bytes 58720256\n")
    assert compose_broker_problems(model, tmp_path)[0] == []


# --- the project's files (needs the deploy tools: `make deploy-check` installs them) ----------


@pytest.fixture(scope="module")
def tools() -> Tools:
    found = Tools(tools_dir())
    if not (found.helm.exists() and found.python.exists()):
        pytest.skip("deploy tools not installed (run `make deploy-check` once)")
    return found


def test_project_alert_selectors_match_every_scrape_path(tools: Tools) -> None:
    results = check_alert_selectors(tools, ROOT)
    assert [r.status for r in results] == ["PASS"] * len(results), results


def test_project_alerts_are_tested_routed_and_the_broker_sized(tools: Tools) -> None:
    deploy = ROOT / "deploy"
    results = [check_alert_tests(tools, deploy), check_broker_sizing(tools, deploy)]
    if Path("/usr/bin/amtool").exists():
        results += check_alertmanager(tools, deploy)
    assert [r.status for r in results] == ["PASS"] * len(results), results
