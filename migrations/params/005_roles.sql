-- Least privilege (docs/ARCHITECTURE.md, D17). The registry belongs to the fleet-management side: the decode flow
-- (f2_pipeline) only reads it, the health report (f2_reader) only counts its devices. Passwords
-- are set from secret files by `f2 migrate`; the roles are shared with the timeseries database
-- when both live on one server.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'f2_pipeline') THEN
        CREATE ROLE f2_pipeline LOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'f2_reader') THEN
        CREATE ROLE f2_reader LOGIN NOINHERIT;
    END IF;
    -- PUBLIC holds CONNECT by default; grant it only where an operator revoked that.
    IF NOT has_database_privilege('f2_pipeline', current_database(), 'CONNECT') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO f2_pipeline', current_database());
    END IF;
    IF NOT has_database_privilege('f2_reader', current_database(), 'CONNECT') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO f2_reader', current_database());
    END IF;
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO f2_pipeline, f2_reader;
GRANT SELECT ON "DeviceType", "DataPointIcon", "DeviceTemplate", "Device", "Connector", "Pin",
    "DataPoint", f2_registry_version TO f2_pipeline;
GRANT SELECT ON "Device" TO f2_reader;
