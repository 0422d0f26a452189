-- The one list of FlowTrack's scheduled maintenance. Every pg_cron job is a
-- row of internal.maintenance_jobs and nothing else calls cron.schedule:
-- internal.sync_cron_jobs makes pg_cron's table match the list, so running
-- it again (or re-running migrations into a new database) leaves no
-- duplicates and removes jobs that left the list. This file runs last, so
-- every function a command names exists.
--
-- Debian's pg_cron 1.4 schedules by the minute. Work that must happen within
-- seconds (due delays and schedules) is released by the worker's ticker;
-- pg_cron is its safety net. Expired job leases need no reaper: every claim
-- reclaims them (sql/0006_jobs.sql).
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE internal.maintenance_jobs (
    name     text PRIMARY KEY CHECK (name ~ '^flowtrack-[a-z][a-z-]*$'),
    schedule text NOT NULL CHECK (length(schedule) BETWEEN 9 AND 100),
    command  text NOT NULL,
    purpose  text NOT NULL
);
COMMENT ON TABLE internal.maintenance_jobs IS
  'FlowTrack''s scheduled maintenance: one named job per row (five-field cron schedule, one SQL command). internal.sync_cron_jobs registers exactly these in pg_cron; without pg_cron, run the commands from another scheduler.';

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

INSERT INTO internal.maintenance_jobs (name, schedule, command, purpose) VALUES
    ('flowtrack-partitions', '7 * * * *',
     'SELECT count(*) FROM flowtrack.run_maintenance()',
     'One partition maintenance pass over internal.partition_config: moves rows out of DEFAULT partitions, creates the current and premake periods ahead, drops partitions past retention (execution logs 90 days, deliveries 180, audit and lead events 1 year, usage events 2 years). Hourly so a row in a DEFAULT partition is rescued within the hour; a pass with nothing to do costs about 1 ms per parent.'),
    ('flowtrack-retention', '* * * * *',
     'SELECT internal.prune_history()',
     'Deletes finished executions past their plan''s retention, old idempotency keys and old dead jobs, one bounded batch of each per run.'),
    ('flowtrack-daily-stats', '* * * * *',
     'SELECT internal.roll_up_daily_stats()',
     'Adds what happened since the last run to workspace_daily_stats.'),
    ('flowtrack-quota-rollover', '* * * * *',
     'SELECT internal.roll_over_quotas()',
     'Opens the next quota period of every workspace whose period ended.'),
    ('flowtrack-due-work', '* * * * *',
     'SELECT internal.release_due_work(1000)',
     'Completes delay steps and fires schedules that are due (the safety net behind the worker''s ticker).'),
    ('flowtrack-cron-history', '41 4 * * *',
     $$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '7 days'$$,
     'Keeps pg_cron''s own run log to a week: every-minute jobs add about 6,000 rows a day.');

-- pg_cron runs a job as the role that scheduled it, so jobs are scheduled
-- (and this function owned) by the migrating superuser: the maintenance
-- functions work across tenants and pg_cron's run log is the superuser's.
RESET ROLE;
CREATE FUNCTION internal.sync_cron_jobs() RETURNS TABLE (name text, action text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
BEGIN
    IF pg_catalog.to_regnamespace('cron') IS NULL THEN
        RAISE NOTICE 'pg_cron is not installed in this database: FlowTrack''s maintenance jobs are not scheduled'
            USING HINT = 'Preload pg_cron and set cron.database_name to this database, or run the commands in internal.maintenance_jobs from another scheduler.';
        RETURN;
    END IF;
    FOR j IN SELECT c.jobname FROM cron.job c
              WHERE c.jobname LIKE 'flowtrack-%'
                AND NOT EXISTS (SELECT 1 FROM internal.maintenance_jobs m WHERE m.name = c.jobname) LOOP
        PERFORM cron.unschedule(j.jobname);
        name := j.jobname; action := 'unscheduled';
        RETURN NEXT;
    END LOOP;
    FOR j IN SELECT m.name, m.schedule, m.command,
                    EXISTS (SELECT 1 FROM cron.job c WHERE c.jobname = m.name AND c.username = current_user) AS known,
                    EXISTS (SELECT 1 FROM cron.job c WHERE c.jobname = m.name AND c.username = current_user
                               AND c.schedule = m.schedule AND c.command = m.command
                               AND c.database = pg_catalog.current_database() AND c.active) AS same
               FROM internal.maintenance_jobs m ORDER BY m.name LOOP
        CONTINUE WHEN j.same;
        -- Named jobs are upserted by (name, user): never a second row.
        PERFORM cron.schedule(j.name, j.schedule, j.command);
        name := j.name; action := CASE WHEN j.known THEN 'updated' ELSE 'scheduled' END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION internal.sync_cron_jobs() IS
  'Makes pg_cron''s flowtrack-* jobs exactly internal.maintenance_jobs (schedules new ones, updates changed ones, unschedules unlisted ones) and returns what it changed; idempotent. Without pg_cron it raises a NOTICE and does nothing. Superuser only: pg_cron runs a job as whoever scheduled it.';
REVOKE ALL ON FUNCTION internal.sync_cron_jobs() FROM PUBLIC;

SELECT * FROM internal.sync_cron_jobs();
