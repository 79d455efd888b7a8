"""The F2 image as the image of Bytewax's official Helm chart (what ``waxctl dataflow deploy``
renders), checked offline; and the bundle that waxctl deploys (``make waxctl-bundle``).

``check_official_chart(tools, root)`` renders the official chart (``F2_BYTEWAX_CHART``, default
``<root>/../shared/ref/bytewax-helm-chart/charts/bytewax``; absent: one SKIP result) from a
temporary copy without its three optional sub-chart dependencies (they cannot be fetched
offline), with the values waxctl passes for ingest, decode (recovery on) and decode from the
tarball, plus
``deploy/waxctl/values-<flow>.yaml``. It validates the manifests (``kubernetes-validate``, as
``make deploy-check`` does) and checks the pod contract against the image:

- the containers running the image execute ``sh ./<script>`` in the image's working directory:
  the Dockerfile copies each script (and what it sources) there, readable by the chart's uid;
- every ``BYTEWAX_*`` variable the chart sets on such a container is read by its script (a ``$``
  reference outside comments), except those :data:`IGNORED` on purpose;
- what a script declares it writes (``# Writes only under: VARS``) lies on a writable volume of the
  container (the root filesystem is read-only), a volume claim is writable by the chart's uid
  (``fsGroup``), and the flow moves ``TMPDIR`` off a read-only ``/tmp``;
- ``BYTEWAX_PYTHON_FILE_PATH`` names a launcher the ConfigMap carries (a file, or a member of the
  tarball), under Kubernetes' 1 MiB limit;
- the pods serve the metrics on the container port ``api`` (``BYTEWAX_DATAFLOW_API_PORT``, where
  the F2 metrics are served too), and a PodMonitor scrapes it on ``/metrics``: the chart's own if
  rendered, else ``deploy/k8s/examples/bytewax-podmonitor.yaml`` (which sets the alerts' ``job``);
- with recovery, the init container and the flow use the same recovery directory;
- ``deploy/waxctl/networkpolicy.yaml`` selects the pods, lets the cluster port in only from the
  same flow and the metrics port only from other namespaces' selectors, and allows DNS out.

``python -m tools.waxctl_check`` prints the results (exit 1 on a FAIL);
``python -m tools.waxctl_check bundle [--out DIR]`` writes the launchers (``DIR/launchers/``) and
the tarball of the flow code with them (``DIR/f2-flows.tar``), default ``build/waxctl``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from schemas.settings import project_root
from tools.deploy_check import (
    Result,
    Tools,
    ensure_helm,
    ensure_tool_venv,
    env_problems,
    load_yaml,
    run,
    tools_dir,
    validate_objects,
)

CHART_VARIABLE = "F2_BYTEWAX_CHART"
WAXCTL_DIR = Path("deploy") / "waxctl"
LAUNCHERS = ("ingest.py", "decode.py")
FLOW_PACKAGES = (
    "schemas",
    "connectors",
    "dataflows",
)  # what the flows import (tests/test_layering)
TARBALL = "f2-flows.tar"
CONFIGMAP_LIMIT = 1 << 20  # Kubernetes refuses a ConfigMap over 1 MiB
NAMESPACE = "f2"
IMAGE_REPOSITORY = "registry.example.com/f2/f2-pipeline"
IMAGE_TAG = "0.1.0"
PULL_SECRET = "registry-credentials"
SETTINGS_SECRET = "f2-flow-settings"
RECOVERY = {"enabled": True, "partsCount": 12, "snapshotInterval": 1, "backupInterval": 10}
IGNORED = {
    "BYTEWAX_OTLP_URL": "tracing; the F2 flows log JSON lines and export Prometheus metrics, and "
    "the chart points it at an OpenTelemetry collector sub-chart that is off by default",
}
# The PodMonitor for the flows under Bytewax's chart (its own sets no job the alerts select).
PODMONITOR_EXAMPLE = Path("deploy") / "k8s" / "examples" / "bytewax-podmonitor.yaml"
WRITES = re.compile(r"^# Writes only under: (.*)$", re.M)
SOURCED = re.compile(r'^\s*\.\s+"\$\(dirname "\$0"\)/([\w.-]+)"', re.M)
IMAGE_ENTRYPOINT = re.compile(r"F2_IMAGE_ENTRYPOINT:-([^}\"]+)\}")
WRITABLE_VOLUMES = ("emptyDir", "persistentVolumeClaim", "hostPath", "ephemeral")


@dataclass(frozen=True)
class Deployment:
    """One ``waxctl dataflow deploy`` as chart values: the flags of deploy/waxctl/README.md."""

    label: str
    flow: str
    release: str
    processes: int = 2
    recovery: bool = False
    tarball: bool = False

    def values(self) -> dict:
        launcher = f"{self.flow}.py"
        return {
            "image": {
                "repository": IMAGE_REPOSITORY,
                "tag": IMAGE_TAG,
                "pullPolicy": "IfNotPresent",
            },
            "imagePullSecrets": [{"name": PULL_SECRET}],
            "envFromSecret": SETTINGS_SECRET,
            "configuration": {
                "pythonFileName": launcher,
                "processesCount": self.processes,
                "workersPerProcess": 1,
                "keepAlive": False,
                "configMap": {
                    "create": True,
                    "files": {
                        "pattern": "" if self.tarball else f"f2/{launcher}",
                        "tarName": TARBALL if self.tarball else "",
                    },
                },
                "recovery": RECOVERY if self.recovery else {"enabled": False},
            },
        }


DEPLOYMENTS = (
    Deployment("ingest", "ingest", "f2-ingest"),
    Deployment("decode", "decode", "f2-decode", recovery=True),
    Deployment("decode from the tarball", "decode", "f2-decode", recovery=True, tarball=True),
)


# ---------------------------------------------------------------------------------------------
# The bundle


def launcher_sources(root: Path) -> dict[str, Path]:
    """The launchers of deploy/waxctl/, by file name."""
    return {name: root / WAXCTL_DIR / name for name in LAUNCHERS}


def _flow_files(root: Path) -> list[tuple[str, Path]]:
    files = [(name, path) for name, path in launcher_sources(root).items()]
    for package in FLOW_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append((path.relative_to(root).as_posix(), path))
    return files


def flow_tarball(root: Path) -> bytes:
    """The launchers and the flows' packages as an uncompressed tar (the chart's init container
    runs ``tar -xvf *.tar`` in the working directory), byte for byte reproducible."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        directories: set[str] = set()
        for name, path in _flow_files(root):
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    tar.addfile(_tar_info(directory + "/", tarfile.DIRTYPE, 0o755, 0))
            data = path.read_bytes()
            tar.addfile(_tar_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buffer.getvalue()


def _tar_info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_bundle(root: Path, out: Path) -> list[Path]:
    """``out/launchers/<flow>.py`` and ``out/f2-flows.tar``; the paths written. ValueError when
    the tarball would not fit a ConfigMap."""
    tar = flow_tarball(root)
    if len(tar) > CONFIGMAP_LIMIT * 0.9:
        raise ValueError(f"{TARBALL} is {len(tar)} bytes: too large for a ConfigMap (1 MiB)")
    launchers = out / "launchers"
    if launchers.exists():
        shutil.rmtree(launchers)
    launchers.mkdir(parents=True)
    written = []
    for name, source in launcher_sources(root).items():
        shutil.copyfile(source, launchers / name)
        written.append(launchers / name)
    (out / TARBALL).write_bytes(tar)
    return [*written, out / TARBALL]


# ---------------------------------------------------------------------------------------------
# The image, as the Dockerfile builds it


@dataclass(frozen=True)
class ImageFacts:
    """What the runtime stage of the Dockerfile leaves in the image."""

    workdir: str
    uid: int | None
    files: dict[str, str] = field(default_factory=dict)  # path in the image -> source in the repo
    modes: dict[str, int] = field(default_factory=dict)  # path in the image -> mode it gets


def image_facts(dockerfile: str, root: Path) -> ImageFacts:
    """The final stage's working directory, user, the files it copies from the build context and
    their modes (``COPY --chmod``, ``RUN chmod``, else the source file's own)."""
    lines = [line.strip() for line in re.sub(r"\\\n", " ", dockerfile).splitlines()]
    starts = [i for i, line in enumerate(lines) if re.match(r"FROM\s", line, re.I)]
    workdir, user = "/", "root"
    files: dict[str, str] = {}
    modes: dict[str, int] = {}
    for line in lines[starts[-1] if starts else 0 :]:
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, rest.strip()))
        elif word == "USER":
            user = rest.strip()
        elif word == "COPY":
            args = shlex.split(rest)
            flags = [a for a in args if a.startswith("--")]
            paths = [a for a in args if not a.startswith("--")]
            if any(f.startswith("--from") for f in flags) or len(paths) < 2:
                continue
            chmod = [int(f.split("=", 1)[1], 8) for f in flags if f.startswith("--chmod=")]
            *sources, dest = paths
            target_dir = posixpath.join(workdir, dest)
            into_dir = dest.endswith("/") or len(sources) > 1 or dest in (".", "./")
            for source in sources:
                if not (root / source).is_file():
                    continue
                target = posixpath.normpath(
                    posixpath.join(target_dir, posixpath.basename(source))
                    if into_dir
                    else target_dir
                )
                files[target] = source
                modes[target] = chmod[0] if chmod else (root / source).stat().st_mode & 0o7777
        elif word == "RUN":
            for match in re.finditer(r"chmod\s+([0-7]{3,4})\s+((?:[^\s&;|]+\s*)+)", rest):
                for path in match.group(2).split():
                    modes[posixpath.normpath(posixpath.join(workdir, path))] = int(
                        match.group(1), 8
                    )
    uid_text = user.split(":")[0]
    return ImageFacts(workdir, 0 if uid_text == "root" else _int(uid_text), files, modes)


