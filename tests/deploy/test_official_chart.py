"""The F2 image as the image of Bytewax's official Helm chart (what ``waxctl dataflow deploy``
renders): the chart rendered and checked against the image (``tools/waxctl_check.py``), the
check's rules on small inputs (each must be able to fail), and the chart scripts of
``deploy/waxctl/`` run with the chart's environment (a shim stands in for the flow)."""

from __future__ import annotations

import base64
import copy
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tools.deploy_check import Tools, tools_dir
from tools.waxctl_check import (
    DEPLOYMENTS,
    IMAGE_REPOSITORY,
    IMAGE_TAG,
    ImageFacts,
    check_official_chart,
    flow_tarball,
    image_facts,
    network_policy_problems,
    pod_contract,
    repo_reader,
    without_dependencies,
)

ROOT = Path(__file__).resolve().parents[2]
WAXCTL = ROOT / "deploy" / "waxctl"
DOCKERFILE = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"


# ---------------------------------------------------------------------------------------------
# The official chart, rendered


@pytest.mark.integration  # installs helm and kubernetes-validate on first use (tools/deploy_check)
def test_the_official_chart_runs_the_f2_image() -> None:
    results = check_official_chart(Tools(tools_dir()), ROOT)
    report = "\n".join(f"{r.status} {r.name}: {r.detail}" for r in results)
    if all(r.status == "SKIP" for r in results):
        pytest.skip(report)
    assert [r for r in results if r.status == "FAIL"] == [], report
    passed = {r.name for r in results if r.status == "PASS"}
    for deployment in DEPLOYMENTS:
        assert f"official chart runs the F2 image ({deployment.label})" in passed, report
        assert f"kubernetes-validate --strict (official chart, {deployment.label})" in passed


