-- Time-partitioned tables: which parents flowtrack.run_maintenance manages
-- (extension/src/partitions/), and how. Partitions live in schema
-- `partitions`, where API roles have no USAGE: rows are reached only through
-- their parent, under its policies.

-- The pass is SECURITY INVOKER and does each parent's DDL as the parent's
-- owner; flowtrack_owner (the migrations' role) and superusers (pg_cron) run
-- it. PUBLIC has no EXECUTE (default privileges, 0001).
GRANT EXECUTE ON FUNCTION flowtrack.run_maintenance(timestamptz, oid) TO flowtrack_owner;

SET LOCAL ROLE flowtrack_owner;

CREATE TABLE internal.partition_config (
    parent             regclass PRIMARY KEY,
    partition_interval text NOT NULL CHECK (partition_interval IN ('daily', 'weekly', 'monthly')),
    premake            integer NOT NULL DEFAULT 4 CHECK (premake BETWEEN 0 AND 400),
    retention          interval CHECK (retention > interval '0'),
    retention_action   text NOT NULL DEFAULT 'drop' CHECK (retention_action IN ('drop', 'detach')),
    archive_schema     name,
    partition_schema   name NOT NULL DEFAULT 'partitions',
    storage_options    text[],
    registered_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (archive_schema IS NULL OR retention_action = 'detach')
);
COMMENT ON TABLE internal.partition_config IS
  'One row per range-partitioned table that flowtrack.run_maintenance manages. A system table: keyed by the parent, not by workspace. Written through internal.manage_partitions, which checks the parent.';
COMMENT ON COLUMN internal.partition_config.parent IS
  'The partitioned table: RANGE on one timestamptz column. regclass, so renames follow it and pg_dump writes its name.';
COMMENT ON COLUMN internal.partition_config.partition_interval IS
  'What one partition covers: a UTC day, an ISO week (Monday to Monday, UTC) or a UTC calendar month. UTC so boundaries never depend on a session''s time zone.';
COMMENT ON COLUMN internal.partition_config.premake IS
  'How many periods after the current one to keep created in advance, so inserts never reach the DEFAULT partition while maintenance runs at least that often.';
COMMENT ON COLUMN internal.partition_config.retention IS
  'How long rows are kept: a partition whose upper bound is at or before now - retention (UTC calendar arithmetic) is dropped or detached. NULL keeps everything.';
COMMENT ON COLUMN internal.partition_config.retention_action IS
  'drop: expired partitions are dropped. detach: they are detached and kept as plain tables (moved to archive_schema when set).';
COMMENT ON COLUMN internal.partition_config.archive_schema IS
  'Where detached partitions go (detach only). NULL leaves them in partition_schema. The parent''s owner needs CREATE on it.';
COMMENT ON COLUMN internal.partition_config.partition_schema IS
  'Schema new partitions are created in. partitions for FlowTrack''s tables: no API role has USAGE on it.';
COMMENT ON COLUMN internal.partition_config.storage_options IS
  'Storage parameters (name=value) for new partitions, which a partitioned table cannot carry itself. NULL: those of the newest existing partition, so tuning the current partition carries forward.';
COMMENT ON COLUMN internal.partition_config.registered_at IS 'When the parent was last registered.';

-- Registration: checks the parent can be managed, records (or updates) its
-- settings and runs a pass for it at once, so its partitions exist before
-- the migration that created it ends.
CREATE FUNCTION internal.manage_partitions(
    parent regclass,
    partition_interval text,
    premake integer,
    retention interval,
    retention_action text DEFAULT 'drop',
    archive_schema name DEFAULT NULL,
    partition_schema name DEFAULT 'partitions',
    storage_options text[] DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    key_type regtype;
    target   oid := parent;  -- run_maintenance's result has a column named parent
BEGIN
    SELECT a.atttypid::regtype INTO key_type
      FROM pg_catalog.pg_partitioned_table pt
      JOIN pg_catalog.pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
     WHERE pt.partrelid = parent AND pt.partstrat = 'r' AND pt.partnatts = 1;
    IF key_type IS DISTINCT FROM 'timestamptz'::regtype THEN
        RAISE EXCEPTION 'parent: % is not partitioned by RANGE on one timestamptz column', parent
            USING ERRCODE = '22023', HINT = 'Managed tables are PARTITION BY RANGE (a timestamptz column).';
    END IF;
    IF NOT pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = parent), 'USAGE') THEN
        RAISE EXCEPTION 'parent: you do not have the privileges of the owner of %', parent
            USING ERRCODE = '42501', HINT = 'Register tables as their owner.';
    END IF;
    IF pg_catalog.to_regnamespace(pg_catalog.quote_ident(partition_schema)) IS NULL THEN
        RAISE EXCEPTION 'partition_schema: no schema %', partition_schema
            USING ERRCODE = '3F000', HINT = 'Create the schema first.';
    END IF;
    IF archive_schema IS NOT NULL AND pg_catalog.to_regnamespace(pg_catalog.quote_ident(archive_schema)) IS NULL THEN
        RAISE EXCEPTION 'archive_schema: no schema %', archive_schema
            USING ERRCODE = '3F000', HINT = 'Create the schema first.';
    END IF;
    INSERT INTO internal.partition_config AS c
           (parent, partition_interval, premake, retention, retention_action, archive_schema,
            partition_schema, storage_options)
    VALUES (parent, partition_interval, premake, retention, retention_action, archive_schema,
            partition_schema, storage_options)
    ON CONFLICT ON CONSTRAINT partition_config_pkey DO UPDATE
       SET partition_interval = EXCLUDED.partition_interval, premake = EXCLUDED.premake,
           retention = EXCLUDED.retention, retention_action = EXCLUDED.retention_action,
           archive_schema = EXCLUDED.archive_schema, partition_schema = EXCLUDED.partition_schema,
           storage_options = EXCLUDED.storage_options, registered_at = pg_catalog.now();
    RETURN (SELECT pg_catalog.count(*) FROM flowtrack.run_maintenance(pg_catalog.now(), target));
END
$$;
COMMENT ON FUNCTION internal.manage_partitions(regclass, text, integer, interval, text, name, name, text[]) IS
  'Registers (or re-registers) a RANGE-by-timestamptz partitioned table with flowtrack.run_maintenance: interval daily|weekly|monthly, premake, retention (NULL: keep), drop or detach (into archive_schema), the schema for partitions and their storage parameters; then runs a pass for it and returns how many actions it took. Idempotent. Callers need the parent owner''s privileges.';

-- Billing events: kept two years (issue 11), beyond any dispute window.
SELECT internal.manage_partitions('api.usage_events', 'monthly', premake => 4, retention => interval '2 years');
