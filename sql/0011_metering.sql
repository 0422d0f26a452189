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

-- Seed 000: no outgoing email before the owner's address is verified, so a
-- fresh sign-up cannot use FlowTrack to send mail in someone else's name.
-- The hard guard is where every email job is born, like its metering: the
-- enqueue (and the ingress that caused it) is refused and nothing is
-- written. internal.start_execution also checks up front when the version
-- it runs has an email step: a refusal raised inside the graph engine would
-- reach the client as XX000 (pgrx knows only standard SQLSTATEs).
-- PL/pgSQL, not SQL: it runs on every ingress, and a SQL function's query
-- is planned again at every call; PL/pgSQL keeps the plan.
CREATE FUNCTION internal.owner_email_verified(ws uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT u.email_verified_at IS NOT NULL
              FROM api.workspaces w JOIN api.users u ON u.id = w.owner_user_id WHERE w.id = ws);
END
$$;
COMMENT ON FUNCTION internal.owner_email_verified(uuid) IS
  'Whether workspace ws''s owner has a verified email address. Runs as its caller, who must be acting for ws.';

CREATE FUNCTION internal.refuse_unverified_sender(ws uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF internal.sees_usage_of(ws) THEN
        RAISE EXCEPTION 'email: this workspace cannot send email until its owner''s address is verified'
            USING ERRCODE = 'PT403',
                  HINT = 'The owner confirms the address through the verification link of their sign-up email; then send again.';
    END IF;
    -- A visitor of a public form learns no more than that it failed.
    RAISE EXCEPTION 'this workspace cannot send email yet'
        USING ERRCODE = 'PT403', HINT = 'Try again later.';
END
$$;
COMMENT ON FUNCTION internal.refuse_unverified_sender(uuid) IS
  'Raises PT403 for a workspace whose owner is unverified: the reason and the fix for callers who see the workspace, a bare refusal for outsiders.';

CREATE FUNCTION internal.require_verified_sender() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
BEGIN
    IF NEW.workspace_id IS NULL THEN
        RETURN NEW;  -- meter_email_job refuses it with its own message
    END IF;
    PERFORM flowtrack.act_for(NEW.workspace_id, 'owner');
    IF NOT coalesce(internal.owner_email_verified(NEW.workspace_id), false) THEN
        PERFORM internal.refuse_unverified_sender(NEW.workspace_id);
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.require_verified_sender() IS
  'BEFORE INSERT on internal.jobs for kind email: PT403 (internal.refuse_unverified_sender) unless the workspace owner''s email is verified (api.users.email_verified_at, set by internal.mark_email_verified).';
CREATE TRIGGER verified_sender BEFORE INSERT ON internal.jobs
    FOR EACH ROW WHEN (NEW.kind = 'email') EXECUTE FUNCTION internal.require_verified_sender();

-- The identity provider's hook (its webhook handler or an operator): marks
-- an address verified. The address is passed back and must still be the
-- user's, so a late event for an address since changed verifies nothing.
CREATE FUNCTION internal.mark_email_verified(user_id uuid, email text, verified_at timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    UPDATE api.users u SET email_verified_at = coalesce(u.email_verified_at, mark_email_verified.verified_at)
     -- citext's = lives in public, off the pinned path: named, or text = text
     -- would compare case-sensitively.
     WHERE u.id = mark_email_verified.user_id AND u.email OPERATOR(public.=) mark_email_verified.email::public.citext
       AND u.deleted_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n = 1;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'email: % is already verified for another account', email
        USING ERRCODE = '23505', HINT = 'An address is verified for one account at a time; the other account must change it first.';
END
$$;
COMMENT ON FUNCTION internal.mark_email_verified(uuid, text, timestamptz) IS
  'Identity-provider hook (operator or the provider''s webhook handler, never a user): records that user_id''s address email is verified, if it is still their address; returns whether it did. Idempotent (keeps the first verification time). 23505 when another account has verified that address.';
REVOKE ALL ON FUNCTION internal.mark_email_verified(uuid, text, timestamptz) FROM PUBLIC;

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
        -- The two gauges count rows that exist; their events are only a
        -- log, which a missed release (issue 12) made wrong.
        IF q.quota_key = 'workflows' THEN
            SELECT count(*) INTO total FROM api.workflows w
             WHERE w.workspace_id = q.workspace_id AND w.status = 'active' AND w.deleted_at IS NULL;
        ELSIF q.quota_key = 'leads' THEN
            SELECT count(*) INTO total FROM api.leads l
             WHERE l.workspace_id = q.workspace_id AND l.deleted_at IS NULL;
        ELSE
            SELECT coalesce(sum(e.amount), 0) INTO total
              FROM api.usage_events e
             WHERE e.workspace_id = q.workspace_id AND e.quota_key = q.quota_key
               AND e.event_type IN ('consumed', 'released', 'reconciled')
               AND (q.kind = 'gauge' OR e.period_start = q.period_start);
        END IF;
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
            -- A gauge counted from rows logs the correction, so its events
            -- still sum to used; other keys were realigned to their events.
            IF q.quota_key IN ('workflows', 'leads') THEN
                INSERT INTO api.usage_events (workspace_id, quota_key, event_type, amount, period_start, metadata)
                VALUES (q.workspace_id, q.quota_key, 'reconciled', total - q.used, q.period_start,
                        jsonb_build_object('recorded', q.used, 'recomputed', total));
            END IF;
            repaired := true;
        END IF;
        IF drift <> 0 THEN
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION internal.reconcile_quotas(uuid, boolean) IS
  'Recomputes used (period keys: the current period''s usage events; the workflows and leads gauges: the active, undeleted workflows and the undeleted leads that exist; other gauges: all their events) and returns every row that drifted; with repair, fixes them and logs a reconciled event. Operator function: runs as its caller (a superuser or pg_cron) across all workspaces.';
