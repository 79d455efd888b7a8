"""Pre-encoded event steps (load mode's hot path): each is exactly its message's encoding, streams
still follow state with aliases at the configured rate, and ``emit`` sends what ``next`` builds."""

import time

import msgspec
import pytest

from schemas.records import Event
from schemas.topics import ACCESS_MODE, ALARM_MODE
from simulator.events import (
    CARD_IDS,
    LIGHT_REPLY,
    MASK_BITS,
    ROUTES,
    SIGNALS,
    EventMessage,
    EventStream,
    alias_masks,
    card_step,
    fields_tail,
    shared_steps,
    state_effect,
)
from simulator.fleet import generate_fleet
from simulator.messages import EventSource, Outgoing, build_sources, encode_body, outgoing_sender
from tests.simulator.helpers import decode, outcome, registry_of

PLAIN_KEYS = {"status", "door-sensor-1", "door-sensor-2", "exit-button-1", "exit-button-2", "data"}


def _check_step(step) -> None:
    message = step.message
    assert step.tail == fields_tail(message.fields), message
    assert step.events == len(message.fields) >= 1
    assert step.effect == state_effect(message)
    assert ROUTES[step.route] == (message.type, message.component)


def test_every_shared_step_is_its_message_encoded():
    steps = shared_steps()
    assert len(steps) > 1000
    for step in steps:
        _check_step(step)


def test_card_reads_are_their_messages_encoded():
    for reader in (1, 2):
        for card in (0, 0xFFFFFFFF, *CARD_IDS[:50]):
            for signal in (None, 0, len(SIGNALS) - 1):
                step = card_step(reader, card, signal)
                _check_step(step)
                assert step.message.fields["data"] == repr(f"{card:08X}".encode())


def _aliased(message: EventMessage) -> bool:
    """Whether ``message`` uses the older spellings (words, ``door_1``, 0/1, extra fields)."""
    values = message.fields.values()
    return not set(message.fields) <= PLAIN_KEYS or any(type(v) is int for v in values)


def _on(message: EventMessage) -> list[bool]:
    """The on/open/active states a message reports, in field order (both spellings)."""
    words = {"unlocked": True, "locked": False, "open": True, "closed": False}
    words |= {"active": True, "inactive": False, "on": True, "off": False}
    states = []
    for name, value in message.fields.items():
        if name in ("voltage", "current", "volume", "data", "signal_strength"):
            continue
        states.append(words[value] if isinstance(value, str) else bool(value))
    return states


@pytest.mark.parametrize("alias_rate", [0.0, 0.5, 1.0])
def test_access_scenarios_follow_state_in_both_spellings(alias_rate):
    stream = EventStream(ACCESS_MODE, f"steps-{alias_rate}", alias_rate)
    door_open, strikes, pressed = False, {1: False, 2: False}, False
    reads = 0
    for _ in range(3000):
        message = stream.next()
        if message.component == "door-sensors":
            now_open = any(_on(message))
            assert now_open != door_open and (not now_open or sum(_on(message)) == 1)
            door_open = now_open
        elif message.component.startswith("strike-"):
            index = int(message.component[-1])
            [on] = _on(message)
            assert on != strikes[index] and stream.strikes[index] is on
            strikes[index] = on
            assert on or not door_open  # a strike returns once its door has closed
        elif message.component == "exit-buttons":
            now = any(_on(message))
            assert now != pressed
            pressed = now
        else:
            assert message.component in ("reader-1", "reader-2")
            reads += message.fields["data"] != repr(LIGHT_REPLY)
        assert _aliased(message) == (alias_rate == 1.0) or alias_rate == 0.5
    assert reads > 100


