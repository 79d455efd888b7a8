import sys
from pathlib import Path

from ops.stack import procs


def test_spawn_records_pid_and_terminate_stops_it(tmp_path: Path) -> None:
    pid_file, log_file = tmp_path / "run" / "x.pid", tmp_path / "logs" / "x.log"
    pid = procs.spawn(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        log_file,
        pid_file,
    )
    assert procs.read_pid(pid_file) == pid
    assert procs.wait_until(lambda: "up" in log_file.read_text(), 10)
    procs.terminate(pid, timeout_s=5)
    assert not procs.pid_alive(pid)
    assert procs.read_pid(pid_file) is None


def test_read_pid_ignores_garbage(tmp_path: Path) -> None:
    (tmp_path / "p").write_text("not-a-pid")
    assert procs.read_pid(tmp_path / "p") is None
    assert procs.read_pid(tmp_path / "missing") is None


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("\n".join(str(i) for i in range(100)))
    assert procs.tail(path, 3) == "97\n98\n99"
