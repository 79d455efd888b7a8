"""The alerting rules of ``make deploy-check``, as pure functions on parsed files
(``tools/deploy_check.py`` reads the files, renders the charts and runs them):

- **scrape paths**: what ``job`` each F2 process gets on every way Prometheus scrapes it: static
  ``scrape_configs`` (the host, compose and the local stack), ``kubernetes_sd_configs`` with role
  ``pod`` (the annotations example), and the Prometheus Operator's ServiceMonitor and PodMonitor
  (simulated: the operator's default ``job``, its ``jobLabel``, then the endpoint's
  ``relabelings``), all through one implementation of Prometheus's relabelling;
- **alert selectors**: every ``job``/``job=~`` matcher of an alert expression against those jobs
  (:func:`alert_selector_problems`);
- **alert tests**: every alert has a ``promtool test rules`` case that fires it and one where it
  stays quiet (:func:`alert_test_problems`);
- **Alertmanager**: the inhibition rules name alerts, components and jobs that exist
  (:func:`inhibit_problems`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

COMPONENTS = ("ingest", "decode", "health")
WORKLOAD_KINDS = frozenset({"StatefulSet", "Deployment", "DaemonSet", "Job", "CronJob"})
DEFAULT_REGEX = "(.*)"

Labels = dict[str, str]


@dataclass(frozen=True)
class Target:
    """One scrape target: the F2 process it reaches (``None``: something else) and its job."""

    component: str | None
    job: str
    where: str = ""


@dataclass(frozen=True)
class ScrapePath:
    """One way Prometheus scrapes the pipeline, the targets it yields, and the F2 processes it is
    meant to reach."""

    name: str
    targets: tuple[Target, ...]
    expected: frozenset[str] = field(default_factory=lambda: frozenset(COMPONENTS))


# ---------------------------------------------------------------------------------------------
# Prometheus relabelling (the semantics of prometheus/model/relabel)


def _sanitize(name: str) -> str:
    """A Kubernetes label or annotation name as Prometheus's meta label suffix."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _anchored(regex: str) -> re.Pattern[str]:
    return re.compile(f"^(?:{regex})$", re.S)