def _int(text: object) -> int | None:
    try:
        return int(str(text))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The scripts


def shell_code(text: str) -> str:
    """A shell script without its comment lines."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def reads(name: str, code: str) -> bool:
    """True if shell ``code`` expands variable ``name`` (``$NAME`` or ``${NAME...}``)."""
    return re.search(r"\$\{?" + re.escape(name) + r"(?![A-Za-z0-9_])", code) is not None


def declared_writes(text: str) -> list[str]:
    """The variables a script's ``# Writes only under:`` line names."""
    match = WRITES.search(text)
    return re.findall(r"\b[A-Z][A-Z0-9_]+\b", match.group(1)) if match else []


@dataclass(frozen=True)
class Script:
    """A script the chart runs, with what it sources (from the image)."""

    name: str
    text: str
    code: str  # its code and its sourced files' code, without comments
    missing: tuple[str, ...]  # sourced files the image does not hold


def load_script(name: str, facts: ImageFacts, read: Callable[[str], str | None]) -> Script | None:
    """``name`` in the image's working directory, with the files it sources; None if the image
    has no such file."""
    text = read(posixpath.join(facts.workdir, name))
    if text is None:
        return None
    code, missing = [shell_code(text)], []
    for sourced in SOURCED.findall(text):
        lib = read(posixpath.join(facts.workdir, sourced))
        if lib is None:
            missing.append(sourced)
            continue
        code.append(shell_code(lib))
        for entrypoint in IMAGE_ENTRYPOINT.findall(lib):
            image_entrypoint = read(entrypoint)
            if image_entrypoint is None:
                missing.append(entrypoint)
            else:
                code.append(shell_code(image_entrypoint))
    return Script(name, text, "\n".join(code), tuple(missing))


