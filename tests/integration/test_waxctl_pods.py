"""The F2 image's scripts for Bytewax's Helm chart (``deploy/waxctl/``), without Kubernetes: two
local "pods" of the decode flow, run the way the chart runs them, on the isolated stack.

Each pod gets what the chart gives it (``charts/bytewax/templates/statefulset.yaml`` of chart
0.8.1): its own working directory holding the launcher (the ConfigMap's file, copied by the
hostfile init container), a hostfile of both processes (loopback, free ports), an API cache
directory, the chart's environment, and the one recovery directory both pods share (the chart's
single PVC), prepared by ``sh ./entrypoint-recovery.sh`` (the recovery init container, both at once)
before ``sh ./entrypoint.sh`` starts the flow in the image's working directory. A pre-filled raw
topic is decoded with every row stored exactly once; then one pod is SIGKILLed (its process group:
the shell and the flow), its peer exits as Bytewax cluster processes do, the killed pod is
recreated (fresh directories, the init container again, which must keep the partitions) and the
other restarted (its container only), more messages arrive, and every row is still stored once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import msgspec
import psycopg
import pytest
from psycopg import sql

from ops.stack.local import create_topics
from ops.stack.procs import port_open, wait_until
from tests.integration.decode_support import Traffic, flow_env, iso_stack
from tests.integration.test_decode_processes import free_port
from tests.stacks import IsolatedStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WAXCTL = ROOT / "deploy" / "waxctl"
IMAGE_ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
SCRIPTS = ("entrypoint.sh", "entrypoint-recovery.sh", "waxctl-lib.sh")
RELEASE = "f2-decode"  # the chart's release: the StatefulSet's name
BASE_API_PORTS = (3038, 3039)  # the pods' API ports at offset 0: stack.port(...)
PARTS = 4
COMMAND = ["sh", "-c", "sh ./entrypoint.sh"]  # the chart's, in the image's working directory
RECOVERY_COMMAND = ["sh", "-c", "sh ./entrypoint-recovery.sh"]


class ChartPods:
    """Two pods of the chart's StatefulSet as local process groups."""

    def __init__(self, stack: IsolatedStack, tmp: Path, topics: dict[str, str]) -> None:
        self.stack, self.tmp, self.topics = stack, tmp, topics
        self.image = tmp / "image"  # the image's working directory (/var/lib/f2)
        self.image.mkdir()
        for name in SCRIPTS:
            shutil.copyfile(WAXCTL / name, self.image / name)
        self.recovery = tmp / "recovery"  # the chart's one recovery volume, in every pod
        self.ports = [stack.port(base) for base in BASE_API_PORTS]
        self.peers = [f"127.0.0.1:{free_port()}" for _ in self.ports]
        self.procs: dict[int, subprocess.Popen] = {}

    def pod(self, index: int) -> Path:
        return self.tmp / "pods" / f"{RELEASE}-{index}"

    def base_env(self) -> dict[str, str]:
        return {
            **self.stack.environ(),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "F2_IMAGE_ENTRYPOINT": str(IMAGE_ENTRYPOINT),  # /app/bin/entrypoint.sh in the image
            "PYTHONUNBUFFERED": "1",
        }

    def create(self, index: int) -> None:
        """A new pod: its emptyDirs, and what the hostfile init container writes into them."""
        pod = self.pod(index)
        shutil.rmtree(pod, ignore_errors=True)
        for directory in ("workdir", "etc", "api-cache"):
            (pod / directory).mkdir(parents=True)
        (pod / "etc" / "hostfile.txt").write_text("".join(f"{p}\n" for p in self.peers))
        shutil.copyfile(WAXCTL / "decode.py", pod / "workdir" / "decode.py")

    def init_recovery(self, indices: list[int]) -> None:
        """The recovery init containers of these pods, at the same time (Parallel pods)."""
        env = {
            **self.base_env(),
            "BYTEWAX_RECOVERY_PARTS": str(PARTS),
            "BYTEWAX_RECOVERY_DIRECTORY": str(self.recovery),
            "BYTEWAX_SNAPSHOT_INTERVAL": "1",
            "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "10",
        }
        inits = [
            subprocess.Popen(
                RECOVERY_COMMAND,
                cwd=self.image,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            for _ in indices
        ]
        for init in inits:
            output, _ = init.communicate(timeout=60)
            assert init.returncode == 0, output

    def start(self, index: int) -> None:
        pod = self.pod(index)
        env = {
            **flow_env(self.stack, self.ports[index]),
            **self.base_env(),
            **self.topics,
            "RUST_BACKTRACE": "full",
            "BYTEWAX_PYTHON_FILE_PATH": str(pod / "workdir" / "decode.py"),
            "BYTEWAX_WORKDIR": str(pod / "workdir"),
            "BYTEWAX_WORKERS_PER_PROCESS": "1",
            "BYTEWAX_POD_NAME": f"{RELEASE}-{index}",
            "BYTEWAX_REPLICAS": str(len(self.peers)),
            "BYTEWAX_KEEP_CONTAINER_ALIVE": "false",
            "BYTEWAX_HOSTFILE_PATH": str(pod / "etc" / "hostfile.txt"),
            "BYTEWAX_STATEFULSET_NAME": RELEASE,
            "BYTEWAX_DATAFLOW_API_ENABLED": "true",
            "BYTEWAX_DATAFLOW_API_PORT": str(self.ports[index]),
            "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(pod / "api-cache"),
            "BYTEWAX_OTLP_URL": f"http://{RELEASE}-opentelemetry-collector:4317",
            "BYTEWAX_RECOVERY_DIRECTORY": str(self.recovery),
            "BYTEWAX_SNAPSHOT_INTERVAL": "1",
            "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "10",
        }
        with open(self.tmp / f"pod-{index}.log", "ab") as log:
            self.procs[index] = subprocess.Popen(
                COMMAND,
                cwd=self.image,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the pod
            )

    def alive(self, index: int) -> bool:
        proc = self.procs.get(index)
        return proc is not None and proc.poll() is None

    def kill(self, index: int) -> None:
        """SIGKILL the pod's process group (the shell and the flow) and reap it."""
        proc = self.procs.get(index)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for index in list(self.procs):
            self.kill(index)

    def serving(self) -> bool:
        return all(port_open(port) for port in self.ports)

    def log(self) -> str:
        return "\n".join(
            f"--- pod {i} ---\n" + (self.tmp / f"pod-{i}.log").read_text(errors="replace")[-3000:]
            for i in range(len(self.ports))
            if (self.tmp / f"pod-{i}.log").exists()
        )


def part_inodes(recovery: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in sorted(recovery.glob("part-*.sqlite3"))}


@pytest.fixture()
def setup(decode_stack: IsolatedStack, tmp_path: Path) -> Iterator[tuple[ChartPods, Traffic]]:
    iso = iso_stack(decode_stack)
    suffix = f"{int(time.time() * 1000)}"
    topics = {
        "F2_TOPIC_RAW": f"chart_raw_{suffix}",
        "F2_TOPIC_DECODED": f"chart_decoded_{suffix}",
        "F2_TOPIC_DLQ": f"chart_dlq_{suffix}",
    }
    create_topics(iso.kafka_bootstrap, list(topics.values()), 4)
    traffic = Traffic(
        msgspec.structs.replace(
            iso,
            raw_topic=topics["F2_TOPIC_RAW"],
            decoded_topic=topics["F2_TOPIC_DECODED"],
            dlq_topic=topics["F2_TOPIC_DLQ"],
        )
    )
    with psycopg.connect(iso.timeseries_dsn, autocommit=True) as conn:
        for table in ("readings", "device_events"):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE time >= %s AND time <= %s").format(
                    sql.Identifier(table)
                ),
                (traffic.base, traffic.base + timedelta(minutes=1)),
            )
    pods = ChartPods(decode_stack, tmp_path, topics)
    try:
        yield pods, traffic
    finally:
        pods.stop()