@pytest.mark.parametrize("alias_rate", [0.0, 0.5, 1.0])
def test_alarm_scenarios_follow_state_in_both_spellings(alias_rate):
    stream = EventStream(ALARM_MODE, f"alarm-{alias_rate}", alias_rate)
    active: dict[str, bool] = {}
    sirens = {1: False, 2: False}
    bursts = 0
    for _ in range(3000):
        message = stream.next()
        [on] = _on(message)
        if message.component.startswith("siren-"):
            index = int(message.component[-1])
            assert on != sirens[index] and stream.sirens[index] is on
            sirens[index] = on
            assert not any(active.values())  # a burst ends before a siren sounds
        else:
            assert message.component.startswith("motion-sensor-")
            others = {c: a for c, a in active.items() if c != message.component}
            assert not any(others.values())  # one burst at a time, each ends clear
            bursts += on and not active.get(message.component, False)
            active[message.component] = on
        assert _aliased(message) == (alias_rate == 1.0) or alias_rate == 0.5
    assert bursts > 300


@pytest.mark.parametrize("alias_rate", [0.1, 0.3])
def test_aliases_come_at_the_configured_rate(alias_rate):
    messages = [
        stream.next()
        for mode in (ACCESS_MODE, ALARM_MODE)
        for stream in [EventStream(mode, f"rate-{mode}", alias_rate)]
        for _ in range(20_000)
    ]
    share = sum(map(_aliased, messages)) / len(messages)
    assert abs(share - alias_rate) < 0.01, share


@pytest.mark.parametrize("alias_rate", [0.0, 0.1, 0.37, 1.0])
def test_alias_masks_set_each_bit_with_the_rate(alias_rate):
    cumulative = alias_masks(alias_rate)
    probabilities = [b - a for a, b in zip([0.0, *cumulative[:-1]], cumulative, strict=True)]
    probabilities[-1] = 1.0 - cumulative[-2]
    assert len(probabilities) == 1 << MASK_BITS
    for bit in range(MASK_BITS):
        share = sum(p for mask, p in enumerate(probabilities) if mask >> bit & 1)
        assert share == pytest.approx(alias_rate, abs=1e-12)


def _twins(alias_rate: float) -> list[tuple[EventSource, EventSource]]:
    fleet = generate_fleet(12, seed=3)
    first, second = build_sources(fleet, alias_rate), build_sources(fleet, alias_rate)
    return [(a, b) for a, b in zip(first, second, strict=True) if isinstance(a, EventSource)]


def test_emit_sends_what_next_builds_and_it_decodes_to_its_events():
    registry = registry_of(generate_fleet(12, seed=3))
    twins = _twins(0.3)
    assert twins
    start = time.time() - 3600
    for slow, fast in twins:
        sent: list[Outgoing] = []
        send = outgoing_sender(sent.append)
        for step in range(400):
            t = start + step * 0.013
            reference = slow.next(t)
            fast.emit(send, t)
            assert sent[-1] == reference
            body = msgspec.json.decode(reference.payload)
            assert reference.payload == encode_body(body)
            if step % 4 == 0:  # decoding is the slow part: every fourth message
                results = decode(reference, registry)
                assert outcome(results)[:2] == (0, reference.events) == (0, len(body) - 1)
                assert all(type(r) is Event for r in results)
        assert fast.stream.strikes == slow.stream.strikes
        assert fast.stream.sirens == slow.stream.sirens


def test_emit_tracks_state_for_commands():
    [(_, fast), *_] = [p for p in _twins(0.0) if p[0].connector.mode == ACCESS_MODE]
    sent: list[Outgoing] = []
    t = time.time()
    while not any(fast.stream.strikes.values()):
        fast.emit(outgoing_sender(sent.append), t)
        t += 0.001
    [index] = [i for i, on in fast.stream.strikes.items() if on]
    [status] = fast.stream.command(f"strike-{index}", b"", success=False)
    assert status.fields == {"status": True}
    [pulse] = fast.stream.command(f"strike-{index}", b'{"power-flag": 2}', success=False)
    assert pulse.fields == {"status": True} and fast.stream.strikes[index] is True
    fast.emit(outgoing_sender(sent.append), t)
    assert sent[-1].topic.endswith(f"/strike-{index}")
    assert msgspec.json.decode(sent[-1].payload)["status"] is False
    assert fast.stream.strikes[index] is False