def repo_reader(facts: ImageFacts, root: Path) -> Callable[[str], str | None]:
    """Reads a file of the image from the source the Dockerfile copies it from."""

    def read(path: str) -> str | None:
        source = facts.files.get(posixpath.normpath(path))
        return (root / source).read_text() if source else None

    return read


# ---------------------------------------------------------------------------------------------
# The contract between the rendered pod and the image


def _script_of(command: object) -> str | None:
    """``x`` of the chart's ``["sh", "-c", "sh ./x"]``."""
    if not isinstance(command, list) or command[:2] != ["sh", "-c"] or len(command) != 3:
        return None
    match = re.fullmatch(r"sh \./([\w.-]+)", str(command[2]).strip())
    return match.group(1) if match else None


def _under(path: str, mount: str) -> bool:
    mount = mount.rstrip("/") or "/"
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def _labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _selects(selector: Mapping[str, object], labels: Mapping[str, str]) -> bool:
    """A label selector (``matchLabels`` and ``matchExpressions``) that selects ``labels``."""
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):  # type: ignore[union-attr]
        return False
    for expression in expressions:  # type: ignore[union-attr]
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if not {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(operator, False):
            return False
    return True


def _configmap_names(configmap: dict) -> tuple[set[str], int]:
    """The files a chart ConfigMap puts into the working directory (tar members included), and
    its size in bytes."""
    names = set((configmap.get("data") or {}).keys())
    size = sum(len(str(v).encode()) for v in (configmap.get("data") or {}).values())
    for key, value in (configmap.get("binaryData") or {}).items():
        data = base64.b64decode(value)
        size += len(data)
        if key.endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                names |= {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
        else:
            names.add(key)
    return names, size


@dataclass
class Contract:
    """Problems found, and notes for the report."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def pod_contract(
    docs: list[dict],
    facts: ImageFacts,
    read: Callable[[str], str | None],
    image: str,
    podmonitors: Iterable[dict] = (),
) -> Contract:
    """The pod the chart rendered (``docs``) against the image (``facts``, ``read``); the pods'
    metrics must be scraped by a PodMonitor the chart rendered or one of ``podmonitors``."""
    out = Contract()
    statefulsets = [d for d in docs if d.get("kind") == "StatefulSet"]
    if len(statefulsets) != 1:
        out.problems.append(f"{len(statefulsets)} StatefulSets rendered, expected 1")
        return out
    sts = statefulsets[0]
    template = sts["spec"]["template"]
    pod, labels = template["spec"], template["metadata"].get("labels") or {}
    pod_sc = pod.get("securityContext") or {}
    run_as = pod_sc.get("runAsUser")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    ours = [c for c in containers if c.get("image") == image]
    if not ours:
        out.problems.append(f"no container runs the image {image}")
    ignored: set[str] = set()
    main: dict | None = None
    recovery_init: dict | None = None
    for container in ours:
        where = container["name"]
        script_name = _script_of(container.get("command"))
        if script_name is None:
            out.problems.append(f"{where}: command {container.get('command')} is not sh ./SCRIPT")
            continue
        script = load_script(script_name, facts, read)
        if script is None:
            out.problems.append(
                f"{where}: runs ./{script_name} in {facts.workdir}, which the Dockerfile does not "
                "copy there"
            )
            continue
        out.problems += [f"{where}: ./{script_name} sources {m}, not in the image" for m in
                         script.missing]  # fmt: skip
        path = posixpath.join(facts.workdir, script_name)
        if run_as != facts.uid and not facts.modes.get(path, 0) & 0o004:
            out.problems.append(f"{where}: ./{script_name} is not readable by uid {run_as}")
        env = {e["name"]: e for e in container.get("env") or []}
        for name in sorted(n for n in env if n.startswith("BYTEWAX_")):
            if name in IGNORED:
                ignored.add(name)
            elif not reads(name, script.code):
                out.problems.append(f"{where}: sets {name}, which ./{script_name} does not read")
        out.problems += _write_problems(where, container, volumes, pod_sc, facts, script)
        if "BYTEWAX_PYTHON_FILE_PATH" in env:
            main = container
            if not reads("TMPDIR", script.code) and not _writable_at("/tmp", container, volumes):
                out.problems.append(f"{where}: /tmp is read-only and ./{script_name} keeps TMPDIR")
        if "BYTEWAX_RECOVERY_PARTS" in env:
            recovery_init = container
        out.problems += env_problems(where, [(n, e.get("value")) for n, e in env.items()])
    if main is None:
        out.problems.append("no container of the image runs a flow (BYTEWAX_PYTHON_FILE_PATH)")
        return out
    out.problems += _bundle_problems(docs, sts, main)
    out.problems += _metrics_problems(docs, main, labels, podmonitors)
    env = {e["name"]: e.get("value") for e in main.get("env") or []}
    if env.get("BYTEWAX_RECOVERY_DIRECTORY"):
        init_env = {e["name"]: e.get("value") for e in (recovery_init or {}).get("env") or []}
        if recovery_init is None:
            out.problems.append("recovery on, but no init container prepares the partitions")
        elif init_env.get("BYTEWAX_RECOVERY_DIRECTORY") != env["BYTEWAX_RECOVERY_DIRECTORY"]:
            out.problems.append("the init container prepares another recovery directory")
    out.notes += [f"{name} ignored ({IGNORED[name]})" for name in sorted(ignored)]
    return out


def _writable_at(path: str, container: dict, volumes: Mapping[str, dict]) -> dict | None:
    """The writable volume of ``container`` holding ``path``, if any."""
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"], {})
        if (
            _under(path, mount["mountPath"])
            and not mount.get("readOnly")
            and any(kind in volume for kind in WRITABLE_VOLUMES)
        ):
            return volume
    return None


def _write_problems(
    where: str,
    container: dict,
    volumes: Mapping[str, dict],
    pod_sc: Mapping[str, object],
    facts: ImageFacts,
    script: Script,
) -> list[str]:
    problems = []
    sc = container.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: the root filesystem is writable (the chart makes it read-only)")
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    run_as = sc.get("runAsUser", pod_sc.get("runAsUser"))
    for name in declared_writes(script.text):
        path = env.get(name)
        if not path:
            continue
        volume = _writable_at(str(path), container, volumes)
        if volume is None:
            problems.append(f"{where}: {name}={path} is not on a writable volume")
        elif "persistentVolumeClaim" in volume and run_as != facts.uid and "fsGroup" not in pod_sc:
            problems.append(f"{where}: {name}={path} is a volume claim uid {run_as} cannot write")
    return problems


def _bundle_problems(docs: list[dict], sts: dict, main: dict) -> list[str]:
    env = {e["name"]: e.get("value") for e in main.get("env") or []}
    file, workdir = str(env["BYTEWAX_PYTHON_FILE_PATH"]), str(env.get("BYTEWAX_WORKDIR") or "")
    if not workdir or not _under(file, workdir):
        return [f"BYTEWAX_PYTHON_FILE_PATH {file} is outside BYTEWAX_WORKDIR {workdir}"]
    relative = posixpath.relpath(file, workdir)
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    workdir_volumes = {
        m["name"] for m in main.get("volumeMounts") or [] if _under(workdir, m["mountPath"])
    }
    # The ConfigMaps an init container copies into the working directory's volume.
    sources = {
        volumes[m["name"]]["configMap"]["name"]
        for init in pod.get("initContainers") or []
        if workdir_volumes & {m["name"] for m in init.get("volumeMounts") or []}
        for m in init.get("volumeMounts") or []
        if "configMap" in volumes.get(m["name"], {})
    }
    configmaps = [
        d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] in sources
    ]
    if not configmaps:
        return [f"no rendered ConfigMap is copied into the working directory {workdir}"]
    problems, carried = [], set()
    for configmap in configmaps:
        names, size = _configmap_names(configmap)
        carried |= names
        if size > CONFIGMAP_LIMIT:
            name = configmap["metadata"]["name"]
            problems.append(f"ConfigMap {name} holds {size} bytes, over Kubernetes' 1 MiB")
    if relative not in carried:
        problems.append(f"the ConfigMap does not carry {relative} (it has {sorted(carried)[:8]})")
    return problems


def _metrics_problems(
    docs: list[dict], main: dict, labels: Mapping[str, str], podmonitors: Iterable[dict]
) -> list[str]:
    env = {e["name"]: e.get("value") for e in main.get("env") or []}
    port = _int(env.get("BYTEWAX_DATAFLOW_API_PORT"))
    problems = []
    api = [p for p in main.get("ports") or [] if p.get("name") == "api"]
    if not api or api[0].get("containerPort") != port:
        problems.append(f"no container port `api` at BYTEWAX_DATAFLOW_API_PORT {port}")
    rendered = [d for d in docs if d.get("kind") == "PodMonitor"]
    for monitor in rendered:
        if not _scrapes_api(monitor, labels):
            name = monitor["metadata"]["name"]
            problems.append(f"PodMonitor {name} does not scrape the pods' port api on /metrics")
    if not any(_scrapes_api(m, labels) for m in [*rendered, *podmonitors]):
        problems.append(
            f"no PodMonitor scrapes the pods' port api on /metrics (the chart's podMonitor, or "
            f"{PODMONITOR_EXAMPLE})"
        )
    return problems


def _scrapes_api(monitor: dict, labels: Mapping[str, str]) -> bool:
    spec = monitor.get("spec") or {}
    endpoints = spec.get("podMetricsEndpoints") or []
    return _selects(spec.get("selector") or {}, labels) and any(
        e.get("port") == "api" and e.get("path", "/metrics") == "/metrics" for e in endpoints
    )


def network_policy_problems(policies: Iterable[dict], docs: list[dict]) -> list[str]:
    """Problems of the NetworkPolicy example for the rendered flow."""
    sts = next(d for d in docs if d.get("kind") == "StatefulSet")
    name, namespace = sts["metadata"]["name"], sts["metadata"].get("namespace")
    labels = sts["spec"]["template"]["metadata"].get("labels") or {}
    services = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Service"}
    cluster_port = services[sts["spec"]["serviceName"]]["spec"]["ports"][0]["port"]
    main = next(
        c
        for c in sts["spec"]["template"]["spec"]["containers"]
        if any(e["name"] == "BYTEWAX_PYTHON_FILE_PATH" for e in c.get("env") or [])
    )
    api_port = next(p["containerPort"] for p in main.get("ports") or [] if p.get("name") == "api")
    selecting = [
        p
        for p in policies
        if p.get("kind") == "NetworkPolicy"
        and p["metadata"].get("namespace") == namespace
        and _labels_match(p["spec"]["podSelector"].get("matchLabels") or {}, labels)
    ]
    if not selecting:
        return [f"no NetworkPolicy of {WAXCTL_DIR}/networkpolicy.yaml selects the pods of {name}"]
    problems = []
    for policy in selecting:
        where = f"NetworkPolicy {policy['metadata']['name']}"
        spec = policy["spec"]
        if set(spec.get("policyTypes") or []) != {"Ingress", "Egress"}:
            problems.append(f"{where}: does not restrict both directions")
        for rule in spec.get("ingress") or []:
            ports = {p.get("port") for p in rule.get("ports") or []}
            peers = rule.get("from") or []
            if not ports or not peers:
                problems.append(f"{where}: an ingress rule allows every port or every source")
            if cluster_port in ports and not all(
                set(peer) == {"podSelector"}
                and _labels_match(peer["podSelector"].get("matchLabels") or {}, labels)
                for peer in peers
            ):
                problems.append(f"{where}: port {cluster_port} open beyond the flow's own pods")
            if api_port in ports and not all("namespaceSelector" in peer for peer in peers):
                problems.append(f"{where}: the metrics port {api_port} open beyond a namespace")
        egress_ports = [
            {p.get("port") for p in rule.get("ports") or []} for rule in spec.get("egress") or []
        ]
        if not any(53 in ports for ports in egress_ports):
            problems.append(f"{where}: DNS is not allowed out (the hostfile names peers by DNS)")
        if not any(cluster_port in ports for ports in egress_ports):
            problems.append(f"{where}: the cluster port {cluster_port} is not allowed out")
    return problems


# ---------------------------------------------------------------------------------------------
# The check


def official_chart(root: Path) -> Path:
    """``F2_BYTEWAX_CHART``, else the reference copy beside the checkout."""
    configured = os.environ.get(CHART_VARIABLE)
    if configured:
        return Path(configured)
    return root.parent / "shared" / "ref" / "bytewax-helm-chart" / "charts" / "bytewax"


def without_dependencies(chart_yaml: str) -> str:
    """``Chart.yaml`` without its ``dependencies:`` block."""
    out, skipping = [], False
    for line in chart_yaml.splitlines(keepends=True):
        if re.match(r"dependencies:", line):
            skipping = True
            continue
        if skipping and (not line.strip() or line.startswith((" ", "\t", "-"))):
            continue
        skipping = False
        out.append(line)
    return "".join(out)


def prepare_chart(chart: Path, scratch: Path, root: Path) -> Path:
    """A copy of ``chart`` without sub-chart dependencies, holding the launchers (``f2/``) and the
    tarball, the files waxctl puts into its ConfigMap."""
    copy = scratch / "bytewax"
    shutil.copytree(chart, copy, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    (copy / "Chart.yaml").write_text(without_dependencies((copy / "Chart.yaml").read_text()))
    (copy / "f2").mkdir()
    for name, source in launcher_sources(root).items():
        shutil.copyfile(source, copy / "f2" / name)
    (copy / TARBALL).write_bytes(flow_tarball(root))
    return copy


def check_official_chart(tools: Tools, root: Path) -> list[Result]:
    """Render Bytewax's official chart as waxctl does and check it against the F2 image (see the
    module's docstring); a SKIP result when the chart is not there."""
    chart = official_chart(root)
    if not (chart / "Chart.yaml").is_file():
        return [
            Result(
                "official Bytewax chart",
                "SKIP",
                f"no chart at {chart} (set {CHART_VARIABLE} to a copy of bytewax/helm-charts' "
                "charts/bytewax)",
            )
        ]
    try:
        ensure_tool_venv(tools)
        ensure_helm(tools)
    except (subprocess.CalledProcessError, OSError) as exc:
        return [Result("official Bytewax chart: validators installed", "FAIL", str(exc))]
    facts = image_facts((root / "deploy" / "docker" / "Dockerfile").read_text(), root)
    read = repo_reader(facts, root)
    policy_file = root / WAXCTL_DIR / "networkpolicy.yaml"
    policies = load_yaml(tools, policy_file.read_text())
    results = [validate_objects(tools, f"{WAXCTL_DIR}/networkpolicy.yaml", policies)]
    example = root / PODMONITOR_EXAMPLE
    podmonitors = load_yaml(tools, example.read_text()) if example.is_file() else []
    with tempfile.TemporaryDirectory(prefix="f2-bytewax-chart-") as scratch:
        copy = prepare_chart(chart, Path(scratch), root)
        for index, deployment in enumerate(DEPLOYMENTS):
            label = f"official chart, {deployment.label}"
            flags = Path(scratch) / f"waxctl-{index}.json"
            flags.write_text(json.dumps(deployment.values()))
            values = root / WAXCTL_DIR / f"values-{deployment.flow}.yaml"
            rendered = run(
                [str(tools.helm), "template", deployment.release, str(copy),
                 "--namespace", NAMESPACE, "-f", str(values), "-f", str(flags)],
                env=tools.env(),
            )  # fmt: skip
            if rendered.returncode != 0:
                output = (rendered.stdout + rendered.stderr).strip()
                results.append(Result(f"helm template ({label})", "FAIL", output))
                continue
            docs = load_yaml(tools, rendered.stdout)
            results.append(validate_objects(tools, label, docs))
            image = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
            contract = pod_contract(docs, facts, read, image, podmonitors)
            if not contract.problems:
                contract.problems += network_policy_problems(policies, docs)
            name = f"official chart runs the F2 image ({deployment.label})"
            if contract.problems:
                results.append(Result(name, "FAIL", "; ".join(contract.problems[:12])))
            else:
                detail = (
                    f"{len(docs)} objects: scripts in {facts.workdir}, every BYTEWAX_* variable "
                    "read, writes on volumes, launcher in the ConfigMap, metrics on port api "
                    "(PodMonitor), NetworkPolicy"
                )
                results.append(Result(name, "PASS", "; ".join([detail, *contract.notes])))
    return results


def main(argv: list[str] | None = None) -> int:
    root = project_root() or Path.cwd()
    parser = argparse.ArgumentParser(prog="python -m tools.waxctl_check")
    commands = parser.add_subparsers(dest="command")
    bundle = commands.add_parser("bundle", help="write the launchers and the flow tarball")
    bundle.add_argument("--out", type=Path, default=root / "build" / "waxctl")
    args = parser.parse_args(argv)
    if args.command == "bundle":
        try:
            written = build_bundle(root, args.out)
        except ValueError as exc:
            print(f"waxctl-bundle: {exc}", file=sys.stderr)
            return 1
        for path in written:
            print(f"{path} ({path.stat().st_size} bytes)")
        print(
            "deploy with: waxctl dataflow deploy <launcher>, or the tarball with "
            "-f ingest.py / -f decode.py (deploy/waxctl/README.md)"
        )
        return 0
    started = time.monotonic()
    results = check_official_chart(Tools(tools_dir()), root)
    for result in results:
        print(f"{result.status:4} {result.name}" + (f": {result.detail}" if result.detail else ""))
    failed = sum(r.status == "FAIL" for r in results)
    print(
        f"waxctl-check: {len(results)} checks, {failed} failed in {time.monotonic() - started:.0f}s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
