"""The one decoding entry point (docs/PROTOCOL.md §1-3): a raw device message to readings, events
and errors.

Both dataflows, the simulator's self-checks and ``f2 decode`` call :func:`decode_message`. It never
raises: every problem is a :class:`~schemas.records.DecodeError` value with a docs/PROTOCOL.md §6
reason, and an unexpected exception (a bug) is turned into a ``bad_payload`` error naming it.

Order of checks: topic (``bad_topic``: over the input limit's length, off the grammar, or a
``cmnd`` or ``/success`` topic, which is not telemetry), the
controller's registry entry (``unknown_device``; its ``TimeZone``, ``bad_registry``), for a sensor
its pin (``unknown_device``) and template (``bad_registry``), then the payload (``bad_json``,
``bad_payload``), its timestamp (``bad_timestamp``) and its content. Errors about one data point or
one event field carry its label (the field name); the message's other readings or events are
still produced. A message over an input limit (:mod:`schemas.limits`) is one message-level error.
An ambiguous local timestamp (the repeated hour of a clock change) takes the occurrence closer to
the message's receive time.

Everything that depends only on the topic and the registry entry (parsed topic, zone, sensor,
compiled template) is a :class:`Route`, cached per topic and checked against the entry object, so
a registry change (a new entry object) takes effect on the next message.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

import msgspec

from schemas.caches import ByteBoundedCache
from schemas.frames import (
    TemplatePlan,
    decode_point,
    modbus_data_section,
    modbus_frame_ok,
    parse_hex,
    plan_for,
)
from schemas.limits import DEFAULT_LIMITS
from schemas.payloads import decode_object, decode_sensor_payload, event_fields
from schemas.reasons import BAD_PAYLOAD, BAD_REGISTRY, BAD_TOPIC, UNKNOWN_DEVICE
from schemas.records import (
    ControllerEntry,
    Decoded,
    DecodeError,
    Event,
    RawMessage,
    Reading,
    SensorEntry,
)
from schemas.settings import InputLimits
from schemas.timestamps import parse_timestamp, zone_for
from schemas.topics import TopicInfo, parse_topic

TELEMETRY_TYPES = ("stat", "tele")
ROUTE_CACHE_BYTES = 32 << 20
ROUTE_COST_BYTES = 800
"""A route's estimated size besides its topic: the parsed topic, the tuples and the cache slot."""


class Route(msgspec.Struct, frozen=True, gc=False):
    """What decoding a topic's messages needs from the topic and the registry entry."""

    info: TopicInfo
    entry: ControllerEntry
    zone: tzinfo
    sensor: SensorEntry | None = None
    plan: TemplatePlan | None = None
    head: tuple[str, str, Any, int, int] = ("", "", 0, 0, 0)
    """What every record of the route shares: ``(mac, connector, pin, sensor_id, registry
    version)`` for a sensor, ``(mac, connector, component, controller_id, registry version)``
    for other components."""


_ROUTES: ByteBoundedCache[str, tuple[ControllerEntry | None, Route | DecodeError]] = (
    ByteBoundedCache(ROUTE_CACHE_BYTES)
)


BUG_PREFIX = "unexpected "
"""How the detail of an exception caught by :func:`decode_message` (a bug) begins."""


def decode_message(
    raw: RawMessage,
    entry: ControllerEntry | None,
    now: datetime | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
) -> list[Decoded]:
    """Decode one device message with its controller's registry entry (None if unregistered).

    ``now`` (default: the current time) is the clock the timestamp's future bound is checked
    against; ``limits`` bound what the message may hold.
    """
    try:
        cached = _ROUTES.get(raw.topic)
        if cached is not None and cached[0] is entry:
            route = cached[1]
        else:
            too_long = topic_too_long(raw.topic, limits)
            if too_long is not None:
                return [too_long]  # never cached: such a topic could be 64 KiB
            route = route_for(raw.topic, entry)
        if type(route) is DecodeError:
            return [route]
        received_s = raw.received_at_ms / 1000
        if route.plan is not None:
            return _decode_sensor(raw.payload, route, now, limits, received_s)
        return _decode_event(raw.payload, route, now, limits, received_s)
    except Exception as exc:  # a bug must not stop the pipeline: report it as a value
        return [DecodeError(BAD_PAYLOAD, f"{BUG_PREFIX}{type(exc).__name__}: {exc}"[:300])]


