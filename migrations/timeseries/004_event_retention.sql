-- Event retention (F2_EVENT_RETENTION_DAYS, applied hourly by the writer): events can carry reader
-- card ids, which are credentials, so they are not kept forever. Backend-neutral: on TimescaleDB
-- whole expired chunks are dropped first (cheap), then the rows older than `keep` that remain in
-- the chunk or partition straddling the boundary are deleted.
CREATE OR REPLACE FUNCTION f2_expire_events(keep interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    removed bigint := 0;
BEGIN
    IF keep IS NULL THEN
        RETURN 0;
    END IF;
    IF to_regnamespace('timescaledb_information') IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_name = 'device_events') THEN
            PERFORM drop_chunks('device_events', older_than => now() - keep);
        END IF;
    END IF;
    DELETE FROM device_events WHERE time < now() - keep;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;
