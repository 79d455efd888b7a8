"""Shared fixtures. Integration tests get the local stack through the same command users run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from schemas.settings import Settings, load_settings


def f2(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the ``f2`` CLI of this checkout as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


@pytest.fixture(scope="session")
def stack() -> Settings:
    """The local stack, brought up (idempotently) with ``f2 stack up``; its settings."""
    result = f2("stack", "up", check=False)
    if result.returncode != 0:
        pytest.fail(f"f2 stack up failed:\n{result.stdout}\n{result.stderr}")
    return load_settings()
