"""Load mode's fast path (``emit``: cached payload parts, no Outgoing) builds exactly what the
slow path (a dict through msgspec) builds, and every source's timestamps strictly increase."""

import itertools
import queue
import threading
import time

import msgspec

from schemas.records import Event, Reading
from simulator.events import EventMessage
from simulator.fleet import generate_fleet, seed_fleet
from simulator.load import LOAD_PACE_S, RunConfig, _publish_loop
from simulator.messages import (
    KINDS,
    BatchClock,
    EventSource,
    Outgoing,
    SensorSource,
    StampClock,
    build_sources,
    encode_body,
    kind_index,
    outgoing_sender,
    second_text,
)
from simulator.report import Tally
from tests.simulator.helpers import decode, outcome, registry_of


def _emitted(source, t: float) -> Outgoing:
    """The message ``source.emit`` hands to a sender, as an Outgoing."""
    sent: list[Outgoing] = []
    source.emit(outgoing_sender(sent.append), t)
    [message] = sent
    return message


def _expected(us: int, zone: str) -> str:
    """Epoch microseconds ``us`` as the controller's clock in ``zone`` shows them."""
    return f"{second_text(us // 1_000_000, zone)}.{us % 1_000_000:06d}"


def _stamp(payload: bytes) -> str:
    return msgspec.json.decode(payload)["timestamp"]


def test_fast_payloads_equal_the_dict_encoding_and_decode_the_same():
    fleet = generate_fleet(20, seed=7)
    registry = registry_of(fleet)
    start = time.time() - 3 * 86400
    for source in build_sources(fleet, alias_rate=0.3):
        for step in range(12):
            t = start + step * 0.7 + 0.123456
            message = _emitted(source, t)
            body = msgspec.json.decode(message.payload)
            stamp = body.pop("timestamp")
            assert stamp == _expected(int(t * 1_000_000), source.clock.zone)
            assert message.payload == encode_body({"timestamp": stamp, **body})
            results = decode(message, registry)
            readings, events, errors = outcome(results)
            assert not errors, (message, results)
            assert (readings, events) == (message.readings, message.events)
            if isinstance(source, SensorSource):
                assert readings == len(source.template.points) and events == 0
                assert all(type(r) is Reading for r in results)
            else:
                assert readings == 0 and events == len(body) >= 1
                assert all(type(r) is Event for r in results)
            assert all(abs(r.time.timestamp() - t) < 1e-5 for r in results)


def test_event_payload_matches_dict_encoding_for_any_fields():
    source = next(s for s in build_sources(seed_fleet()) if isinstance(s, EventSource))
    t = time.time()
    for fields in ({}, {"status": True}, {"data": "b'\\x02\\x03'", "signal_strength": "-50 dBm"}):
        message = source.outgoing(EventMessage("stat", "strike-1", fields), t)
        stamp = _stamp(message.payload)
        assert message.payload == encode_body({"timestamp": stamp, **fields})
        t += 1e-3


def test_timestamps_strictly_increase_per_source_even_when_the_clock_does_not():
    for source in build_sources(seed_fleet()):
        t = time.time()
        times = [t, t, t + 1e-7, t - 5.0, t + 0.5, t + 0.5, t + 2.0, t + 2.0]
        stamps = [_stamp(_emitted(source, u).payload) for u in times]
        assert stamps == sorted(set(stamps)), stamps  # same width: text order is time order


def test_stamp_clock_crosses_seconds_and_zones():
    us = 1_764_201_599_999_999  # 2025-11-26 23:59:59.999999 UTC
    for zone in ("UTC", "Asia/Tokyo", "America/New_York"):
        clock = StampClock(zone)
        first, second = clock.open(us / 1e6), clock.open(us / 1e6)
        assert first.decode() == '{"timestamp":"' + _expected(us, zone)
        assert second.decode() == '{"timestamp":"' + _expected(us + 1, zone)
        assert first.endswith(b":59.999999") and second.endswith(b":00.000000")


def test_kinds_count_like_outgoing_messages():
    messages = [
        Outgoing("t", b"", readings=3),
        Outgoing("t", b"", events=2),
        Outgoing("t", b"", error="bad_crc"),
        Outgoing("t", b"", readings=3),
    ]
    sent: list[tuple[bytes, bytes, int]] = []
    for source in build_sources(seed_fleet()):
        source.emit(lambda topic, payload, kind: sent.append((topic, payload, kind)), time.time())
    by_kinds, by_messages = Tally(), Tally()
    kinds = [kind_index(m.readings, m.events, m.error) for m in messages]
    counts = [kinds.count(index) for index in range(len(KINDS))]
    for message in messages:
        by_messages.add(message)
    by_kinds.add_kinds(counts)
    assert by_kinds == by_messages
    assert all(topic[2:].decode().startswith(("tele/", "stat/")) for topic, _, _ in sent)


