-- Schedules: every TRIGGER_SCHEDULE node of an active workflow's published
-- version is a row with its cron expression, its timezone and its next fire
-- (next_run_at). internal.fire_due_schedules starts the due ones through the
-- engine's normal start path, idempotently per fire time;
-- internal.release_due_work (the worker calls it every second, pg_cron
-- every minute as the safety net) also runs due delay steps.
SELECT flowtrack.version();
GRANT EXECUTE ON FUNCTION
    flowtrack.cron_next(text, text, timestamptz),
    flowtrack.cron_catch_up(text, text, timestamptz, timestamptz),
    flowtrack.is_timezone(text)
TO flowtrack_owner;
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE api.workflow_schedules (
    workspace_id  uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    workflow_id   uuid NOT NULL,
    node_key      text NOT NULL,
    cron          text NOT NULL,
    timezone      text NOT NULL,
    own_timezone  boolean NOT NULL,
    missed        text NOT NULL DEFAULT 'run_once' CHECK (missed IN ('run_once', 'skip')),
    next_run_at   timestamptz,
    last_fired_at timestamptz,
    last_error    text,
    PRIMARY KEY (workspace_id, workflow_id, node_key),
    CONSTRAINT workflow_schedules_workflow_fk FOREIGN KEY (workspace_id, workflow_id)
        REFERENCES api.workflows (workspace_id, id) ON DELETE CASCADE
);
-- The tickers' one lookup: what is due, oldest first.
CREATE INDEX workflow_schedules_due ON api.workflow_schedules (next_run_at);
COMMENT ON TABLE api.workflow_schedules IS
  'One row per TRIGGER_SCHEDULE node of an active, published workflow, kept by triggers on workflows (publish, activate, pause, delete) and workspaces (timezone). Read-only to members; next_run_at says when it fires.';
COMMENT ON COLUMN api.workflow_schedules.node_key IS 'The TRIGGER_SCHEDULE node of the published version that this schedule starts.';
COMMENT ON COLUMN api.workflow_schedules.cron IS 'Five-field cron expression (minute hour day-of-month month day-of-week), the node''s config.cron.';
COMMENT ON COLUMN api.workflow_schedules.timezone IS 'IANA timezone the expression is read in: the node''s config.timezone, else the workspace''s.';
COMMENT ON COLUMN api.workflow_schedules.own_timezone IS 'Whether the node names its timezone; when not, a change of the workspace''s timezone moves the schedule.';
COMMENT ON COLUMN api.workflow_schedules.missed IS
  'What a tick that comes late (after downtime) does: run_once runs the latest missed fire once; skip runs it only when it is at most 2 minutes late. Older missed fires never run.';
COMMENT ON COLUMN api.workflow_schedules.next_run_at IS 'The next fire (NULL: it never fires again). Moves past the tick''s time each time the schedule is handled.';
COMMENT ON COLUMN api.workflow_schedules.last_fired_at IS 'The fire time of the last execution started (its scheduled instant, not when the tick came).';
COMMENT ON COLUMN api.workflow_schedules.last_error IS 'Why the last fire started nothing (over quota, the workflow failed to start), NULL after a good one.';

SELECT flowtrack.enable_tenant_isolation('api.workflow_schedules'::regclass, ARRAY['owner'], key_scope => 'workflows');
GRANT SELECT ON api.workflow_schedules TO authenticated;

-- --------------------------------------------------------- maintenance ----

