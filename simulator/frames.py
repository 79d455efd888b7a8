"""RS-485 frames of simulated sensors, built with the decoding core's encoder (``schemas.encode``).

A frame's data section holds each data point's value at its offset (encoding, byte order and
decimals per the template); ``modbus-rtu`` templates wrap it as a read-holding-registers reply
with CRC, ``raw`` templates send the data section alone.
"""

from __future__ import annotations

from schemas.encode import encode_value, frame_hex, modbus_frame
from simulator.fleet import TemplateSpec

READ_HOLDING_REGISTERS = 0x03


def data_section(template: TemplateSpec, values: dict[str, float]) -> bytes:
    """The data bytes of one reading: each data point's signal value encoded at its offset."""
    size = max((point.offset + point.length for point in template.points), default=0)
    data = bytearray(size + size % 2)  # whole 16-bit registers
    for point in template.points:
        raw = encode_value(values[point.signal], point.encoding, point.byte_order, point.decimals)
        data[point.offset : point.offset + point.length] = raw
    return bytes(data)


def sensor_frame(template: TemplateSpec, values: dict[str, float], address: int = 1) -> bytes:
    """The frame a sensor of ``template`` sends for ``values`` (signal kind -> value)."""
    data = data_section(template, values)
    if template.frame_format == "raw":
        return data
    return modbus_frame(address, READ_HOLDING_REGISTERS, data)


def sensor_hex(
    template: TemplateSpec, values: dict[str, float], address: int = 1, spaced: bool = False
) -> str:
    """:func:`sensor_frame` as the hex text of a sensor message's ``data`` field."""
    return frame_hex(sensor_frame(template, values, address), spaced)
