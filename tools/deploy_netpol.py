"""NetworkPolicy rules of ``make deploy-check``, on rendered manifests (pure functions).

:func:`allowed` evaluates Kubernetes NetworkPolicy semantics for one connection (source and
destination: namespace, its labels, pod labels or an IP outside the cluster; port number or name
and protocol): a direction is open when no policy of that direction selects the pod, or when a
rule of one that does matches both peer and port. :func:`network_policy_problems` then proves, for
every workload the chart renders:

- every pod is selected by policies of both directions (nothing is open by default);
- no rule opens a port to everyone (no ``from``/``to`` and no ``ports``);
- a flow's Bytewax cluster port (the container port ``cluster``) accepts only ``podSelector``
  peers of the same namespace that select the flow's own pods and no other workload's, and the
  flow's pods can reach each other on it;
- the ingress of the cluster port admits no other workload; no stranger pod of the namespace, no
  pod of another namespace and no outside address reaches the cluster port or a metrics port;
  the health API reaches the flows' metrics;
- every pod reaches the cluster DNS; no pod reaches an outside address on a port that is not one
  of its dependencies'.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from tools.deploy_alerting import pods_of, selector_matches

STRANGER = {"app.kubernetes.io/name": "f2-netpol-probe"}
OUTSIDE_IP = "203.0.113.7"  # TEST-NET-3: an address outside the cluster
OUTSIDE_PORT = 443  # not a dependency's port


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace, its labels, pod labels) or an outside IP."""

    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ip: str = ""

    @staticmethod
    def pod(namespace: str, labels: dict[str, str]) -> Peer:
        return Peer(namespace, labels, {"kubernetes.io/metadata.name": namespace})


DNS = Peer.pod("kube-system", {"k8s-app": "kube-dns"})


def _types(policy: dict) -> set[str]:
    spec = policy.get("spec", {})
    types = spec.get("policyTypes")
    if types:
        return set(types)
    return {"Ingress", *(["Egress"] if "egress" in spec else [])}


def _selecting(policies: Iterable[dict], pod: Peer, direction: str) -> list[dict]:
    return [
        p
        for p in policies
        if direction in _types(p)
        and p["metadata"].get("namespace", "default") == pod.namespace
        and selector_matches(p.get("spec", {}).get("podSelector"), pod.labels)
    ]


def peer_matches(peer: dict, other: Peer, policy_namespace: str) -> bool:
    """Whether a NetworkPolicyPeer admits ``other``."""
    if "ipBlock" in peer:
        if not other.ip:
            return False  # pod-to-pod traffic is matched by selectors here
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        if address not in ipaddress.ip_network(block["cidr"], strict=False):
            return False
        return not any(
            address in ipaddress.ip_network(e, strict=False) for e in block.get("except") or []
        )
    if other.ip:
        return False
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selector_matches(peer["podSelector"], other.labels)


def port_matches(ports: list[dict] | None, number: int, name: str, protocol: str) -> bool:
    """Whether a rule's ``ports`` (none: all) admit the port ``number``/``name``."""
    if not ports:
        return True
    for port in ports:
        if port.get("protocol", "TCP") != protocol:
            continue
        value = port.get("port")
        if value is None or value == number or (name and value == name):
            return True
        if isinstance(value, int) and port.get("endPort") and value <= number <= port["endPort"]:
            return True
    return False


def _direction_allows(
    policies: list[dict], pod: Peer, other: Peer, direction: str, port: tuple[int, str, str]
) -> bool:
    selecting = _selecting(policies, pod, direction)
    if not selecting:
        return True
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        namespace = policy["metadata"].get("namespace", "default")
        for rule in policy["spec"].get(key) or []:
            if not port_matches(rule.get("ports"), *port):
                continue
            if not rule.get(peers) or any(peer_matches(p, other, namespace) for p in rule[peers]):
                return True
    return False


def allowed(
    policies: list[dict],
    source: Peer,
    destination: Peer,
    number: int,
    name: str = "",
    protocol: str = "TCP",
) -> bool:
    """Whether ``source`` may open a connection to ``destination`` on that port (egress of the
    source, if it is a pod, and ingress of the destination, if it is a pod)."""
    port = (number, name, protocol)
    if source.namespace and not source.ip:
        if not _direction_allows(policies, source, destination, "Egress", port):
            return False
    if destination.namespace and not destination.ip:
        return _direction_allows(policies, destination, source, "Ingress", port)
    return True


def ingress_allowed(
    policies: list[dict], source: Peer, destination: Peer, number: int, name: str = ""
) -> bool:
    """Whether the destination pod's ingress admits ``source`` on that port (TCP), whatever the
    source's own egress says."""
    return _direction_allows(policies, destination, source, "Ingress", (number, name, "TCP"))


def _container_port(pod: dict, name: str) -> int | None:
    for container in pod["containers"]:
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return None


