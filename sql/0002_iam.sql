-- Identity and access: plans (needed by workspaces), users, workspaces and
-- their members. Seeds 000 (FlowTrack IAM), 001 (roles, API keys), 004
-- (sessions) are merged in docs/ARCHITECTURE.md.
SET LOCAL ROLE flowtrack_owner;

-- Shared trigger: keep updated_at honest without trusting clients.
CREATE FUNCTION internal.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION internal.touch_updated_at() IS 'BEFORE UPDATE trigger: sets updated_at to now().';

-- Quota keys: what can be limited or metered.
CREATE TABLE api.quota_keys (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]*$'),
    kind        text NOT NULL CHECK (kind IN ('gauge', 'period', 'metered')),
    description text NOT NULL
);
COMMENT ON TABLE api.quota_keys IS
  'Catalog of usage keys. gauge: a live count (active workflows, leads) that never resets; period: a per-billing-period counter; metered: counted for billing, never limited.';

INSERT INTO api.quota_keys (key, kind, description) VALUES
    ('workflows',             'gauge',   'Active (published and enabled) workflows'),
    ('leads',                 'gauge',   'Leads stored (soft-deleted ones excluded)'),
    ('executions_per_month',  'period',  'Workflow executions started in the billing period'),
    ('email_sends_per_month', 'period',  'Emails sent in the billing period'),
    ('ai_tokens',             'metered', 'AI tokens consumed (metered only)'),
    ('api_calls',             'metered', 'API calls made (metered only)');

