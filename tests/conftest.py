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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs services is an integration test (``-m "not integration"`` runs the
    rest without any): those under ``tests/integration/`` and those using the ``stack`` fixture."""
    for item in items:
        needs_services = "stack" in getattr(item, "fixturenames", ())
        if needs_services or "integration" in item.path.parts:
            if item.get_closest_marker("integration") is None:
                item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Settings:
    """The local stack, brought up (idempotently) with ``f2 stack up``; its settings."""
    result = f2("stack", "up", check=False)
    if result.returncode != 0:
        pytest.fail(f"f2 stack up failed:\n{result.stdout}\n{result.stderr}")
    return load_settings()