def test_chart_pods_store_every_row_once_through_a_killed_pod(setup) -> None:
    pods, traffic = setup
    traffic.send(6000)  # the pre-filled raw topic
    for index in (0, 1):
        pods.create(index)
    pods.init_recovery([0, 1])
    assert len(part_inodes(pods.recovery)) == PARTS
    assert (pods.recovery / "layout").read_text().strip() == f"parts={PARTS} processes=1"
    parts = part_inodes(pods.recovery)
    for index in (0, 1):
        pods.start(index)
    assert wait_until(pods.serving, 60, 0.2), pods.log()
    assert traffic.wait_stored(90) == (traffic.readings, traffic.events), pods.log()
    # The F2 metrics are on Bytewax's API port, the chart's `api` port its PodMonitor scrapes.
    for port in pods.ports:
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"\nf2_" in metrics

    stored = traffic.stored()[0]
    traffic.send(30000)
    assert wait_until(lambda: traffic.stored()[0] > stored + 3000, 60, 0.05), pods.log()
    pods.kill(1)
    assert traffic.stored()[0] < traffic.readings
    # Its peer's cluster is gone: the flow process exits (Kubernetes restarts that container).
    assert wait_until(lambda: not pods.alive(0), 60, 0.2), pods.log()
    pods.procs[0].wait(5)

    pods.create(1)  # the killed pod, recreated: new emptyDirs, its init containers run again
    pods.init_recovery([1])
    assert part_inodes(pods.recovery) == parts  # the partitions were kept, not recreated
    for index in (0, 1):
        pods.start(index)
    assert wait_until(pods.serving, 60, 0.2), pods.log()
    traffic.send(2000)
    assert traffic.wait_stored(90) == (traffic.readings, traffic.events), pods.log()
