"""Fixtures of the decoding tests."""

from __future__ import annotations

import pytest

from schemas.records import ControllerEntry
from tests.schemas.support import SEED_MACS, seed_controller


@pytest.fixture
def seed_fleet() -> dict[str, ControllerEntry]:
    """The three seed controllers, keyed by MAC."""
    return {mac: seed_controller(mac, n) for n, mac in enumerate(SEED_MACS)}


@pytest.fixture
def controller() -> ControllerEntry:
    """The first seed controller (UTC)."""
    return seed_controller()
