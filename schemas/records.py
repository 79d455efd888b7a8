"""Records that cross a stage or process boundary, as msgspec Structs.

- ``RawMessage``: one MQTT message as ingest received it (and as ``raw_iot_data`` holds it).
- ``ControllerEntry`` and its parts: the registry's view of one controller, as the decoder needs it.
- ``Reading`` / ``Event`` / ``DecodeError``: what decoding one message yields.

Times are timezone-aware ``datetime`` objects in UTC.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class RawMessage(msgspec.Struct, frozen=True, gc=False):
    """One device message: MQTT topic, payload bytes unchanged, and where it came from."""

    topic: str
    payload: bytes
    received_at_ms: int = 0
    qos: int = 1
    retain: bool = False
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1


class DataPointDef(msgspec.Struct, frozen=True, gc=False):
    """One data point of a device template (docs/PROTOCOL.md §3), with the display hints carried
    along."""

    datapoint_id: int
    label: str
    encoding: str | None
    offset: int
    length: int
    decimals: int = 0
    byte_order: str = "ABCD"
    append: str = ""
    prepend: str = ""
    whole_number: bool = False
    data_format: str = ""
    realtime_chart: bool | None = None
    historical_chart: bool | None = None

    @property
    def unit(self) -> str:
        """The display unit: ``Append`` without surrounding spaces."""
        return self.append.strip()


class SensorEntry(msgspec.Struct, frozen=True, gc=False):
    """The sensor device on one pin of a controller's connector, with its template."""

    sensor_id: int
    template_id: int
    model: str
    frame_format: str
    datapoints: tuple[DataPointDef, ...]


class ControllerEntry(msgspec.Struct, frozen=True, gc=False):
    """A registered controller: its device id, clock zone, registry version and pin map.

    ``sensors`` is keyed ``"<connector number>:<pin position>"`` (e.g. ``"1:1"`` for J1 pin 1).
    ``version`` is the registry version this entry was read at; readings record it.
    """

    mac: str
    controller_id: int
    timezone: str = "UTC"
    version: int = 0
    sensors: dict[str, SensorEntry] = msgspec.field(default_factory=dict)

    def sensor_at(self, connector: int, pin: int) -> SensorEntry | None:
        return self.sensors.get(f"{connector}:{pin}")


DECODED_SCHEMA_VERSION = 1
"""``v`` of the records on ``decoded_iot_data`` (:mod:`schemas.wire`)."""


class Reading(msgspec.Struct, frozen=True, gc=False, tag="reading", tag_field="kind"):
    """One decoded data point value of one sensor frame; encoded as JSON, it is the reading's
    record on ``decoded_iot_data`` (``kind`` = ``reading``, ``time`` in RFC 3339)."""

    mac: str
    connector: str
    pin: int
    label: str
    value: float
    unit: str
    time: datetime
    sensor_id: int
    datapoint_id: int
    registry_version: int = 0
    v: int = DECODED_SCHEMA_VERSION


class Event(msgspec.Struct, frozen=True, gc=False):
    """One field of a non-sensor component's message (door, strike, button, motion, siren…)."""

    mac: str
    connector: str
    component: str
    field: str
    value: bool | float | str
    time: datetime
    controller_id: int = 0
    registry_version: int = 0


class DecodeError(msgspec.Struct, frozen=True, gc=False):
    """A message-level error (``label`` None) or a data-point error (``label`` set);
    docs/PROTOCOL.md §6."""

    reason: str
    detail: str
    label: str | None = None


Decoded = Reading | Event | DecodeError