def _stamped(source, clock: BatchClock) -> Outgoing:
    """The message ``source.emit_stamped`` hands to a sender at the clock's current batch."""
    sent: list[Outgoing] = []
    source.emit_stamped(outgoing_sender(sent.append))
    [message] = sent
    return message


def test_stamped_emits_are_emit_at_the_batch_time_formatted_once_per_zone():
    fleet = generate_fleet(20, seed=7)
    stamped, reference = build_sources(fleet, 0.3), build_sources(fleet, 0.3)
    clock = BatchClock()
    for source in stamped:
        source.bind(clock)
    start = time.time() - 3 * 86400
    for step in range(12):
        clock.tick(start + step * 0.7 + 0.123456)
        for source, twin in zip(stamped, reference, strict=True):
            stamp = clock.stamp(source.clock.zone)
            message, expected = _stamped(source, clock), _emitted(twin, stamp.t)
            body, expected_body = (msgspec.json.decode(m.payload) for m in (message, expected))
            assert body.pop("timestamp") == _expected(stamp.us, source.clock.zone)
            expected_body.pop("timestamp")  # stamp.t back to µs may round one below
            assert (message.topic, body) == (expected.topic, expected_body)
            assert (message.readings, message.events) == (expected.readings, expected.events)
            assert source.clock.last_us == stamp.us


def test_batch_times_strictly_increase_per_source_when_the_wall_clock_stands_still():
    sources = build_sources(seed_fleet())
    clock = BatchClock()
    for source in sources:
        source.bind(clock)
    t = time.time()
    stamps: dict[bytes, list[str]] = {}
    sent: list[tuple[bytes, bytes, int]] = []

    def keep(topic: bytes, payload: bytes, kind: int) -> None:
        sent.append((topic, payload, kind))

    for wall in (t, t, t, t - 5.0, t + 1e-7, t + 0.9999999):
        clock.tick(wall)
        for source in sources:
            source.emit_stamped(keep)
    for topic, payload, _kind in sent:
        stamps.setdefault(topic, []).append(_stamp(payload))
    for series in stamps.values():
        assert series == sorted(set(series)), series
    # a message of the slow path (a command's answer) still comes after the batches
    source = sources[0]
    assert _stamp(_emitted(source, t - 60).payload) > stamps[source._topic_field][-1]


def test_the_publishing_loop_sends_at_most_one_message_per_source_and_batch():
    fleet = seed_fleet()
    sources = build_sources(fleet)
    sent: list[Outgoing] = []

    class Collecting:
        """A publisher that keeps what it is given (the loop's logic, not MQTT, is tested)."""

        def publish(self, message: Outgoing) -> None:
            sent.append(message)

        def service(self, timeout_s: float = 0.0) -> None:
            time.sleep(timeout_s)

        def take_commands(self) -> list:
            return []

    config = RunConfig(rate=1_000_000, duration=0.3)
    stop, out = threading.Event(), queue.Queue()
    _publish_loop(config, fleet, sources, {}, Collecting(), 0, stop, out)  # type: ignore[arg-type]
    assert len(sent) > 3 * len(sources)  # far more messages than sources: many batches
    by_topic: dict[str, list[str]] = {}
    for message in sent:
        by_topic.setdefault(message.topic, []).append(_stamp(message.payload))
    for stamps in by_topic.values():
        assert stamps == sorted(set(stamps)), stamps[:10]


def test_load_mode_sends_what_fell_due_in_pacing_steps_at_the_asked_rate():
    fleet = seed_fleet()
    sources = build_sources(fleet)
    sent: list[Outgoing] = []
    sends: list[int] = []  # messages sent between two network services

    class Counting:
        def publish(self, message: Outgoing) -> None:
            sent.append(message)

        def service(self, timeout_s: float = 0.0) -> None:
            sends.append(len(sent))
            time.sleep(timeout_s)

        def take_commands(self) -> list:
            return []

    rate, duration = 5_000, 0.5
    config = RunConfig(rate=rate, duration=duration)
    stop, out = threading.Event(), queue.Queue()
    _publish_loop(config, fleet, sources, {}, Counting(), 0, stop, out)  # type: ignore[arg-type]
    assert 0.8 * rate * duration <= len(sent) <= 1.05 * rate * duration + 1
    bursts = sum(1 for a, b in itertools.pairwise([*sends, len(sent)]) if b > a)
    assert bursts <= 1.5 * duration / LOAD_PACE_S  # not one wake-up per message (2,500)
