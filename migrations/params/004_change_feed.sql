-- Registry version and change feed for the decode flow (docs/ARCHITECTURE.md, D7).
--
-- f2_registry_version: one row; its `version` goes up by one per transaction that changes anything
-- the decoder reads (Device, Connector, Pin, DeviceTemplate, DataPoint). A reader that reads a
-- controller's entry and this row in one snapshot knows which registry version decoded a reading.
--
-- Change feed: every such change NOTIFYs channel `f2_registry` with payload '<version>:<mac>' for
-- each affected controller MAC (lower case), or '<version>:*' when one row touches more than 100
-- controllers (a template or data point shared by a large fleet). Notifications are sent at commit
-- and identical payloads within a transaction are collapsed by PostgreSQL.
CREATE TABLE IF NOT EXISTS f2_registry_version (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    version    bigint NOT NULL,
    txid       xid8,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO f2_registry_version (id, version) VALUES (true, 1) ON CONFLICT DO NOTHING;

-- Bump the version once per transaction; return the transaction's version.
CREATE OR REPLACE FUNCTION f2_registry_bump() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    UPDATE f2_registry_version
       SET version = version + 1, txid = pg_current_xact_id(), changed_at = now()
     WHERE txid IS DISTINCT FROM pg_current_xact_id()
    RETURNING version INTO v;
    IF v IS NULL THEN
        SELECT version INTO v FROM f2_registry_version;
    END IF;
    RETURN v;
END $$;

CREATE OR REPLACE FUNCTION f2_registry_notify(macs text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v bigint := f2_registry_bump();
    m text;
BEGIN
    IF cardinality(macs) > 100 THEN
        PERFORM pg_notify('f2_registry', v || ':*');
        RETURN;
    END IF;
    FOREACH m IN ARRAY coalesce(macs, ARRAY[]::text[]) LOOP
        IF m IS NOT NULL THEN
            PERFORM pg_notify('f2_registry', v || ':' || m);
        END IF;
    END LOOP;
END $$;

-- MACs of the controllers that have a sensor of template `template_id` on a pin.
CREATE OR REPLACE FUNCTION f2_registry_macs_of_template(template_id integer) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(DISTINCT lower(ctl."MacAddress"))
    FROM "Device" sensor
    JOIN "Pin" p ON p."DeviceId" = sensor."DeviceId"
    JOIN "Connector" k ON k."ConnectorId" = p."ConnectorId"
    JOIN "Device" ctl ON ctl."DeviceId" = k."ControllerId"
    WHERE sensor."DeviceTemplateId" = template_id AND ctl."MacAddress" IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION f2_registry_macs_of_connector(connector_id integer) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(lower(ctl."MacAddress"))
    FROM "Connector" k JOIN "Device" ctl ON ctl."DeviceId" = k."ControllerId"
    WHERE k."ConnectorId" = connector_id AND ctl."MacAddress" IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION f2_registry_macs_of_device(device_id integer) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(DISTINCT lower(ctl."MacAddress"))
    FROM "Pin" p
    JOIN "Connector" k ON k."ConnectorId" = p."ConnectorId"
    JOIN "Device" ctl ON ctl."DeviceId" = k."ControllerId"
    WHERE p."DeviceId" = device_id AND ctl."MacAddress" IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION f2_registry_device_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (OLD."MacAddress", OLD."TimeZone", OLD."DeviceTemplateId")
           IS NOT DISTINCT FROM (NEW."MacAddress", NEW."TimeZone", NEW."DeviceTemplateId") THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM f2_registry_notify(ARRAY[lower(OLD."MacAddress")]
                                   || coalesce(f2_registry_macs_of_device(OLD."DeviceId"), '{}'));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM f2_registry_notify(ARRAY[lower(NEW."MacAddress")]
                                   || coalesce(f2_registry_macs_of_device(NEW."DeviceId"), '{}'));
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION f2_registry_connector_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM f2_registry_notify(ARRAY(SELECT lower("MacAddress") FROM "Device"
                                         WHERE "DeviceId" = OLD."ControllerId"));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM f2_registry_notify(ARRAY(SELECT lower("MacAddress") FROM "Device"
                                         WHERE "DeviceId" = NEW."ControllerId"));
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION f2_registry_pin_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM f2_registry_notify(f2_registry_macs_of_connector(OLD."ConnectorId"));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM f2_registry_notify(f2_registry_macs_of_connector(NEW."ConnectorId"));
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION f2_registry_template_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM f2_registry_notify(f2_registry_macs_of_template(OLD."DeviceTemplateId"));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM f2_registry_notify(f2_registry_macs_of_template(NEW."DeviceTemplateId"));
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS f2_registry_change ON "Device";
CREATE TRIGGER f2_registry_change AFTER INSERT OR UPDATE OR DELETE ON "Device"
    FOR EACH ROW EXECUTE FUNCTION f2_registry_device_changed();
DROP TRIGGER IF EXISTS f2_registry_change ON "Connector";
CREATE TRIGGER f2_registry_change AFTER INSERT OR UPDATE OR DELETE ON "Connector"
    FOR EACH ROW EXECUTE FUNCTION f2_registry_connector_changed();
DROP TRIGGER IF EXISTS f2_registry_change ON "Pin";
CREATE TRIGGER f2_registry_change AFTER INSERT OR UPDATE OR DELETE ON "Pin"
    FOR EACH ROW EXECUTE FUNCTION f2_registry_pin_changed();
DROP TRIGGER IF EXISTS f2_registry_change ON "DeviceTemplate";
CREATE TRIGGER f2_registry_change AFTER INSERT OR UPDATE OR DELETE ON "DeviceTemplate"
    FOR EACH ROW EXECUTE FUNCTION f2_registry_template_changed();
DROP TRIGGER IF EXISTS f2_registry_change ON "DataPoint";
CREATE TRIGGER f2_registry_change AFTER INSERT OR UPDATE OR DELETE ON "DataPoint"
    FOR EACH ROW EXECUTE FUNCTION f2_registry_template_changed();
