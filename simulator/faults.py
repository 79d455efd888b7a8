"""Deliberately bad device messages (``--faults RATE``), each labelled with the docs/PROTOCOL.md §6
reason the pipeline must give for it.

Kinds are what a real device can produce: a corrupted CRC, a malformed frame, a Modbus exception
reply, broken JSON, a bad clock, a controller nobody registered, a topic off the grammar. All
topics stay under ``stat/``/``tele/`` with the controller's ``f2-<mac>`` level, so the broker's ACL
accepts them and a subscriber can attribute them; each is one message-level error (no readings,
no events).
"""

from __future__ import annotations

import random

from schemas import reasons
from schemas.encode import frame_hex, modbus_exception_frame, modbus_frame, with_crc
from schemas.topics import ACCESS_MODE, ALARM_MODE, SENSOR_MODE, format_topic
from simulator.frames import sensor_frame
from simulator.messages import Outgoing, SensorSource, controller_time, encode_body

FAULT_REASONS: tuple[str, ...] = (
    reasons.BAD_CRC,
    reasons.BAD_FRAME,
    reasons.MODBUS_EXCEPTION,
    reasons.BAD_JSON,
    reasons.BAD_TIMESTAMP,
    reasons.UNKNOWN_DEVICE,
    reasons.BAD_TOPIC,
)
BAD_TIMESTAMPS: tuple[object, ...] = (
    "1999-06-30 12:00:00.000000",
    "2026-13-45 25:61:00.000000",
    "yesterday",
    "",
    None,
    946684799,
)


class FaultMaker:
    """Builds fault messages from a sensor source (its topic, frame and controller)."""

    def __init__(self, ghost_macs: tuple[str, ...], seed: str) -> None:
        self._ghosts = ghost_macs
        self._rng = random.Random(seed)
        self._bad_stamps = 0

    def make(self, source: SensorSource, t: float, reason: str | None = None) -> Outgoing:
        """A fault for ``reason`` (default: a random kind) built on ``source``'s traffic."""
        reason = reason or self._rng.choice(FAULT_REASONS)
        build = getattr(self, "_" + reason)
        topic, payload = build(source, t)
        return Outgoing(topic, payload, error=reason)

    def _body(self, source: SensorSource, t: float, data: str) -> bytes:
        stamp = controller_time(t, source.controller.timezone)
        return encode_body({"timestamp": stamp, "data": data})

    def _good_frame(self, source: SensorSource, t: float) -> bytes:
        return sensor_frame(source.template, source.signals.sample(t), source.sensor.address)

    def _bad_crc(self, source: SensorSource, t: float) -> tuple[str, bytes]:
        frame = bytearray(self._good_frame(source, t))
        frame[-1 - self._rng.randint(0, 1)] ^= 1 << self._rng.randint(0, 7)
        return source.topic, self._body(source, t, frame_hex(bytes(frame)))

    def _bad_frame(self, source: SensorSource, t: float) -> tuple[str, bytes]:
        address = source.sensor.address
        data = self._good_frame(source, t)[3:-2]
        variant = self._rng.randint(0, 2)
        if variant == 0:  # truncated on the wire: fewer than 5 bytes
            frame = bytes((address, 0x03, len(data)))
        elif variant == 1:  # byte count does not match the data, CRC right
            frame = with_crc(bytes((address, 0x03, len(data) + 2)) + data)
        else:  # a write reply where a register read was expected
            frame = modbus_frame(address, 0x06, data)
        return source.topic, self._body(source, t, frame_hex(frame, spaced=variant == 2))

    def _modbus_exception(self, source: SensorSource, t: float) -> tuple[str, bytes]:
        code = self._rng.choice((1, 2, 4, 6, 11))
        frame = modbus_exception_frame(source.sensor.address, 0x03, code)
        return source.topic, self._body(source, t, frame_hex(frame))

    def _bad_json(self, source: SensorSource, t: float) -> tuple[str, bytes]:
        good = self._body(source, t, frame_hex(self._good_frame(source, t)))
        variant = self._rng.randint(0, 2)
        if variant == 0:  # cut off mid-message
            return source.topic, good[: len(good) // 2]
        if variant == 1:  # single quotes, as a hand-written test rig might send
            return source.topic, good.replace(b'"', b"'")
        return source.topic, good + b"}"

    def _bad_timestamp(self, source: SensorSource, t: float) -> tuple[str, bytes]:
        data = frame_hex(self._good_frame(source, t))
        stamp = self._rng.choice(BAD_TIMESTAMPS)
        if self._rng.random() < 0.2:  # the clock runs two days ahead
            stamp = controller_time(t + 2 * 86400, "UTC")
        # A fixed bad stamp and a repeated frame would make two faults identical, and the DLQ
        # is reconciled after dedupe by (topic, payload, reason, label): a message counter (an
        # extra field, which sensor payloads may carry) keeps every fault distinct.
        self._bad_stamps += 1
        body: dict[str, object] = {"data": data, "seq": self._bad_stamps}
        if stamp is not None:
            body["timestamp"] = stamp
        return source.topic, encode_body(body)

    def _unknown_device(self, source: SensorSource, t: float) -> tuple[str, bytes]:
        mac = self._rng.choice(self._ghosts)
        if self._rng.random() < 0.5:
            topic = source.topic.replace(source.mac, mac)
            return topic, self._body(source, t, frame_hex(self._good_frame(source, t)))
        topic = format_topic("stat", mac, ALARM_MODE, "J3", "motion-sensor-1")
        stamp = controller_time(t, "UTC")
        return topic, encode_body({"timestamp": stamp, "status": True})

    def _bad_topic(self, source: SensorSource, t: float) -> tuple[str, bytes]:
        mac = source.mac
        payload = self._body(source, t, frame_hex(self._good_frame(source, t)))
        topic = self._rng.choice(
            (
                format_topic("tele", mac, SENSOR_MODE, "J5", "sensor-1"),
                format_topic("tele", mac, SENSOR_MODE, "J1", "sensor-7"),
                format_topic("stat", mac, ALARM_MODE, "J2", "strike-1"),
                format_topic("tele", mac, ACCESS_MODE, "J3", "reader-1", success=True),
                f"tele/f2-{mac}/sensor-mode/J1",
                f"tele/f2-{mac}/sensor-mode/J1/sensor-1/extra",
                f"stat/f2-{mac}/door-mode/J3/door-sensors",
            )
        )
        return topic, payload
