-- Which storage backend this database uses, for `f2 stack status` and the health report:
-- 'timescaledb <version> (<license> license)' when the migrations took the TimescaleDB path
-- (002_facts_timescale.sql), else 'postgresql <version> (native partitioning)'. Backend-neutral.
CREATE OR REPLACE FUNCTION f2_storage_backend() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT 'timescaledb ' || extversion || ' ('
                || coalesce(current_setting('timescaledb.license', true), 'unknown') || ' license)'
         FROM pg_extension WHERE extname = 'timescaledb'),
        'postgresql ' || current_setting('server_version') || ' (native partitioning)')
$$;
