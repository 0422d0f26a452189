-- The one list of FlowTrack's scheduled maintenance. Every pg_cron job is a
-- row of maintenance.jobs and nothing else calls cron.schedule:
-- maintenance.sync_cron_jobs makes pg_cron's table match the list, so
-- running it again (or re-running migrations into a new database) leaves no
-- duplicates and removes jobs that left the list. This file runs last, so
-- every function a command names exists.
--
-- Who runs what. pg_cron runs a job as the role that scheduled it: here the
-- migrating superuser, because a job may only run as a role that can log in
-- (PostgreSQL 15 background workers) and no FlowTrack login should carry
-- these rights. So nothing a job runs may be replaceable by a lesser role:
-- the list, its commands and the entry points live in schema `maintenance`,
-- owned by the superuser, and each entry point is SECURITY DEFINER owned by
-- flowtrack_maintenance (NOLOGIN, BYPASSRLS, a member of flowtrack_owner).
-- Whatever it calls in `internal` runs as that role, never as the
-- superuser, so taking over flowtrack_owner (which owns `internal`) gains no
-- superuser (issue 11 review): flowtrack_maintenance is the owner's rights
-- plus BYPASSRLS, which acting for any workspace already amounts to.
--
-- Debian's pg_cron 1.4 schedules by the minute. Work that must happen within
-- seconds (due delays and schedules) is released by the worker's ticker;
-- pg_cron is its safety net. Expired job leases need no reaper: every claim
-- reclaims them (sql/0006_jobs.sql).
SET LOCAL ROLE flowtrack_owner;

-- Retention of the tables that are not time-partitioned; partitioned ones
-- (logs, audit, usage events, deliveries, lead events) drop whole partitions
-- in partition maintenance.
CREATE FUNCTION internal.prune_history(at timestamptz DEFAULT now(), batch integer DEFAULT 5000)
RETURNS TABLE (what text, deleted integer)
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'workflow_executions', internal.prune_executions(at, batch)
    UNION ALL SELECT 'dead_jobs', internal.prune_dead_jobs(at, batch)
    UNION ALL SELECT 'usage_idempotency', internal.prune_usage_idempotency(at, batch)
$$;
COMMENT ON FUNCTION internal.prune_history(timestamptz, integer) IS
  'One bounded retention pass over the tables that are not time-partitioned: executions per plan (internal.prune_executions), dead jobs after 30 days, idempotency keys after 45. One row per table with how many rows went. Operator/pg_cron function.';
REVOKE ALL ON FUNCTION internal.prune_history(timestamptz, integer) FROM PUBLIC;

RESET ROLE;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'flowtrack_maintenance') THEN
        CREATE ROLE flowtrack_maintenance NOLOGIN BYPASSRLS;
    END IF;
END
$$;
COMMENT ON ROLE flowtrack_maintenance IS
  'Runs scheduled maintenance across tenants (retention, daily stats, quota rollover, due work, partitions) through the SECURITY DEFINER entry points in schema maintenance: a member of flowtrack_owner (partition DDL runs as the tables'' owner) that bypasses RLS (it works across tenants), and cannot log in.';
-- The owner's rights (its tables, its functions, DDL on its partitioned
-- tables, which flowtrack.run_maintenance does only for a caller holding
-- them) plus BYPASSRLS. Reaching it takes a superuser's call of one of the
-- entry points below: nothing FlowTrack hands out becomes it.
GRANT flowtrack_owner TO flowtrack_maintenance;
GRANT pg_read_all_stats TO flowtrack_maintenance;  -- the daily-stats horizon reads every backend's xact_start
GRANT EXECUTE ON FUNCTION flowtrack.run_maintenance(timestamptz, oid) TO flowtrack_maintenance;

CREATE SCHEMA maintenance;
COMMENT ON SCHEMA maintenance IS
  'Scheduled maintenance: the job list, its sync into pg_cron and the entry points the jobs call. Owned by the superuser, so no FlowTrack role can change what pg_cron runs.';
REVOKE ALL ON SCHEMA maintenance FROM PUBLIC;

CREATE TABLE maintenance.jobs (
    name     text PRIMARY KEY CHECK (name ~ '^flowtrack-[a-z][a-z-]*$'),
    schedule text NOT NULL CHECK (length(schedule) BETWEEN 9 AND 100),
    command  text NOT NULL,
    purpose  text NOT NULL
);
COMMENT ON TABLE maintenance.jobs IS
  'FlowTrack''s scheduled maintenance: one named job per row (five-field cron schedule, one SQL command). maintenance.sync_cron_jobs registers exactly these in pg_cron; without pg_cron, a superuser runs the commands from another scheduler.';

-- The entry points: one per job, each as flowtrack_maintenance.
CREATE FUNCTION maintenance.partitions() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT pg_catalog.count(*) FROM flowtrack.run_maintenance());
END
$$;
COMMENT ON FUNCTION maintenance.partitions() IS
  'Partition maintenance of every managed parent (flowtrack.run_maintenance); returns how many actions it took.';
