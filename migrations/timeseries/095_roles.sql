-- Least privilege (docs/ARCHITECTURE.md, D17). The migrations run as the database's owner; the flows write as
-- f2_pipeline, Grafana and the health API read as f2_reader. Both roles log in with passwords set
-- from secret files by `f2 migrate` (F2_DB_PIPELINE_PASSWORD_FILE, F2_DB_READER_PASSWORD_FILE);
-- created here without one, they cannot log in until then.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'f2_pipeline') THEN
        CREATE ROLE f2_pipeline LOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'f2_reader') THEN
        CREATE ROLE f2_reader LOGIN NOINHERIT;
    END IF;
    -- PUBLIC holds CONNECT and TEMPORARY by default; grant them only where an operator revoked
    -- that (the writer stages each batch in a temp table).
    IF NOT has_database_privilege('f2_pipeline', current_database(), 'CONNECT, TEMPORARY') THEN
        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO f2_pipeline', current_database());
    END IF;
    IF NOT has_database_privilege('f2_reader', current_database(), 'CONNECT') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO f2_reader', current_database());
    END IF;
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO f2_pipeline, f2_reader;

-- The writer: rows and dimension rows (inserted, or updated by a newer registry version), the
-- stored rows it compares conflicting writes with; no DDL, no deletes.
GRANT SELECT, INSERT, UPDATE ON readings, device_events, controllers, sensors, data_points
    TO f2_pipeline;

-- Partition upkeep and event retention run as the owner (SECURITY DEFINER), for the writer only.
ALTER FUNCTION f2_ensure_partitions(integer, integer)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION f2_expire_events(interval) SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE ALL ON FUNCTION f2_ensure_partitions(integer, integer), f2_expire_events(interval)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION f2_ensure_partitions(integer, integer), f2_expire_events(interval)
    TO f2_pipeline;

-- The reader: what the dashboards and the health report query, nothing else.
GRANT SELECT ON readings_named, readings_hourly_named, readings, sensors, controllers,
    data_points TO f2_reader;
GRANT EXECUTE ON FUNCTION f2_storage_backend() TO f2_reader, f2_pipeline;
