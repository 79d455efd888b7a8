-- The pipeline's additions to the registry. Every new column has a default, so writers that do
-- not know them (the fleet-management system) keep working. Values are validated by the decoder
-- (a bad one is reported as `bad_registry`), not by CHECK constraints, so that a bad edit by
-- another writer surfaces as a counted error instead of a failed write elsewhere.
ALTER TABLE "DeviceTemplate" ADD COLUMN IF NOT EXISTS "FrameFormat" text NOT NULL DEFAULT 'modbus-rtu';
ALTER TABLE "DataPoint"      ADD COLUMN IF NOT EXISTS "ByteOrder"   text NOT NULL DEFAULT 'ABCD';
ALTER TABLE "Device"         ADD COLUMN IF NOT EXISTS "TimeZone"    text NOT NULL DEFAULT 'UTC';

-- What the lookup (mac -> connector -> pin -> sensor -> data points) and idempotent registration
-- need. MACs are stored normalised (12 lower-case hex digits); the index is on lower() so a
-- mixed-case row written by another tool is still found and still unique.
CREATE UNIQUE INDEX IF NOT EXISTS "UX_Device_MacAddress" ON "Device" (lower("MacAddress"))
    WHERE "MacAddress" IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS "UX_Device_SerialNumber" ON "Device" ("SerialNumber")
    WHERE "SerialNumber" IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS "UX_Connector_Controller_Number" ON "Connector" ("ControllerId", "ConnectorNumber");
CREATE UNIQUE INDEX IF NOT EXISTS "UX_Pin_Connector_Position" ON "Pin" ("ConnectorId", "Position");
CREATE UNIQUE INDEX IF NOT EXISTS "UX_DataPoint_Template_Label" ON "DataPoint" ("DeviceTemplateId", "Label");
CREATE UNIQUE INDEX IF NOT EXISTS "UX_DeviceTemplate_Model" ON "DeviceTemplate" ("Model");
CREATE UNIQUE INDEX IF NOT EXISTS "UX_DeviceType_Name" ON "DeviceType" ("Name");
CREATE UNIQUE INDEX IF NOT EXISTS "UX_DataPointIcon_IconName" ON "DataPointIcon" ("IconName");
CREATE INDEX IF NOT EXISTS "IX_Pin_DeviceId" ON "Pin" ("DeviceId");
CREATE INDEX IF NOT EXISTS "IX_Device_TemplateId" ON "Device" ("DeviceTemplateId");