CREATE FUNCTION internal.raise_unknown_timezone(tz text, node text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'timezone: the workspace''s timezone "%" is not an IANA timezone name', left(tz, 100)
        USING ERRCODE = '22023',
              HINT = format('Set the workspace''s timezone to a name such as Europe/Berlin, or config.timezone on node "%s".', node);
END
$$;
COMMENT ON FUNCTION internal.raise_unknown_timezone(text, text) IS
  'Raises 22023 for a workspace timezone a schedule cannot be read in, naming the node that would use it.';

CREATE FUNCTION internal.schedule_nodes(workflow_id uuid, version integer, workspace_timezone text)
RETURNS TABLE (node_key text, cron text, tz text, own boolean, missed text)
LANGUAGE sql STABLE AS $$
    SELECT n ->> 'id', n #>> '{data,config,cron}', coalesce(n #>> '{data,config,timezone}', workspace_timezone),
           n #> '{data,config,timezone}' IS NOT NULL, coalesce(n #>> '{data,config,missed}', 'run_once')
      FROM api.workflow_versions v, jsonb_array_elements(v.graph -> 'nodes') n
     WHERE v.workflow_id = schedule_nodes.workflow_id AND v.version = schedule_nodes.version
       AND n ->> 'type' = 'TRIGGER_SCHEDULE' AND n #>> '{data,config,cron}' IS NOT NULL
$$;
COMMENT ON FUNCTION internal.schedule_nodes(uuid, integer, text) IS
  'The TRIGGER_SCHEDULE nodes of a published version: key, cron, timezone (the node''s, else the workspace''s), whether the node named it, missed policy.';

CREATE FUNCTION internal.sync_schedules() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws_tz text;
    bad text;
BEGIN
    PERFORM flowtrack.act_for(NEW.workspace_id, 'owner');
    IF NEW.status <> 'active' OR NEW.deleted_at IS NOT NULL OR NEW.published_version IS NULL THEN
        DELETE FROM api.workflow_schedules s WHERE s.workspace_id = NEW.workspace_id AND s.workflow_id = NEW.id;
        RETURN NULL;
    END IF;
    SELECT w.timezone INTO ws_tz FROM api.workspaces w WHERE w.id = NEW.workspace_id;
    SELECT x.node_key INTO bad FROM internal.schedule_nodes(NEW.id, NEW.published_version, ws_tz) x
     WHERE NOT x.own AND NOT flowtrack.is_timezone(x.tz) LIMIT 1;
    IF FOUND THEN
        PERFORM internal.raise_unknown_timezone(ws_tz, bad);
    END IF;
    DELETE FROM api.workflow_schedules s
     WHERE s.workspace_id = NEW.workspace_id AND s.workflow_id = NEW.id
       AND NOT EXISTS (SELECT 1 FROM internal.schedule_nodes(NEW.id, NEW.published_version, ws_tz) x
                        WHERE x.node_key = s.node_key);
    -- A republish that keeps a node's expression and timezone keeps its
    -- next fire; a changed one counts from now.
    INSERT INTO api.workflow_schedules AS s (workspace_id, workflow_id, node_key, cron, timezone, own_timezone, missed, next_run_at)
    SELECT NEW.workspace_id, NEW.id, x.node_key, x.cron, x.tz, x.own, x.missed,
           flowtrack.cron_next(x.cron, x.tz, pg_catalog.now())
      FROM internal.schedule_nodes(NEW.id, NEW.published_version, ws_tz) x
    ON CONFLICT (workspace_id, workflow_id, node_key) DO UPDATE
       SET cron = excluded.cron, timezone = excluded.timezone, own_timezone = excluded.own_timezone,
           missed = excluded.missed,
           next_run_at = CASE WHEN s.cron = excluded.cron AND s.timezone = excluded.timezone
                              THEN s.next_run_at ELSE excluded.next_run_at END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.sync_schedules() IS
  'Trigger on api.workflows: an active, published, undeleted workflow has one schedule per TRIGGER_SCHEDULE node of its published version (next_run_at from now; kept when a republish leaves the expression and timezone alone); any other has none. 22023 when the workspace''s timezone, which a node without config.timezone uses, is unknown.';
REVOKE ALL ON FUNCTION internal.sync_schedules() FROM PUBLIC;
CREATE TRIGGER sync_schedules AFTER INSERT OR UPDATE OF status, published_version, deleted_at ON api.workflows
    FOR EACH ROW EXECUTE FUNCTION internal.sync_schedules();

CREATE FUNCTION internal.move_schedules_to_timezone() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    node text;
BEGIN
    IF NEW.timezone IS NOT DISTINCT FROM OLD.timezone THEN
        RETURN NULL;
    END IF;
    PERFORM flowtrack.act_for(NEW.id, 'owner');
    SELECT s.node_key INTO node FROM api.workflow_schedules s WHERE s.workspace_id = NEW.id AND NOT s.own_timezone LIMIT 1;
    IF FOUND AND NOT flowtrack.is_timezone(NEW.timezone) THEN
        PERFORM internal.raise_unknown_timezone(NEW.timezone, node);
    END IF;
    UPDATE api.workflow_schedules s
       SET timezone = NEW.timezone, next_run_at = flowtrack.cron_next(s.cron, NEW.timezone, pg_catalog.now())
     WHERE s.workspace_id = NEW.id AND NOT s.own_timezone;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.move_schedules_to_timezone() IS
  'Trigger on api.workspaces: a new workspace timezone re-reads the schedules that use it (next_run_at from now); 22023 when a schedule uses it and it is not an IANA name.';
REVOKE ALL ON FUNCTION internal.move_schedules_to_timezone() FROM PUBLIC;
CREATE TRIGGER move_schedules_to_timezone AFTER UPDATE OF timezone ON api.workspaces
    FOR EACH ROW EXECUTE FUNCTION internal.move_schedules_to_timezone();

-- -------------------------------------------------------------- firing ----

CREATE FUNCTION internal.due_schedules(now timestamptz, n integer)
RETURNS TABLE (workspace_id uuid, workflow_id uuid, node_key text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.workspace_id, s.workflow_id, s.node_key FROM api.workflow_schedules s
     WHERE s.next_run_at <= due_schedules.now ORDER BY s.next_run_at LIMIT n
$$;
COMMENT ON FUNCTION internal.due_schedules(timestamptz, integer) IS
  'Schedules due at now, oldest first (one index range scan). Owned by flowtrack_resolver (BYPASSRLS).';

CREATE FUNCTION internal.schedule_key(node_key text, fire_at timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT 'schedule:' || CASE WHEN length(node_key) <= 150 THEN node_key ELSE md5(node_key) END
           || '@' || to_char(fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;
COMMENT ON FUNCTION internal.schedule_key(text, timestamptz) IS
  'The idempotency key of a schedule''s fire: its node and fire time (UTC), so a repeated or late tick finds the execution it started.';

CREATE FUNCTION internal.fire_due_schedules(now timestamptz DEFAULT pg_catalog.now(), n integer DEFAULT 100)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    due record;
    s api.workflow_schedules;
    fire_at timestamptz;
    due_fires integer;
    upcoming timestamptz;
    run boolean;
    started boolean;
    total integer := 0;
BEGIN
    FOR due IN SELECT * FROM internal.due_schedules(fire_due_schedules.now, n) LOOP
        PERFORM flowtrack.act_for(due.workspace_id, 'owner');
        -- Another ticker holding it, or having moved it on: not ours.
        SELECT * INTO s FROM api.workflow_schedules x
         WHERE x.workspace_id = due.workspace_id AND x.workflow_id = due.workflow_id AND x.node_key = due.node_key
           AND x.next_run_at <= fire_due_schedules.now
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        fire_at := NULL;
        due_fires := NULL;
        upcoming := NULL;
        run := false;
        -- Each schedule in its own subtransaction: one that cannot start
        -- (over quota, a failing graph) records why and moves on; the rest
        -- of the batch, every other tenant's, still commits.
        BEGIN
            SELECT c.fire_at, c.due_fires, c.next_run_at INTO fire_at, due_fires, upcoming
              FROM flowtrack.cron_catch_up(s.cron, s.timezone, s.next_run_at, fire_due_schedules.now) c;
            run := s.missed = 'run_once' OR fire_at >= fire_due_schedules.now - interval '2 minutes';
            IF run THEN
                SELECT x.created INTO started
                  FROM internal.start_execution(s.workspace_id, s.workflow_id, 'schedule',
                           jsonb_build_object('schedule', jsonb_build_object(
                               'node', s.node_key, 'cron', s.cron, 'timezone', s.timezone,
                               'fire_at', fire_at, 'missed', due_fires - 1)),
                           internal.schedule_key(s.node_key, fire_at)) x;
                total := total + started::integer;
            END IF;
            UPDATE api.workflow_schedules x
               SET next_run_at = upcoming, last_error = NULL,
                   last_fired_at = CASE WHEN run THEN fire_at ELSE x.last_fired_at END
             WHERE x.workspace_id = s.workspace_id AND x.workflow_id = s.workflow_id AND x.node_key = s.node_key;
        EXCEPTION
            -- Transient: the batch stops and the next tick runs it again.
            WHEN serialization_failure OR deadlock_detected THEN RAISE;
            WHEN OTHERS THEN
                -- The fire is lost, not retried every second: the schedule
                -- moves to its next fire (none when even that failed).
                UPDATE api.workflow_schedules x
                   SET next_run_at = upcoming, last_error = left(SQLSTATE || ': ' || SQLERRM, 1000)
                 WHERE x.workspace_id = s.workspace_id AND x.workflow_id = s.workflow_id AND x.node_key = s.node_key;
        END;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION internal.fire_due_schedules(timestamptz, integer) IS
  'Fires up to n schedules due at now (default the transaction''s time; tests pass another): starts an execution (trigger_type schedule) of the latest due fire through internal.start_execution, keyed by schedule and fire time, and moves next_run_at past now. Late ticks follow each schedule''s missed policy; a schedule that cannot start records last_error and moves on, in its own subtransaction. Rows are taken FOR UPDATE SKIP LOCKED, so tickers never collide. Returns the executions started.';

CREATE FUNCTION internal.release_due_work(n integer DEFAULT 100, OUT steps integer, OUT schedules integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
BEGIN
    IF n IS NULL OR n NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'n: % is not a batch size from 1 to 10000', n
            USING ERRCODE = '22023', HINT = 'The worker passes nothing (100); pg_cron passes 1000.';
    END IF;
    steps := internal.run_due_steps(n);
    schedules := internal.fire_due_schedules(pg_catalog.now(), n);
END
$$;
COMMENT ON FUNCTION internal.release_due_work(integer) IS
  'Runs the delay steps and fires the schedules that are due now (up to n of each); two index lookups when nothing is. The worker calls it about every second (FLOWTRACK_TICK_MS) so due work starts within seconds, pg_cron every minute (n = 1000) as the safety net; concurrent callers skip each other''s rows.';
REVOKE ALL ON FUNCTION internal.release_due_work(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION internal.release_due_work(integer) TO flowtrack_worker;

RESET ROLE;
GRANT SELECT (workspace_id, workflow_id, node_key, next_run_at) ON api.workflow_schedules TO flowtrack_resolver;
ALTER FUNCTION internal.due_schedules(timestamptz, integer) OWNER TO flowtrack_resolver;
GRANT EXECUTE ON FUNCTION internal.due_schedules(timestamptz, integer) TO flowtrack_owner;
