"""``--register``: write the simulated fleet into the device registry (docs/PROTOCOL.md §4),
idempotently.

Every row is inserted by its natural key with ``ON CONFLICT DO NOTHING`` against the unique
indexes of ``migrations/params/002``: device types by ``Name``, icons by ``IconName``, templates by
``Model``, data points by (template, ``Label``), controllers by ``MacAddress`` (and serial number
``F2-<mac>``, as the seed migration writes it), sensors by serial number ``<mac>-J<n>-<pin>``,
connectors by (controller, number), pins by (connector, ``Position``). Running it twice, or
concurrently, leaves one row per key. Rows that already exist are never changed: if their content
differs from what the simulator would send (another writer edited a template or re-wired a pin),
:func:`register_fleet` lists the difference so the operator knows those frames will not decode as
simulated. Parameterised SQL only, set-based (one multi-row ``INSERT … SELECT unnest(…)`` per
table and batch, never row by row): one transaction per :data:`BATCH_CONTROLLERS` controllers
(the templates with the first), so a large fleet reports its progress, and an interrupted run
leaves whole batches that running it again completes.

Cost: the registry's change-feed triggers (``migrations/params/004``) run once per inserted row
(``FOR EACH ROW``) and take most of the time: 5,000 generated controllers (about 66,000 rows)
took 11.7 s with them and 1.6 s with them disabled (``bench/fleet.py`` measures a whole fleet).
The tables are analysed at the end when rows were added: until autovacuum does it, a registry
lookup planned without statistics scans all of ``"Pin"`` (2.8 ms a controller at 12,000 pins
against 0.6 ms after ``ANALYZE``, growing with the registry).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import psycopg

from simulator.fleet import CONTROLLER_TEMPLATE, TEMPLATES, Fleet, TemplateSpec

TABLES = (
    "DeviceType",
    "DataPointIcon",
    "DeviceTemplate",
    "DataPoint",
    "Device",
    "Connector",
    "Pin",
)
BATCH_CONTROLLERS = 5000
"""Controllers per transaction (about 66,000 rows of a generated fleet)."""


class RegisterResult(msgspec.Struct):
    """Rows inserted per table, and existing rows that differ from the simulated fleet."""

    inserted: dict[str, int]
    mismatches: list[str]


def register_fleet(
    dsn: str,
    fleet: Fleet,
    batch: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> RegisterResult:
    """Write ``fleet`` (templates, data points, controllers, connectors, sensors, pins), ``batch``
    controllers per transaction (default :data:`BATCH_CONTROLLERS`); ``progress(done, total)``
    after each batch's commit."""
    templates = [CONTROLLER_TEMPLATE, *(TEMPLATES[model] for model in fleet.models())]
    inserted = dict.fromkeys(TABLES, 0)
    mismatches: list[str] = []
    batch = batch or BATCH_CONTROLLERS
    total = len(fleet.controllers)
    template_ids: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        for start in range(0, max(total, 1), batch):
            part = msgspec.structs.replace(
                fleet, controllers=fleet.controllers[start : start + batch]
            )
            with conn.transaction(), conn.cursor() as cur:
                if not template_ids:
                    template_ids = _templates(cur, templates, inserted)
                    mismatches += _template_mismatches(cur, templates, template_ids)
                template_id = template_ids[CONTROLLER_TEMPLATE.model]
                controller_ids = _controllers(cur, part, template_id, inserted)
                connector_ids = _connectors(cur, part, controller_ids, inserted)
                sensor_ids = _sensors(cur, part, template_ids, inserted)
                _pins(cur, part, connector_ids, sensor_ids, inserted)
                mismatches += _pin_mismatches(cur, part, connector_ids, sensor_ids)
                mismatches += _zone_mismatches(cur, part)
            if progress is not None:
                progress(min(start + batch, total), total)
        if inserted["Device"] or inserted["Connector"] or inserted["Pin"]:
            # Statistics for the new rows now, not at autovacuum's next round: without them the
            # registry lookup (connectors.registry_pg) plans a sequential scan of "Pin".
            conn.execute('ANALYZE "Device", "Connector", "Pin"')
    return RegisterResult(inserted, mismatches)


def _ids(cur: psycopg.Cursor, sql: str, keys: list[str]) -> dict[str, int]:
    """``key -> id`` from a query returning (id, key) rows for ``keys``."""
    cur.execute(sql, (keys,))
    return {key: row_id for row_id, key in cur.fetchall()}


