"""The image entrypoint's decode recovery layout: each process creates its share of the recovery
partitions once, and a start with another process count stops instead of resuming wrongly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "entrypoint.sh"
SHIM = """#!/bin/sh
# Real Python for bytewax.recovery; prints the argv of anything else (the flow) and exits.
if [ "$1 $2" = "-m bytewax.recovery" ]; then exec {python} "$@"; fi
echo "RUN $*"
"""


@pytest.fixture
def shim_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(SHIM.format(python=sys.executable))
    python.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def decode(recovery: Path, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "decode"],
        env={
            "PATH": path,
            "F2_DECODE_RECOVERY_DIR": str(recovery),
            "F2_DECODE_RECOVERY_PARTS": "12",
            "BYTEWAX_STATEFULSET_NAME": "f2-decode",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_each_process_gets_its_share_once(tmp_path: Path, shim_path: str) -> None:
    recovery = tmp_path / "recovery"
    addresses = "a:2101;b:2101;c:2101"
    first = decode(recovery, shim_path, BYTEWAX_POD_NAME="f2-decode-1", BYTEWAX_ADDRESSES=addresses)
    assert first.returncode == 0, first.stderr
    parts = sorted(int(p.stem.split("-")[1]) for p in recovery.glob("part-*.sqlite3"))
    assert parts == [1, 4, 7, 10]
    assert f"RUN -m bytewax.run dataflows.decode -r {recovery} -s 1 -b 10" in first.stdout
    again = decode(recovery, shim_path, BYTEWAX_POD_NAME="f2-decode-1", BYTEWAX_ADDRESSES=addresses)
    assert again.returncode == 0 and "created" not in again.stderr


def test_a_changed_process_count_stops(tmp_path: Path, shim_path: str) -> None:
    recovery = tmp_path / "recovery"
    one = decode(recovery, shim_path)
    assert one.returncode == 0, one.stderr
    assert len(list(recovery.glob("part-*.sqlite3"))) == 12
    two = decode(recovery, shim_path, BYTEWAX_POD_NAME="f2-decode-0", BYTEWAX_ADDRESSES="a:1;b:1")
    assert two.returncode == 1 and "Rescaling decode" in two.stderr
    forced = decode(
        recovery,
        shim_path,
        BYTEWAX_POD_NAME="f2-decode-0",
        BYTEWAX_ADDRESSES="a:1;b:1",
        F2_DECODE_RECOVERY_RESCALED="1",
    )
    assert forced.returncode == 0, forced.stderr
