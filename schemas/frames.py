"""RS-485 frames and data points (docs/PROTOCOL.md §3): hex, Modbus RTU framing, CRC-16/MODBUS,
values.

A sensor template is compiled once into a :class:`TemplatePlan` (frame format plus one
:class:`PointPlan` per data point, with its ``struct`` unpacker and byte reordering prepared), and
plans are cached by template definition (:func:`plan_for`). Decoding then costs one hex parse,
one native CRC and one ``unpack_from`` for all data points (one per point when they cannot be
read together).
Every problem is returned as a :class:`~schemas.records.DecodeError` value: message-level for
the frame, per data point (with its label) for ``out_of_range``, ``bad_value`` and
``bad_registry``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from datetime import datetime
from math import isfinite

import msgspec
from fastcrc import crc16

from schemas.reasons import (
    BAD_CRC,
    BAD_FRAME,
    BAD_HEX,
    BAD_REGISTRY,
    BAD_VALUE,
    MODBUS_EXCEPTION,
    OUT_OF_RANGE,
)
from schemas.records import DataPointDef, DecodeError, Reading, SensorEntry

MODBUS_RTU = "modbus-rtu"
RAW = "raw"
FRAME_FORMATS = (MODBUS_RTU, RAW)
BYTE_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
# DataEncoding -> (struct code, size in bytes, is a float)
ENCODINGS: dict[str, tuple[str, int, bool]] = {
    "Int8": ("b", 1, False),
    "Uint8": ("B", 1, False),
    "Int16": ("h", 2, False),
    "Uint16": ("H", 2, False),
    "Int32": ("i", 4, False),
    "Uint32": ("I", 4, False),
    "Float32": ("f", 4, True),
    "Int64": ("q", 8, False),
    "Uint64": ("Q", 8, False),
    "Float64": ("d", 8, True),
}
_ENCODINGS_BY_LOWER = {name.lower(): name for name in ENCODINGS}
MODBUS_READ_FUNCTIONS = (0x03, 0x04)
MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


modbus_crc = crc16.modbus
ReadingsBuilder = Callable[[bytes, int, str, str, int, datetime, int, int], list[Reading] | None]
"""CRC-16/MODBUS of a whole buffer (native); a frame with its CRC appended gives 0."""


def crc16_modbus(data: bytes, end: int | None = None) -> int:
    """CRC-16/MODBUS (init 0xFFFF, reflected poly 0xA001, no final xor) of ``data[:end]``.

    Computed in native code (``fastcrc``); the tests check it against the bitwise definition.
    """
    return modbus_crc(data if end is None else data[:end])


def parse_hex(text: str) -> bytes | DecodeError:
    """The bytes of a hex frame (any case, optionally spaced between bytes), or ``bad_hex``."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        return DecodeError(BAD_HEX, f"not a hex string: {text[:80]!r}")


def modbus_data_section(frame: bytes) -> tuple[int, int] | DecodeError:
    """``(start, end)`` of the data bytes of a Modbus RTU read reply, checked in the documented
    order.

    :func:`modbus_frame_ok` is the cheap yes/no form of the same checks.
    """
    size = len(frame)
    if size < 5:
        return DecodeError(BAD_FRAME, f"{size} bytes, a Modbus RTU frame has at least 5")
    crc = crc16_modbus(frame, size - 2)
    sent = frame[size - 2] | frame[size - 1] << 8
    if crc != sent:
        return DecodeError(BAD_CRC, f"CRC 0x{sent:04X} sent, 0x{crc:04X} computed")
    function = frame[1]
    if function & 0x80:
        code = frame[2]
        name = MODBUS_EXCEPTIONS.get(code, "unknown exception")
        return DecodeError(
            MODBUS_EXCEPTION, f"function 0x{function & 0x7F:02X} exception code {code} ({name})"
        )
    if function not in MODBUS_READ_FUNCTIONS:
        return DecodeError(BAD_FRAME, f"function 0x{function:02X} is not a register read (3 or 4)")
    if frame[2] != size - 5:
        return DecodeError(BAD_FRAME, f"byte count {frame[2]} but {size - 5} data bytes")
    return 3, size - 2


def modbus_frame_ok(frame: bytes) -> bool:
    """Whether a frame passes every Modbus RTU read-reply check (data at ``frame[3:-2]``).

    Uses the CRC residue: the CRC of a frame including its own CRC (low byte first) is zero.
    """
    size = len(frame)
    return (
        size >= 5
        and frame[1] in MODBUS_READ_FUNCTIONS
        and frame[2] == size - 5
        and modbus_crc(frame) == 0
    )