def _expand(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.ExpandString``: ``$1``, ``${1}``, ``$name``, ``$$``; an unknown group is
    empty."""

    def group(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:
            return ""
        return value or ""

    return re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", group, template)


def relabel(labels: Labels, configs: Iterable[dict]) -> Labels | None:
    """``labels`` after ``relabel_configs`` (snake_case keys), or None when the target is
    dropped. Supports replace, keep, drop, keepequal, dropequal, labelmap, labeldrop, labelkeep,
    lowercase, uppercase; hashmod is refused (it cannot be proved offline)."""
    out = dict(labels)
    for config in configs:
        action = str(config.get("action", "replace")).lower()
        regex = _anchored(str(config.get("regex", DEFAULT_REGEX)))
        separator = str(config.get("separator", ";"))
        value = separator.join(out.get(s, "") for s in config.get("source_labels") or [])
        target = str(config.get("target_label", ""))
        replacement = str(config.get("replacement", "$1"))
        if action == "replace":
            match = regex.match(value)
            if match is None:
                continue
            name = _expand(target, match)
            result = _expand(replacement, match)
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
                continue
            if result:
                out[name] = result
            else:
                out.pop(name, None)
        elif action == "keep":
            if not regex.match(value):
                return None
        elif action == "drop":
            if regex.match(value):
                return None
        elif action == "keepequal":
            if value != out.get(target, ""):
                return None
        elif action == "dropequal":
            if value == out.get(target, ""):
                return None
        elif action in ("lowercase", "uppercase"):
            out[target] = value.lower() if action == "lowercase" else value.upper()
        elif action == "labelmap":
            for name, label_value in list(out.items()):
                match = regex.match(name)
                if match:
                    out[_expand(replacement, match)] = label_value
        elif action in ("labeldrop", "labelkeep"):
            keep = action == "labelkeep"
            out = {k: v for k, v in out.items() if bool(regex.match(k)) == keep}
        else:
            raise ValueError(f"relabel action {action!r} cannot be evaluated offline")
    return out


def operator_relabelings(items: Iterable[dict] | None) -> list[dict]:
    """Prometheus Operator ``relabelings`` (camelCase) as ``relabel_configs``."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return [{names.get(k, k): v for k, v in item.items()} for item in items or []]


# ---------------------------------------------------------------------------------------------
# Discovery: pods of rendered manifests, and the targets of each kind of scrape configuration


def selector_matches(selector: dict | None, labels: Labels) -> bool:
    """A Kubernetes LabelSelector (``matchLabels``, ``matchExpressions``) against ``labels``;
    an empty selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = [str(v) for v in expression.get("values") or []]
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def pods_of(docs: Iterable[dict]) -> list[dict]:
    """One pod per workload of rendered manifests: namespace, name, labels, annotations,
    containers (name, args, ports)."""
    pods = []
    for obj in docs:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        spec = obj.get("spec", {})
        if obj["kind"] == "CronJob":
            spec = spec.get("jobTemplate", {}).get("spec", {})
        template = spec.get("template", {})
        meta = template.get("metadata") or {}
        pods.append(
            {
                "namespace": obj["metadata"].get("namespace", "default"),
                "name": f"{obj['metadata']['name']}-0",
                "workload": f"{obj['kind']}/{obj['metadata']['name']}",
                "labels": {k: str(v) for k, v in (meta.get("labels") or {}).items()},
                "annotations": {k: str(v) for k, v in (meta.get("annotations") or {}).items()},
                "containers": (template.get("spec") or {}).get("containers") or [],
            }
        )
    return pods


def pod_component(pod: dict) -> str | None:
    """The F2 process a pod runs: the f2 image's command (its first container's first
    argument), or for Bytewax's own chart the flow its release (``app.kubernetes.io/instance``)
    is named after: ``ingest``, ``decode``, or with a prefix (``f2-ingest``, deploy/waxctl/)."""
    for container in pod["containers"][:1]:
        args = [str(a) for a in container.get("args") or []]
        if args and args[0] in COMPONENTS:
            return args[0]
    labels = pod["labels"]
    if labels.get("app.kubernetes.io/name") == "bytewax":
        flow = labels.get("app.kubernetes.io/instance", "").rpartition("-")[2]
        return flow if flow in ("ingest", "decode") else None
    return None


def _pod_meta(pod: dict, container: dict, port: dict) -> Labels:
    meta = {
        "__address__": f"10.0.0.1:{port.get('containerPort')}",
        "__meta_kubernetes_namespace": pod["namespace"],
        "__meta_kubernetes_pod_name": pod["name"],
        "__meta_kubernetes_pod_container_name": container.get("name", ""),
        "__meta_kubernetes_pod_container_port_name": str(port.get("name", "")),
        "__meta_kubernetes_pod_container_port_number": str(port.get("containerPort", "")),
        "__meta_kubernetes_pod_container_port_protocol": str(port.get("protocol", "TCP")),
    }
    for prefix, values in (("label", pod["labels"]), ("annotation", pod["annotations"])):
        for key, value in values.items():
            meta[f"__meta_kubernetes_pod_{prefix}_{_sanitize(key)}"] = value
            meta[f"__meta_kubernetes_pod_{prefix}present_{_sanitize(key)}"] = "true"
    return meta


def _pod_ports(pod: dict) -> Iterable[tuple[dict, dict]]:
    for container in pod["containers"]:
        for port in container.get("ports") or []:
            yield container, port


def _target(labels: Labels | None, pod: dict, where: str) -> Target | None:
    if labels is None:
        return None
    return Target(pod_component(pod), labels.get("job", ""), where)


def kubernetes_sd_targets(scrape: dict, pods: Iterable[dict]) -> list[Target]:
    """Targets of a scrape config with ``kubernetes_sd_configs`` role ``pod``."""
    targets = []
    for sd in scrape.get("kubernetes_sd_configs") or []:
        if sd.get("role") != "pod":
            raise ValueError(f"{scrape['job_name']}: role {sd.get('role')} is not simulated")
        names = ((sd.get("namespaces") or {}).get("names")) or []
        for pod in pods:
            if names and pod["namespace"] not in names:
                continue
            for container, port in _pod_ports(pod):
                labels = {"job": scrape["job_name"], **_pod_meta(pod, container, port)}
                where = f"pod {pod['name']} port {port.get('name') or port.get('containerPort')}"
                target = _target(relabel(labels, scrape.get("relabel_configs") or []), pod, where)
                if target:
                    targets.append(target)
    return targets


def static_targets(scrape: dict, component_of: Callable[[str], str | None]) -> list[Target]:
    """Targets of a scrape config's ``static_configs``: ``component_of`` names the F2 process
    behind an address (``None``: not one)."""
    targets = []
    for group in scrape.get("static_configs") or []:
        for address in group.get("targets") or []:
            labels = {
                "job": scrape["job_name"],
                "__address__": str(address),
                **{k: str(v) for k, v in (group.get("labels") or {}).items()},
            }
            kept = relabel(labels, scrape.get("relabel_configs") or [])
            if kept is not None:
                targets.append(Target(component_of(str(address)), kept.get("job", ""), address))
    return targets


def prometheus_targets(
    config: dict, pods: Iterable[dict], component_of: Callable[[str], str | None]
) -> list[Target]:
    """Every target of a Prometheus configuration (static and Kubernetes pod discovery)."""
    pods = list(pods)
    targets: list[Target] = []
    for scrape in config.get("scrape_configs") or []:
        targets += static_targets(scrape, component_of)
        targets += kubernetes_sd_targets(scrape, pods)
    return targets


def service_monitor_targets(monitor: dict, docs: Iterable[dict], pods: list[dict]) -> list[Target]:
    """Targets of a ServiceMonitor as the Prometheus Operator builds them (role endpoints): job =
    the Service's name, or the value of its ``jobLabel`` label, then ``relabelings``."""
    docs = list(docs)
    namespace = monitor["metadata"].get("namespace", "default")
    spec = monitor.get("spec", {})
    names = ((spec.get("namespaceSelector") or {}).get("matchNames")) or [namespace]
    job_label = spec.get("jobLabel")
    targets = []
    for service in docs:
        if service.get("kind") != "Service":
            continue
        meta = service["metadata"]
        service_ns = meta.get("namespace", "default")
        labels = {k: str(v) for k, v in (meta.get("labels") or {}).items()}
        if service_ns not in names or not selector_matches(spec.get("selector"), labels):
            continue
        selected = [
            p
            for p in pods
            if p["namespace"] == service_ns
            and selector_matches(
                {"matchLabels": service["spec"].get("selector") or {}}, p["labels"]
            )
            and service["spec"].get("selector")
        ]
        for endpoint in spec.get("endpoints") or []:
            for port in service["spec"].get("ports") or []:
                if endpoint.get("port") != port.get("name"):
                    continue
                for pod in selected:
                    base = {
                        "job": f"serviceMonitor/{namespace}/{monitor['metadata']['name']}",
                        "__meta_kubernetes_namespace": service_ns,
                        "__meta_kubernetes_service_name": meta["name"],
                        "__meta_kubernetes_endpoint_port_name": str(port.get("name", "")),
                        "__address__": f"10.0.0.1:{port.get('targetPort', port.get('port'))}",
                    }
                    for key, value in labels.items():
                        base[f"__meta_kubernetes_service_label_{_sanitize(key)}"] = value
                        base[f"__meta_kubernetes_service_labelpresent_{_sanitize(key)}"] = "true"
                    container = pod["containers"][0] if pod["containers"] else {}
                    base.update(
                        {
                            k: v
                            for k, v in _pod_meta(pod, container, {}).items()
                            if k.startswith(
                                ("__meta_kubernetes_pod_label", "__meta_kubernetes_pod_anno")
                            )
                            or k == "__meta_kubernetes_pod_name"
                        }
                    )
                    configs = [
                        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"}
                    ]
                    if job_label:
                        configs.append(
                            {
                                "source_labels": [
                                    f"__meta_kubernetes_service_label_{_sanitize(job_label)}"
                                ],
                                "target_label": "job",
                                "regex": "(.+)",
                            }
                        )
                    configs += operator_relabelings(endpoint.get("relabelings"))
                    where = f"Service {meta['name']} port {port.get('name')} ({pod['workload']})"
                    target = _target(relabel(base, configs), pod, where)
                    if target:
                        targets.append(target)
    return targets


