"""The simulator with ``--device-credentials`` against the shared stack's Mosquitto.

Every controller connects as its own device user (registered through ``f2 devices register``), so
the broker's ACL lets it publish only on its own topics: a subscriber (the pipeline's user) must
receive exactly what the report counts, from every controller, and the ``unknown_device`` faults
(another MAC in the topic) must come back refused, counted in the summary and not in the report.
The seed is chosen so that such a fault comes early in the run; the device users are revoked at
the end.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import subprocess
import sys
import time
from collections import Counter

import pytest

from schemas.decode import decode_message
from schemas.records import RawMessage
from schemas.settings import Settings
from simulator.faults import FaultMaker
from simulator.fleet import Fleet, generate_fleet
from simulator.messages import SensorSource, build_sources
from tests.conftest import f2
from tests.integration.test_simulator import Listener, fresh_seed
from tests.simulator.helpers import outcome, registry_of

pytestmark = pytest.mark.integration

FAULTS = 0.5
REFUSED_LINE = re.compile(r"refused by the broker \(not in the report\): (.*)")


def first_faults(fleet: Fleet, count: int) -> list[str | None]:
    """The fault reasons (None: a good message) of a single worker's first ``count`` messages,
    drawn as :func:`simulator.load._publish_loop` draws them."""
    sensors = [s for s in build_sources(fleet) if isinstance(s, SensorSource)]
    if not sensors:
        return []
    rng = random.Random(f"f2-faults-{fleet.seed}-0")
    faults = FaultMaker(fleet.ghost_macs, f"f2-faults-{fleet.seed}-0")
    return [
        faults.make(rng.choice(sensors), time.time()).error if rng.random() < FAULTS else None
        for _ in range(count)
    ]


def fleet_with_early_foreign_fault() -> Fleet:
    """A two-controller fleet whose run publishes an ``unknown_device`` fault early on."""
    for seed in itertools.count(fresh_seed()):
        fleet = generate_fleet(2, seed)
        if "unknown_device" in first_faults(fleet, 6):
            return fleet
    raise AssertionError("unreachable")


def test_each_controller_publishes_as_itself(stack: Settings, tmp_path):
    fleet = fleet_with_early_foreign_fault()
    listener = Listener(stack, fleet.macs + list(fleet.ghost_macs))
    report_path = tmp_path / "report.json"
    try:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "simulator", "--controllers", "2"),
                *("--seed", str(fleet.seed), "--register", "--device-credentials"),
                *("--duration", "5", "--interval", "1", "--faults", str(FAULTS)),
                *("--report", str(report_path)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "device credentials: 2 controllers" in done.stdout
        report = json.loads(report_path.read_text())
        listener.settle(report["published"])
    finally:
        for mac in fleet.macs:
            f2("devices", "revoke", mac, check=False)

    registry = registry_of(fleet)
    readings = events = 0
    errors: Counter[str] = Counter()
    senders: Counter[str] = Counter()
    for message in listener.messages:
        mac = message.topic.split("/")[1][3:]
        senders[mac] += 1
        raw = RawMessage(message.topic, message.payload)
        got_readings, got_events, got_errors = outcome(decode_message(raw, registry.get(mac)))
        readings += got_readings
        events += got_events
        errors += got_errors
    assert report["published"] > 5, output
    assert len(listener.messages) == report["published"]
    assert readings == report["expected_readings"]
    assert events == report["expected_events"]
    assert dict(errors) == report["expected_errors"]
    assert set(senders) == set(fleet.macs), senders  # both controllers got through, no ghost
    assert "unknown_device" not in report["expected_errors"]

    refused_line = REFUSED_LINE.search(done.stdout)
    assert refused_line is not None, output
    refused = {
        label: int(n) for label, n in (part.rsplit(" ", 1) for part in refused_line[1].split(", "))
    }
    assert set(refused) == {"unknown_device"} and refused["unknown_device"] >= 1, output
    assert f"{sum(refused.values())} refused, 0 unacknowledged" in done.stdout
