"""The decode step's row batches: they count the payload bytes their rows keep alive (each
message once), which bounds the store's buffer by bytes as well as rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from connectors.decode_step import DecodeStep
from schemas.limits import DEFAULT_LIMITS
from schemas.records import ControllerEntry, DataPointDef, RawMessage, SensorEntry
from schemas.settings import PrivacySettings

MAC = "e4fd45f654be"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TOPIC = f"tele/f2-{MAC}/sensor-mode/J1/sensor-1"
POINT = DataPointDef(1, "Value", "Int16", 0, 2)
ENTRY = ControllerEntry(MAC, 7, sensors={"1:1": SensorEntry(9, 3, "T", "modbus-rtu", (POINT,))})


class OneControllerStore:
    def lookup(self, mac: str) -> tuple[ControllerEntry | None, bool]:
        return (ENTRY if mac == MAC else None), False


def payload(frame: str, pad: int = 0) -> bytes:
    body = {"timestamp": "2026-11-26 11:59:00.000000", "data": frame, "pad": "x" * pad}
    return json.dumps(body).encode()


def test_payload_bytes_count_each_message_with_rows_once() -> None:
    step = DecodeStep(
        OneControllerStore, "decoded", "dlq", PrivacySettings(), DEFAULT_LIMITS, lambda: NOW
    )
    stored = RawMessage(TOPIC, payload("01 03 02 00 01 79 84", pad=5000))
    also = RawMessage(TOPIC, payload("01 03 02 00 02 39 85"))
    refused = RawMessage(TOPIC, b"not json")
    (out,) = step([stored, refused, also])
    assert len(out.rows.readings) == 2 and len(out.dlq) == 1
    assert out.rows.payload_bytes == len(stored.payload) + len(also.payload)
