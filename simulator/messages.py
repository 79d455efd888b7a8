"""Outgoing device messages and the sources that produce them, one source per sensor or per
access-control/alarm connector.

Every :class:`Outgoing` carries what the pipeline must make of it: the number of readings (data
points of a good sensor frame), of events (fields besides ``timestamp`` of a good event message),
or the reason of a message-level fault. The report adds these up for acknowledged messages only.

The fast path skips :class:`Outgoing`: :meth:`SensorSource.emit` and
:meth:`EventSource.emit` hand the encoded topic, the payload bytes and the message's kind
(:func:`kind_index`) straight to a sender such as
:meth:`simulator.fastmqtt.FastPublisher.send`. Both paths build the same bytes: a sensor payload is
a cached prefix, the timestamp and a cached suffix (its frame changes once a second). Every
message of a source carries its own controller timestamp, strictly increasing (by at least one
microsecond), because storage deduplicates readings on (sensor, data point, time).

The publishing loop goes one step further (:meth:`SensorSource.emit_stamped`,
:meth:`EventSource.emit_stamped`): a :class:`BatchClock` stamps a whole batch of messages, at most
one per source, with one time, formatted once per clock zone (:class:`BatchStamp`) instead of once
per message. Batch times strictly increase, so each source's timestamps still do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec

from schemas.topics import SENSOR_MODE, format_topic
from simulator.events import ROUTES, EventMessage, EventStream, fields_tail
from simulator.fleet import TEMPLATES, Connector, Controller, Fleet, Sensor
from simulator.frames import sensor_hex
from simulator.signals import SignalSource

Send = Callable[[bytes, bytes, int], None]  # (encoded topic, payload, kind)

_encoder = msgspec.json.Encoder()
SAMPLE_EVERY_S = 1.0


Kind = tuple[int, int, str | None]
KINDS: list[Kind] = []  # kind index -> (readings, events, error); grows, never reorders
_KIND_INDEX: dict[Kind, int] = {}


def kind_index(readings: int = 0, events: int = 0, error: str | None = None) -> int:
    """The kind of a message that yields ``readings``, ``events`` or ``error`` (an index into
    :data:`KINDS`, the same for the same triple within a process)."""
    key = (readings, events, error)
    index = _KIND_INDEX.get(key)
    if index is None:
        index = _KIND_INDEX[key] = len(KINDS)
        KINDS.append(key)
    return index


_KIND_OF = [kind_index(events=n) for n in range(8)]  # by number of events (a step has 1 to 3)


class Outgoing(msgspec.Struct, frozen=True):
    """One message to publish and what decoding it must yield."""

    topic: str
    payload: bytes
    readings: int = 0
    events: int = 0
    error: str | None = None


_SECOND_TEXT: dict[tuple[int, str], str] = {}
_STAMP_OPEN = b'{"timestamp":"'


def second_text(second: int, zone: str) -> str:
    """The whole epoch ``second`` as the controller's clock in ``zone`` shows it:
    ``YYYY-MM-DD HH:MM:SS`` (cached: it is the hot path of load mode)."""
    key = (second, zone)
    text = _SECOND_TEXT.get(key)
    if text is None:
        if len(_SECOND_TEXT) > 4096:
            _SECOND_TEXT.clear()
        local = datetime.fromtimestamp(second, ZoneInfo(zone)).replace(tzinfo=None)
        text = _SECOND_TEXT[key] = local.isoformat(" ", "seconds")
    return text


def controller_time(t: float, zone: str) -> str:
    """Epoch ``t`` as the controller's clock shows it: ``YYYY-MM-DD HH:MM:SS.ffffff``, no zone."""
    second = int(t // 1)
    return f"{second_text(second, zone)}.{int((t - second) * 1_000_000):06d}"


def encode_body(fields: dict[str, object]) -> bytes:
    """A payload as JSON bytes."""
    return _encoder.encode(fields)


def topic_field(topic: str) -> bytes:
    """``topic`` as an MQTT UTF-8 string field: 2-byte length, then the bytes."""
    raw = topic.encode()
    return len(raw).to_bytes(2, "big") + raw


def outgoing_sender(publish: Callable[[Outgoing], None]) -> Send:
    """A :data:`Send` that hands each message to ``publish`` as an :class:`Outgoing`."""

    def send(topic: bytes, payload: bytes, kind: int) -> None:
        readings, events, error = KINDS[kind]
        publish(Outgoing(topic[2:].decode(), payload, readings, events, error))

    return send


class StampClock:
    """The controller timestamps of one source, strictly increasing.

    :meth:`open` gives a payload's opening ``{"timestamp":"YYYY-MM-DD HH:MM:SS.ffffff`` (the
    quote after the time is left to the caller). A time at or before the previous one (two
    messages within a microsecond, or the wall clock stepping back) is moved one microsecond past
    it. The text of the current second is kept, so only the microseconds are formatted per call.
    """

    __slots__ = ("_prefix", "_second_us", "last_us", "zone")

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.last_us = -1  # the latest time given, in µs (``emit_stamped`` moves it too)
        self._second_us = -1_000_000  # the start of the second ``_prefix`` shows, in µs
        self._prefix = b""

    def open(self, t: float) -> bytes:
        """The payload's opening up to the end of the timestamp for epoch ``t``."""
        us = int(t * 1_000_000)
        if us <= self.last_us:
            us = self.last_us + 1
        self.last_us = us
        micro = us - self._second_us
        if not 0 <= micro < 1_000_000:
            second = us // 1_000_000
            self._second_us = second * 1_000_000
            self._prefix = _STAMP_OPEN + second_text(second, self.zone).encode() + b"."
            micro = us - self._second_us
        return self._prefix + b"%06d" % micro


class BatchStamp:
    """One batch's timestamp as the clocks of one zone show it: ``open`` is a payload's opening up
    to the end of the time (what :meth:`StampClock.open` gives), ``t`` and ``us`` the epoch time
    in seconds and microseconds. Set by its :class:`BatchClock`."""

    __slots__ = ("_prefix", "_second", "open", "t", "us", "zone")

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.t, self.us, self.open = 0.0, -1, b""
        self._second, self._prefix = -1, b""

    def set(self, us: int) -> None:
        second = us // 1_000_000
        if second != self._second:
            self._second = second
            self._prefix = _STAMP_OPEN + second_text(second, self.zone).encode() + b"."
        self.us, self.t = us, us / 1_000_000
        self.open = self._prefix + b"%06d" % (us - second * 1_000_000)


class BatchClock:
    """The time of each batch of messages, formatted once per clock zone.

    :meth:`tick` starts a batch at epoch ``t``: its microsecond is past the previous batch's (moved
    one microsecond on if the wall clock did not advance), so a source that sends at most one
    message per batch (the publishing loop makes batches no longer than its sources) gets strictly
    increasing timestamps.
    """

    def __init__(self) -> None:
        self._us = -1
        self._stamps: dict[str, BatchStamp] = {}

    def stamp(self, zone: str) -> BatchStamp:
        """The (shared, updated in place) stamp of ``zone``."""
        stamp = self._stamps.get(zone)
        if stamp is None:
            stamp = self._stamps[zone] = BatchStamp(zone)
            if self._us >= 0:
                stamp.set(self._us)
        return stamp

    def tick(self, t: float) -> None:
        """A new batch at epoch ``t``."""
        us = int(t * 1_000_000)
        if us <= self._us:
            us = self._us + 1
        self._us = us
        for stamp in self._stamps.values():
            stamp.set(us)


class SensorSource:
    """One RS-485 sensor: a ``tele`` message with its frame each time it is asked.

    A fresh reading is sampled at most every :data:`SAMPLE_EVERY_S` seconds; at load rates the
    sensor repeats its latest frame (with a new timestamp) in between, as a polled sensor does.
    """

    def __init__(self, controller: Controller, connector: Connector, sensor: Sensor) -> None:
        self.controller = controller
        self.mac = controller.mac
        self.template = TEMPLATES[sensor.model]
        self.sensor = sensor
        self.topic = format_topic(
            "tele", controller.mac, SENSOR_MODE, connector.name, f"sensor-{sensor.pin}"
        )
        phase = (int(controller.mac[-4:], 16) % 240) / 10.0
        self.signals = SignalSource(f"{sensor.serial(controller.mac, connector.number)}", phase)
        self.clock = StampClock(controller.timezone)
        self._readings = len(self.template.points)
        self._kind = kind_index(readings=self._readings)
        self._topic_field = topic_field(self.topic)
        self._close = b""  # '","data":"<frame hex>"}': the payload after the timestamp
        self._sampled_at = float("-inf")
        self._stamp = BatchStamp(controller.timezone)  # replaced by bind()

    def hex_frame(self, t: float) -> str:
        """The hex frame of a fresh reading at epoch ``t``."""
        return sensor_hex(self.template, self.signals.sample(t), self.sensor.address)

    def payload(self, t: float) -> bytes:
        """A good sensor message's JSON at epoch ``t``: ``{"timestamp": …, "data": <frame>}``
        (as :func:`encode_body` writes it), with a fresh reading if the last is a second old."""
        if t - self._sampled_at >= SAMPLE_EVERY_S:
            self._close = b'","data":"' + self.hex_frame(t).encode() + b'"}'
            self._sampled_at = t
        return self.clock.open(t) + self._close

    def next(self, t: float) -> Outgoing:
        """A good sensor message: one reading per data point of the template."""
        return Outgoing(self.topic, self.payload(t), readings=self._readings)

    def emit(self, send: Send, t: float) -> None:
        """Hand the message :meth:`next` would build to ``send`` without an :class:`Outgoing`."""
        send(self._topic_field, self.payload(t), self._kind)

    def bind(self, clock: BatchClock) -> None:
        """Take the batch times of :meth:`emit_stamped` from ``clock``."""
        self._stamp = clock.stamp(self.clock.zone)

    def emit_stamped(self, send: Send) -> None:
        """:meth:`emit` at the current batch time of the bound :class:`BatchClock` (at most once
        per batch); the source's own clock moves with it. The publishing loop's hot path, so the
        sampling of :meth:`payload` is inlined."""
        stamp = self._stamp
        if stamp.t - self._sampled_at >= SAMPLE_EVERY_S:
            self._close = b'","data":"' + self.hex_frame(stamp.t).encode() + b'"}'
            self._sampled_at = stamp.t
        self.clock.last_us = stamp.us
        send(self._topic_field, stamp.open + self._close, self._kind)


class EventSource:
    """One access-control or alarm connector: its event stream as ``stat``/``tele`` messages.

    :meth:`emit` sends the stream's pre-encoded :class:`~simulator.events.Step`: the topic field
    of its route (one per route, built here once), the clock's opening and the step's tail.
    """

    def __init__(self, controller: Controller, connector: Connector, alias_rate: float) -> None:
        self.controller = controller
        self.mac = controller.mac
        self.connector = connector
        self.stream = EventStream(connector.mode, f"{controller.mac}-{connector.name}", alias_rate)
        self.clock = StampClock(controller.timezone)
        self._topics: dict[tuple[str, str], str] = {}
        self._fields: dict[tuple[str, str], bytes] = {}
        self._queue = self.stream.queue
        self._refill = self.stream.refill
        self._states = self.stream.states
        self._route_fields = [topic_field(self._topic(*route)) for route in ROUTES]
        self._stamp = BatchStamp(controller.timezone)  # replaced by bind()

    def _topic(self, type_: str, component: str) -> str:
        """The topic of ``type_`` messages from ``component`` (cached)."""
        key = (type_, component)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = format_topic(
                type_, self.mac, self.connector.mode, self.connector.name, component
            )
        return topic

    def topic(self, message: EventMessage) -> str:
        """The topic of ``message`` (cached per type and component)."""
        return self._topic(message.type, message.component)

    def topic_field(self, message: EventMessage) -> bytes:
        """:meth:`topic` as an MQTT string field (cached per type and component)."""
        key = (message.type, message.component)
        field = self._fields.get(key)
        if field is None:
            field = self._fields[key] = topic_field(self.topic(message))
        return field

    def payload(self, message: EventMessage, t: float) -> bytes:
        """``message``'s JSON with the controller's timestamp first, as :func:`encode_body`
        writes ``{"timestamp": …, **fields}``."""
        return self.clock.open(t) + fields_tail(message.fields)

    def outgoing(self, message: EventMessage, t: float) -> Outgoing:
        """``message`` with the controller's timestamp, on its topic; one event per field."""
        return Outgoing(self.topic(message), self.payload(message, t), events=len(message.fields))

    def next(self, t: float) -> Outgoing:
        """The stream's next message (encoded from its fields: the reference for :meth:`emit`)."""
        return self.outgoing(self.stream.next(), t)

    def emit(self, send: Send, t: float) -> None:
        """Hand the message :meth:`next` would build to ``send`` without an :class:`Outgoing`,
        from the step's pre-encoded parts."""
        step = self.stream.next_step()
        send(self._route_fields[step.route], self.clock.open(t) + step.tail, _KIND_OF[step.events])

    def bind(self, clock: BatchClock) -> None:
        """Take the batch times of :meth:`emit_stamped` from ``clock``."""
        self._stamp = clock.stamp(self.clock.zone)

    def emit_stamped(self, send: Send) -> None:
        """:meth:`emit` at the current batch time of the bound :class:`BatchClock` (at most once
        per batch); the source's own clock moves with it. The publishing loop's hot path, so
        ``EventStream.next_step`` is inlined."""
        queue = self._queue
        if not queue:
            self._refill()
        step = queue.popleft()
        effect = step.effect
        if effect is not None:
            self._states[effect[0]][effect[1]] = effect[2]
        stamp = self._stamp
        self.clock.last_us = stamp.us
        send(self._route_fields[step.route], stamp.open + step.tail, _KIND_OF[step.events])


Source = SensorSource | EventSource


def build_sources(
    fleet: Fleet, alias_rate: float = 0.1, part: int = 0, parts: int = 1
) -> list[Source]:
    """Every source of the fleet, in a stable order (controller, connector, pin); with ``parts``
    > 1 only those at positions ``part``, ``part + parts``, … of that order (a worker's share:
    ``build_sources(fleet)[part::parts]``, without building the rest, which for a fleet of
    100,000 controllers would take gigabytes per worker). Each source is seeded by its own
    serial, so a share's sources are the same as in the whole list."""
    sources: list[Source] = []
    position = 0
    for controller in fleet.controllers:
        for connector in controller.connectors:
            if connector.mode == SENSOR_MODE:
                for sensor in connector.sensors:
                    if position % parts == part:
                        sources.append(SensorSource(controller, connector, sensor))
                    position += 1
            else:
                if position % parts == part:
                    sources.append(EventSource(controller, connector, alias_rate))
                position += 1
    return sources