def _metrics_ports(pod: dict) -> list[tuple[int, str]]:
    return [
        (int(port["containerPort"]), port["name"])
        for container in pod["containers"]
        for port in container.get("ports") or []
        if port.get("name") in ("metrics", "http")
    ]


def network_policy_problems(docs: list[dict]) -> list[str]:
    """Problems of the rendered NetworkPolicies against the rendered workloads (see the module)."""
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    pods = pods_of(docs)
    problems: list[str] = []
    for policy in policies:
        name = policy["metadata"]["name"]
        for key, peers in (("ingress", "from"), ("egress", "to")):
            for rule in policy["spec"].get(key) or []:
                if not rule.get(peers) and not rule.get("ports"):
                    problems.append(f"NetworkPolicy/{name}: a rule opens {key} to all, on any port")
    for pod in pods:
        me = Peer.pod(pod["namespace"], pod["labels"])
        where = pod["workload"]
        for direction in ("Ingress", "Egress"):
            if not _selecting(policies, me, direction):
                problems.append(f"{where}: no NetworkPolicy isolates its {direction.lower()}")
        if not allowed(policies, me, DNS, 53, "", "UDP"):
            problems.append(f"{where}: cannot reach the cluster DNS (kube-dns, UDP 53)")
        if allowed(policies, me, Peer(ip=OUTSIDE_IP), OUTSIDE_PORT):
            problems.append(f"{where}: may reach any outside address on port {OUTSIDE_PORT}")
        strangers = {
            "a stranger pod of its namespace": Peer.pod(pod["namespace"], STRANGER),
            "a pod of another namespace": Peer.pod("elsewhere", pod["labels"]),
            "an outside address": Peer(ip=OUTSIDE_IP),
        }
        for number, port_name in _metrics_ports(pod):
            for label, stranger in strangers.items():
                if allowed(policies, stranger, me, number, port_name):
                    problems.append(f"{where}: {label} reaches its port {port_name} ({number})")
        cluster = _container_port(pod, "cluster")
        if cluster is None:
            continue
        problems += _cluster_port_problems(policies, pods, pod, cluster)
        for label, stranger in strangers.items():
            if allowed(policies, stranger, me, cluster, "cluster"):
                problems.append(f"{where}: {label} reaches its cluster port {cluster}")
    problems += _health_problems(policies, pods)
    return list(dict.fromkeys(problems))


def _cluster_port_problems(
    policies: list[dict], pods: list[dict], pod: dict, cluster: int
) -> list[str]:
    """The cluster port of a flow's pod: open to its own flow only, in both directions."""
    me = Peer.pod(pod["namespace"], pod["labels"])
    where = pod["workload"]
    problems = []
    if not allowed(policies, me, me, cluster, "cluster"):
        problems.append(f"{where}: its pods cannot reach each other on the cluster port {cluster}")
    for other in pods:
        if other["workload"] == where or other["namespace"] != pod["namespace"]:
            continue
        source = Peer.pod(other["namespace"], other["labels"])
        if ingress_allowed(policies, source, me, cluster, "cluster"):
            problems.append(f"{where}: {other['workload']} reaches its cluster port {cluster}")
    for policy in _selecting(policies, me, "Ingress"):
        for rule in policy["spec"].get("ingress") or []:
            if not port_matches(rule.get("ports"), cluster, "cluster", "TCP"):
                continue
            name = f"NetworkPolicy/{policy['metadata']['name']}"
            for peer in rule.get("from") or [{}]:
                if set(peer) != {"podSelector"}:
                    problems.append(
                        f"{name}: the cluster port of {where} admits a peer that is not a "
                        f"podSelector of its namespace ({sorted(peer) or 'everyone'})"
                    )
                    continue
                if not selector_matches(peer["podSelector"], pod["labels"]):
                    problems.append(f"{name}: the cluster port of {where} admits other pods")
                for other in pods:
                    if other["workload"] != where and selector_matches(
                        peer["podSelector"], other["labels"]
                    ):
                        problems.append(
                            f"{name}: the cluster port of {where} admits {other['workload']}"
                        )
    return problems


def _health_problems(policies: list[dict], pods: list[dict]) -> list[str]:
    """The health API reads the flows' metrics."""
    problems = []
    health = [p for p in pods if p["labels"].get("app.kubernetes.io/component") == "health"]
    flows = [p for p in pods if _container_port(p, "cluster") is not None]
    for reader in health:
        for flow in flows:
            for number, name in _metrics_ports(flow):
                if not allowed(
                    policies,
                    Peer.pod(reader["namespace"], reader["labels"]),
                    Peer.pod(flow["namespace"], flow["labels"]),
                    number,
                    name,
                ):
                    problems.append(
                        f"{reader['workload']} cannot read the metrics of {flow['workload']}"
                    )
    return problems
