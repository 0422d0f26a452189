-- Quotas: one row per workspace and key in api.usage_quotas, consumed with a
-- single conditional UPDATE so the check and the increment are one atomic
-- step under any concurrency. Refusals raise SQLSTATE PT429, which PostgREST
-- answers with HTTP 429.
-- Load the extension library so flowtrack.* settings are defined before
-- functions name them in SET clauses.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

CREATE FUNCTION internal.billing_period(anchor timestamptz, at timestamptz DEFAULT now(),
                                        OUT period_start timestamptz, OUT period_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n integer := (extract(year FROM age(at, anchor)) * 12 + extract(month FROM age(at, anchor)))::integer;
BEGIN
    IF at < anchor THEN
        n := n - 1;
    END IF;
    period_start := anchor + make_interval(months => n);
    period_end := anchor + make_interval(months => n + 1);
END
$$;
COMMENT ON FUNCTION internal.billing_period(timestamptz, timestamptz) IS
  'The anniversary billing period containing at: [anchor + n months, anchor + n+1 months).';

-- Opens missing quota rows and rolls expired ones into the current period.
-- Period counters restart at zero; gauges carry over. Idempotent.
CREATE FUNCTION internal.sync_quotas(ws uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, api, internal
SET flowtrack.workspace_id = '' SET flowtrack.workspace_role = '' AS $$
DECLARE
    sub record;
    p record;
BEGIN
    PERFORM set_config('flowtrack.workspace_id', ws::text, true);
    PERFORM set_config('flowtrack.workspace_role', 'owner', true);
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
    p := internal.billing_period(sub.anchor_at);

    INSERT INTO internal.usage_quota_history (workspace_id, quota_key, period_start, period_end, used, limit_value)
    SELECT q.workspace_id, q.quota_key, q.period_start, q.period_end, q.used, q.limit_value
      FROM api.usage_quotas q
     WHERE q.workspace_id = ws AND q.period_end <= now()
    ON CONFLICT DO NOTHING;

    INSERT INTO api.usage_quotas AS q (workspace_id, quota_key, period_start, period_end, used, limit_value, hard_limit)
    SELECT ws, k.key, p.period_start, p.period_end,
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
           hard_limit = greatest(excluded.hard_limit, CASE WHEN q.period_end > now() THEN q.used ELSE excluded.used END),
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

CREATE FUNCTION internal.quota_refusal(ws uuid, key text, amount bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    q api.usage_quotas;
BEGIN
    SELECT * INTO q FROM api.usage_quotas WHERE workspace_id = ws AND quota_key = key;
    IF (SELECT k.kind FROM api.quota_keys k WHERE k.key = quota_refusal.key) = 'gauge' THEN
        q.period_end := NULL;  -- gauges do not reset
    END IF;
    RAISE EXCEPTION 'quota exceeded: % (used %, limit %)', key, q.used, q.limit_value
        USING ERRCODE = 'PT429',
              DETAIL = json_build_object('key', key, 'limit', q.limit_value, 'hard_limit', q.hard_limit,
                                         'used', q.used, 'requested', amount, 'resets_at', q.period_end)::text,
              HINT = 'Upgrade the plan, or wait until resets_at for per-period quotas.';
END
$$;
COMMENT ON FUNCTION internal.quota_refusal(uuid, text, bigint) IS 'Raises PT429 (HTTP 429) with JSON detail: key, limit, used, resets_at.';

CREATE FUNCTION internal.consume_quota(ws uuid, key text, amount bigint DEFAULT 1, idempotency_key text DEFAULT NULL,
                                       OUT used bigint, OUT limit_value bigint, OUT remaining bigint,
                                       OUT resets_at timestamptz, OUT replayed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, api, internal
SET flowtrack.workspace_id = '' SET flowtrack.workspace_role = '' AS $$
DECLARE
    crossed boolean;
BEGIN
    IF amount IS NULL OR amount <= 0 THEN
        RAISE EXCEPTION 'amount: must be a positive integer, got %', amount
            USING ERRCODE = '22023', HINT = 'Use release_quota to give usage back.';
    END IF;
    PERFORM set_config('flowtrack.workspace_id', ws::text, true);
    PERFORM set_config('flowtrack.workspace_role', 'owner', true);
    replayed := false;
    IF idempotency_key IS NOT NULL THEN
        INSERT INTO internal.usage_idempotency (workspace_id, quota_key, idempotency_key, amount, used_after)
        VALUES (ws, key, idempotency_key, amount, 0)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            replayed := true;
        END IF;
    END IF;
    FOR attempt IN 1 .. 2 LOOP
        IF replayed THEN
            SELECT q.used, q.limit_value, q.period_end INTO used, limit_value, resets_at
              FROM api.usage_quotas q WHERE q.workspace_id = ws AND q.quota_key = key AND q.period_end > now();
        ELSE
            UPDATE api.usage_quotas q
               SET used = q.used + amount, updated_at = now()
             WHERE q.workspace_id = ws AND q.quota_key = key AND q.period_end > now()
               AND (q.hard_limit IS NULL OR q.used + amount <= q.hard_limit)
            RETURNING q.used, q.limit_value, q.period_end, q.used - amount < q.limit_value AND q.used >= q.limit_value
                 INTO used, limit_value, resets_at, crossed;
        END IF;
        EXIT WHEN FOUND;
        IF attempt = 2 OR EXISTS (SELECT 1 FROM api.usage_quotas q
                                   WHERE q.workspace_id = ws AND q.quota_key = key AND q.period_end > now()) THEN
            IF NOT EXISTS (SELECT 1 FROM api.quota_keys k WHERE k.key = consume_quota.key) THEN
                RAISE EXCEPTION 'quota_key: unknown quota key "%"', key
                    USING ERRCODE = '22023', HINT = 'See api.quota_keys for the known keys.';
            END IF;
            PERFORM internal.quota_refusal(ws, key, amount);
        END IF;
        -- Row missing or its period over: open the current period, try again.
        PERFORM internal.sync_quotas(ws);
    END LOOP;
    remaining := CASE WHEN limit_value IS NULL THEN NULL ELSE greatest(limit_value - used, 0) END;
    IF replayed THEN
        RETURN;
    END IF;
    INSERT INTO api.usage_events (workspace_id, quota_key, amount, idempotency_key, period_start)
    VALUES (ws, key, amount, idempotency_key, resets_at - (SELECT q.period_end - q.period_start FROM api.usage_quotas q
                                                            WHERE q.workspace_id = ws AND q.quota_key = key));
    IF crossed THEN
        UPDATE api.usage_quotas q SET soft_limit_reached_at = now()
         WHERE q.workspace_id = ws AND q.quota_key = key AND q.soft_limit_reached_at IS NULL;
        IF FOUND THEN
            INSERT INTO api.usage_events (workspace_id, quota_key, event_type, amount, period_start, metadata)
            SELECT ws, key, 'soft_limit_reached', 0, q.period_start,
                   jsonb_build_object('limit', q.limit_value, 'used', q.used)
              FROM api.usage_quotas q WHERE q.workspace_id = ws AND q.quota_key = key;
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION internal.consume_quota(uuid, text, bigint, text) IS
  'Atomically counts amount against a workspace quota: one conditional UPDATE, so used never exceeds hard_limit. Same idempotency_key counts once. Records the first crossing of 100% once per period. Raises PT429 when refused.';

CREATE FUNCTION internal.check_quota(ws uuid, key text, amount bigint DEFAULT 1,
                                     OUT allowed boolean, OUT used bigint, OUT limit_value bigint,
                                     OUT remaining bigint, OUT resets_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, api, internal
SET flowtrack.workspace_id = '' SET flowtrack.workspace_role = '' AS $$
DECLARE
    q api.usage_quotas;
    kind text;
BEGIN
    PERFORM set_config('flowtrack.workspace_id', ws::text, true);
    PERFORM set_config('flowtrack.workspace_role', 'owner', true);
    SELECT k.kind INTO kind FROM api.quota_keys k WHERE k.key = check_quota.key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'quota_key: unknown quota key "%"', key
            USING ERRCODE = '22023', HINT = 'See api.quota_keys for the known keys.';
    END IF;
    SELECT * INTO q FROM api.usage_quotas x WHERE x.workspace_id = ws AND x.quota_key = key;
    IF NOT FOUND OR q.period_end <= now() THEN
        -- Read-only: report what the lazy rollover would open, without writing it.
        SELECT l.limit_value, floor(l.limit_value * (1 + pl.overage_buffer))::bigint, bp.period_end
          INTO q.limit_value, q.hard_limit, q.period_end
          FROM api.workspaces w
          LEFT JOIN api.subscriptions s ON s.workspace_id = w.id AND s.status <> 'canceled'
          JOIN api.subscription_plans pl ON pl.id = coalesce(s.plan_id, w.plan_id)
          LEFT JOIN api.plan_limits l ON l.plan_id = pl.id AND l.quota_key = key
          CROSS JOIN LATERAL internal.billing_period(coalesce(s.anchor_at, w.created_at)) bp
         WHERE w.id = ws;
        q.used := CASE WHEN kind = 'gauge' THEN coalesce(q.used, 0) ELSE 0 END;
    END IF;
    used := q.used;
    limit_value := q.limit_value;
    remaining := CASE WHEN q.limit_value IS NULL THEN NULL ELSE greatest(q.limit_value - q.used, 0) END;
    resets_at := CASE WHEN kind = 'gauge' THEN NULL ELSE q.period_end END;
    allowed := q.hard_limit IS NULL OR q.used + amount <= q.hard_limit;
END
$$;
COMMENT ON FUNCTION internal.check_quota(uuid, text, bigint) IS
  'Read-only quota check: whether amount more would be allowed, with used, limit, remaining and resets_at (NULL for gauges).';

CREATE FUNCTION internal.release_quota(ws uuid, key text, amount bigint DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, api, internal
SET flowtrack.workspace_id = '' SET flowtrack.workspace_role = '' AS $$
DECLARE
    now_used bigint;
BEGIN
    PERFORM set_config('flowtrack.workspace_id', ws::text, true);
    PERFORM set_config('flowtrack.workspace_role', 'owner', true);
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

-- pg_cron is the superuser's.
RESET ROLE;
SELECT cron.schedule('flowtrack-quota-rollover', '* * * * *', 'SELECT internal.roll_over_quotas()');
