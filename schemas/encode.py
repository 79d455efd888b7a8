"""The inverse of :mod:`schemas.frames`, for tests and the simulator: values to frames and hex.

Unlike the decoder these functions raise ``ValueError`` on impossible input (a value that does
not fit its encoding, an unknown encoding or byte order): they are called by code that builds
frames, never on device input.
"""

from __future__ import annotations

import struct
from fractions import Fraction

from schemas.frames import BYTE_ORDERS, ENCODINGS, byte_positions, crc16_modbus


def encode_value(value: float, encoding: str, byte_order: str = "ABCD", decimals: int = 0) -> bytes:
    """The frame bytes of ``value`` for a data point (``value * 10**decimals`` stored raw).

    Integers are rounded to the nearest raw value (computed exactly, so ``raw / 10**decimals``
    decodes back to ``value`` for every raw value below 2**50).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}")
    if byte_order not in BYTE_ORDERS:
        raise ValueError(f"unknown byte order {byte_order!r}")
    code, size, is_float = ENCODINGS[encoding]
    if is_float:
        raw: float | int = value * 10**decimals
    else:
        raw = round(Fraction(value) * 10**decimals)
    try:
        big_endian = struct.pack(">" + code, raw)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit {encoding} with {decimals} decimals") from exc
    wire = bytearray(size)
    for index, position in enumerate(byte_positions(size, byte_order)):
        wire[position] = big_endian[index]
    return bytes(wire)


def modbus_frame(address: int, function: int, data: bytes) -> bytes:
    """A Modbus RTU read reply ``address, function, len(data), data, crc_lo, crc_hi``.

    For an exception reply pass ``function | 0x80`` and use :func:`modbus_exception_frame`.
    """
    body = bytes((address, function, len(data))) + data
    return with_crc(body)


def modbus_exception_frame(address: int, function: int, code: int) -> bytes:
    """A Modbus RTU exception reply ``address, function | 0x80, code, crc_lo, crc_hi``."""
    return with_crc(bytes((address, function | 0x80, code)))


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC-16/MODBUS, low byte first."""
    crc = crc16_modbus(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def frame_hex(frame: bytes, spaced: bool = False) -> str:
    """A frame as upper-case hex, optionally with single spaces between bytes."""
    return frame.hex(" ").upper() if spaced else frame.hex().upper()
