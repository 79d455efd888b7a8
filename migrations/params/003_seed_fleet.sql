-- Seed content for demos and tests (docs/PROTOCOL.md §4): three templates and three controllers, each with an
-- ENV-S1 on (J1, pin 1), a PM-100 on (J2, pin 2) and an ENV-S1 on (J4, pin 3). Idempotent.
INSERT INTO "DeviceType" ("Name") VALUES ('Controller'), ('Sensor') ON CONFLICT DO NOTHING;
INSERT INTO "DataPointIcon" ("IconName")
VALUES ('thermometer'), ('humidity'), ('co2'), ('voltage'), ('current') ON CONFLICT DO NOTHING;

INSERT INTO "DeviceTemplate" ("Name", "Model", "Description", "DeviceTypeId", "FrameFormat")
SELECT t.name, t.model, t.description, dt."DeviceTypeId", 'modbus-rtu'
FROM (VALUES
    ('F2 Controller', 'F2-rev1', 'F2 Smart Controller, four 24-terminal connectors', 'Controller'),
    ('Environmental Sensor', 'ENV-S1', 'RS-485 temperature, humidity and CO2 sensor', 'Sensor'),
    ('Power Monitor', 'PM-100', 'RS-485 mains voltage and current monitor', 'Sensor')
) AS t (name, model, description, type_name)
JOIN "DeviceType" dt ON dt."Name" = t.type_name
ON CONFLICT DO NOTHING;

INSERT INTO "DataPoint" ("DeviceTemplateId", "Label", "DataPointIconId", "DataFormat", "DataEncoding",
                         "Offset", "Length", "Prepend", "Append", "WholeNumber", "Decimals",
                         "RealTimeChart", "HistoricalChart")
SELECT tpl."DeviceTemplateId", d.label, icon."DataPointIconId", 'number', d.encoding,
       d.off, d.len, '', d.append, d.decimals = 0, d.decimals, true, true
FROM (VALUES
    ('ENV-S1', 'Temperature', 'thermometer', 'Int16', 0, 2, 2, ' °C'),
    ('ENV-S1', 'Humidity', 'humidity', 'Uint16', 2, 2, 2, ' %'),
    ('ENV-S1', 'CO2', 'co2', 'Uint16', 4, 2, 0, ' ppm'),
    ('PM-100', 'Voltage', 'voltage', 'Uint16', 0, 2, 1, ' V'),
    ('PM-100', 'Current', 'current', 'Int16', 2, 2, 3, ' A')
) AS d (model, label, icon, encoding, off, len, decimals, append)
JOIN "DeviceTemplate" tpl ON tpl."Model" = d.model
JOIN "DataPointIcon" icon ON icon."IconName" = d.icon
ON CONFLICT DO NOTHING;

INSERT INTO "Device" ("DeviceName", "DeviceTemplateId", "ClaimingCode", "SerialNumber", "MacAddress", "PcbVersion")
SELECT 'F2 ' || m.mac, tpl."DeviceTemplateId", 'SEED-' || upper(m.mac), 'F2-' || m.mac, m.mac, 'rev1'
FROM (VALUES ('e4fd45f654be'), ('abc123def456'), ('123456abcdef')) AS m (mac)
JOIN "DeviceTemplate" tpl ON tpl."Model" = 'F2-rev1'
ON CONFLICT DO NOTHING;

INSERT INTO "Connector" ("ControllerId", "ConnectorNumber")
SELECT d."DeviceId", n
FROM "Device" d CROSS JOIN generate_series(1, 4) AS n
WHERE d."SerialNumber" IN ('F2-e4fd45f654be', 'F2-abc123def456', 'F2-123456abcdef')
ON CONFLICT DO NOTHING;

INSERT INTO "Device" ("DeviceName", "DeviceTemplateId", "ClaimingCode", "SerialNumber")
SELECT s.model || ' ' || m.mac || ' J' || s.conn || ' pin ' || s.pos, tpl."DeviceTemplateId",
       'SEED-' || upper(m.mac) || '-J' || s.conn || '-' || s.pos, m.mac || '-J' || s.conn || '-' || s.pos
FROM (VALUES ('e4fd45f654be'), ('abc123def456'), ('123456abcdef')) AS m (mac)
CROSS JOIN (VALUES ('ENV-S1', 1, 1), ('PM-100', 2, 2), ('ENV-S1', 4, 3)) AS s (model, conn, pos)
JOIN "DeviceTemplate" tpl ON tpl."Model" = s.model
ON CONFLICT DO NOTHING;

INSERT INTO "Pin" ("ConnectorId", "Position", "DeviceId")
SELECT c."ConnectorId", s.pos, sensor."DeviceId"
FROM (VALUES ('e4fd45f654be'), ('abc123def456'), ('123456abcdef')) AS m (mac)
CROSS JOIN (VALUES (1, 1), (2, 2), (4, 3)) AS s (conn, pos)
JOIN "Device" ctl ON lower(ctl."MacAddress") = m.mac
JOIN "Connector" c ON c."ControllerId" = ctl."DeviceId" AND c."ConnectorNumber" = s.conn
JOIN "Device" sensor ON sensor."SerialNumber" = m.mac || '-J' || s.conn || '-' || s.pos
ON CONFLICT DO NOTHING;