CREATE TABLE api.subscription_plans (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code           text NOT NULL UNIQUE CHECK (code ~ '^[a-z][a-z0-9_]*$'),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description    text NOT NULL DEFAULT '',
    price_cents    integer NOT NULL DEFAULT 0 CHECK (price_cents >= 0),
    currency       text NOT NULL DEFAULT 'usd' CHECK (currency ~ '^[a-z]{3}$'),
    billing_interval text NOT NULL DEFAULT 'month' CHECK (billing_interval IN ('month', 'year')),
    overage_buffer numeric(4, 3) NOT NULL DEFAULT 0.20 CHECK (overage_buffer BETWEEN 0 AND 1),
    step_budget    integer NOT NULL DEFAULT 200 CHECK (step_budget BETWEEN 1 AND 100000),
    succeeded_retention_days integer NOT NULL DEFAULT 90 CHECK (succeeded_retention_days BETWEEN 1 AND 3650),
    failed_retention_days    integer NOT NULL DEFAULT 180 CHECK (failed_retention_days BETWEEN 1 AND 3650),
    is_public      boolean NOT NULL DEFAULT true,
    stripe_price_id text UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE api.subscription_plans IS 'Tiered plans (Free, Starter, Pro, Enterprise). Limits live in plan_limits.';
COMMENT ON COLUMN api.subscription_plans.overage_buffer IS
  'Fraction above a limit that is still allowed (soft overage); 0.20 lets usage reach 120% before refusing.';
COMMENT ON COLUMN api.subscription_plans.step_budget IS
  'Most workflow steps one advance of an execution may create (one ingress such as a form submission, one job report, one due delay), and the highest settings.max_steps a workflow may publish with. Bounds the rows an anonymous caller can make a member-built loop write.';
COMMENT ON COLUMN api.subscription_plans.succeeded_retention_days IS
  'Days a completed execution (with its steps) is kept after it finished; seed 002 keeps successful runs 90 days.';
COMMENT ON COLUMN api.subscription_plans.failed_retention_days IS
  'Days a failed, timed-out or cancelled execution is kept after it finished; seed 002 keeps failures 180 days, for debugging.';
CREATE TRIGGER touch BEFORE UPDATE ON api.subscription_plans
    FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE TABLE api.plan_limits (
    plan_id     uuid NOT NULL REFERENCES api.subscription_plans (id) ON DELETE CASCADE,
    quota_key   text NOT NULL REFERENCES api.quota_keys (key),
    limit_value bigint CHECK (limit_value >= 0),
    PRIMARY KEY (plan_id, quota_key)
);
CREATE INDEX plan_limits_quota_key ON api.plan_limits (quota_key);
COMMENT ON TABLE api.plan_limits IS 'Limit per plan and quota key; NULL limit_value means unlimited.';

-- Retention: seed 002's 90 days for successes and 180 for failures is the
-- floor every plan gets; the larger plans keep history longer.
INSERT INTO api.subscription_plans (code, name, description, price_cents, step_budget,
                                    succeeded_retention_days, failed_retention_days) VALUES
    ('free',       'Free',         'Try FlowTrack',                         0,   200,  90, 180),
    ('starter',    'Starter',      'For solopreneurs',                   1900,  1000,  90, 180),
    ('pro',        'Professional', 'For growing small businesses',       4900,  2000, 180, 365),
    ('enterprise', 'Enterprise',   'Unlimited, with support',           29900, 10000, 365, 730);

INSERT INTO api.plan_limits (plan_id, quota_key, limit_value)
SELECT p.id, l.key, l.limit_value
FROM (VALUES
    ('free',       'workflows', 3),      ('free',       'leads', 100),
    ('free',       'executions_per_month', 100),   ('free',    'email_sends_per_month', 50),
    ('starter',    'workflows', 10),     ('starter',    'leads', 1000),
    ('starter',    'executions_per_month', 2000),  ('starter', 'email_sends_per_month', 1000),
    ('pro',        'workflows', 50),     ('pro',        'leads', 10000),
    ('pro',        'executions_per_month', 20000), ('pro',     'email_sends_per_month', 10000),
    ('enterprise', 'workflows', NULL),   ('enterprise', 'leads', NULL),
    ('enterprise', 'executions_per_month', NULL),  ('enterprise', 'email_sends_per_month', NULL)
) AS l (plan, key, limit_value)
JOIN api.subscription_plans p ON p.code = l.plan;

CREATE TABLE api.users (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email             citext NOT NULL
                      CONSTRAINT users_email_format CHECK (email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'),
    full_name         text CHECK (length(full_name) <= 200),
    external_auth_id  text UNIQUE,
    email_verified_at timestamptz,
    last_login_at     timestamptz,
    settings          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
COMMENT ON TABLE api.users IS 'People who sign in. Global, not per workspace; visible to themselves and to co-members.';
COMMENT ON COLUMN api.users.external_auth_id IS 'Identity-provider subject (e.g. Clerk user id).';
-- Unique only once verified: a globally unique address made registration an
-- oracle (issue 9: register_user answered "already registered" for anyone's
-- email). An unverified address is the user's claim, not an identity.
CREATE UNIQUE INDEX users_verified_email ON api.users (email) WHERE email_verified_at IS NOT NULL;
COMMENT ON COLUMN api.users.email IS
  'Contact address. Unique among verified addresses only (users_verified_email), so registering reveals nothing about other accounts.';
COMMENT ON COLUMN api.users.email_verified_at IS
  'When the identity provider confirmed the address; set out of band (provider webhook or operator), never by the user.';
CREATE TRIGGER touch BEFORE UPDATE ON api.users FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE TABLE api.workspaces (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    slug          citext NOT NULL
                  CONSTRAINT workspaces_slug_format CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{1,61}[a-z0-9])?$'),
    plan_id       uuid NOT NULL REFERENCES api.subscription_plans (id),
    owner_user_id uuid NOT NULL REFERENCES api.users (id),
    timezone      text NOT NULL DEFAULT 'UTC',
    settings      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX workspaces_slug_key ON api.workspaces (slug);
CREATE INDEX workspaces_plan_id ON api.workspaces (plan_id);
CREATE INDEX workspaces_owner_user_id ON api.workspaces (owner_user_id);
COMMENT ON TABLE api.workspaces IS 'Tenants. Every piece of user data hangs off a workspace; /p/{slug} is its public form address.';
CREATE TRIGGER touch BEFORE UPDATE ON api.workspaces FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE TABLE api.workspace_members (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES api.users (id) ON DELETE CASCADE,
    role         text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    invited_by   uuid REFERENCES api.users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, user_id)
);
CREATE INDEX workspace_members_user_id ON api.workspace_members (user_id);
CREATE INDEX workspace_members_invited_by ON api.workspace_members (invited_by);
-- One owner per workspace. The index is keyed on (workspace_id, role), not on
-- workspace_id alone, although role is always 'owner' in it: API servers read
-- a unique index over exactly a foreign key's columns as "one member per
-- workspace" (postrust 3.1.0 ignores the WHERE), and then embed
-- /workspaces?select=*,workspace_members(*) as a single row, a 500 with
-- 21000 ("more than one row returned by a subquery") under db-max-rows.
CREATE UNIQUE INDEX workspace_members_one_owner ON api.workspace_members (workspace_id, role) WHERE role = 'owner';
COMMENT ON TABLE api.workspace_members IS
  'Who belongs to a workspace and as what: owner (one, the workspace''s owner_user_id), admin, member or viewer. Rows are made by create_workspace and accept_invitation only (sql/0021_memberships.sql): nobody joins without consenting.';
CREATE TRIGGER touch BEFORE UPDATE ON api.workspace_members FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

-- Isolation. Workspaces are keyed by their own id; only owners manage members.
SELECT flowtrack.enable_tenant_isolation('api.workspaces'::regclass, ARRAY['owner', 'admin'], tenant_column => 'id');
SELECT flowtrack.enable_tenant_isolation('api.workspace_members'::regclass, ARRAY['owner']);

ALTER TABLE api.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE api.users FORCE ROW LEVEL SECURITY;
-- Members exist only by accepted invitation, so a co-member is someone who
-- consented to share the caller's workspace.
CREATE POLICY users_self_or_comember ON api.users FOR SELECT USING (
    id = (SELECT flowtrack.current_user_id())
    OR id IN (SELECT m.user_id FROM api.workspace_members m)  -- already confined to the caller's workspace by RLS
);
-- People are nobody's API resource: no key reads or writes users.
SELECT flowtrack.enable_key_scope('api.users'::regclass, NULL);
CREATE POLICY users_update_self ON api.users FOR UPDATE
    USING (id = (SELECT flowtrack.current_user_id()))
    WITH CHECK (id = (SELECT flowtrack.current_user_id()));

-- Catalogs: readable by everyone, written only by migrations.
GRANT SELECT ON api.quota_keys, api.subscription_plans, api.plan_limits TO anon, authenticated;
GRANT SELECT, UPDATE (full_name, settings) ON api.users TO authenticated;
GRANT SELECT, UPDATE (name, timezone, settings) ON api.workspaces TO authenticated;
-- No INSERT: an owner adding any user id made that person's email and name
-- readable without their consent (issue 9). Members join by invitation.
GRANT SELECT, UPDATE (role), DELETE ON api.workspace_members TO authenticated;

-- What clients may write in a tenant table: every column but those the
-- server owns. A client-chosen id answered 23505 for another tenant's row and
-- 201 for a fresh one, telling which ids exist (issue 9), so ids are always
-- generated here; and a row never moves to another workspace.
CREATE FUNCTION internal.grant_client_writes(tbl regclass, insert_except text[] DEFAULT '{id}',
                                             update_except text[] DEFAULT '{id,workspace_id}')
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cols_insert text;
    cols_update text;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FILTER (WHERE a.attname <> ALL (insert_except)),
           string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FILTER (WHERE a.attname <> ALL (update_except))
      INTO cols_insert, cols_update
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' AND a.attidentity = '';
    EXECUTE format('REVOKE INSERT, UPDATE ON %s FROM authenticated', tbl);
    EXECUTE format('GRANT INSERT (%s), UPDATE (%s) ON %s TO authenticated', cols_insert, cols_update, tbl);
END
$$;
COMMENT ON FUNCTION internal.grant_client_writes(regclass, text[], text[]) IS
  'Grants authenticated INSERT on every column of a table but insert_except (default id) and UPDATE on every column but update_except (default id, workspace_id): ids are server-made, rows stay in their workspace. Columns added later are not granted until this runs again.';

-- Catalogs are public reads; RLS is still on so every exposed table has it.
CREATE FUNCTION internal.enable_catalog_read(tbl regclass, visible text DEFAULT 'true')
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS catalog_read ON %s', tbl);
    EXECUTE format('CREATE POLICY catalog_read ON %s FOR SELECT USING (%s)', tbl, visible);
END
$$;
COMMENT ON FUNCTION internal.enable_catalog_read(regclass, text) IS
  'The catalog counterpart of flowtrack.enable_tenant_isolation: FORCE RLS and one read policy (rows where visible holds) for every caller; writes stay with migrations. Idempotent.';
SELECT internal.enable_catalog_read(t)
  FROM unnest(ARRAY['api.quota_keys', 'api.subscription_plans', 'api.plan_limits']::regclass[]) AS t;
