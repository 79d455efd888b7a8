-- Views for humans and Grafana (docs/PROTOCOL.md §8), backend-neutral: the narrow rows with their names joined
-- back from the dimension tables (mac, connector, pin, label, unit). LEFT JOINs so a row whose
-- dimension rows are not written yet still shows.
CREATE OR REPLACE VIEW readings_named AS
SELECT r.time,
       c.mac,
       'J' || s.connector_number AS connector,
       s.pin,
       d.label,
       r.value,
       d.unit,
       s.model,
       r.sensor_id,
       r.datapoint_id,
       r.registry_version
FROM readings r
LEFT JOIN data_points d ON d.datapoint_id = r.datapoint_id
LEFT JOIN sensors s ON s.sensor_id = r.sensor_id
LEFT JOIN controllers c ON c.controller_id = s.controller_id;

CREATE OR REPLACE VIEW readings_hourly_named AS
SELECT h.bucket,
       c.mac,
       'J' || s.connector_number AS connector,
       s.pin,
       d.label,
       d.unit,
       h.avg,
       h.min,
       h.max,
       h.count,
       h.sensor_id,
       h.datapoint_id
FROM readings_hourly h
LEFT JOIN data_points d ON d.datapoint_id = h.datapoint_id
LEFT JOIN sensors s ON s.sensor_id = h.sensor_id
LEFT JOIN controllers c ON c.controller_id = s.controller_id;
