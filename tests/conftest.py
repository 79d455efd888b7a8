"""Shared fixtures. Integration tests get the local stack through the same command users run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from schemas.settings import Settings, load_settings
from tests.stacks import IsolatedStack, isolated_stack


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
        needs_services = {"stack", "session_stack"} & set(getattr(item, "fixturenames", ()))
        if needs_services or "integration" in item.path.parts:
            if item.get_closest_marker("integration") is None:
                item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def session_stack() -> Iterator[IsolatedStack]:
    """The session's own stack (a temporary directory, free ports; see ``tests.stacks``), not the
    developer's ``.stack``: brought up with ``f2 stack up``; this process and every program it
    starts point at it (``F2_STACK_DIR``, ``F2_STACK_PORT_OFFSET`` in ``os.environ``, variables
    naming another stack removed) until the session ends; then it is stopped and deleted."""
    with isolated_stack() as iso, pytest.MonkeyPatch.context() as patch:
        for name in os.environ.keys() - iso.environ().keys():
            patch.delenv(name)
        for name, value in iso.env.items():
            patch.setenv(name, value)
        result = f2("stack", "up", check=False)
        if result.returncode != 0:
            pytest.fail(f"f2 stack up failed:\n{result.stdout}\n{result.stderr}")
        yield iso


@pytest.fixture(scope="session")
def stack(session_stack: IsolatedStack) -> Settings:
    """The session's stack, up; its settings."""
    return load_settings()
