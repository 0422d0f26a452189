-- Billing: subscriptions with Stripe ids and anniversary periods, the live
-- quota counters, and the per-event usage log (time-partitioned).
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE api.subscriptions (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id           uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    plan_id                uuid NOT NULL REFERENCES api.subscription_plans (id),
    status                 text NOT NULL DEFAULT 'active'
                           CHECK (status IN ('trialing', 'active', 'past_due', 'canceled', 'unpaid', 'incomplete')),
    stripe_customer_id     text,
    stripe_subscription_id text UNIQUE,
    anchor_at              timestamptz NOT NULL DEFAULT now(),
    current_period_start   timestamptz NOT NULL DEFAULT now(),
    current_period_end     timestamptz NOT NULL DEFAULT now() + interval '1 month',
    cancel_at_period_end   boolean NOT NULL DEFAULT false,
    canceled_at            timestamptz,
    trial_ends_at          timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (current_period_end > current_period_start)
);
-- One live subscription per workspace. The second key column is constant
-- (true) under the WHERE; it is there so the index is not keyed on exactly
-- the foreign key's columns, which API servers read as a one-to-one
-- relationship (see workspace_members_one_owner in 0002).
CREATE UNIQUE INDEX subscriptions_one_live ON api.subscriptions (workspace_id, (status <> 'canceled')) WHERE status <> 'canceled';
CREATE INDEX subscriptions_workspace_id ON api.subscriptions (workspace_id);
CREATE INDEX subscriptions_plan_id ON api.subscriptions (plan_id);
CREATE INDEX subscriptions_period_end ON api.subscriptions (current_period_end) WHERE status <> 'canceled';
COMMENT ON TABLE api.subscriptions IS
  'A workspace''s plan subscription. Periods follow the anniversary (anchor_at): each period is anchor + n months.';
COMMENT ON COLUMN api.subscriptions.anchor_at IS 'Billing anniversary; periods are [anchor + n months, anchor + n+1 months).';
CREATE TRIGGER touch BEFORE UPDATE ON api.subscriptions FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

-- (key, kind) is unique because key is; usage_quotas references the pair so
-- its copy of kind can never disagree with the catalog.
ALTER TABLE api.quota_keys ADD CONSTRAINT quota_keys_key_kind UNIQUE (key, kind);

CREATE TABLE api.usage_quotas (
    workspace_id            uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    quota_key               text NOT NULL,
    -- Copied from api.quota_keys so the hot UPDATE in flowtrack.consume_quota
    -- needs no join (measured: about 5% of a call; docs/BENCHMARKS.md, run 3).
    quota_kind              text NOT NULL,
    period_start            timestamptz NOT NULL,
    period_end              timestamptz NOT NULL,
    used                    bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    limit_value             bigint CHECK (limit_value >= 0),
    hard_limit              bigint CHECK (hard_limit >= limit_value),
    soft_limit_reached_at   timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, quota_key),
    FOREIGN KEY (quota_key, quota_kind) REFERENCES api.quota_keys (key, kind) ON UPDATE CASCADE,
    CHECK (period_end > period_start),
    CONSTRAINT usage_within_hard_limit CHECK (hard_limit IS NULL OR used <= hard_limit)
);
CREATE INDEX usage_quotas_quota_key ON api.usage_quotas (quota_key, quota_kind);
CREATE INDEX usage_quotas_period_end ON api.usage_quotas (period_end);
COMMENT ON TABLE api.usage_quotas IS
  'Live counter per workspace and quota key for the current period. One row, updated in place: a quota check costs one row update.';
COMMENT ON COLUMN api.usage_quotas.limit_value IS 'The plan''s limit; NULL is unlimited. Crossing it records a soft-limit event once per period.';
COMMENT ON COLUMN api.usage_quotas.quota_kind IS 'The key''s kind (api.quota_keys.kind, kept equal by a cascading foreign key): gauges never reset.';
COMMENT ON COLUMN api.usage_quotas.hard_limit IS 'floor(limit_value * (1 + overage_buffer)): usage is refused beyond this.';