def topic_too_long(topic: str, limits: InputLimits) -> DecodeError | None:
    """The ``bad_topic`` error of a topic over the length limit (UTF-8 bytes), else None."""
    if len(topic) * 4 <= limits.topic_bytes:  # no UTF-8 character takes more than 4 bytes
        return None
    size = len(topic.encode("utf-8", "surrogatepass"))
    if size <= limits.topic_bytes:
        return None
    return DecodeError(BAD_TOPIC, f"topic of {size} bytes exceeds {limits.topic_bytes}")


def route_for(topic: str, entry: ControllerEntry | None) -> Route | DecodeError:
    """Work out (and cache) the route of ``topic`` with ``entry``, or the error its messages get."""
    route = _make_route(topic, entry)
    _ROUTES.put(topic, (entry, route), 2 * len(topic) + ROUTE_COST_BYTES)
    return route


def _make_route(topic: str, entry: ControllerEntry | None) -> Route | DecodeError:
    """Topic, entry, zone, sensor and template checks, in the module's order of checks."""
    info = parse_topic(topic)
    if type(info) is not TopicInfo:
        return info
    if info.type not in TELEMETRY_TYPES or info.success:
        return DecodeError(BAD_TOPIC, f"{topic!r} is a command topic, not telemetry")
    if entry is None:
        return DecodeError(UNKNOWN_DEVICE, f"controller {info.mac} is not in the registry")
    zone = zone_for(entry.timezone)
    if zone is None:
        return DecodeError(BAD_REGISTRY, f"TimeZone {entry.timezone!r} is not an IANA zone name")
    if info.kind != "sensor":
        head = (info.mac, info.connector, info.component, entry.controller_id, entry.version)
        return Route(info, entry, zone, head=head)
    sensor = entry.sensor_at(info.connector_number, info.index)
    if sensor is None:
        detail = f"no sensor on {info.mac} {info.connector} pin {info.index}"
        return DecodeError(UNKNOWN_DEVICE, detail)
    plan = plan_for(sensor)
    if type(plan) is DecodeError:
        return plan
    head = (info.mac, info.connector, info.index, sensor.sensor_id, entry.version)
    return Route(info, entry, zone, sensor, plan, head)


def _decode_sensor(
    payload: bytes, route: Route, now: datetime | None, limits: InputLimits, received_s: float
) -> list[Decoded]:
    """Readings of one sensor frame (plus per-data-point errors), or one message-level error.

    The hot path of the pipeline, so the common case is written out here: a typed body, a frame
    that passes the Modbus checks (native CRC residue), all points read by one ``unpack_from``.
    Anything else takes the general functions, which name the problem.
    """
    body = decode_sensor_payload(payload, limits.payload_bytes)
    if type(body) is DecodeError:
        return [body]
    time = parse_timestamp(body.timestamp, route.zone, now, received_s=received_s)
    if type(time) is DecodeError:
        return [time]
    data = body.data
    if type(data) is not str:
        return [DecodeError(BAD_PAYLOAD, f"sensor data is not a hex string: {data!r}"[:200])]
    try:
        frame = bytes.fromhex(data)
    except ValueError:
        return [parse_hex(data)]
    plan = route.plan
    end = len(frame)
    if plan.modbus:
        if not modbus_frame_ok(frame):
            return [modbus_data_section(frame)]  # the first failing check, in the documented order
        start, end = 3, end - 2
    else:
        start = 0
    mac, connector, pin, sensor_id, version = route.head
    if plan.readings is not None and end - start >= plan.span:
        readings = plan.readings(frame, start, mac, connector, pin, time, sensor_id, version)
        if readings is not None:
            return readings
    out: list[Decoded] = []
    for point in plan.points:
        value = point if type(point) is DecodeError else decode_point(frame, start, end, point)
        if type(value) is DecodeError:
            out.append(value)
        else:
            out.append(
                Reading(
                    mac,
                    connector,
                    pin,
                    point.label,
                    value,
                    point.unit,
                    time,
                    sensor_id,
                    point.datapoint_id,
                    version,
                )
            )
    return out


def _decode_event(
    payload: bytes, route: Route, now: datetime | None, limits: InputLimits, received_s: float
) -> list[Decoded]:
    """One event per field of a non-sensor message (plus per-field errors), or one error."""
    body = decode_object(payload, limits.payload_bytes)
    if type(body) is DecodeError:
        return [body]
    time = parse_timestamp(body.get("timestamp"), route.zone, now, received_s=received_s)
    if type(time) is DecodeError:
        return [time]
    pairs = event_fields(route.info.kind, body, limits)
    if type(pairs) is DecodeError:
        return [pairs]
    mac, connector, component, controller_id, version = route.head
    return [
        value
        if type(value) is DecodeError
        else Event(mac, connector, component, name, value, time, controller_id, version)
        for name, value in pairs
    ]