def pod_monitor_targets(monitor: dict, pods: Iterable[dict]) -> list[Target]:
    """Targets of a PodMonitor as the Prometheus Operator builds them: job =
    ``<namespace>/<name>``, or the value of its ``jobLabel`` pod label, then ``relabelings``."""
    namespace = monitor["metadata"].get("namespace", "default")
    spec = monitor.get("spec", {})
    names = ((spec.get("namespaceSelector") or {}).get("matchNames")) or [namespace]
    job_label = spec.get("jobLabel")
    targets = []
    for pod in pods:
        if pod["namespace"] not in names or not selector_matches(
            spec.get("selector"), pod["labels"]
        ):
            continue
        for endpoint in spec.get("podMetricsEndpoints") or []:
            for container, port in _pod_ports(pod):
                if endpoint.get("port") != port.get("name"):
                    continue
                labels = {"job": "", **_pod_meta(pod, container, port)}
                configs: list[dict] = [
                    {
                        "target_label": "job",
                        "replacement": f"{namespace}/{monitor['metadata']['name']}",
                    }
                ]
                if job_label:
                    configs.append(
                        {
                            "source_labels": [
                                f"__meta_kubernetes_pod_label_{_sanitize(job_label)}"
                            ],
                            "target_label": "job",
                            "regex": "(.+)",
                        }
                    )
                configs += operator_relabelings(endpoint.get("relabelings"))
                where = f"pod {pod['name']} port {port.get('name')}"
                target = _target(relabel(labels, configs), pod, where)
                if target:
                    targets.append(target)
    return targets