class PointPlan(msgspec.Struct, frozen=True, gc=False):
    """A data point compiled for decoding: where its bytes are and how to turn them into a value.

    ``layout`` is the ``struct`` format of the value. ``order`` is None when ``unpack_from`` reads
    the bytes in place, else the positions (relative to the point's offset) of the big-endian
    bytes in the frame, gathered and read with ``unpack``.
    """

    label: str
    unit: str
    datapoint_id: int
    offset: int
    end: int
    layout: str
    unpack_from: Callable[..., tuple]
    unpack: Callable[..., tuple]
    order: tuple[int, ...] | None
    divisor: float
    is_float: bool


class TemplatePlan(msgspec.Struct, frozen=True, gc=False):
    """A sensor template compiled for decoding: frame format plus its data points in order.

    When every point is valid, read in place with one byte-order prefix, and the points are in
    offset order without overlap, ``readings`` turns a frame into the template's readings in one
    call (see :func:`_readings_builder`); it needs ``span`` data bytes from the first data byte
    (else, or when it returns None for a float that is not finite: decode point by point).
    ``modbus`` is ``frame_format == "modbus-rtu"``.
    """

    frame_format: str
    points: tuple[PointPlan | DecodeError, ...]
    readings: ReadingsBuilder | None = None
    span: int = 0
    modbus: bool = True


def byte_positions(size: int, byte_order: str) -> tuple[int, ...]:
    """For each byte of the big-endian value, its position in the frame for ``byte_order``.

    Values are read per 16-bit word: ``CDAB`` reverses the word order, ``BADC`` swaps the bytes in
    each word, ``DCBA`` does both (little-endian). One-byte values have a single position.
    """
    if size == 1:
        return (0,)
    words = size // 2
    reverse_words = byte_order in ("CDAB", "DCBA")
    swap_bytes = byte_order in ("BADC", "DCBA")
    if size == 2:  # ABCD/CDAB are big-endian, BADC/DCBA little-endian
        reverse_words = False
    positions = []
    for index in range(size):
        word, low = divmod(index, 2)
        wire_word = words - 1 - word if reverse_words else word
        positions.append(2 * wire_word + (1 - low if swap_bytes else low))
    return tuple(positions)


def compile_point(definition: DataPointDef) -> PointPlan | DecodeError:
    """Check a data point's definition and prepare its decoder, or ``bad_registry`` naming it."""
    label = definition.label

    def bad(detail: str) -> DecodeError:
        return DecodeError(BAD_REGISTRY, detail, label)

    encoding = _ENCODINGS_BY_LOWER.get((definition.encoding or "").lower())
    if encoding is None:
        return bad(f"unknown DataEncoding {definition.encoding!r}")
    code, size, is_float = ENCODINGS[encoding]
    if definition.length != size:
        return bad(f"Length {definition.length} but {encoding} takes {size} bytes")
    byte_order = (definition.byte_order or "ABCD").upper()
    if byte_order not in BYTE_ORDERS:
        return bad(f"unknown ByteOrder {definition.byte_order!r}")
    if definition.offset < 0:
        return bad(f"negative Offset {definition.offset}")
    if not 0 <= definition.decimals <= 308:
        return bad(f"Decimals {definition.decimals} outside 0..308")
    positions = byte_positions(size, byte_order)
    if positions == tuple(range(size)):
        layout, order = ">" + code, None
    elif positions == tuple(reversed(range(size))):
        layout, order = "<" + code, None
    else:
        layout, order = ">" + code, positions
    packer = struct.Struct(layout)
    return PointPlan(
        label,
        definition.unit,
        definition.datapoint_id,
        definition.offset,
        definition.offset + size,
        layout,
        packer.unpack_from,
        packer.unpack,
        order,
        float(10**definition.decimals),
        is_float,
    )


