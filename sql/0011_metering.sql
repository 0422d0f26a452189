-- Metering around the queue and reconciliation of the counters.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

-- Each email send job takes one email_sends_per_month unit per recipient
-- when it is queued, in the same transaction: over the plan, the job is not
-- created. Recipients are counted the way the worker reads them: payload.to
-- as a comma-separated string (or an array), empty entries ignored.
CREATE FUNCTION internal.email_recipients(payload jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE pg_catalog.jsonb_typeof(payload -> 'to')
        WHEN 'string' THEN (SELECT count(*)::integer
                              FROM pg_catalog.regexp_split_to_table(payload ->> 'to', ',') r
                             WHERE pg_catalog.btrim(r) <> '')
        WHEN 'array' THEN (SELECT count(*)::integer
                             FROM pg_catalog.jsonb_array_elements_text(payload -> 'to') r
                            WHERE pg_catalog.btrim(r) <> '')
        ELSE 0 END
$$;
COMMENT ON FUNCTION internal.email_recipients(jsonb) IS
  'How many recipients an email job''s payload.to names (comma-separated string or array; blanks ignored): what the worker sends to, and what metering counts.';

CREATE FUNCTION internal.meter_email_job() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.workspace_id IS NULL THEN
        RAISE EXCEPTION 'workspace_id: an email job must name the workspace it is sent for'
            USING ERRCODE = '23502', HINT = 'Pass workspace_id to internal.enqueue_job.';
    END IF;
    -- At least one unit: a job whose recipients do not parse still costs a
    -- send attempt, and the worker fails it.
    PERFORM internal.consume_quota(NEW.workspace_id, 'email_sends_per_month',
                                   greatest(internal.email_recipients(NEW.payload), 1), 'job:' || NEW.id);
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.meter_email_job() IS
  'BEFORE INSERT on internal.jobs for kind email: counts one email send per recipient (internal.email_recipients, at least 1), idempotent per job id; PT429 over the plan.';
CREATE TRIGGER meter_email BEFORE INSERT ON internal.jobs
    FOR EACH ROW WHEN (NEW.kind = 'email') EXECUTE FUNCTION internal.meter_email_job();

-- Recompute `used` from usage_events and repair drift. Period keys sum the
-- current period's events; gauges sum every event ever recorded for them.
CREATE FUNCTION internal.reconcile_quotas(ws uuid DEFAULT NULL, repair boolean DEFAULT true)
RETURNS TABLE (workspace_id uuid, quota_key text, recorded bigint, recomputed bigint, drift bigint, repaired boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q record;
    total bigint;
BEGIN
    FOR q IN SELECT u.*, k.kind FROM api.usage_quotas u JOIN api.quota_keys k ON k.key = u.quota_key
              WHERE ws IS NULL OR u.workspace_id = ws
              ORDER BY u.workspace_id, u.quota_key LOOP
        SELECT coalesce(sum(e.amount), 0) INTO total
          FROM api.usage_events e
         WHERE e.workspace_id = q.workspace_id AND e.quota_key = q.quota_key
           AND e.event_type IN ('consumed', 'released', 'reconciled')
           AND (q.kind = 'gauge' OR e.period_start = q.period_start);
        total := greatest(total, 0);
        workspace_id := q.workspace_id;
        quota_key := q.quota_key;
        recorded := q.used;
        recomputed := total;
        drift := q.used - total;
        repaired := false;
        IF drift <> 0 AND repair THEN
            UPDATE api.usage_quotas u SET used = total, hard_limit = greatest(u.hard_limit, total), updated_at = now()
             WHERE u.workspace_id = q.workspace_id AND u.quota_key = q.quota_key;
            repaired := true;
        END IF;
        IF drift <> 0 THEN
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION internal.reconcile_quotas(uuid, boolean) IS
  'Recomputes used from usage_events (current period for period keys, all time for gauges) and returns every row that drifted; with repair, fixes them. Operator function: runs as its caller (a superuser or pg_cron) across all workspaces.';
