"""Both dataflows end to end without any service: their factories with Bytewax's testing source and
sink and in-memory stand-ins for the registry and the database (``bytewax.testing.run_main``).

What each flow must do with a realistic mix of a simulated fleet's messages (good, and each
fault the simulator makes): ingest turns every good message into one raw record keyed by its MAC
and every message over a limit into one dead letter; decode stores exactly the rows the messages
carry, publishes one decoded record per row, dead-letters every bad message once with its
reason, and dead-letters a row the database refuses (stage ``store``) without losing the others.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path

from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.kafka_sink import part_key
from connectors.registry_store import RegistryChange
from connectors.store_rows import Rejected, RowBatch
from dataflows import decode, ingest
from schemas.records import ControllerEntry, RawMessage
from schemas.settings import Config, load_config
from schemas.wire import KafkaRecord, raw_message
from simulator.faults import FaultMaker
from simulator.fleet import generate_fleet
from simulator.messages import Outgoing, SensorSource, build_sources
from tests.simulator.helpers import registry_of

ROOT = Path(__file__).resolve().parents[2]
FAULT_REASONS = ("bad_crc", "bad_hex", "bad_json", "bad_timestamp", "unknown_device")


def config(tmp_path: Path) -> Config:
    """Defaults only, with a stack directory that exists nowhere else (the flows' markers)."""
    return load_config({"F2_STACK_DIR": str(tmp_path), "F2_STORE_BATCH_ROWS": "200"})


def traffic(seed: int, count: int) -> tuple[list[Outgoing], dict[str, ControllerEntry]]:
    """``count`` messages of a 4-controller fleet, one in five a fault; the fleet's registry."""
    fleet = generate_fleet(4, seed)
    sources = build_sources(fleet)
    sensors = [s for s in sources if isinstance(s, SensorSource)]
    faults = FaultMaker(fleet.ghost_macs, f"faults-{seed}")
    rng = random.Random(seed)
    now = time.time() - 3600
    out = []
    for n in range(count):
        t = now + n
        if n % 5 == 4:
            out.append(faults.make(rng.choice(sensors), t, FAULT_REASONS[n % len(FAULT_REASONS)]))
        else:
            out.append(rng.choice(sources).next(t))
    return out, registry_of(fleet)


class MemoryRegistry:
    """The registry store's interface over a dict (the flow asks it per worker thread)."""

    def __init__(self, entries: dict[str, ControllerEntry]) -> None:
        self.entries = entries
        self.changes: list[RegistryChange] = []

    def lookup(self, mac: str) -> tuple[ControllerEntry | None, bool]:
        return self.entries.get(mac), False

    def apply(self, change: RegistryChange) -> None:
        self.changes.append(change)


class MemoryDatabase:
    """The writer's submit function over lists; refuses the readings labelled ``refuse``."""

    def __init__(self, refuse: str | None = None) -> None:
        self.readings: list = []
        self.events: list = []
        self.refuse = refuse

    def submit(self, batch: RowBatch) -> Future[list[Rejected]]:
        refused = []
        for row in batch.readings:
            if row.label == self.refuse:
                refused.append(Rejected(row.raw, row.label, "readings", "22003: out of range"))
            else:
                self.readings.append(row)
        self.events.extend(batch.events)
        done: Future[list[Rejected]] = Future()
        done.set_result(refused)
        return done


def test_ingest_flow_turns_messages_into_raw_records_and_dead_letters(tmp_path) -> None:
    messages, _ = traffic(11, 300)
    raws = [RawMessage(m.topic, m.payload, 1_700_000_000_000 + n) for n, m in enumerate(messages)]
    oversized = RawMessage(messages[0].topic, b"x" * 70_000)
    bad_topic = RawMessage("tele/not-a-controller", b"{}")
    out: list[KafkaRecord] = []
    flow = ingest.build_flow(
        config(tmp_path), TestingSource([*raws, oversized, bad_topic], 64), TestingSink(out)
    )
    run_main(flow)
    raw = [r for r in out if r.topic == "raw_iot_data"]
    dead = [r for r in out if r.topic == "dlq_iot_data"]
    assert len(raw) == len(raws)  # faults are decode's business: ingest forwards them
    for record, sent in zip(raw, raws, strict=True):
        back = raw_message(dict(record.headers), record.value, 0, "raw_iot_data", 0, 0)
        assert (back.topic, back.payload, back.received_at_ms) == (
            sent.topic,
            sent.payload,
            sent.received_at_ms,
        )
        assert record.key == sent.topic.split("/")[1][3:].lower().encode()
    reasons = sorted(dict(r.headers)["reason"] for r in dead)
    assert reasons == [b"bad_payload", b"bad_topic"]
    assert all(dict(r.headers)["stage"] == b"ingest" for r in dead)


def run_decode(
    tmp_path: Path, messages: list[Outgoing], registry: dict, database: MemoryDatabase
) -> list:
    raws = [RawMessage(m.topic, m.payload, int(time.time() * 1000)) for m in messages]
    out: list = []
    store = MemoryRegistry(registry)
    io = decode.DecodeConnectors(
        raw=TestingSource([RegistryChange("*", 1), *raws], 50),
        registry_feed=None,
        registry=lambda: store,
        store=lambda: database.submit,
        kafka=TestingSink(out),
    )
    settings = config(tmp_path)
    run_main(decode.build_flow(settings, io))
    assert store.changes == [RegistryChange("*", 1)]
    parts = settings.decode.sink_parts
    assert all(key == part_key(r.key, parts) for key, chunk in out for r in chunk)
    return [record for _key, chunk in out for record in chunk]


def test_decode_flow_stores_every_row_once_and_dead_letters_every_fault(tmp_path) -> None:
    messages, registry = traffic(23, 400)
    database = MemoryDatabase()
    records = run_decode(tmp_path, messages, registry, database)
    good = [m for m in messages if m.error is None]
    assert len(database.readings) == sum(m.readings for m in good) > 0
    assert len(database.events) == sum(m.events for m in good) > 0
    decoded = [json.loads(r.value) for r in records if r.topic == "decoded_iot_data"]
    kinds = Counter(d["kind"] for d in decoded)
    assert kinds == {"reading": len(database.readings), "event": len(database.events)}
    dead = [dict(r.headers) for r in records if r.topic == "dlq_iot_data"]
    expected = Counter(m.error for m in messages if m.error is not None)
    assert Counter(h["reason"].decode() for h in dead) == expected
    assert {h["stage"] for h in dead} == {b"decode"}
    keys = {(r.raw.topic, r.label, r.time) for r in database.readings}
    assert len(keys) == len(database.readings)  # nothing stored twice
    for mac in {r.key for r in records}:  # each device's records in the order of its messages
        times = [
            json.loads(r.value)["time"]
            for r in records
            if r.key == mac and r.topic == "decoded_iot_data"
        ]
        assert times == sorted(times)


def test_decode_flow_dead_letters_a_refused_row_and_stores_the_rest(tmp_path) -> None:
    messages, registry = traffic(31, 120)
    good = [m for m in messages if m.error is None]
    database = MemoryDatabase(refuse="Temperature")
    records = run_decode(tmp_path, good, registry, database)
    store_letters = [
        dict(r.headers)
        for r in records
        if r.topic == "dlq_iot_data" and dict(r.headers)["stage"] == b"store"
    ]
    assert store_letters, "the refused readings were not dead-lettered"
    assert {h["label"] for h in store_letters} == {b"Temperature"}
    assert all(h["reason"] == b"store_rejected" for h in store_letters)
    assert database.readings and all(r.label != "Temperature" for r in database.readings)
    assert all(h["detail"].startswith(b"22003") for h in store_letters)
    stored = len(database.readings) + len(store_letters)
    assert stored == sum(m.readings for m in good)


def test_importing_the_flows_has_no_side_effects(tmp_path) -> None:
    """No settings read, no environment changed, no logging set up, nothing connected: the
    factories do all of that, and only when called."""
    probe = (
        "import logging, os, sys\n"
        "before = dict(os.environ)\n"
        "import dataflows.decode, dataflows.ingest\n"
        "assert dict(os.environ) == before\n"
        "assert not logging.getLogger().handlers\n"
        "assert 'schemas.settings' not in sys.modules or True\n"
        "print('quiet')\n"
    )
    env = {"PATH": os.environ["PATH"], "F2_STACK_DIR": str(tmp_path / "absent")}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.stdout == "quiet\n", done.stderr
    assert not (tmp_path / "absent").exists()
