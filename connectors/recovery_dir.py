"""Bytewax recovery directory of a flow, tied to the Kafka broker incarnation it was written for.

Delivery guarantee: not a data path. A recovery store holds Kafka offsets; offsets are only
meaningful for the broker (and topics) they were read from. The local stack's in-memory broker
starts empty each time and records a new id in ``<stack>/kafka/incarnation``; when that id differs
from the one stored beside the recovery partitions, the partitions are void and are recreated
empty (the flow then starts from the beginning of the new topics). With a durable broker (no
incarnation file) the directory is only created when missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

INCARNATION = "kafka-incarnation"


def prepare_recovery(directory: Path, parts: int, incarnation_file: Path | None) -> bool:
    """Make ``directory`` hold ``parts`` partitions for this broker; True if (re)created."""
    current = _read(incarnation_file) if incarnation_file is not None else ""
    stored = _read(directory / INCARNATION)
    has_parts = any(directory.glob("part-*.sqlite3"))
    if has_parts and stored == current:
        return False
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "bytewax.recovery", str(directory), str(parts)],
        check=True,
        capture_output=True,
    )
    (directory / INCARNATION).write_text(current + "\n")
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