def monitor_targets(docs: Iterable[dict], pods: list[dict]) -> list[Target]:
    """Targets of every ServiceMonitor and PodMonitor of ``docs``."""
    docs = list(docs)
    targets: list[Target] = []
    for monitor in docs:
        if monitor.get("kind") == "ServiceMonitor":
            targets += service_monitor_targets(monitor, docs, pods)
        elif monitor.get("kind") == "PodMonitor":
            targets += pod_monitor_targets(monitor, pods)
    return targets


# ---------------------------------------------------------------------------------------------
# Alert rules against scrape paths

JOB_MATCHER = re.compile(
    r"""(?<![\w.$])job\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)"""
)


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]
    if text[0] == "'":
        text = '"' + text[1:-1].replace('"', '\\"') + '"'
    return str(json.loads(text))


def job_matchers(expr: str) -> list[tuple[str, str]]:
    """The ``job`` label matchers of a PromQL expression: (operator, value)."""
    return [(op, _unquote(value)) for op, value in JOB_MATCHER.findall(expr)]


def matcher_selects(op: str, value: str, job: str) -> bool:
    """Whether ``job<op>"value"`` selects ``job`` (regexes are anchored, as in PromQL)."""
    if op == "=":
        return job == value
    if op == "!=":
        return job != value
    selected = _anchored(value).match(job) is not None
    return selected if op == "=~" else not selected


def rules_of(groups: Iterable[dict]) -> list[dict]:
    return [rule for group in groups for rule in group.get("rules") or []]


def alerts_of(groups: Iterable[dict]) -> dict[str, dict]:
    """Alert name -> its rule."""
    return {rule["alert"]: rule for rule in rules_of(groups) if "alert" in rule}


def alert_selector_problems(groups: Iterable[dict], paths: Iterable[ScrapePath]) -> list[str]:
    """Alerts whose ``job`` matchers select none of the jobs a scrape path gives the processes
    they mean, and scrape paths that do not give each F2 process its name as ``job``."""
    paths = list(paths)
    problems: list[str] = []
    for path in paths:
        scraped = {t.component for t in path.targets if t.component}
        for missing in sorted(path.expected - scraped):
            problems.append(f"{path.name}: does not scrape {missing}")
        for target in path.targets:
            if target.component and target.job != target.component:
                problems.append(
                    f"{path.name}: {target.component} ({target.where}) is scraped as "
                    f"job={target.job!r}, not {target.component!r}"
                )
    for name, rule in alerts_of(groups).items():
        for op, value in job_matchers(str(rule.get("expr", ""))):
            if op in ("!=", "!~"):
                continue
            meant = {c for c in COMPONENTS if matcher_selects(op, value, c)}
            if not meant:
                problems.append(f'{name}: job{op}"{value}" selects none of {", ".join(COMPONENTS)}')
            for path in paths:
                reached = [t for t in path.targets if t.component in meant]
                jobs = sorted({t.job for t in reached})
                if reached and not any(matcher_selects(op, value, job) for job in jobs):
                    problems.append(
                        f'{name}: job{op}"{value}" matches no series of {path.name} '
                        f"(its jobs for {', '.join(sorted(meant))}: {', '.join(jobs)})"
                    )
    return list(dict.fromkeys(problems))


