"""Registry reads from PostgreSQL (the "params" database, docs/PROTOCOL.md §4): one controller.

:func:`load_controller` turns the fleet-management tables (quoted PascalCase) into the
:class:`~schemas.records.ControllerEntry` the decoder needs, in two queries: the controller by
MAC (``lower("MacAddress")``, served by the ``UX_Device_MacAddress`` index), then every sensor on
its pins with the sensors' data points. Definitions are not validated here: the decoder reports
an impossible one as ``bad_registry``. Read-only; the caller owns the connection and transaction.
"""

from __future__ import annotations

from collections import defaultdict

import psycopg

from schemas.records import ControllerEntry, DataPointDef, SensorEntry
from schemas.topics import normalise_mac

CONTROLLER_SQL = """
SELECT "DeviceId", "TimeZone" FROM "Device" WHERE lower("MacAddress") = %s
"""

SENSORS_SQL = """
SELECT c."ConnectorNumber", p."Position", s."DeviceId", t."DeviceTemplateId", t."Model",
       t."FrameFormat", dp."DataPointId", dp."Label", dp."DataEncoding", dp."Offset",
       dp."Length", dp."Decimals", dp."ByteOrder", dp."Append", dp."Prepend", dp."WholeNumber",
       dp."DataFormat", dp."RealTimeChart", dp."HistoricalChart"
FROM "Connector" c
JOIN "Pin" p ON p."ConnectorId" = c."ConnectorId"
JOIN "Device" s ON s."DeviceId" = p."DeviceId"
JOIN "DeviceTemplate" t ON t."DeviceTemplateId" = s."DeviceTemplateId"
LEFT JOIN "DataPoint" dp ON dp."DeviceTemplateId" = t."DeviceTemplateId"
WHERE c."ControllerId" = %s
ORDER BY c."ConnectorNumber", p."Position", dp."Offset", dp."DataPointId"
"""


def load_controller(conn: psycopg.Connection, mac: str, version: int = 0) -> ControllerEntry | None:
    """The registry entry of the controller with ``mac`` (any case), or None if it has none.

    ``version`` is stamped on the entry (the registry version the caller read it at; the
    decode flow's change feed supplies it, 0 otherwise).
    """
    normalised = normalise_mac(mac)
    if normalised is None:
        return None
    row = conn.execute(CONTROLLER_SQL, (normalised,)).fetchone()
    if row is None:
        return None
    controller_id, timezone = row
    heads: dict[str, tuple[int, int, str, str]] = {}
    points: dict[str, list[DataPointDef]] = defaultdict(list)
    for row in conn.execute(SENSORS_SQL, (controller_id,)):
        connector, position, sensor_id, template_id, model, frame_format, *point = row
        key = f"{connector}:{position}"
        heads[key] = (sensor_id, template_id, model, frame_format)
        if point[0] is not None:
            points[key].append(_datapoint(*point))
    sensors = {
        key: SensorEntry(sensor_id, template_id, model, frame_format, tuple(points[key]))
        for key, (sensor_id, template_id, model, frame_format) in heads.items()
    }
    return ControllerEntry(normalised, controller_id, timezone or "UTC", version, sensors)


def _datapoint(
    datapoint_id: int,
    label: str,
    encoding: str | None,
    offset: int,
    length: int,
    decimals: int,
    byte_order: str | None,
    append: str | None,
    prepend: str | None,
    whole_number: bool | None,
    data_format: str,
    realtime_chart: bool | None,
    historical_chart: bool | None,
) -> DataPointDef:
    """One ``DataPoint`` row as a :class:`DataPointDef` (NULL text columns become defaults)."""
    return DataPointDef(
        datapoint_id,
        label,
        encoding,
        offset,
        length,
        decimals if decimals is not None else 0,
        byte_order or "ABCD",
        append or "",
        prepend or "",
        bool(whole_number),
        data_format,
        realtime_chart,
        historical_chart,
    )