def test_without_the_chart_the_check_skips(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("F2_BYTEWAX_CHART", str(tmp_path / "absent"))
    results = check_official_chart(Tools(tmp_path / "no-tools"), ROOT)
    assert [r.status for r in results] == ["SKIP"]


def test_chart_yaml_without_dependencies() -> None:
    chart = (
        "apiVersion: v2\nname: bytewax\ndependencies:\n- condition: a.enabled\n  name: a\n"
        "  version: 0.36.*\n- name: b\n  version: 1\nversion: 0.8.1\n"
    )
    assert without_dependencies(chart) == "apiVersion: v2\nname: bytewax\nversion: 0.8.1\n"


def test_the_tarball_holds_the_launchers_and_the_flow_code() -> None:
    data = flow_tarball(ROOT)
    assert flow_tarball(ROOT) == data  # reproducible
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = set(tar.getnames())
    assert {"ingest.py", "decode.py", "dataflows/decode.py", "connectors/kafka_source.py"} <= names
    assert not any("__pycache__" in n or n.startswith(("tests/", "ops/")) for n in names)
    assert len(data) < 900_000


# ---------------------------------------------------------------------------------------------
# The check's rules


def test_the_dockerfile_puts_the_chart_scripts_into_the_working_directory() -> None:
    facts = image_facts(DOCKERFILE, ROOT)
    assert facts.workdir == "/var/lib/f2" and facts.uid == 10001
    for name in ("entrypoint.sh", "entrypoint-recovery.sh", "waxctl-lib.sh"):
        path = f"/var/lib/f2/{name}"
        assert facts.files[path] == f"deploy/waxctl/{name}"
        assert facts.modes[path] & 0o004, f"{name} is not readable by the chart's uid"
    assert facts.files["/app/bin/entrypoint.sh"] == "deploy/docker/entrypoint.sh"


def _env(**values: str) -> list[dict]:
    return [{"name": k, "value": v} for k, v in values.items()]


def _configmap(name: str, files: dict[str, str]) -> dict:
    return {"kind": "ConfigMap", "metadata": {"name": name}, "data": files}


def chart_docs() -> list[dict]:
    """The parts of the chart's rendering (decode, recovery on) the contract looks at."""
    labels = {
        "bytewax.io/dataflow-info": "f2-decode",
        "app.kubernetes.io/name": "bytewax",
        "app.kubernetes.io/instance": "f2-decode",
    }
    read_only = {"readOnlyRootFilesystem": True}
    recovery = {
        "BYTEWAX_RECOVERY_DIRECTORY": "/var/recovery",
        "BYTEWAX_SNAPSHOT_INTERVAL": "1",
        "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "10",
    }
    main_env = _env(
        PYTHONUNBUFFERED="1",
        BYTEWAX_PYTHON_FILE_PATH="/var/bytewax/decode.py",
        BYTEWAX_WORKDIR="/var/bytewax",
        BYTEWAX_WORKERS_PER_PROCESS="1",
        BYTEWAX_REPLICAS="2",
        BYTEWAX_KEEP_CONTAINER_ALIVE="false",
        BYTEWAX_HOSTFILE_PATH="/etc/bytewax/hostfile.txt",
        BYTEWAX_STATEFULSET_NAME="f2-decode",
        BYTEWAX_DATAFLOW_API_ENABLED="true",
        BYTEWAX_DATAFLOW_API_PORT="3030",
        BYTEWAX_DATAFLOW_API_CACHE_PATH="/var/bytewax-api-cache",
        BYTEWAX_OTLP_URL="http://f2-decode-opentelemetry-collector:4317",
        **recovery,
    )
    main_env.insert(2, {"name": "BYTEWAX_POD_NAME", "valueFrom": {"fieldRef": {}}})
    statefulset = {
        "kind": "StatefulSet",
        "metadata": {"name": "f2-decode", "namespace": "f2"},
        "spec": {
            "serviceName": "f2-decode",
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsUser": 65532, "fsGroup": 2000},
                    "initContainers": [
                        {
                            "name": "init-recovery",
                            "image": IMAGE,
                            "command": ["sh", "-c", "sh ./entrypoint-recovery.sh"],
                            "securityContext": read_only,
                            "env": _env(BYTEWAX_RECOVERY_PARTS="12", **recovery),
                            "volumeMounts": [{"name": "recovery", "mountPath": "/var/recovery"}],
                        },
                        {
                            "name": "init-hostfile",
                            "image": "busybox",
                            "volumeMounts": [
                                {"name": "working-directory", "mountPath": "/var/bytewax/"},
                                {"name": "python-files", "mountPath": "/tmp/bytewax/"},
                            ],
                        },
                    ],
                    "containers": [
                        {"name": "api-cache", "image": "nginxinc/nginx-unprivileged"},
                        {
                            "name": "process",
                            "image": IMAGE,
                            "command": ["sh", "-c", "sh ./entrypoint.sh"],
                            "ports": [
                                {"name": "process", "containerPort": 9999},
                                {"name": "api", "containerPort": 3030},
                            ],
                            "securityContext": read_only,
                            "env": main_env,
                            "volumeMounts": [
                                {"name": "api-cache", "mountPath": "/var/bytewax-api-cache"},
                                {"name": "hostfile", "mountPath": "/etc/bytewax"},
                                {"name": "working-directory", "mountPath": "/var/bytewax/"},
                                {"name": "recovery", "mountPath": "/var/recovery"},
                            ],
                        },
                    ],
                    "volumes": [
                        {"name": "api-cache", "emptyDir": {}},
                        {"name": "hostfile", "emptyDir": {}},
                        {"name": "python-files", "configMap": {"name": "f2-decode"}},
                        {"name": "working-directory", "emptyDir": {}},
                        {"name": "recovery", "persistentVolumeClaim": {"claimName": "x"}},
                    ],
                },
            },
        },
    }
    return [
        statefulset,
        {"kind": "Service", "metadata": {"name": "f2-decode"}, "spec": {"ports": [{"port": 9999}]}},
        _configmap("f2-decode", {"decode.py": "flow = build_flow()\n"}),
        {
            "kind": "PodMonitor",
            "metadata": {"name": "f2-decode"},
            "spec": {
                "selector": {"matchLabels": labels},
                "podMetricsEndpoints": [{"port": "api", "path": "/metrics"}],
            },
        },
    ]


