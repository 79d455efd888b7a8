-- Fact tables on TimescaleDB (docs/PROTOCOL.md §8): the TimescaleDB variant of 002_facts_plain.sql.
-- ops.migrate applies exactly one of the two (`*_plain.sql` / `*_timescale.sql`), chosen once per
-- database: TimescaleDB when the extension is available (F2_STORAGE_BACKEND overrides). Same objects,
-- names, columns and signatures as the plain file: tables readings and device_events with their
-- unique keys, f2_ensure_partitions(int, int) and readings_hourly (bucket, sensor_id, datapoint_id,
-- avg, min, max, count).
--
-- Timescale-licensed build (timescaledb.license = 'timescale'): hypertables, compression segmented by
-- sensor and data point (events: by controller and connector) ordered by time, a compression policy,
-- a retention policy, and readings_hourly as a real-time continuous aggregate with a refresh policy.
-- Apache-licensed build (e.g. Debian's package): hypertables only, readings_hourly a plain view as on
-- PostgreSQL; compression, continuous aggregates and policies do not exist there.
-- Chunk intervals, policy ages and the refresh window come from f2_timescale_configure(), which
-- ops.migrate calls after every migration run with the F2_TSDB_* settings (idempotent).

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS readings (
    time             timestamptz NOT NULL,
    sensor_id        integer NOT NULL,
    datapoint_id     integer NOT NULL,
    value            double precision NOT NULL,
    registry_version bigint NOT NULL DEFAULT 0,
    CONSTRAINT readings_key UNIQUE (sensor_id, datapoint_id, time)
);
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
);
-- Hypertables get no default time index: the unique keys serve per-sensor queries, chunk exclusion
-- bounds time ranges, and a BRIN index (as on the plain path) serves time scans inside a chunk.
SELECT create_hypertable('readings', by_range('time', interval '1 day'),
                         create_default_indexes => false, if_not_exists => true);
SELECT create_hypertable('device_events', by_range('time', interval '7 days'),
                         create_default_indexes => false, if_not_exists => true);
CREATE INDEX IF NOT EXISTS readings_time ON readings USING brin (time);
CREATE INDEX IF NOT EXISTS device_events_time ON device_events USING brin (time);

-- Hypertables create chunks on demand for any time: nothing to create ahead, no "no partition".
CREATE OR REPLACE FUNCTION f2_ensure_partitions(days_ahead integer DEFAULT 3, days_back integer DEFAULT 1)
RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;

DO $$
BEGIN
    IF current_setting('timescaledb.license', true) IS DISTINCT FROM 'timescale' THEN
        EXECUTE $v$
            CREATE OR REPLACE VIEW readings_hourly AS
            SELECT time_bucket(interval '1 hour', time) AS bucket, sensor_id, datapoint_id,
                   avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count
            FROM readings
            GROUP BY 1, 2, 3 $v$;
        RETURN;
    END IF;
    ALTER TABLE readings SET (timescaledb.compress,
                              timescaledb.compress_segmentby = 'sensor_id, datapoint_id',
                              timescaledb.compress_orderby = 'time DESC');
    ALTER TABLE device_events SET (timescaledb.compress,
                                   timescaledb.compress_segmentby = 'controller_id, connector',
                                   timescaledb.compress_orderby = 'time DESC');
    -- Real-time (materialized_only = false): buckets not yet materialized are computed from the
    -- raw rows at query time, so the aggregate is complete up to now, like the plain view.
    IF to_regclass('readings_hourly') IS NULL THEN
        EXECUTE $v$
            CREATE MATERIALIZED VIEW readings_hourly
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(interval '1 hour', time) AS bucket, sensor_id, datapoint_id,
                   avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS count
            FROM readings
            GROUP BY 1, 2, 3
            WITH NO DATA $v$;
    END IF;
END $$;

-- Set (or change) chunk intervals and policies; returns what it did. Policies are replaced only
-- when their settings differ, so re-running it with the same values changes nothing. A NULL
-- retention removes the retention policies. On an Apache-licensed build only the chunk intervals
-- apply.
CREATE OR REPLACE FUNCTION f2_timescale_configure(
    chunk_interval        interval DEFAULT '1 day',
    events_chunk_interval interval DEFAULT '7 days',
    compress_after        interval DEFAULT '2 days',
    retention             interval DEFAULT '365 days',
    refresh_start         interval DEFAULT '7 days',
    refresh_end           interval DEFAULT '1 hour',
    refresh_every         interval DEFAULT '30 minutes'
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    done text[] := ARRAY[]::text[];
    hyper text;
    job record;
BEGIN
    PERFORM set_chunk_time_interval('readings', chunk_interval);
    PERFORM set_chunk_time_interval('device_events', events_chunk_interval);
    IF current_setting('timescaledb.license', true) IS DISTINCT FROM 'timescale' THEN
        RETURN 'chunk intervals set; no policies on the ' ||
               coalesce(current_setting('timescaledb.license', true), 'unknown') || ' license';
    END IF;
    FOREACH hyper IN ARRAY ARRAY['readings', 'device_events'] LOOP
        SELECT j.job_id, j.config INTO job FROM timescaledb_information.jobs j
        WHERE j.proc_name = 'policy_compression' AND j.hypertable_name = hyper;
        IF job.job_id IS NULL OR (job.config->>'compress_after')::interval <> compress_after THEN
            PERFORM remove_compression_policy(hyper, if_exists => true);
            PERFORM add_compression_policy(hyper, compress_after => compress_after);
            done := done || format('%s: compress after %s', hyper, compress_after);
        END IF;
        job := NULL;
        SELECT j.job_id, j.config INTO job FROM timescaledb_information.jobs j
        WHERE j.proc_name = 'policy_retention' AND j.hypertable_name = hyper;
        IF retention IS NULL AND job.job_id IS NOT NULL THEN
            PERFORM remove_retention_policy(hyper, if_exists => true);
            done := done || format('%s: retention removed', hyper);
        ELSIF retention IS NOT NULL
              AND (job.job_id IS NULL OR (job.config->>'drop_after')::interval <> retention) THEN
            PERFORM remove_retention_policy(hyper, if_exists => true);
            PERFORM add_retention_policy(hyper, drop_after => retention);
            done := done || format('%s: drop chunks after %s', hyper, retention);
        END IF;
        job := NULL;
    END LOOP;
    SELECT j.job_id, j.config, j.schedule_interval INTO job FROM timescaledb_information.jobs j
    WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
      AND j.hypertable_name = 'readings_hourly';
    IF job.job_id IS NULL
       OR (job.config->>'start_offset')::interval <> refresh_start
       OR (job.config->>'end_offset')::interval <> refresh_end
       OR job.schedule_interval <> refresh_every THEN
        PERFORM remove_continuous_aggregate_policy('readings_hourly', if_exists => true);
        PERFORM add_continuous_aggregate_policy('readings_hourly', start_offset => refresh_start,
                                                end_offset => refresh_end,
                                                schedule_interval => refresh_every);
        done := done || format('readings_hourly: refresh [now-%s, now-%s] every %s',
                               refresh_start, refresh_end, refresh_every);
    END IF;
    RETURN coalesce(nullif(array_to_string(done, '; '), ''), 'unchanged');
END $$;

SELECT f2_timescale_configure();
