-- Fact tables on plain PostgreSQL 15 (docs/PROTOCOL.md §8). This file holds ALL of the backend-specific
-- storage DDL; everything else in this folder is backend-neutral. The TimescaleDB variant
-- (002_facts_timescale.sql) provides the same objects with the same names, columns and signatures:
--   tables readings, device_events (with their unique keys), function f2_ensure_partitions(int,int)
--   (called by the writer at start and hourly; a no-op or chunk pre-creation there), and the
--   view/continuous aggregate readings_hourly (bucket, sensor_id, datapoint_id, avg, min, max, count).
--
-- Partitioning: native RANGE on time, one partition per UTC day, created ahead by the writer
-- through f2_ensure_partitions(); `<table>_history` holds everything before the day this migration
-- ran; `<table>_default` is the safety net for any time no partition covers (days the pipeline was
-- down, a future day whose partition was not created yet), so no accepted event time can ever fail
-- with "no partition of relation found". When a daily partition is created for a range that
-- already has rows in the default partition, those rows are moved into it in the same transaction.

CREATE TABLE IF NOT EXISTS readings (
    time             timestamptz NOT NULL,
    sensor_id        integer NOT NULL,
    datapoint_id     integer NOT NULL,
    value            double precision NOT NULL,
    registry_version bigint NOT NULL DEFAULT 0,
    CONSTRAINT readings_key UNIQUE (sensor_id, datapoint_id, time)
) PARTITION BY RANGE (time);
CREATE INDEX IF NOT EXISTS readings_time ON readings USING brin (time);

CREATE TABLE IF NOT EXISTS device_events (
    time             timestamptz NOT NULL,
    controller_id    integer NOT NULL,
    mac              text NOT NULL,
    connector        text NOT NULL,
    component        text NOT NULL,
    field            text NOT NULL,
    value_bool       boolean,
    value_num        double precision,
    value_text       text,
    registry_version bigint NOT NULL DEFAULT 0,
    CONSTRAINT device_events_key UNIQUE (controller_id, connector, component, field, time)
) PARTITION BY RANGE (time);
CREATE INDEX IF NOT EXISTS device_events_time ON device_events USING brin (time);

DO $$
DECLARE
    floor_day timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                             - interval '1 day';
    parent text;
BEGIN
    FOREACH parent IN ARRAY ARRAY['readings', 'device_events'] LOOP
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (MINVALUE) TO (%L)',
                       parent || '_history', parent, floor_day);
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I DEFAULT',
                       parent || '_default', parent);
    END LOOP;
END $$;

-- Create the daily partitions for [today - days_back, today + days_ahead] (UTC) that are missing;
-- return how many were created. Idempotent, serialised by an advisory lock, safe while writing.
CREATE OR REPLACE FUNCTION f2_ensure_partitions(days_ahead integer DEFAULT 3, days_back integer DEFAULT 1)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    today   timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    parent  text;
    part    text;
    lo      timestamptz;
    hi      timestamptz;
    created integer := 0;
    stray   boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('f2_ensure_partitions'));
    FOREACH parent IN ARRAY ARRAY['readings', 'device_events'] LOOP
        FOR i IN -days_back .. days_ahead LOOP
            lo := today + make_interval(days => i);
            hi := lo + interval '1 day';
            part := format('%s_p%s', parent, to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD'));
            CONTINUE WHEN to_regclass(part) IS NOT NULL;
            BEGIN
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE time >= $1 AND time < $2)',
                               parent || '_default') INTO stray USING lo, hi;
                IF stray THEN
                    EXECUTE format('CREATE TEMP TABLE f2_moved ON COMMIT DROP AS SELECT * FROM %I WHERE false',
                                   parent);
                    EXECUTE format('WITH m AS (DELETE FROM %I WHERE time >= $1 AND time < $2 RETURNING *) '
                                   'INSERT INTO f2_moved SELECT * FROM m', parent || '_default') USING lo, hi;
                END IF;
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               part, parent, lo, hi);
                IF stray THEN
                    EXECUTE format('INSERT INTO %I SELECT * FROM f2_moved', parent);
                    DROP TABLE f2_moved;
                END IF;
                created := created + 1;
            EXCEPTION WHEN invalid_object_definition THEN
                -- the range overlaps the history partition: that day is already covered
                NULL;
            END;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

SELECT f2_ensure_partitions();

-- Hourly aggregate: a plain view on this backend (exact at any moment, late rows included, no
-- refresh job and no refresh cost proportional to the table as a materialized view would have).
-- Filter it on `bucket` for a bounded range; TimescaleDB's path replaces it with a continuous
-- aggregate of the same name and columns.
CREATE OR REPLACE VIEW readings_hourly AS
SELECT date_trunc('hour', time, 'UTC') AS bucket,
       sensor_id,
       datapoint_id,
       avg(value)  AS avg,
       min(value)  AS min,
       max(value)  AS max,
       count(*)    AS count
FROM readings
GROUP BY 1, 2, 3;
