-- Roles in PostgREST's model, the schemas that draw the API boundary, and the
-- extensions. Runs as superuser; every later file creates objects as
-- flowtrack_owner.

-- Roles are cluster-wide, so create them only when missing.
DO $$
DECLARE
    spec text[];
BEGIN
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ['flowtrack_owner',  'NOLOGIN NOINHERIT'],
        ['authenticator',    'LOGIN NOINHERIT'],
        ['anon',             'NOLOGIN'],
        ['authenticated',    'NOLOGIN'],
        ['flowtrack_worker', 'LOGIN NOINHERIT']
    ] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = spec[1]) THEN
            EXECUTE format('CREATE ROLE %I %s', spec[1], spec[2]);
        END IF;
    END LOOP;
END
$$;

COMMENT ON ROLE flowtrack_owner IS 'Owns FlowTrack tables and functions; not a superuser, subject to FORCE ROW LEVEL SECURITY.';
COMMENT ON ROLE authenticator IS 'PostgREST login role; switches to anon or authenticated per request.';
COMMENT ON ROLE anon IS 'Requests without a JWT: public form and webhook entry points only.';
COMMENT ON ROLE authenticated IS 'Requests with a verified JWT; confined to its workspace by RLS.';
COMMENT ON ROLE flowtrack_worker IS 'The side-effect worker: claims jobs and reports outcomes through internal functions.';

GRANT anon, authenticated TO authenticator;

-- Least privilege for every role that can log in or that a login becomes.
-- TEMP is what let a caller shadow catalogs and our tables in pg_temp and run
-- code inside SECURITY DEFINER functions (issue 9); no FlowTrack role needs
-- temporary objects, so PUBLIC loses TEMP and nobody gets it back. CREATE on
-- the database and on schema public is revoked too: only migrations, as the
-- superuser, create schemas and objects. USAGE on public stays: citext's
-- type and operators live there.
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY, CREATE ON DATABASE %I FROM PUBLIC', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- PUBLIC must not execute functions it was never granted: neither those the
-- owner creates nor those these migrations create as the superuser.
ALTER DEFAULT PRIVILEGES FOR ROLE flowtrack_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

CREATE SCHEMA api AUTHORIZATION flowtrack_owner;
COMMENT ON SCHEMA api IS 'The schema PostgREST exposes: tenant tables under RLS and RPC functions. Everything here is public API.';

CREATE SCHEMA auth AUTHORIZATION flowtrack_owner;
COMMENT ON SCHEMA auth IS 'Request authentication (PostgREST pre-request hook); callable by API roles, not exposed over HTTP.';

CREATE SCHEMA internal AUTHORIZATION flowtrack_owner;
COMMENT ON SCHEMA internal IS 'Internals: job queue, secrets, idempotency, maintenance. API roles cannot reach it.';

CREATE SCHEMA partitions AUTHORIZATION flowtrack_owner;
COMMENT ON SCHEMA partitions IS 'Partitions of time-partitioned tables. Reached only through their parents.';

CREATE EXTENSION IF NOT EXISTS flowtrack;
-- pg_cron is optional: it can only be created in the database named by
-- cron.database_name, and only when preloaded. Without it FlowTrack works and
-- its maintenance (internal.maintenance_jobs, sql/0090_cron_jobs.sql) must be
-- run by another scheduler.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pg_cron')
       AND 'pg_cron' = ANY (pg_catalog.string_to_array(pg_catalog.replace(pg_catalog.current_setting('shared_preload_libraries'), ' ', ''), ','))
       AND pg_catalog.current_setting('cron.database_name', true) = pg_catalog.current_database() THEN
        CREATE EXTENSION IF NOT EXISTS pg_cron;
        -- pg_cron jobs are scheduled by the migrations' superuser; the owner may read them.
        GRANT USAGE ON SCHEMA cron TO flowtrack_owner;
    ELSE
        RAISE NOTICE 'pg_cron is not available in database %: FlowTrack''s maintenance jobs will not be scheduled', pg_catalog.current_database()
            USING HINT = 'Preload pg_cron with cron.database_name = ' || pg_catalog.quote_literal(pg_catalog.current_database())
                         || ', or run the commands in internal.maintenance_jobs from another scheduler.';
    END IF;
END
$$;
CREATE EXTENSION IF NOT EXISTS citext;
-- citext's functions are its type's I/O and operators (the ~ behind every
-- email and slug CHECK, =, comparisons). Made under the default above, they
-- are the superuser's alone, and every write of an email by any other role
-- failed with 42501. The roles that evaluate citext get them: the owner
-- (SECURITY DEFINER functions and triggers) and authenticated (PostgREST's
-- own reads and writes). Not anon, nor the worker: they reach citext columns
-- only through the owner's functions.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT d.objid::regprocedure FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
                AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'citext') LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticated, flowtrack_owner', f);
    END LOOP;
END
$$;

-- Policies call the tenancy readers as the requesting role.
GRANT USAGE ON SCHEMA flowtrack TO anon, authenticated, flowtrack_worker, flowtrack_owner;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA flowtrack FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    flowtrack.version(),
    flowtrack.jwt_claim(text),
    flowtrack.current_user_id(),
    flowtrack.current_workspace_id(),
    flowtrack.current_workspace_role(),
    flowtrack.key_scope_allows(text, text)
TO anon, authenticated, flowtrack_worker, flowtrack_owner;
GRANT EXECUTE ON FUNCTION flowtrack.enable_tenant_isolation(oid, text[], text[], text, text),
                          flowtrack.enable_key_scope(oid, text)
    TO flowtrack_owner;
-- Only the owner's SECURITY DEFINER functions act for a workspace.
GRANT EXECUTE ON FUNCTION flowtrack.act_for(uuid, text) TO flowtrack_owner;

GRANT USAGE ON SCHEMA api TO anon, authenticated;
GRANT USAGE ON SCHEMA auth TO anon, authenticated;
GRANT USAGE ON SCHEMA internal TO flowtrack_worker;