# ---------------------------------------------------------------------------------------------
# promtool tests and Alertmanager


def alert_test_problems(groups: Iterable[dict], tests: Iterable[dict]) -> list[str]:
    """Alerts without a ``promtool test rules`` case that fires them (``exp_alerts`` not empty)
    and one where they stay quiet (``exp_alerts`` empty), and cases of unknown alerts."""
    fired: set[str] = set()
    quiet: set[str] = set()
    named: set[str] = set()
    for test_file in tests:
        for test in test_file.get("tests") or []:
            for case in test.get("alert_rule_test") or []:
                name = case.get("alertname", "")
                named.add(name)
                (fired if case.get("exp_alerts") else quiet).add(name)
    alerts = alerts_of(groups)
    problems = []
    for name in alerts:
        if name not in fired:
            problems.append(f"{name}: no test case where it fires")
        if name not in quiet:
            problems.append(f"{name}: no test case where it stays quiet")
    problems += [
        f"{name}: tested but not an alert of the rules" for name in sorted(named - set(alerts))
    ]
    return problems


MATCHER = re.compile(
    r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(.*?))\s*$'
)


def parse_matcher(text: str) -> tuple[str, str, str]:
    """An Alertmanager matcher ``name="value"`` (or ``=~``, ``!=``, ``!~``; quotes optional)."""
    match = MATCHER.match(text)
    if match is None:
        raise ValueError(f"not a matcher: {text!r}")
    name, op, quoted, bare = match.groups()
    value = json.loads(f'"{quoted}"') if quoted is not None else bare
    return name, op, value


def _rule_matchers(rule: dict, side: str) -> list[tuple[str, str, str]]:
    matchers = [parse_matcher(m) for m in rule.get(f"{side}_matchers") or []]
    matchers += [(k, "=", str(v)) for k, v in (rule.get(f"{side}_match") or {}).items()]
    matchers += [(k, "=~", str(v)) for k, v in (rule.get(f"{side}_match_re") or {}).items()]
    return matchers


def _named_values(op: str, value: str) -> list[str]:
    """The literal names a positive matcher spells out (``A``, or ``A|B|C``), else []."""
    if op == "=":
        return [value]
    if op == "=~" and re.fullmatch(r"[\w-]+(\|[\w-]+)*", value):
        return value.split("|")
    return []


def inhibit_problems(
    config: dict, alerts: Iterable[str], components: Iterable[str], jobs: Iterable[str] = COMPONENTS
) -> list[str]:
    """Inhibition rules that name an alert, a health component or a job that does not exist, or
    whose source or target selects no alert at all."""
    known = {"alertname": set(alerts), "component": set(components), "job": set(jobs)}
    problems = []
    for index, rule in enumerate(config.get("inhibit_rules") or [], start=1):
        for side in ("source", "target"):
            matchers = _rule_matchers(rule, side)
            if not any(name == "alertname" for name, _, _ in matchers):
                problems.append(f"inhibit rule {index}: its {side} names no alertname")
            for name, op, value in matchers:
                if name not in known:
                    continue
                if op in ("=", "=~") and not any(
                    matcher_selects(op, value, candidate) for candidate in known[name]
                ):
                    problems.append(
                        f'inhibit rule {index}: {side} {name}{op}"{value}" selects nothing'
                    )
                for literal in _named_values(op, value):
                    if literal not in known[name]:
                        problems.append(
                            f"inhibit rule {index}: {side} names unknown {name} {literal}"
                        )
    return problems


def route_expectations(
    groups: Iterable[dict], receivers: dict[str, str]
) -> list[tuple[str, dict[str, str], str]]:
    """(alert, its labels, the receiver its severity should reach) for every alert; an alert
    whose severity has no receiver gets ``""``."""
    out = []
    for name, rule in alerts_of(groups).items():
        labels = {"alertname": name, **{k: str(v) for k, v in (rule.get("labels") or {}).items()}}
        out.append((name, labels, receivers.get(labels.get("severity", ""), "")))
    return out