def _templates(
    cur: psycopg.Cursor, templates: list[TemplateSpec], inserted: dict[str, int]
) -> dict[str, int]:
    """Device types, icons, templates and their data points; ``model -> DeviceTemplateId``."""
    types = sorted({t.device_type for t in templates})
    cur.execute(
        'INSERT INTO "DeviceType" ("Name") SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING',
        (types,),
    )
    inserted["DeviceType"] += cur.rowcount
    icons = sorted({p.icon for t in templates for p in t.points})
    cur.execute(
        'INSERT INTO "DataPointIcon" ("IconName") SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING',
        (icons,),
    )
    inserted["DataPointIcon"] += cur.rowcount
    cur.execute(
        'INSERT INTO "DeviceTemplate"'
        ' ("Name", "Model", "Description", "DeviceTypeId", "FrameFormat")'
        ' SELECT t.name, t.model, t.description, dt."DeviceTypeId", t.frame_format'
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
        " AS t (name, model, description, type_name, frame_format)"
        ' JOIN "DeviceType" dt ON dt."Name" = t.type_name'
        " ON CONFLICT DO NOTHING",
        (
            [t.name for t in templates],
            [t.model for t in templates],
            [t.description for t in templates],
            [t.device_type for t in templates],
            [t.frame_format for t in templates],
        ),
    )
    inserted["DeviceTemplate"] += cur.rowcount
    ids = _ids(
        cur,
        'SELECT "DeviceTemplateId", "Model" FROM "DeviceTemplate" WHERE "Model" = ANY(%s)',
        [t.model for t in templates],
    )
    rows = [(ids[t.model], p) for t in templates for p in t.points]
    cur.execute(
        'INSERT INTO "DataPoint" ("DeviceTemplateId", "Label", "DataPointIconId", "DataFormat",'
        ' "DataEncoding", "Offset", "Length", "Prepend", "Append", "WholeNumber", "Decimals",'
        ' "RealTimeChart", "HistoricalChart", "ByteOrder")'
        " SELECT d.template_id, d.label, icon.\"DataPointIconId\", 'number', d.encoding, d.off,"
        " d.len, '', d.append, d.decimals = 0, d.decimals, true, true, d.byte_order"
        " FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[], %s::int[], %s::int[],"
        " %s::text[], %s::int[], %s::text[])"
        " AS d (template_id, label, icon, encoding, off, len, append, decimals, byte_order)"
        ' JOIN "DataPointIcon" icon ON icon."IconName" = d.icon'
        " ON CONFLICT DO NOTHING",
        (
            [tid for tid, _ in rows],
            [p.label for _, p in rows],
            [p.icon for _, p in rows],
            [p.encoding for _, p in rows],
            [p.offset for _, p in rows],
            [p.length for _, p in rows],
            [p.append for _, p in rows],
            [p.decimals for _, p in rows],
            [p.byte_order for _, p in rows],
        ),
    )
    inserted["DataPoint"] += cur.rowcount
    return ids


def _controllers(
    cur: psycopg.Cursor, fleet: Fleet, template_id: int, inserted: dict[str, int]
) -> dict[str, int]:
    """Controller devices; ``mac -> DeviceId``."""
    controllers = fleet.controllers
    cur.execute(
        'INSERT INTO "Device" ("DeviceName", "DeviceTemplateId", "ClaimingCode", "SerialNumber",'
        ' "MacAddress", "PcbVersion", "TimeZone")'
        " SELECT 'F2 ' || c.mac, %s, 'SIM-' || upper(c.mac), c.serial, c.mac, 'rev1', c.zone"
        " FROM unnest(%s::text[], %s::text[], %s::text[]) AS c (mac, serial, zone)"
        " ON CONFLICT DO NOTHING",
        (
            template_id,
            [c.mac for c in controllers],
            [c.serial for c in controllers],
            [c.timezone for c in controllers],
        ),
    )
    inserted["Device"] += cur.rowcount
    return _ids(
        cur,
        'SELECT "DeviceId", lower("MacAddress") FROM "Device" WHERE lower("MacAddress") = ANY(%s)',
        fleet.macs,
    )


def _connectors(
    cur: psycopg.Cursor, fleet: Fleet, controller_ids: dict[str, int], inserted: dict[str, int]
) -> dict[tuple[str, int], int]:
    """Connectors J1..J4 of every controller; ``(mac, number) -> ConnectorId``."""
    pairs = [(c.mac, k.number) for c in fleet.controllers for k in c.connectors]
    cur.execute(
        'INSERT INTO "Connector" ("ControllerId", "ConnectorNumber")'
        " SELECT * FROM unnest(%s::int[], %s::int[]) ON CONFLICT DO NOTHING",
        ([controller_ids[mac] for mac, _ in pairs], [number for _, number in pairs]),
    )
    inserted["Connector"] += cur.rowcount
    by_id = {device_id: mac for mac, device_id in controller_ids.items()}
    cur.execute(
        'SELECT "ConnectorId", "ControllerId", "ConnectorNumber" FROM "Connector"'
        ' WHERE "ControllerId" = ANY(%s)',
        (list(by_id),),
    )
    return {(by_id[ctl], number): cid for cid, ctl, number in cur.fetchall()}


def _sensor_rows(fleet: Fleet) -> list[tuple[str, int, int, str]]:
    """(mac, connector number, pin, model) of every sensor in the fleet."""
    return [
        (c.mac, k.number, s.pin, s.model)
        for c in fleet.controllers
        for k in c.connectors
        for s in k.sensors
    ]