CREATE FUNCTION maintenance.retention() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT pg_catalog.sum(h.deleted) FROM internal.prune_history() h);
END
$$;
COMMENT ON FUNCTION maintenance.retention() IS 'One bounded retention pass (internal.prune_history); returns the rows deleted.';
CREATE FUNCTION maintenance.daily_stats() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN internal.roll_up_daily_stats();
END
$$;
COMMENT ON FUNCTION maintenance.daily_stats() IS 'Adds what happened since the last run to workspace_daily_stats (internal.roll_up_daily_stats).';
CREATE FUNCTION maintenance.quota_rollover() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN internal.roll_over_quotas();
END
$$;
COMMENT ON FUNCTION maintenance.quota_rollover() IS 'Opens the next quota period of every workspace whose period ended (internal.roll_over_quotas).';
CREATE FUNCTION maintenance.due_work() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT r.steps + r.schedules FROM internal.release_due_work(1000) r);
END
$$;
COMMENT ON FUNCTION maintenance.due_work() IS
  'Due delay steps and schedules, up to 1,000 of each (internal.release_due_work): the safety net behind the worker''s ticker.';
-- Owned by flowtrack_maintenance, which needs CREATE on the schema for
-- that, and only for that.
GRANT USAGE, CREATE ON SCHEMA maintenance TO flowtrack_maintenance;
ALTER FUNCTION maintenance.partitions() OWNER TO flowtrack_maintenance;
ALTER FUNCTION maintenance.retention() OWNER TO flowtrack_maintenance;
ALTER FUNCTION maintenance.daily_stats() OWNER TO flowtrack_maintenance;
ALTER FUNCTION maintenance.quota_rollover() OWNER TO flowtrack_maintenance;
ALTER FUNCTION maintenance.due_work() OWNER TO flowtrack_maintenance;
REVOKE CREATE ON SCHEMA maintenance FROM flowtrack_maintenance;
REVOKE ALL ON FUNCTION maintenance.partitions(), maintenance.retention(), maintenance.daily_stats(),
                       maintenance.quota_rollover(), maintenance.due_work() FROM PUBLIC;

INSERT INTO maintenance.jobs (name, schedule, command, purpose) VALUES
    ('flowtrack-partitions', '7 * * * *', 'SELECT maintenance.partitions()',
     'Creates the partitions ahead and drops or detaches those past retention, for every managed parent.'),
    ('flowtrack-retention', '* * * * *', 'SELECT maintenance.retention()',
     'Deletes finished executions past their plan''s retention, old idempotency keys and old dead jobs, one bounded batch of each per run.'),
    ('flowtrack-daily-stats', '* * * * *', 'SELECT maintenance.daily_stats()',
     'Adds what happened since the last run to workspace_daily_stats.'),
    ('flowtrack-quota-rollover', '* * * * *', 'SELECT maintenance.quota_rollover()',
     'Opens the next quota period of every workspace whose period ended.'),
    ('flowtrack-due-work', '* * * * *', 'SELECT maintenance.due_work()',
     'Runs due delay steps and fires due schedules (the safety net behind the worker''s ticker).'),
    ('flowtrack-cron-history', '41 4 * * *',
     $$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '7 days'$$,
     'Keeps pg_cron''s own run log to a week: every-minute jobs add about 7,000 rows a day.');

CREATE FUNCTION maintenance.sync_cron_jobs() RETURNS TABLE (name text, action text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
BEGIN
    IF pg_catalog.to_regnamespace('cron') IS NULL THEN
        RAISE NOTICE 'pg_cron is not installed in this database: FlowTrack''s maintenance jobs are not scheduled'
            USING HINT = 'Preload pg_cron and set cron.database_name to this database, or run the commands in maintenance.jobs (as a superuser) from another scheduler.';
        RETURN;
    END IF;
    FOR j IN SELECT c.jobid, c.jobname FROM cron.job c
              WHERE c.jobname LIKE 'flowtrack-%'
                AND (c.username <> current_user
                     OR NOT EXISTS (SELECT 1 FROM maintenance.jobs m WHERE m.name = c.jobname)) LOOP
        PERFORM cron.unschedule(j.jobid);
        name := j.jobname; action := 'unscheduled';
        RETURN NEXT;
    END LOOP;
    FOR j IN SELECT m.name, m.schedule, m.command,
                    EXISTS (SELECT 1 FROM cron.job c WHERE c.jobname = m.name AND c.username = current_user) AS known,
                    EXISTS (SELECT 1 FROM cron.job c WHERE c.jobname = m.name AND c.username = current_user
                               AND c.schedule = m.schedule AND c.command = m.command
                               AND c.database = pg_catalog.current_database() AND c.active) AS same
               FROM maintenance.jobs m ORDER BY m.name LOOP
        CONTINUE WHEN j.same;
        -- Named jobs are upserted by (name, user): never a second row.
        PERFORM cron.schedule(j.name, j.schedule, j.command);
        name := j.name; action := CASE WHEN j.known THEN 'updated' ELSE 'scheduled' END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION maintenance.sync_cron_jobs() IS
  'Makes pg_cron''s flowtrack-* jobs exactly maintenance.jobs, scheduled by the calling superuser (schedules new ones, updates changed ones, unschedules unlisted ones and any another role scheduled) and returns what it changed; idempotent. Without pg_cron it raises a NOTICE and does nothing.';
REVOKE ALL ON FUNCTION maintenance.sync_cron_jobs() FROM PUBLIC;

SELECT * FROM maintenance.sync_cron_jobs();
