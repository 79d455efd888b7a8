"""Every non-fault message decodes exactly as labelled, to values within the signal ranges."""

import time

import msgspec
import pytest

from schemas.encode import frame_hex
from schemas.records import Reading
from schemas.topics import ACCESS_MODE, ALARM_MODE
from simulator.events import LIGHT_REPLY, EventStream
from simulator.fleet import TEMPLATES, generate_fleet, seed_fleet
from simulator.frames import sensor_frame
from simulator.messages import EventSource, SensorSource, build_sources
from simulator.signals import RANGES
from tests.simulator.helpers import decode, outcome, registry_of


def test_env_frame_matches_golden_vector():
    values = {"temperature": 25.0, "humidity": 50.0, "co2": 400.0}
    frame = sensor_frame(TEMPLATES["ENV-S1"], values, address=1)
    assert frame_hex(frame, spaced=True) == "01 03 06 09 C4 13 88 01 90 55 6F"


@pytest.mark.parametrize("fleet", [seed_fleet(), generate_fleet(30, seed=5)], ids=["seed", "gen"])
def test_good_messages_decode_as_labelled(fleet):
    registry = registry_of(fleet)
    sources = build_sources(fleet, alias_rate=0.3)
    signal_of = {(model, p.label): p.signal for model, t in TEMPLATES.items() for p in t.points}
    start = time.time() - 86400
    for step in range(40):
        t = start + step * 2161.0  # spread over a day: the daily cycle's whole range
        for source in sources:
            message = source.next(t)
            results = decode(message, registry)
            readings, events, errors = outcome(results)
            assert not errors, (message, results)
            assert (readings, events) == (message.readings, message.events), message
            if isinstance(source, SensorSource):
                assert readings == len(source.template.points)
                for reading in results:
                    assert type(reading) is Reading
                    low, high = RANGES[signal_of[(source.template.model, reading.label)]]
                    assert low <= reading.value <= high, reading
                    assert abs(reading.time.timestamp() - t) < 1e-3
            else:
                assert events >= 1


def test_sensor_resamples_but_every_message_has_its_own_timestamp():
    source = next(s for s in build_sources(seed_fleet()) if isinstance(s, SensorSource))
    t = time.time()
    bodies = [msgspec.json.decode(source.next(t + i * 0.4).payload) for i in range(20)]
    assert len({b["timestamp"] for b in bodies}) == 20
    assert 1 < len({b["data"] for b in bodies}) <= 9  # a fresh reading at most once a second


def _run(stream: EventStream, steps: int) -> list:
    return [stream.next() for _ in range(steps)]


def _value(message, *names):
    for name in names:
        if name in message.fields:
            return message.fields[name]
    raise KeyError(names)


def test_access_control_follows_state():
    stream = EventStream(ACCESS_MODE, "state-test", alias_rate=0.0)
    messages = _run(stream, 400)
    door_open = False
    for message in messages:
        if message.component == "door-sensors":
            now_open = any(message.fields.values())
            assert now_open != door_open  # opens, then closes; never twice the same
            door_open = now_open
    components = {m.component for m in messages}
    assert components >= {"strike-1", "strike-2", "door-sensors", "reader-1", "exit-buttons"}
    assert any(m.fields.get("data") == repr(LIGHT_REPLY) for m in messages)
    cards = [m.fields["data"] for m in messages if m.component.startswith("reader-")]
    assert any(c.startswith("b'") and len(c) == 11 for c in cards)  # b'A1B2C3D4'


def test_strike_pulses_and_returns():
    stream = EventStream(ACCESS_MODE, "pulse", alias_rate=0.0)
    statuses = {}
    for message in _run(stream, 300):
        if message.component.startswith("strike-"):
            previous = statuses.get(message.component, False)
            assert message.fields["status"] != previous
            statuses[message.component] = message.fields["status"]


def test_motion_bursts_end_clear():
    stream = EventStream(ALARM_MODE, "motion", alias_rate=0.0)
    messages = _run(stream, 200)
    active: dict[str, bool] = {}
    for message in messages:
        active[message.component] = message.fields["status"]
    bursts = [m for m in messages if m.component.startswith("motion-sensor-")]
    assert bursts and any(m.fields["status"] for m in bursts)
    # every sensor that was active has been cleared by the end of its burst
    assert sum(active.get(f"motion-sensor-{i}", False) for i in range(1, 6)) <= 1


def test_commands_are_answered_like_a_controller():
    fleet = seed_fleet()
    registry = registry_of(fleet)
    source = next(
        s
        for s in build_sources(fleet)
        if isinstance(s, EventSource) and s.connector.mode == ACCESS_MODE
    )
    stream = source.stream
    [status] = stream.command("strike-1", b"", success=False)
    assert status.type == "stat" and status.component == "strike-1"
    [on] = stream.command("strike-2", b'{"power-flag": 1}', success=False)
    assert stream.strikes[2] is True and _value(on, "status", "state") in (True, "unlocked")
    [pulse] = stream.command("strike-1", b'{"power-flag": 2, "period": 3}', success=False)
    assert stream.strikes[1] is True
    back = stream.next()
    assert back.component == "strike-1" and back.fields == {"status": False}
    assert stream.strikes[1] is False
    [reply] = stream.command("reader-2", b"1", success=True)
    assert reply.fields["data"] == repr(LIGHT_REPLY)
    assert stream.command("siren-1", b"1", success=False) == []
    for message in (status, on, pulse, back, reply):
        out = source.outgoing(message, time.time())
        assert outcome(decode(out, registry))[:2] == (0, out.events)


def test_siren_commands_on_an_alarm_connector():
    stream = EventStream(ALARM_MODE, "sirens", alias_rate=0.0)
    assert stream.command("siren-2", b"1", success=False)[0].fields == {"status": True}
    assert stream.sirens[2] is True
    assert stream.command("siren-2", b"0", success=False)[0].fields == {"status": False}
    assert stream.command("strike-1", b"", success=False) == []
