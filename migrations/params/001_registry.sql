-- Device registry (docs/PROTOCOL.md §4), in the shape the fleet-management (.NET) system created it:
-- quoted PascalCase identifiers, serial keys. The pipeline only reads these tables.
CREATE TABLE IF NOT EXISTS "DeviceType" (
    "DeviceTypeId" serial PRIMARY KEY,
    "Name"         text NOT NULL
);

CREATE TABLE IF NOT EXISTS "DataPointIcon" (
    "DataPointIconId" serial PRIMARY KEY,
    "IconName"        text NOT NULL
);

CREATE TABLE IF NOT EXISTS "DeviceTemplate" (
    "DeviceTemplateId" serial PRIMARY KEY,
    "Name"             text NOT NULL,
    "Model"            text NOT NULL,
    "Description"      text,
    "Image"            text,
    "DeviceTypeId"     integer NOT NULL REFERENCES "DeviceType" ("DeviceTypeId")
);

CREATE TABLE IF NOT EXISTS "Device" (
    "DeviceId"         serial PRIMARY KEY,
    "DeviceName"       text NOT NULL,
    "DeviceTemplateId" integer NOT NULL REFERENCES "DeviceTemplate" ("DeviceTemplateId"),
    "ClaimingCode"     text NOT NULL,
    "SerialNumber"     text,
    "Uuid"             uuid,
    "MacAddress"       text,
    "IpAddress"        text,
    "PcbVersion"       text
);

CREATE TABLE IF NOT EXISTS "Connector" (
    "ConnectorId"     serial PRIMARY KEY,
    "ControllerId"    integer NOT NULL REFERENCES "Device" ("DeviceId") ON DELETE CASCADE,
    "ConnectorNumber" integer NOT NULL CHECK ("ConnectorNumber" BETWEEN 1 AND 5),
    "ConnectorTypeId" integer
);

CREATE TABLE IF NOT EXISTS "Pin" (
    "PinId"       serial PRIMARY KEY,
    "ConnectorId" integer NOT NULL REFERENCES "Connector" ("ConnectorId") ON DELETE CASCADE,
    "Position"    integer NOT NULL,
    "DeviceId"    integer NOT NULL REFERENCES "Device" ("DeviceId") ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS "DataPoint" (
    "DataPointId"      serial PRIMARY KEY,
    "DeviceTemplateId" integer NOT NULL REFERENCES "DeviceTemplate" ("DeviceTemplateId") ON DELETE CASCADE,
    "Label"            text NOT NULL,
    "DataPointIconId"  integer NOT NULL REFERENCES "DataPointIcon" ("DataPointIconId"),
    "DataFormat"       text NOT NULL,
    "DataEncoding"     text,
    "Offset"           integer NOT NULL,
    "Length"           integer NOT NULL,
    "Prepend"          text NOT NULL DEFAULT '',
    "Append"           text NOT NULL DEFAULT '',
    "WholeNumber"      boolean NOT NULL DEFAULT false,
    "Decimals"         integer NOT NULL DEFAULT 0,
    "RealTimeChart"    boolean,
    "HistoricalChart"  boolean
);