CREATE TABLE internal.usage_quota_history (
    workspace_id uuid NOT NULL,
    quota_key    text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    used         bigint NOT NULL,
    limit_value  bigint,
    closed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, quota_key, period_start)
);
COMMENT ON TABLE internal.usage_quota_history IS 'Closed periods of usage_quotas, written at rollover.';

-- id is a bigint identity, not a random uuid: appending to the primary key
-- instead of inserting at a random leaf took the insert from 23.9 to 17.6 µs
-- (docs/BENCHMARKS.md, run 3).
CREATE TABLE api.usage_events (
    id              bigint GENERATED ALWAYS AS IDENTITY (CACHE 64), -- a backend takes ids 64 at a time: no sequence write per event
    workspace_id    uuid NOT NULL,
    quota_key       text NOT NULL,
    event_type      text NOT NULL DEFAULT 'consumed'
                    CHECK (event_type IN ('consumed', 'released', 'soft_limit_reached', 'refused', 'reconciled')),
    amount          bigint NOT NULL,
    idempotency_key text,
    period_start    timestamptz NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX usage_events_workspace_period ON api.usage_events (workspace_id, quota_key, period_start);
-- No index on occurred_at for every event: monthly partitions already
-- narrow time ranges, and every index is paid on each metered event (a BRIN
-- here cost 2-3% of consume_quota's throughput at 32 clients;
-- docs/BENCHMARKS.md, quota run 4). Only sent emails, which the daily-stats
-- rollup counts since its watermark, are indexed by time.
CREATE INDEX usage_events_emails_sent ON api.usage_events (occurred_at)
    WHERE quota_key = 'email_sends_per_month' AND event_type = 'consumed';
COMMENT ON TABLE api.usage_events IS
  'One row per billable event (and per soft-limit crossing). Partitioned monthly by occurred_at; reconciliation sums it.';

-- Idempotency keys for consume_quota. Not partitioned, so uniqueness holds
-- across months; pruned after 45 days (internal.prune_usage_idempotency).
CREATE TABLE internal.usage_idempotency (
    workspace_id    uuid NOT NULL,
    quota_key       text NOT NULL,
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    amount          bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, quota_key, idempotency_key)
);
CREATE INDEX usage_idempotency_created_at ON internal.usage_idempotency (created_at);
COMMENT ON TABLE internal.usage_idempotency IS
  'Keys already counted by consume_quota, so a replay never counts twice (a replay reports the counter as it is now).';
CREATE FUNCTION internal.prune_usage_idempotency(at timestamptz DEFAULT now(), batch integer DEFAULT 5000) RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH doomed AS (SELECT k.workspace_id, k.quota_key, k.idempotency_key FROM internal.usage_idempotency k
                     WHERE k.created_at < at - interval '45 days' ORDER BY k.created_at LIMIT batch),
         gone AS (DELETE FROM internal.usage_idempotency k USING doomed x
                   WHERE (k.workspace_id, k.quota_key, k.idempotency_key) = (x.workspace_id, x.quota_key, x.idempotency_key)
                  RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;
COMMENT ON FUNCTION internal.prune_usage_idempotency(timestamptz, integer) IS
  'Forgets up to batch consume_quota idempotency keys older than 45 days (longer than any billing period, so a replay within its period is still recognised); returns how many. Operator/pg_cron function.';
REVOKE ALL ON FUNCTION internal.prune_usage_idempotency(timestamptz, integer) FROM PUBLIC;

SELECT flowtrack.enable_tenant_isolation('api.subscriptions'::regclass, ARRAY['owner']);
SELECT flowtrack.enable_tenant_isolation('api.usage_quotas'::regclass, ARRAY['owner'], key_scope => 'analytics');
SELECT flowtrack.enable_tenant_isolation('api.usage_events'::regclass, ARRAY['owner'], key_scope => 'analytics');

-- Billing is read by every member and written only through functions.
GRANT SELECT ON api.subscriptions, api.usage_quotas, api.usage_events TO authenticated;
