"""Reader values are hashed before storage and decoded_iot_data when a key is configured."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from connectors.decode_step import DecodeStep
from schemas.limits import DEFAULT_LIMITS
from schemas.privacy import hash_card_id
from schemas.records import ControllerEntry, RawMessage
from schemas.settings import PrivacySettings

MAC = "e4fd45f654be"
KEY = b"0123456789abcdef-test-key"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class OneControllerStore:
    def lookup(self, mac: str) -> tuple[ControllerEntry | None, bool]:
        return (ControllerEntry(mac=MAC, controller_id=7) if mac == MAC else None), False


def decode(privacy: PrivacySettings, component: str, payload: dict) -> tuple[list, list]:
    step = DecodeStep(OneControllerStore, "decoded", "dlq", privacy, DEFAULT_LIMITS, lambda: NOW)
    raw = RawMessage(
        f"tele/f2-{MAC}/access-control-mode/J3/{component}", json.dumps(payload).encode()
    )
    (out,) = step([raw])
    return [row for row in out.rows.events], [json.loads(r.value) for r in out.decoded]


def test_reader_card_ids_are_stored_and_published_as_their_hash() -> None:
    payload = {"timestamp": "2026-11-26 11:59:00.000000", "data": "b'A1B2C3D4'"}
    rows, records = decode(PrivacySettings(reader_hash_key=KEY.decode()), "reader-1", payload)
    digest = hash_card_id("A1B2C3D4", KEY)
    assert [r["value"] for r in records] == [digest]
    assert rows[0].value_text == digest and "A1B2C3D4" not in rows[0].columns()


def test_without_a_key_or_for_other_components_values_are_unchanged() -> None:
    payload = {"timestamp": "2026-11-26 11:59:00.000000", "data": "b'A1B2C3D4'"}
    _, records = decode(PrivacySettings(), "reader-1", payload)
    assert [r["value"] for r in records] == ["A1B2C3D4"]
    door = {"timestamp": "2026-11-26 11:59:00.000000", "door-sensor-1": True}
    _, records = decode(PrivacySettings(reader_hash_key=KEY.decode()), "door-sensors", door)
    assert [r["value"] for r in records] == [True]
