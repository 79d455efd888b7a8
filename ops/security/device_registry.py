"""A controller's row in the device registry (docs/PROTOCOL.md §4), for ``f2 devices register``.

Idempotent and parameterised: the controller is a ``Device`` of the ``F2-rev1`` template with
its ``MacAddress`` (the unique index on ``lower("MacAddress")`` makes a second registration a
no-op), plus its connectors 1..4. Nothing is deleted on revocation: the registry describes the
fleet and its history, the broker decides who may speak.
"""

from __future__ import annotations

import secrets

import psycopg

CONTROLLER_MODEL = "F2-rev1"
CONNECTOR_NUMBERS = (1, 2, 3, 4)

INSERT_CONTROLLER_SQL = """
INSERT INTO "Device" ("DeviceName", "DeviceTemplateId", "ClaimingCode", "SerialNumber",
                      "MacAddress", "PcbVersion")
SELECT %(name)s, t."DeviceTemplateId", %(claiming_code)s, %(serial)s, %(mac)s, 'rev1'
FROM "DeviceTemplate" t WHERE t."Model" = %(model)s
ON CONFLICT DO NOTHING
"""

CONTROLLER_ID_SQL = """SELECT "DeviceId" FROM "Device" WHERE lower("MacAddress") = %s"""

INSERT_CONNECTORS_SQL = """
INSERT INTO "Connector" ("ControllerId", "ConnectorNumber")
SELECT %s, n FROM unnest(%s::int[]) AS n
ON CONFLICT DO NOTHING
"""

REGISTERED_SQL = """
SELECT lower("MacAddress"), "DeviceId" FROM "Device" WHERE lower("MacAddress") = ANY(%s)
"""


class RegistryError(RuntimeError):
    """The registry cannot take the controller (e.g. its template is missing)."""


def register_controller(dsn: str, mac: str) -> int:
    """Create the controller ``mac`` (normalised) with connectors 1..4 if missing; its DeviceId."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(
            INSERT_CONTROLLER_SQL,
            {
                "name": f"F2 {mac}",
                "claiming_code": secrets.token_hex(8).upper(),
                "serial": f"F2-{mac}",
                "mac": mac,
                "model": CONTROLLER_MODEL,
            },
        )
        row = conn.execute(CONTROLLER_ID_SQL, (mac,)).fetchone()
        if row is None:
            raise RegistryError(
                f"could not register {mac}: template {CONTROLLER_MODEL!r} is missing, or serial "
                f"number F2-{mac} belongs to another device"
            )
        conn.execute(INSERT_CONNECTORS_SQL, (row[0], list(CONNECTOR_NUMBERS)))
        return int(row[0])


def registered_ids(dsn: str, macs: list[str]) -> dict[str, int]:
    """DeviceId per MAC for those of ``macs`` that are in the registry."""
    with psycopg.connect(dsn) as conn:
        return {mac: int(device_id) for mac, device_id in conn.execute(REGISTERED_SQL, (macs,))}
