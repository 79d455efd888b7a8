"""The test stacks' helper (``tests.stacks``) without services: offsets that never overlap and are
free, and a stop that runs however the tests end (a fake ``f2`` records what it is asked)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests import stacks

ROOT = Path(__file__).resolve().parents[1]
FAKE_F2 = """\
import json, os, sys
with open(os.environ["F2_FAKE_LOG"], "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "dir": os.environ.get("F2_STACK_DIR")}) + "\\n")
sys.exit(int(os.environ.get("F2_FAKE_EXIT", "0")))
"""


@pytest.fixture
def fake_f2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tests.stacks`` runs a fake ``f2`` that appends its arguments to the returned log."""
    script, log = tmp_path / "fake_f2.py", tmp_path / "f2-calls.jsonl"
    script.write_text(FAKE_F2)
    monkeypatch.setattr(stacks, "CLI", [sys.executable, str(script)])
    monkeypatch.setenv("F2_FAKE_LOG", str(log))
    monkeypatch.setattr(stacks, "_handed_out", set())  # offsets taken here are not the session's
    return log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_offsets_are_steps_whose_ports_never_overlap() -> None:
    offsets = stacks.candidate_offsets()
    assert len(offsets) >= 10
    assert all(o % stacks.STEP == 0 and o not in stacks.SKIPPED_OFFSETS for o in offsets)
    for offset in offsets:
        ports = stacks.stack_ports(offset)
        assert 1024 < min(ports) and max(ports) < stacks.ephemeral_port_floor()
    for a, b in itertools.combinations([0, *offsets], 2):  # 0: the developer's own stack
        assert not set(stacks.stack_ports(a)) & set(stacks.stack_ports(b)), (a, b)


def test_every_port_of_the_stack_is_probed() -> None:
    ports = set(stacks.stack_ports(0))
    assert {25432, 26379, 29092, 29090, 21883, 21884, 21885, 8000, 3031, 3032} <= ports


def test_reserved_offsets_are_free_distinct_and_skip_busy_or_locked_ones(
    fake_f2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = [
        o
        for o in stacks.candidate_offsets()
        if all(stacks.port_free(p) for p in stacks.stack_ports(o))
    ]
    assert len(free) >= 4, "not enough free offsets on this machine"
    busy, locked, first, second = free[:4]
    monkeypatch.setattr(stacks, "candidate_offsets", lambda: [busy, locked, first, second])
    listener = socket.socket()
    listener.bind(("127.0.0.1", busy + stacks.DEFAULT_PORTS["redis"]))
    listener.listen()
    holder = subprocess.Popen(  # another test session holding ``locked``
        [
            sys.executable,
            "-c",
            f"from tests.stacks import _lock_offset; fd = _lock_offset({locked}); "
            "print(fd is not None, flush=True); input()",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        one, two = stacks.start_isolated_stack(), stacks.start_isolated_stack()
        try:
            assert (one.offset, two.offset) == (first, second)
            assert one.dir != two.dir and one.dir.is_dir() and two.dir.is_dir()
            assert one.dir.name.startswith("f2-test-stack-")
            assert one.env == {"F2_STACK_DIR": str(one.dir), "F2_STACK_PORT_OFFSET": str(first)}
            assert one.port(3032) == 3032 + first
            with pytest.raises(RuntimeError, match="no free port offset"):
                stacks.start_isolated_stack()
        finally:
            one.stop()
            two.stop()
    finally:
        listener.close()
        holder.kill()
        holder.wait(10)
    assert not one.dir.exists() and not two.dir.exists()
    assert [c["dir"] for c in calls(fake_f2)] == [str(one.dir), str(two.dir)]
    assert all(c["argv"] == ["stack", "down", "--purge"] for c in calls(fake_f2))
    for offset in (first, locked):  # released by stop(), and by the holder's exit
        fd = stacks._lock_offset(offset)
        assert fd is not None
        stacks._unlock_offset(offset, fd)  # also removes the lock file the holder left


def test_environment_names_only_this_stack(fake_f2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("F2_MQTT_PORT", "21883")
    monkeypatch.setenv("F2_PARAMS_DSN", "postgresql://elsewhere")
    monkeypatch.setenv("F2_STACK_DIR", "/somewhere/else")
    monkeypatch.setenv("F2_TOPIC_RAW", "kept")
    with stacks.isolated_stack() as stack:
        env = stack.environ(EXTRA="1")
        assert env["F2_STACK_DIR"] == str(stack.dir)
        assert env["F2_STACK_PORT_OFFSET"] == str(stack.offset)
        assert "F2_MQTT_PORT" not in env and "F2_PARAMS_DSN" not in env
        assert env["F2_TOPIC_RAW"] == "kept" and env["EXTRA"] == "1"
        assert stack.settings().stack_dir == str(stack.dir)


def test_stop_kills_what_a_failed_down_left_running(
    fake_f2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("F2_FAKE_EXIT", "1")
    stack = stacks.start_isolated_stack()
    service = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        (stack.dir / "run").mkdir()
        (stack.dir / "run" / "redis.pid").write_text(f"{service.pid}\n")
        (stack.dir / "run" / "stale.pid").write_text("1\n")  # never killed: not the stack's
        started = time.monotonic()
        stack.stop()
        stack.stop()  # idempotent
        assert time.monotonic() - started < 30
        assert service.wait(10) == -signal.SIGKILL
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
    assert not stack.dir.exists()
    assert len(calls(fake_f2)) == 1


INNER_TESTS = """\
import os, sys, time
from pathlib import Path

import pytest

from tests import stacks

stacks.CLI = [sys.executable, {fake!r}]
STATE = Path({state!r})


@pytest.fixture(scope="module")
def iso():
    with stacks.isolated_stack() as stack:
        (stack.dir / "data").write_text("x")
        STATE.write_text(str(stack.dir))
        yield stack


def test_fails(iso):
    assert iso.dir.is_dir()
    if os.environ.get("INNER_WAIT"):
        Path(str(STATE) + ".ready").touch()
        time.sleep(60)
    raise AssertionError("this test fails on purpose")
"""


def run_inner(tmp_path: Path, wait: bool) -> tuple[subprocess.Popen, Path, Path]:
    script, log, state = tmp_path / "fake_f2.py", tmp_path / "f2-calls.jsonl", tmp_path / "state"
    script.write_text(FAKE_F2)
    inner = tmp_path / "inner" / "test_inner.py"
    inner.parent.mkdir()
    inner.write_text(INNER_TESTS.format(fake=str(script), state=str(state)))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "F2_FAKE_LOG": str(log),
        "INNER_WAIT": "1" if wait else "",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(inner)],
        cwd=inner.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, log, state


def test_a_failing_test_still_stops_and_deletes_its_stack(tmp_path: Path) -> None:
    proc, log, state = run_inner(tmp_path, wait=False)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "this test fails on purpose" in out, out
    stack_dir = state.read_text()
    assert [c["argv"] for c in calls(log)] == [["stack", "down", "--purge"]], out
    assert calls(log)[0]["dir"] == stack_dir
    assert not Path(stack_dir).exists()


def test_ctrl_c_still_stops_and_deletes_the_stack(tmp_path: Path) -> None:
    proc, log, state = run_inner(tmp_path, wait=True)
    try:
        ready = Path(str(state) + ".ready")
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), proc.communicate(timeout=30)[0]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2 and "KeyboardInterrupt" in out, out
    assert [c["argv"] for c in calls(log)] == [["stack", "down", "--purge"]], out
    assert not Path(state.read_text()).exists()


def test_a_stack_left_running_is_stopped_when_the_interpreter_exits(tmp_path: Path) -> None:
    script, log = tmp_path / "fake_f2.py", tmp_path / "f2-calls.jsonl"
    script.write_text(FAKE_F2)
    code = textwrap.dedent(
        f"""
        import sys
        from tests import stacks
        stacks.CLI = [sys.executable, {str(script)!r}]
        print(stacks.start_isolated_stack().dir)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "F2_FAKE_LOG": str(log)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    stack_dir = out.stdout.strip()
    assert out.returncode == 0 and stack_dir, out.stderr
    assert [c["argv"] for c in calls(log)] == [["stack", "down", "--purge"]]
    assert calls(log)[0]["dir"] == stack_dir
    assert not Path(stack_dir).exists()
