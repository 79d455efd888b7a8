"""Isolated stacks of the integration modules that share helpers (see ``tests.stacks``): each
module using one gets its own (a temporary directory, free ports), stopped and deleted when the
module's tests end, however they end. The modules bring them up themselves (``f2 stack up`` is
idempotent), as before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stacks import IsolatedStack, isolated_stack


@pytest.fixture(scope="module")
def decode_stack() -> Iterator[IsolatedStack]:
    """The stack of the decode flow's tests (``tests.integration.decode_support``)."""
    with isolated_stack() as iso:
        yield iso


@pytest.fixture(scope="module")
def replay_stack() -> Iterator[IsolatedStack]:
    """The stack of the replay and re-drive tests (``tests.integration.replay_support``)."""
    with isolated_stack() as iso:
        yield iso
