"""Outgoing device messages and the sources that produce them, one source per sensor or per
access-control/alarm connector.

Every :class:`Outgoing` carries what the pipeline must make of it: the number of readings (data
points of a good sensor frame), of events (fields besides ``timestamp`` of a good event message),
or the reason of a message-level fault. The report adds these up for acknowledged messages only.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec

from schemas.topics import SENSOR_MODE, format_topic
from simulator.events import EventMessage, EventStream
from simulator.fleet import TEMPLATES, Connector, Controller, Fleet, Sensor
from simulator.frames import sensor_hex
from simulator.signals import SignalSource

_encoder = msgspec.json.Encoder()
SAMPLE_EVERY_S = 1.0


class Outgoing(msgspec.Struct, frozen=True):
    """One message to publish and what decoding it must yield."""

    topic: str
    payload: bytes
    readings: int = 0
    events: int = 0
    error: str | None = None


_SECOND_TEXT: dict[tuple[int, str], str] = {}


def controller_time(t: float, zone: str) -> str:
    """Epoch ``t`` as the controller's clock shows it: ``YYYY-MM-DD HH:MM:SS.ffffff``, no zone.

    The local time of a whole UTC second is cached per zone (it is the hot path of load mode);
    only the microseconds are formatted per message.
    """
    second = int(t // 1)
    key = (second, zone)
    text = _SECOND_TEXT.get(key)
    if text is None:
        if len(_SECOND_TEXT) > 4096:
            _SECOND_TEXT.clear()
        local = datetime.fromtimestamp(second, ZoneInfo(zone)).replace(tzinfo=None)
        text = _SECOND_TEXT[key] = local.isoformat(" ", "seconds")
    return f"{text}.{int((t - second) * 1_000_000):06d}"


def encode_body(fields: dict[str, object]) -> bytes:
    """A payload as JSON bytes."""
    return _encoder.encode(fields)


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
        self._readings = len(self.template.points)
        self._frame = ""
        self._sampled_at = float("-inf")

    def hex_frame(self, t: float) -> str:
        """The hex frame of a fresh reading at epoch ``t``."""
        return sensor_hex(self.template, self.signals.sample(t), self.sensor.address)

    def next(self, t: float) -> Outgoing:
        """A good sensor message: one reading per data point of the template."""
        if t - self._sampled_at >= SAMPLE_EVERY_S:
            self._frame = self.hex_frame(t)
            self._sampled_at = t
        body = {"timestamp": controller_time(t, self.controller.timezone), "data": self._frame}
        return Outgoing(self.topic, encode_body(body), readings=self._readings)


class EventSource:
    """One access-control or alarm connector: its event stream as ``stat``/``tele`` messages."""

    def __init__(self, controller: Controller, connector: Connector, alias_rate: float) -> None:
        self.controller = controller
        self.mac = controller.mac
        self.connector = connector
        self.stream = EventStream(connector.mode, f"{controller.mac}-{connector.name}", alias_rate)

    def outgoing(self, message: EventMessage, t: float) -> Outgoing:
        """``message`` with the controller's timestamp, on its topic; one event per field."""
        topic = format_topic(
            message.type, self.mac, self.connector.mode, self.connector.name, message.component
        )
        body = {"timestamp": controller_time(t, self.controller.timezone), **message.fields}
        return Outgoing(topic, encode_body(body), events=len(message.fields))

    def next(self, t: float) -> Outgoing:
        """The stream's next message."""
        return self.outgoing(self.stream.next(), t)


Source = SensorSource | EventSource


def build_sources(fleet: Fleet, alias_rate: float = 0.1) -> list[Source]:
    """Every source of the fleet, in a stable order (controller, connector, pin)."""
    sources: list[Source] = []
    for controller in fleet.controllers:
        for connector in controller.connectors:
            if connector.mode == SENSOR_MODE:
                sources.extend(SensorSource(controller, connector, s) for s in connector.sensors)
            else:
                sources.append(EventSource(controller, connector, alias_rate))
    return sources