def compile_template(sensor: SensorEntry) -> TemplatePlan | DecodeError:
    """Compile a sensor's template; an unknown frame format is a message-level ``bad_registry``."""
    frame_format = (sensor.frame_format or MODBUS_RTU).lower()
    if frame_format not in FRAME_FORMATS:
        return DecodeError(BAD_REGISTRY, f"unknown FrameFormat {sensor.frame_format!r}")
    points = tuple(compile_point(dp) for dp in sensor.datapoints)
    modbus = frame_format == MODBUS_RTU
    unpack_all, span = _fused_reader(points)
    if unpack_all is None:
        return TemplatePlan(frame_format, points, modbus=modbus)
    return TemplatePlan(frame_format, points, _readings_builder(points, unpack_all), span, modbus)


def _fused_reader(
    points: tuple[PointPlan | DecodeError, ...],
) -> tuple[Callable[..., tuple] | None, int]:
    """One ``unpack_from`` reading every point's raw value (with its data span), if possible."""
    layout, cursor = "", 0
    prefixes = set()
    for point in points:
        if type(point) is not PointPlan or point.order is not None or point.offset < cursor:
            return None, 0
        prefixes.add(point.layout[0])
        layout += f"{point.offset - cursor}x{point.layout[1:]}"
        cursor = point.end
    if not points or len(prefixes) != 1:
        return None, 0
    return struct.Struct(prefixes.pop() + layout).unpack_from, cursor


def _readings_builder(points: tuple[PointPlan, ...], unpack_all: Callable) -> ReadingsBuilder:
    """A function made for one template: frame to its readings, without a loop.

    Generated once per template, as ``dataclasses`` generates ``__init__``: one ``unpack_from``
    for all raw values, a finiteness check for float points, then one :class:`Reading` per point
    written out. A sensor frame is the pipeline's most frequent message, and a loop over a
    template's two to four points costs more than the readings themselves. Only names the code
    makes up appear in the source; the template's labels, units and divisors are passed in as
    values, never as text.
    """
    names: dict[str, object] = {"Reading": Reading, "unpack_all": unpack_all, "finite": isfinite}
    raws = ", ".join(f"raw{k}" for k in range(len(points)))
    lines = [
        "def readings(frame, start, mac, connector, pin, time, sensor_id, version):",
        f"    ({raws},) = unpack_all(frame, start)",
    ]
    floats = [f"finite(raw{k})" for k, point in enumerate(points) if point.is_float]
    if floats:
        lines.append(f"    if not ({' and '.join(floats)}):")
        lines.append("        return None")
    lines.append("    return [")
    for k, point in enumerate(points):
        names |= {f"label{k}": point.label, f"unit{k}": point.unit}
        names |= {f"point{k}": point.datapoint_id, f"divisor{k}": point.divisor}
        lines.append(
            f"        Reading(mac, connector, pin, label{k}, raw{k} / divisor{k}, unit{k}, time,"
            f" sensor_id, point{k}, version),"
        )
    lines.append("    ]")
    exec("\n".join(lines), names)  # the source holds generated names only
    return names["readings"]  # type: ignore[return-value]


_PLANS: dict[tuple[str, tuple[DataPointDef, ...]], TemplatePlan | DecodeError] = {}
PLAN_CACHE_SIZE = 65536


def plan_for(sensor: SensorEntry) -> TemplatePlan | DecodeError:
    """The compiled plan of ``sensor``'s template, cached by what compiling reads (the frame
    format and the data points, by value), so every sensor of a template shares one plan.

    Cached per entry object instead, a fleet with more sensors than the cache holds (100,000
    controllers have about 415,000) compiled a template for most messages: 147 against 20 µs of
    CPU a message at 30,000 controllers (``bench/fleet.py``, docs/PERFORMANCE.md).
    """
    key = (sensor.frame_format, sensor.datapoints)
    plan = _PLANS.get(key)
    if plan is None:
        plan = compile_template(sensor)
        if len(_PLANS) >= PLAN_CACHE_SIZE:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def decode_point(frame: bytes, start: int, end: int, point: PointPlan) -> float | DecodeError:
    """The value of one data point whose offsets count from ``start``; data ends at ``end``."""
    first = start + point.offset
    if start + point.end > end:
        detail = f"bytes {point.offset}..{point.end - 1} past {end - start} data bytes"
        return DecodeError(OUT_OF_RANGE, detail, point.label)
    if point.order is None:
        raw = point.unpack_from(frame, first)[0]
    else:
        raw = point.unpack(bytes([frame[first + i] for i in point.order]))[0]
    if point.is_float and not math.isfinite(raw):
        return DecodeError(BAD_VALUE, f"{raw} is not a finite number", point.label)
    return raw / point.divisor
