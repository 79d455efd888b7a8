-- Dimension tables (docs/PROTOCOL.md §8), backend-neutral: the same on plain PostgreSQL and TimescaleDB.
-- The decode flow keeps them in sync from the registry: whenever it loads a controller's entry it
-- upserts the controller, its sensors and their templates' data points in the same transaction as
-- the rows decoded with that entry; an upsert never replaces a row written at a newer registry
-- version. Rows are never deleted (old readings keep their names). No foreign keys from the fact
-- tables: rows are stored even before their dimension rows.
CREATE TABLE IF NOT EXISTS controllers (
    controller_id    integer PRIMARY KEY,
    mac              text NOT NULL,
    time_zone        text NOT NULL DEFAULT 'UTC',
    registry_version bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS controllers_mac ON controllers (mac);

CREATE TABLE IF NOT EXISTS sensors (
    sensor_id        integer PRIMARY KEY,
    controller_id    integer NOT NULL,
    connector_number integer NOT NULL,
    pin              integer NOT NULL,
    template_id      integer NOT NULL,
    model            text NOT NULL,
    frame_format     text NOT NULL DEFAULT 'modbus-rtu',
    registry_version bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sensors_controller ON sensors (controller_id);

-- Display hints (unit, prepend, whole number, decimals, chart flags) are carried from the
-- registry's DataPoint for dashboards; they are not used to decode.
CREATE TABLE IF NOT EXISTS data_points (
    datapoint_id     integer PRIMARY KEY,
    template_id      integer NOT NULL,
    label            text NOT NULL,
    encoding         text,
    byte_order       text NOT NULL DEFAULT 'ABCD',
    unit             text NOT NULL DEFAULT '',
    prepend          text NOT NULL DEFAULT '',
    append           text NOT NULL DEFAULT '',
    whole_number     boolean NOT NULL DEFAULT false,
    decimals         integer NOT NULL DEFAULT 0,
    data_format      text NOT NULL DEFAULT '',
    realtime_chart   boolean,
    historical_chart boolean,
    registry_version bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS data_points_template ON data_points (template_id);
