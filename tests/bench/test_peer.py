"""The Quix Streams peer (``bench.peer``, ``bench.peer_quix``, ``bench.peer_venv``): its
virtualenv's requirements, its keys and targets in the report, and, against the session's stack,
a smoke run of the peer (every row stored once, replayed without duplicates) and of the stage.

The service tests need the peer's own virtualenv (Quix Streams from PyPI, created on first use
under ``~/.cache/f2-bench-peer/``): they skip only when it cannot be created for lack of network.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.common import KEEP_EVENTS, last_json_object
from bench.decode_flow import Window, decoded_rows, entries, fill_topic, mix
from bench.peer_venv import PEER_PACKAGE, PeerVenvError, ensure_venv, requirements
from bench.report import build_results, render_markdown
from ops.stack.local import create_topics
from schemas.settings import Settings, child_environment

ROOT = Path(__file__).resolve().parents[2]

PEER_RESULT = {
    "benchmark": "peer",
    "messages": 60000,
    "rows": 166200,
    "load_average": [1.4, 1.2, 0.9],
    "load_average_end": [1.0, 1.1, 0.9],
    "versions": {"quixstreams": {"quixstreams": "3.28.1"}},
    "flow_rows_per_s": 60000,
    "flow_us_per_msg": 27.0,
    "flow_us_per_row": 9.7,
    "quixstreams_rows_per_s": 30000,
    "quixstreams_us_per_msg": 53.2,
    "quixstreams_us_per_row": 19.2,
    "flow_us_per_msg_net": 30.0,
    "quixstreams_us_per_msg_net": 55.0,
    "flow_cpu_per_row_net_over_quixstreams": 0.545,
    "group_join_s": 23.66,
    "flow_first_row_s": 2.1,
    "quixstreams_first_row_s": 25.1,
    "quixstreams_cost_parts": {
        "consume": {"us_per_msg": 13.1},
        "decode": {"us_per_msg": 34.9},
        "store": {"us_per_msg": 60.0},
    },
}
META = {"mode": "full", "started_at": "2026-12-01T00:00:00+00:00", "runtime_s": 1, "machine": {}}


def test_the_peer_venv_takes_quix_streams_pin_of_confluent_kafka_and_the_projects_others() -> None:
    wanted = requirements()
    assert wanted[0] == PEER_PACKAGE and PEER_PACKAGE.startswith("quixstreams==3.")
    assert not [pin for pin in wanted if pin.startswith("confluent-kafka")]
    assert {"msgspec==0.22.0", "psycopg[binary]==3.3.9"} <= set(wanted)  # the project's pins


def test_peer_keys_and_targets_in_the_report() -> None:
    results = build_results({"peer": PEER_RESULT}, META)
    peer = results["peer"]
    assert peer["quixstreams_rows_per_s"] == 30000 and peer["flow_rows_per_s"] == 60000
    assert peer["quixstreams_us_per_msg"] == 53.2 and peer["flow_us_per_msg"] == 27.0
    assert peer["flow_over_quixstreams"] == 2.0
    assert peer["group_join_s"] == 23.7
    assert peer["quixstreams_us_per_msg_by_step"] == {"consume": 13.1, "decode": 34.9, "store": 60}
    assert results["targets"]["peer_flow_over_quixstreams"]["met"]  # 2.0 ≥ 1.5
    assert results["targets"]["peer_cpu_per_row"]["met"]  # 0.545 ≤ 1 (whole drain)
    page = render_markdown(results, [])
    assert "## Peer: Quix Streams (same run)" in page
    assert "consumer-group join 23.7 s" in page and "**2.00×**" in page
    assert "up to each step: consume 13.1, decode 34.9, store 60.0." in page
    assert "flow 30.0, peer 55.0 CPU µs/msg (**0.55×**)" in page
    slower = {
        **PEER_RESULT,
        "flow_rows_per_s": 40000,
        "flow_cpu_per_row_net_over_quixstreams": 1.2,
    }
    marked = build_results({"peer": slower}, META)["targets"]
    assert not marked["peer_flow_over_quixstreams"]["met"]  # 1.33
    assert not marked["peer_cpu_per_row"]["met"]


def test_a_failed_peer_is_an_error_without_figures_and_absent_peer_no_target() -> None:
    failed = build_results({"peer": {"error": "PeerVenvError: no network"}}, META)
    assert failed["errors"] == {"peer": "PeerVenvError: no network"}
    assert failed["peer"]["quixstreams_rows_per_s"] is None
    assert not failed["targets"]["peer_flow_over_quixstreams"]["met"]
    assert "Failed: see the list below." in render_markdown(failed, [])
    assert "peer_flow_over_quixstreams" not in build_results({}, META)["targets"]


@pytest.fixture(scope="module")
def peer_python() -> Path:
    try:
        return ensure_venv()
    except PeerVenvError as exc:
        if exc.offline:
            pytest.skip(f"the peer's virtualenv cannot be created: no network to PyPI ({exc})")
        raise


def run_peer(python: Path, topic: str, group: str, messages: int, cwd: Path) -> dict:
    command = [str(python), "-m", "bench.peer_quix", "--topic", topic, "--group", group]
    command += ["--messages", str(messages), "--state-dir", str(cwd / "state")]
    command += ["--consumer-config", "session.timeout.ms=6000"]  # a 3 s join on the local broker
    env = child_environment({**KEEP_EVENTS, "PYTHONPATH": str(ROOT)})
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return last_json_object(done.stdout)


@pytest.mark.integration
def test_the_peer_stores_every_row_once_and_a_replay_adds_none(
    stack: Settings, peer_python: Path, tmp_path: Path
) -> None:
    topic, count = f"peer_smoke_{time.time_ns()}", 600
    create_topics(stack.kafka_bootstrap, [topic], 4)
    base = datetime(2002, 11, 1, tzinfo=UTC)
    messages = mix(count, base)
    rows = len(decoded_rows(messages, entries(stack)))
    window = Window(stack.timeseries_dsn, base, base + timedelta(milliseconds=count))
    window.delete()
    fill_topic(stack, topic, messages)
    try:
        first = run_peer(peer_python, topic, "smoke-1", count, tmp_path)
        assert (first["messages"], first["rows"], first["decode_errors"]) == (count, rows, 6)
        assert window.count() == rows
        again = run_peer(peer_python, topic, "smoke-2", count, tmp_path)  # a replay: new group
        assert again["rows"] == rows  # handed to the writer again ...
        assert window.count() == rows  # ... and nothing stored twice
    finally:
        window.delete()


@pytest.mark.integration
def test_the_peer_stage_reports_both_jobs(stack: Settings, peer_python: Path, tmp_path: Path):
    out = tmp_path / "peer.json"
    command = [sys.executable, "-m", "bench.peer", "--messages", "3000", "--repeat", "1"]
    done = subprocess.run(
        [*command, "--results", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["rows"] == 8310 and result["messages"] == 3000
    for job in ("flow", "quixstreams"):
        assert result[job]["rows"] == 8310 and result[job]["first_row_s"] > 0
        rate = result[job]["rows_per_s"]
        assert rate is None or rate > 0  # None: every row landed between two polls
    assert result["group_join_s"] > 0
    assert result["quixstreams"]["report"]["messages"] == 3000
    assert set(result["quixstreams_cost_parts"]) == {"consume", "decode", "store"}
    for job in ("flow", "quixstreams"):  # a few thousand messages cost about the startup's noise
        assert result[job]["us_per_msg_net"] >= 0 and result[job]["startup_cpu_s"] > 0
    assert len(result["load_average"]) == 3