def _containers(docs: list[dict]) -> dict[str, dict]:
    spec = docs[0]["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]}


def contract(docs: list[dict], dockerfile: str = DOCKERFILE) -> list[str]:
    facts = image_facts(dockerfile, ROOT)
    return pod_contract(docs, facts, repo_reader(facts, ROOT), IMAGE).problems


def test_the_pod_contract_holds_for_the_charts_pod() -> None:
    facts = image_facts(DOCKERFILE, ROOT)
    result = pod_contract(chart_docs(), facts, repo_reader(facts, ROOT), IMAGE)
    assert result.problems == []
    assert any("BYTEWAX_OTLP_URL" in note for note in result.notes)


def test_the_pod_contract_fails_on_what_the_image_does_not_honour() -> None:
    docs = chart_docs()
    _containers(docs)["process"]["env"].append({"name": "BYTEWAX_NEW_SETTING", "value": "1"})
    assert contract(docs) == [
        "process: sets BYTEWAX_NEW_SETTING, which ./entrypoint.sh does not read"
    ]

    without_scripts = DOCKERFILE.replace("deploy/waxctl/entrypoint.sh ", "")
    assert (
        "process: runs ./entrypoint.sh in /var/lib/f2, which the Dockerfile does not copy there"
        in contract(chart_docs(), without_scripts)
    )
    unreadable = DOCKERFILE.replace(
        "chmod 0755 /var/lib/f2/entrypoint.sh", "chmod 0750 /var/lib/f2/entrypoint.sh"
    )
    assert "process: ./entrypoint.sh is not readable by uid 65532" in contract(
        chart_docs(), unreadable
    )

    docs = chart_docs()
    process = _containers(docs)["process"]
    process["volumeMounts"] = [m for m in process["volumeMounts"] if m["name"] != "api-cache"]
    process["securityContext"] = {}
    assert contract(docs) == [
        "process: the root filesystem is writable (the chart makes it read-only)",
        "process: BYTEWAX_DATAFLOW_API_CACHE_PATH=/var/bytewax-api-cache is not on a writable"
        " volume",
    ]

    docs = chart_docs()
    del docs[0]["spec"]["template"]["spec"]["securityContext"]["fsGroup"]
    assert (
        "init-recovery: BYTEWAX_RECOVERY_DIRECTORY=/var/recovery is a volume claim uid 65532"
        " cannot write" in contract(docs)
    )


def test_the_pod_contract_fails_without_the_launcher_or_the_metrics() -> None:
    docs = chart_docs()
    docs[2] = _configmap("f2-decode", {"other.py": ""})
    assert contract(docs) == ["the ConfigMap does not carry decode.py (it has ['other.py'])"]

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("decode.py")
        archive.addfile(info, io.BytesIO(b""))
    docs[2] = {
        "kind": "ConfigMap",
        "metadata": {"name": "f2-decode"},
        "binaryData": {"f2-flows.tar": base64.b64encode(tar.getvalue()).decode()},
    }
    assert contract(docs) == []

    docs = chart_docs()
    _containers(docs)["process"]["ports"][1]["containerPort"] = 3031
    docs[3]["spec"]["podMetricsEndpoints"] = [{"port": "process", "path": "/metrics"}]
    assert contract(docs) == [
        "no container port `api` at BYTEWAX_DATAFLOW_API_PORT 3030",
        "PodMonitor f2-decode does not scrape the pods' port api on /metrics",
        "no PodMonitor scrapes the pods' port api on /metrics (the chart's podMonitor, or "
        "deploy/k8s/examples/bytewax-podmonitor.yaml)",
    ]

    # The chart's own PodMonitor off: the example's (selecting by expressions) must do it.
    docs = chart_docs()[:3]
    assert contract(docs)[-1].startswith("no PodMonitor scrapes the pods' port api")
    facts = image_facts(DOCKERFILE, ROOT)
    example = {
        "kind": "PodMonitor",
        "metadata": {"name": "f2-bytewax-flows"},
        "spec": {
            "selector": {
                "matchLabels": {"app.kubernetes.io/name": "bytewax"},
                "matchExpressions": [{"key": "bytewax.io/dataflow-info", "operator": "Exists"}],
            },
            "podMetricsEndpoints": [{"port": "api", "path": "/metrics"}],
        },
    }
    assert pod_contract(docs, facts, repo_reader(facts, ROOT), IMAGE, [example]).problems == []
    example["spec"]["selector"]["matchExpressions"][0]["operator"] = "DoesNotExist"
    assert pod_contract(docs, facts, repo_reader(facts, ROOT), IMAGE, [example]).problems

    docs = chart_docs()
    _containers(docs)["init-recovery"]["env"][1]["value"] = "/elsewhere"
    assert "the init container prepares another recovery directory" in contract(docs)


def test_network_policy_rules() -> None:
    docs = chart_docs()
    selector = {"matchLabels": {"bytewax.io/dataflow-info": "f2-decode"}}
    policy = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "f2-decode", "namespace": "f2"},
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"podSelector": selector}], "ports": [{"port": 9999}]},
                {"from": [{"namespaceSelector": {}}], "ports": [{"port": 3030}]},
            ],
            "egress": [
                {"to": [{"podSelector": selector}], "ports": [{"port": 9999}]},
                {"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]},
            ],
        },
    }
    assert network_policy_problems([policy], docs) == []
    wide = copy.deepcopy(policy)
    wide["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})
    wide["spec"]["ingress"][1]["from"] = [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    wide["spec"]["egress"].pop()
    assert network_policy_problems([wide], docs) == [
        "NetworkPolicy f2-decode: port 9999 open beyond the flow's own pods",
        "NetworkPolicy f2-decode: the metrics port 3030 open beyond a namespace",
        "NetworkPolicy f2-decode: DNS is not allowed out (the hostfile names peers by DNS)",
    ]
    other = copy.deepcopy(policy)
    other["spec"]["podSelector"] = {"matchLabels": {"bytewax.io/dataflow-info": "f2-ingest"}}
    assert network_policy_problems([other], docs) == [
        "no NetworkPolicy of deploy/waxctl/networkpolicy.yaml selects the pods of f2-decode"
    ]


def test_image_facts_rules(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("")
    (tmp_path / "a.sh").chmod(0o600)
    dockerfile = (
        "FROM x AS build\nCOPY a.sh /elsewhere/\nFROM y\nCOPY --from=build /opt /opt\n"
        "WORKDIR /w\nCOPY a.sh ./\nCOPY --chmod=0755 a.sh /w/b.sh\nUSER 5:5\n"
    )
    assert image_facts(dockerfile, tmp_path) == ImageFacts(
        "/w", 5, {"/w/a.sh": "a.sh", "/w/b.sh": "a.sh"}, {"/w/a.sh": 0o600, "/w/b.sh": 0o755}
    )


# ---------------------------------------------------------------------------------------------
# The chart scripts, with the chart's environment

SHIM = """#!/bin/sh
# Real Python for bytewax.recovery; for bytewax.run: what it was given, then exit SHIM_STATUS.
if [ "$1 $2" = "-m bytewax.recovery" ]; then exec {python} "$@"; fi
echo "RUN $*"
echo "PWD $(pwd)"
for name in BYTEWAX_DATAFLOW_API_ENABLED BYTEWAX_DATAFLOW_API_CACHE_PATH F2_DECODE_RECOVERY_PARTS \\
    F2_INGEST_STATE_DIR BYTEWAX_POD_NAME; do
    eval "echo ENV $name=\\${{$name:-}}"
done
exit "${{SHIM_STATUS:-0}}"
"""


@pytest.fixture
def image(tmp_path: Path) -> dict[str, str]:
    """The image's working directory with the chart scripts; a PATH with the shim python."""
    workdir = tmp_path / "image"
    workdir.mkdir()
    for name in ("entrypoint.sh", "entrypoint-recovery.sh", "waxctl-lib.sh"):
        (workdir / name).write_text((WAXCTL / name).read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(SHIM.format(python=sys.executable))
    (bin_dir / "python").chmod(0o755)
    return {
        "cwd": str(workdir),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "F2_IMAGE_ENTRYPOINT": str(ROOT / "deploy" / "docker" / "entrypoint.sh"),
    }


def chart_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The chart's environment of pod 1 of a two-process decode flow with recovery."""
    (tmp / "var-bytewax").mkdir(exist_ok=True)
    (tmp / "var-bytewax" / "decode.py").write_text("")
    (tmp / "hostfile.txt").write_text("f2-decode-0.f2-decode:9999\nf2-decode-1.f2-decode:9999\n")
    (tmp / "read-only").write_text("a file: nothing can be created below it\n")
    return {
        "BYTEWAX_PYTHON_FILE_PATH": str(tmp / "var-bytewax" / "decode.py"),
        "BYTEWAX_WORKDIR": str(tmp / "var-bytewax"),
        "BYTEWAX_WORKERS_PER_PROCESS": "1",
        "BYTEWAX_POD_NAME": "f2-decode-1",
        "BYTEWAX_REPLICAS": "2",
        "BYTEWAX_KEEP_CONTAINER_ALIVE": "false",
        "BYTEWAX_HOSTFILE_PATH": str(tmp / "hostfile.txt"),
        "BYTEWAX_STATEFULSET_NAME": "f2-decode",
        "BYTEWAX_DATAFLOW_API_ENABLED": "true",
        "BYTEWAX_DATAFLOW_API_PORT": "3030",
        "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(tmp / "read-only" / "api-cache"),
        "BYTEWAX_OTLP_URL": "http://f2-decode-opentelemetry-collector:4317",
        "BYTEWAX_RECOVERY_DIRECTORY": str(tmp / "recovery"),
        "BYTEWAX_SNAPSHOT_INTERVAL": "1",
        "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "10",
        **extra,
    }


def run_script(
    image: dict[str, str], script: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", f"sh ./{script}"],
        cwd=image["cwd"],
        env={"PATH": image["PATH"], "F2_IMAGE_ENTRYPOINT": image["F2_IMAGE_ENTRYPOINT"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def recovery_env(tmp: Path, parts: str = "12") -> dict[str, str]:
    """The chart's environment of the recovery init container."""
    return {
        "BYTEWAX_RECOVERY_PARTS": parts,
        "BYTEWAX_RECOVERY_DIRECTORY": str(tmp / "recovery"),
        "BYTEWAX_SNAPSHOT_INTERVAL": "1",
        "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "10",
    }


def test_the_flow_runs_with_the_charts_environment(image: dict[str, str], tmp_path: Path) -> None:
    assert run_script(image, "entrypoint-recovery.sh", recovery_env(tmp_path)).returncode == 0
    result = run_script(image, "entrypoint.sh", chart_env(tmp_path))
    assert result.returncode == 0, result.stderr
    workdir = tmp_path / "var-bytewax"
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"RUN -m bytewax.run {workdir}/decode.py -w 1 -s 1 -r {tmp_path}/recovery -b 10 -i 1 "
        "-a f2-decode-0.f2-decode:9999;f2-decode-1.f2-decode:9999"
    )
    assert f"PWD {workdir}" in lines
    assert "ENV BYTEWAX_DATAFLOW_API_ENABLED=true" in lines
    # The chart's cache path is not writable here (api.enabled=false has no volume for it).
    assert f"ENV BYTEWAX_DATAFLOW_API_CACHE_PATH={workdir}/.f2/api" in lines
    assert "ENV F2_DECODE_RECOVERY_PARTS=12" in lines
    assert f"ENV F2_INGEST_STATE_DIR={workdir}/.f2/ingest-sessions" in lines


def test_one_process_runs_without_a_cluster(image: dict[str, str], tmp_path: Path) -> None:
    env = chart_env(tmp_path, BYTEWAX_REPLICAS="1", BYTEWAX_POD_NAME="f2-ingest-0")
    (tmp_path / "hostfile.txt").write_text("f2-ingest-0.f2-ingest:9999\n")
    for name in ("BYTEWAX_RECOVERY_DIRECTORY", "BYTEWAX_SNAPSHOT_INTERVAL"):
        del env[name]
    result = run_script(image, "entrypoint.sh", env)
    assert result.returncode == 0, result.stderr
    workdir = tmp_path / "var-bytewax"
    assert result.stdout.splitlines()[0] == f"RUN -m bytewax.run {workdir}/decode.py -w 1 -s 1"
    assert "ENV BYTEWAX_POD_NAME=" in result.stdout.splitlines()


def test_the_flow_refuses_what_the_chart_did_not_prepare(
    image: dict[str, str], tmp_path: Path
) -> None:
    no_partitions = run_script(image, "entrypoint.sh", chart_env(tmp_path))
    assert no_partitions.returncode == 1
    assert "no recovery partitions" in no_partitions.stderr
    assert "entrypoint-recovery.sh" in no_partitions.stderr
    assert run_script(image, "entrypoint-recovery.sh", recovery_env(tmp_path)).returncode == 0
    three = run_script(image, "entrypoint.sh", chart_env(tmp_path, BYTEWAX_REPLICAS="3"))
    assert three.returncode == 1 and "BYTEWAX_REPLICAS is 3" in three.stderr
    missing = chart_env(tmp_path, BYTEWAX_PYTHON_FILE_PATH=str(tmp_path / "var-bytewax/x.py"))
    result = run_script(image, "entrypoint.sh", missing)
    assert result.returncode == 1 and "make waxctl-bundle" in result.stderr
    bad = run_script(image, "entrypoint.sh", chart_env(tmp_path, BYTEWAX_SNAPSHOT_INTERVAL="1.5"))
    assert bad.returncode == 1 and "BYTEWAX_SNAPSHOT_INTERVAL must be a whole number" in bad.stderr


def test_keep_alive_keeps_the_container_up(image: dict[str, str], tmp_path: Path) -> None:
    assert run_script(image, "entrypoint-recovery.sh", recovery_env(tmp_path)).returncode == 0
    env = chart_env(tmp_path, BYTEWAX_KEEP_CONTAINER_ALIVE="true", SHIM_STATUS="3")
    proc = subprocess.Popen(
        ["sh", "-c", "sh ./entrypoint.sh"],
        cwd=image["cwd"],
        env={"PATH": image["PATH"], "F2_IMAGE_ENTRYPOINT": image["F2_IMAGE_ENTRYPOINT"], **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        time.sleep(1.5)
        assert proc.poll() is None  # the flow ended (status 3), the container did not
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
        assert "the flow exited with status 3" in stderr
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_recovery_is_prepared_once_by_pods_starting_together(
    image: dict[str, str], tmp_path: Path
) -> None:
    env = {
        "PATH": image["PATH"],
        "F2_IMAGE_ENTRYPOINT": image["F2_IMAGE_ENTRYPOINT"],
        **recovery_env(tmp_path),
        # Variables a pod might carry; the init container must lay out the shared volume anyway.
        "BYTEWAX_POD_NAME": "f2-decode-2",
        "BYTEWAX_ADDRESSES": "a:1;b:1;c:1",
    }
    inits = [
        subprocess.Popen(
            ["sh", "-c", "sh ./entrypoint-recovery.sh"],
            cwd=image["cwd"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [init.communicate(timeout=60)[0] for init in inits]
    assert [init.returncode for init in inits] == [0, 0, 0], outputs
    recovery = tmp_path / "recovery"
    assert sorted(p.name for p in recovery.iterdir()) == sorted(
        ["layout", *(f"part-{i}.sqlite3" for i in range(12))]
    )
    assert (recovery / "layout").read_text() == "parts=12 processes=1\n"
    assert sum("created recovery partitions" in o for o in outputs) == 1

    other = run_script(image, "entrypoint-recovery.sh", recovery_env(tmp_path, parts="6"))
    assert other.returncode == 1 and "laid out for 'parts=12 processes=1'" in other.stderr
    bad = run_script(image, "entrypoint-recovery.sh", recovery_env(tmp_path, parts="0"))
    assert bad.returncode == 1 and "BYTEWAX_RECOVERY_PARTS must be at least 1" in bad.stderr


def test_a_changed_image_entrypoint_stops_the_scripts(
    image: dict[str, str], tmp_path: Path
) -> None:
    exits = tmp_path / "exits.sh"
    exits.write_text("exit 0\n")  # an image entrypoint without library mode
    result = run_script({**image, "F2_IMAGE_ENTRYPOINT": str(exits)}, "entrypoint.sh", {})
    assert result.returncode == 1
    assert "has no library mode" in result.stderr
