-- Quotas: one row per workspace and key in api.usage_quotas, consumed with a
-- single conditional UPDATE so the check and the increment are one atomic
-- step under any concurrency. Refusals raise SQLSTATE PT429, which PostgREST
-- answers with HTTP 429.
-- Load the extension library so flowtrack.* settings are defined before
-- functions name them in SET clauses.
SELECT flowtrack.version();
-- flowtrack.consume_quota and flowtrack.check_quota run as their caller, and
-- only the owner may call them: API roles reach them through the SECURITY
-- DEFINER wrappers below, which act for one workspace under RLS.
REVOKE EXECUTE ON FUNCTION flowtrack.consume_quota(uuid, text, bigint, text),
                           flowtrack.check_quota(uuid, text, bigint)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flowtrack.billing_period(timestamptz, timestamptz),
                          flowtrack.consume_quota(uuid, text, bigint, text),
                          flowtrack.check_quota(uuid, text, bigint)
    TO flowtrack_owner;
SET LOCAL ROLE flowtrack_owner;

-- Opens missing quota rows and rolls expired ones into the current period.
-- Period counters restart at zero; gauges carry over. Idempotent.
CREATE FUNCTION internal.sync_quotas(ws uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    sub record;
    p record;
BEGIN
    PERFORM flowtrack.act_for(ws, 'owner');
    SELECT s.plan_id, s.anchor_at, pl.overage_buffer INTO sub
      FROM api.subscriptions s JOIN api.subscription_plans pl ON pl.id = s.plan_id
     WHERE s.workspace_id = ws AND s.status <> 'canceled';
    IF NOT FOUND THEN
        -- No subscription: the workspace's own plan, anniversary at creation.
        SELECT w.plan_id, w.created_at AS anchor_at, pl.overage_buffer INTO sub
          FROM api.workspaces w JOIN api.subscription_plans pl ON pl.id = w.plan_id
         WHERE w.id = ws;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'workspace_id: no such workspace' USING ERRCODE = '22023';
        END IF;
    END IF;
    SELECT * INTO p FROM flowtrack.billing_period(sub.anchor_at, now());

    INSERT INTO internal.usage_quota_history (workspace_id, quota_key, period_start, period_end, used, limit_value)
    SELECT q.workspace_id, q.quota_key, q.period_start, q.period_end, q.used, q.limit_value
      FROM api.usage_quotas q
     WHERE q.workspace_id = ws AND q.period_end <= now()
    ON CONFLICT DO NOTHING;

    INSERT INTO api.usage_quotas AS q (workspace_id, quota_key, quota_kind, period_start, period_end, used, limit_value, hard_limit)
    SELECT ws, k.key, k.kind, p.period_start, p.period_end,
           CASE WHEN k.kind = 'gauge' THEN coalesce(old.used, 0) ELSE 0 END,
           l.limit_value, floor(l.limit_value * (1 + sub.overage_buffer))::bigint
      FROM api.quota_keys k
      LEFT JOIN api.plan_limits l ON l.plan_id = sub.plan_id AND l.quota_key = k.key
      LEFT JOIN api.usage_quotas old ON old.workspace_id = ws AND old.quota_key = k.key
    ON CONFLICT (workspace_id, quota_key) DO UPDATE
       SET period_start = excluded.period_start,
           period_end = excluded.period_end,
           limit_value = excluded.limit_value,
           -- A gauge over a lowered limit keeps its count; the hard limit
           -- then just refuses growth until it falls back under.
           -- (NULL is unlimited: greatest() would ignore it and lock the key.)
           hard_limit = CASE WHEN excluded.hard_limit IS NULL THEN NULL
                             ELSE greatest(excluded.hard_limit, CASE WHEN q.period_end > now() THEN q.used ELSE excluded.used END) END,
           used = CASE WHEN q.period_end > now() THEN q.used ELSE excluded.used END,
           soft_limit_reached_at = CASE WHEN q.period_end > now() THEN q.soft_limit_reached_at END,
           updated_at = now()
     WHERE q.period_end <= now() OR q.limit_value IS DISTINCT FROM excluded.limit_value
        OR q.period_start <> excluded.period_start;

    UPDATE api.subscriptions
       SET current_period_start = p.period_start, current_period_end = p.period_end
     WHERE workspace_id = ws AND status <> 'canceled' AND current_period_end <= now();
END
$$;
COMMENT ON FUNCTION internal.sync_quotas(uuid) IS
  'Opens a workspace''s quota rows for its current anniversary period, rolling expired periods into usage_quota_history and applying plan changes. Idempotent; called by pg_cron and lazily on first use after a period ends.';

CREATE FUNCTION internal.roll_over_quotas()
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ws uuid;
    n integer := 0;
BEGIN
    FOR ws IN SELECT DISTINCT workspace_id FROM api.usage_quotas WHERE period_end <= now() LOOP
        PERFORM internal.sync_quotas(ws);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION internal.roll_over_quotas() IS 'Rolls every workspace whose period ended (pg_cron, every minute). Returns how many.';

-- Usage figures are the workspace's business. Behind the API (a session of
-- PostgREST's authenticator) only a token for this very workspace sees them;
-- anonymous callers and members of other workspaces reach a workspace's
-- quotas through its public form or webhook, and must not learn its plan or
-- usage from a refusal. Database logins (the worker, pg_cron, operators) act
-- for FlowTrack itself. The raw claim is read, not current_workspace_id():
-- a public entry point acts for the workspace it serves, so the override
-- would name this workspace for every caller.
CREATE FUNCTION internal.sees_usage_of(ws uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT session_user::text <> 'authenticator'
        OR coalesce(lower(flowtrack.jwt_claim('workspace_id')) = ws::text, false)
$$;
COMMENT ON FUNCTION internal.sees_usage_of(uuid) IS
  'Whether the caller may see workspace ws''s plan limits and usage: a database login, or an API request whose token names ws. Decides what a PT429 says.';

CREATE FUNCTION internal.quota_refusal(ws uuid, key text, amount bigint, used bigint, limit_value bigint,
                                       hard_limit bigint, resets_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT internal.sees_usage_of(ws) THEN
        RAISE EXCEPTION 'too many requests for this workspace'
            USING ERRCODE = 'PT429', HINT = 'Try again later.';
    END IF;
    RAISE EXCEPTION 'quota exceeded: % (used %, limit %)', key, used, limit_value
        USING ERRCODE = 'PT429',
              DETAIL = json_build_object('key', key, 'limit', limit_value, 'hard_limit', hard_limit,
                                         'used', used, 'requested', amount, 'resets_at', resets_at)::text,
              HINT = 'Upgrade the plan, or wait until resets_at for per-period quotas.';
END
$$;
COMMENT ON FUNCTION internal.quota_refusal(uuid, text, bigint, bigint, bigint, bigint, timestamptz) IS
  'Raises PT429 (HTTP 429). For callers internal.sees_usage_of(ws) admits: the key and numbers in the message and a JSON detail (key, limit, hard_limit, used, requested, resets_at; NULL resets_at for gauges). For anyone else (anonymous, other workspaces): a generic message, no detail.';

-- The check-and-count itself is flowtrack.consume_quota (Rust: one kept
-- conditional UPDATE that also logs the event). This wrapper is the trusted
-- entry point: it runs as flowtrack_owner, acts for the workspace it is given
-- (usage_quotas and usage_events are writable by the workspace's owner role
-- only, FORCE RLS included), and turns a refusal into PT429, because custom
-- SQLSTATEs cannot be raised from pgrx. Only SECURITY DEFINER functions and
-- the migrations' superuser call it: no role is granted EXECUTE.
CREATE FUNCTION internal.consume_quota(ws uuid, key text, amount bigint DEFAULT 1, idempotency_key text DEFAULT NULL)
RETURNS flowtrack.quota_outcome
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    r flowtrack.quota_outcome;
BEGIN
    PERFORM flowtrack.act_for(ws, 'owner');
    -- One composite value, so plpgsql evaluates this as a plain expression
    -- and returns it as it is.
    r := flowtrack.consume_quota(ws, key, amount, idempotency_key);
    IF r.outcome = 'refused' THEN
        PERFORM internal.quota_refusal(ws, key, amount, r.used, r.limit_value, r.hard_limit, r.resets_at);
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION internal.consume_quota(uuid, text, bigint, text) IS
  'Atomically counts amount against a workspace quota (flowtrack.consume_quota, acting for the workspace as its owner role): used never exceeds hard_limit; the same idempotency_key counts once; the first crossing of 100% is recorded once per period. Raises PT429 (HTTP 429) when refused, with JSON detail for callers of the workspace (internal.quota_refusal).';

-- Acts for the workspace as a viewer: a check only reads.
CREATE FUNCTION internal.check_quota(ws uuid, key text, amount bigint DEFAULT 1,
                                     OUT allowed boolean, OUT used bigint, OUT limit_value bigint,
                                     OUT remaining bigint, OUT resets_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
BEGIN
    PERFORM flowtrack.act_for(ws, 'viewer');
    SELECT c.allowed, c.used, c.limit_value, c.remaining, c.resets_at
      INTO allowed, used, limit_value, remaining, resets_at
      FROM flowtrack.check_quota(ws, key, amount) c;
END
$$;
COMMENT ON FUNCTION internal.check_quota(uuid, text, bigint) IS
  'Read-only quota check for a workspace (flowtrack.check_quota, acting for it as a viewer): allowed, used, limit, remaining and resets_at (NULL for gauges).';

CREATE FUNCTION internal.release_quota(ws uuid, key text, amount bigint DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    now_used bigint;
BEGIN
    PERFORM flowtrack.act_for(ws, 'owner');
    UPDATE api.usage_quotas q SET used = greatest(q.used - amount, 0), updated_at = now()
     WHERE q.workspace_id = ws AND q.quota_key = key
    RETURNING q.used INTO now_used;
    IF FOUND THEN
        INSERT INTO api.usage_events (workspace_id, quota_key, event_type, amount, period_start)
        SELECT ws, key, 'released', -amount, q.period_start FROM api.usage_quotas q
         WHERE q.workspace_id = ws AND q.quota_key = key;
    END IF;
    RETURN now_used;
END
$$;
COMMENT ON FUNCTION internal.release_quota(uuid, text, bigint) IS 'Gives gauge usage back (a workflow deactivated, a lead deleted). Returns the new used.';

-- pg_cron runs internal.roll_over_quotas every minute: sql/0090_cron_jobs.sql.