def _sensors(
    cur: psycopg.Cursor, fleet: Fleet, template_ids: dict[str, int], inserted: dict[str, int]
) -> dict[str, int]:
    """Sensor devices; ``serial -> DeviceId``."""
    rows = _sensor_rows(fleet)
    serials = [f"{mac}-J{number}-{pin}" for mac, number, pin, _ in rows]
    cur.execute(
        'INSERT INTO "Device" ("DeviceName", "DeviceTemplateId", "ClaimingCode", "SerialNumber")'
        " SELECT s.model || ' ' || s.mac || ' J' || s.num || ' pin ' || s.pin, s.template_id,"
        " 'SIM-' || upper(s.serial), s.serial"
        " FROM unnest(%s::text[], %s::text[], %s::int[], %s::int[], %s::int[], %s::text[])"
        " AS s (model, mac, num, pin, template_id, serial)"
        " ON CONFLICT DO NOTHING",
        (
            [model for *_, model in rows],
            [mac for mac, *_ in rows],
            [number for _, number, _, _ in rows],
            [pin for _, _, pin, _ in rows],
            [template_ids[model] for *_, model in rows],
            serials,
        ),
    )
    inserted["Device"] += cur.rowcount
    sql = 'SELECT "DeviceId", "SerialNumber" FROM "Device" WHERE "SerialNumber" = ANY(%s)'
    return _ids(cur, sql, serials)


def _pins(
    cur: psycopg.Cursor,
    fleet: Fleet,
    connector_ids: dict[tuple[str, int], int],
    sensor_ids: dict[str, int],
    inserted: dict[str, int],
) -> None:
    """Pins wiring each sensor to its controller's connector."""
    rows = _sensor_rows(fleet)
    cur.execute(
        'INSERT INTO "Pin" ("ConnectorId", "Position", "DeviceId")'
        " SELECT * FROM unnest(%s::int[], %s::int[], %s::int[]) ON CONFLICT DO NOTHING",
        (
            [connector_ids[(mac, number)] for mac, number, _, _ in rows],
            [pin for _, _, pin, _ in rows],
            [sensor_ids[f"{mac}-J{number}-{pin}"] for mac, number, pin, _ in rows],
        ),
    )
    inserted["Pin"] += cur.rowcount


def _template_mismatches(
    cur: psycopg.Cursor, templates: list[TemplateSpec], template_ids: dict[str, int]
) -> list[str]:
    """Templates whose data points in the registry differ from the simulated ones."""
    cur.execute(
        'SELECT t."Model", d."Label", d."DataEncoding", d."Offset", d."Length", d."Decimals",'
        ' d."ByteOrder", t."FrameFormat"'
        ' FROM "DeviceTemplate" t JOIN "DataPoint" d USING ("DeviceTemplateId")'
        ' WHERE t."DeviceTemplateId" = ANY(%s)',
        (list(template_ids.values()),),
    )
    found: dict[str, set[tuple]] = {}
    for model, *point in cur.fetchall():
        found.setdefault(model, set()).add(tuple(point))
    out = []
    for template in templates:
        frame_format = template.frame_format
        wanted = {
            (p.label, p.encoding, p.offset, p.length, p.decimals, p.byte_order, frame_format)
            for p in template.points
        }
        if found.get(template.model, set()) != wanted:
            out.append(f"template {template.model}: its data points in the registry differ")
    return out


def _pin_mismatches(
    cur: psycopg.Cursor,
    fleet: Fleet,
    connector_ids: dict[tuple[str, int], int],
    sensor_ids: dict[str, int],
) -> list[str]:
    """Pins of the fleet that hold another device than the simulated sensor."""
    rows = _sensor_rows(fleet)
    keys = {(connector_ids[(m, n)], p): (m, n, p, f"{m}-J{n}-{p}") for m, n, p, _ in rows}
    cur.execute(
        'SELECT "ConnectorId", "Position", "DeviceId" FROM "Pin" WHERE "ConnectorId" = ANY(%s)',
        (sorted({cid for cid, _ in keys}),),
    )
    out = []
    for connector_id, position, device_id in cur.fetchall():
        key = keys.get((connector_id, position))
        if key is not None and sensor_ids[key[3]] != device_id:
            out.append(f"{key[0]} J{key[1]} pin {key[2]} holds device {device_id}, not {key[3]}")
    return out


def _zone_mismatches(cur: psycopg.Cursor, fleet: Fleet) -> list[str]:
    """Controllers registered with another clock zone than the simulated one."""
    cur.execute(
        'SELECT lower("MacAddress"), "TimeZone" FROM "Device" WHERE lower("MacAddress") = ANY(%s)',
        (fleet.macs,),
    )
    zones = dict(cur.fetchall())
    return [
        f"controller {c.mac}: TimeZone {zones[c.mac]!r} in the registry, {c.timezone!r} simulated"
        for c in fleet.controllers
        if zones.get(c.mac, c.timezone) != c.timezone
    ]
