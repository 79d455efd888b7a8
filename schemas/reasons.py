"""Dead-letter reason codes (docs/PROTOCOL.md §6), one constant per code.

Every :class:`schemas.records.DecodeError` carries one of these as its ``reason``; the metrics keep
one counter per code, so the tuple :data:`ALL_REASONS` is the complete list.
"""

from __future__ import annotations

BAD_TOPIC = "bad_topic"
BAD_JSON = "bad_json"
BAD_TIMESTAMP = "bad_timestamp"
BAD_PAYLOAD = "bad_payload"
BAD_HEX = "bad_hex"
BAD_FRAME = "bad_frame"
BAD_CRC = "bad_crc"
MODBUS_EXCEPTION = "modbus_exception"
UNKNOWN_DEVICE = "unknown_device"
OUT_OF_RANGE = "out_of_range"
BAD_VALUE = "bad_value"
BAD_REGISTRY = "bad_registry"
STORE_REJECTED = "store_rejected"
UNDELIVERABLE = "undeliverable"

ALL_REASONS: tuple[str, ...] = (
    BAD_TOPIC,
    BAD_JSON,
    BAD_TIMESTAMP,
    BAD_PAYLOAD,
    BAD_HEX,
    BAD_FRAME,
    BAD_CRC,
    MODBUS_EXCEPTION,
    UNKNOWN_DEVICE,
    OUT_OF_RANGE,
    BAD_VALUE,
    BAD_REGISTRY,
    STORE_REJECTED,
    UNDELIVERABLE,
)
"""Every reason code, in the documented order."""

DECODE_REASONS: tuple[str, ...] = tuple(
    r for r in ALL_REASONS if r not in (STORE_REJECTED, UNDELIVERABLE)
)
"""The codes decoding produces: all but ``store_rejected`` (the storage writer's) and
``undeliverable`` (the Kafka sinks')."""
