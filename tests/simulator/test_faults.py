"""Each fault yields exactly its labelled reason through the decoding core, and nothing else."""

import time

import pytest

from simulator.faults import FAULT_REASONS, FaultMaker
from simulator.fleet import generate_fleet, seed_fleet
from simulator.messages import SensorSource, build_sources
from tests.simulator.helpers import decode, outcome, registry_of


@pytest.mark.parametrize("reason", FAULT_REASONS)
@pytest.mark.parametrize("fleet", [seed_fleet(), generate_fleet(8, seed=2)], ids=["seed", "gen"])
def test_fault_gives_its_reason(fleet, reason):
    registry = registry_of(fleet)
    sensors = [s for s in build_sources(fleet) if isinstance(s, SensorSource)]
    maker = FaultMaker(fleet.ghost_macs, f"test-{reason}")
    now = time.time()
    for step in range(60):  # enough draws to hit every variant of the kind
        message = maker.make(sensors[step % len(sensors)], now, reason)
        assert message.error == reason and message.readings == message.events == 0
        assert message.topic.startswith(("stat/", "tele/"))  # inside the test rig's ACL
        readings, events, errors = outcome(decode(message, registry))
        assert (readings, events, errors) == (0, 0, {reason: 1}), message


def test_random_faults_cover_every_kind():
    fleet = seed_fleet()
    sensors = [s for s in build_sources(fleet) if isinstance(s, SensorSource)]
    maker = FaultMaker(fleet.ghost_macs, "mix")
    kinds = {maker.make(sensors[0], time.time()).error for _ in range(300)}
    assert kinds == set(FAULT_REASONS)
