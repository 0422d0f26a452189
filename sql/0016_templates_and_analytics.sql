-- The template library (full-text searchable) and per-workspace daily
-- statistics for dashboards.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

-- array_to_string is only STABLE (element output functions could change),
-- but for text[] it cannot, so this wrapper may promise IMMUTABLE.
CREATE FUNCTION internal.template_search(name text, tags text[], description text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(to_tsvector('english', name), 'A')
        || setweight(to_tsvector('english', coalesce(array_to_string(tags, ' '), '')), 'B')
        || setweight(to_tsvector('english', description), 'C')
$$;
COMMENT ON FUNCTION internal.template_search(text, text[], text) IS 'Weighted search document of a template: name (A), tags (B), description (C).';

CREATE TABLE api.workflow_templates (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug                  text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description           text NOT NULL DEFAULT '',
    category              text NOT NULL CHECK (category IN ('marketing', 'sales', 'operations', 'customer_support', 'admin', 'custom')),
    tags                  text[] NOT NULL DEFAULT '{}',
    difficulty            text NOT NULL DEFAULT 'beginner' CHECK (difficulty IN ('beginner', 'intermediate', 'advanced')),
    estimated_time_saved  text,
    author                text NOT NULL DEFAULT 'official' CHECK (author IN ('official', 'community')),
    graph                 jsonb NOT NULL CHECK (jsonb_typeof(graph -> 'nodes') = 'array' AND jsonb_typeof(graph -> 'edges') = 'array'),
    required_integrations text[] NOT NULL DEFAULT '{}',
    popularity            integer NOT NULL DEFAULT 0,
    rating                numeric(2, 1) NOT NULL DEFAULT 0 CHECK (rating BETWEEN 0 AND 5),
    is_public             boolean NOT NULL DEFAULT true,
    search                tsvector GENERATED ALWAYS AS (internal.template_search(name, tags, description)) STORED,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflow_templates_search ON api.workflow_templates USING gin (search);
CREATE INDEX workflow_templates_category ON api.workflow_templates (category, popularity DESC) WHERE is_public;
COMMENT ON TABLE api.workflow_templates IS
  'Prebuilt workflows to start from. graph holds React Flow nodes and edges; search is a weighted tsvector (name > tags > description).';
CREATE TRIGGER touch BEFORE UPDATE ON api.workflow_templates FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

SELECT internal.enable_catalog_read('api.workflow_templates', 'is_public');
GRANT SELECT ON api.workflow_templates TO anon, authenticated;

-- Catalog seed: written as the migrating superuser (no API role may insert).
RESET ROLE;
INSERT INTO api.workflow_templates (slug, name, description, category, tags, estimated_time_saved, graph, required_integrations) VALUES
('lead-capture-welcome', 'Lead capture with welcome email',
 'Every website form submission becomes a lead and gets a welcome email within a minute.',
 'marketing', '{forms,email,leads}', '2 hours/week',
 '{"nodes":[{"id":"form","type":"TRIGGER_FORM","data":{"label":"Form submitted","config":{"form_id":"contact"}}},
            {"id":"welcome","type":"ACTION_SEND_EMAIL","data":{"label":"Welcome email","config":{"to":"{{lead.email}}","subject":"Thanks for reaching out","body":"We will be in touch shortly."}}}],
   "edges":[{"id":"e1","source":"form","target":"welcome"}]}', '{}'),
('demo-follow-up', 'Demo booked follow-up',
 'When a demo is booked in Calendly, mark the lead BOOKED and send a confirmation; three days later, follow up.',
 'sales', '{calendly,demo,follow-up}', '3 hours/week',
 '{"nodes":[{"id":"booked","type":"TRIGGER_DEMO_BOOKED","data":{"label":"Demo booked","config":{}}},
            {"id":"mark","type":"ACTION_UPDATE_LEAD","data":{"label":"Mark booked","config":{"status":"BOOKED"}}},
            {"id":"confirm","type":"ACTION_SEND_EMAIL","data":{"label":"Confirmation","config":{"to":"{{lead.email}}","subject":"See you soon","body":"Your demo is booked."}}},
            {"id":"wait","type":"LOGIC_DELAY","data":{"label":"Wait 3 days","config":{"days":3}}},
            {"id":"follow","type":"ACTION_SEND_EMAIL","data":{"label":"Follow up","config":{"to":"{{lead.email}}","subject":"How did it go?","body":"Any questions after the demo?"}}}],
   "edges":[{"id":"e1","source":"booked","target":"mark"},{"id":"e2","source":"mark","target":"confirm"},
            {"id":"e3","source":"confirm","target":"wait"},{"id":"e4","source":"wait","target":"follow"}]}', '{calendly}'),
('qualify-by-budget', 'Qualify leads by budget',
 'Route form leads with a budget over 1,000 to QUALIFIED and notify the team by webhook; the rest get a nurture email.',
 'sales', '{qualification,routing,webhook}', '1 hour/week',
 '{"nodes":[{"id":"form","type":"TRIGGER_FORM","data":{"label":"Form submitted","config":{"form_id":"contact"}}},
            {"id":"check","type":"LOGIC_CONDITION","data":{"label":"Budget > 1000?","config":{}}},
            {"id":"qualify","type":"ACTION_UPDATE_LEAD","data":{"label":"Qualify","config":{"status":"QUALIFIED"}}},
            {"id":"notify","type":"ACTION_WEBHOOK","data":{"label":"Notify team","config":{"url":"https://example.com/hook"}}},
            {"id":"nurture","type":"ACTION_SEND_EMAIL","data":{"label":"Nurture","config":{"to":"{{lead.email}}","subject":"Resources","body":"Here is what we offer."}}}],
   "edges":[{"id":"e1","source":"form","target":"check"},
            {"id":"e2","source":"check","target":"qualify","condition":{"op":"gt","path":"lead.custom_fields.budget","value":1000}},
            {"id":"e3","source":"qualify","target":"notify"},
            {"id":"e4","source":"check","target":"nurture","condition":{"not":{"op":"gt","path":"lead.custom_fields.budget","value":1000}}}]}', '{}'),
('weekly-report', 'Weekly pipeline report',
 'Every Monday morning, post the week''s new leads and won deals to a webhook (Slack, Teams, ...).',
 'operations', '{schedule,report,slack}', '30 minutes/week',
 '{"nodes":[{"id":"monday","type":"TRIGGER_SCHEDULE","data":{"label":"Mondays 8:00","config":{"cron":"0 8 * * 1"}}},
            {"id":"post","type":"ACTION_HTTP_REQUEST","data":{"label":"Post report","config":{"url":"https://example.com/report","method":"POST"}}}],
   "edges":[{"id":"e1","source":"monday","target":"post"}]}', '{slack}');
SET LOCAL ROLE flowtrack_owner;

CREATE FUNCTION api.search_templates(q text DEFAULT NULL, category text DEFAULT NULL)
RETURNS TABLE (id uuid, slug text, name text, description text, category text, tags text[], rank real)
LANGUAGE sql STABLE AS $$
    SELECT t.id, t.slug, t.name, t.description, t.category, t.tags,
           CASE WHEN nullif(trim(q), '') IS NULL THEN 0
                ELSE ts_rank(t.search, websearch_to_tsquery('english', q)) END AS rank
      FROM api.workflow_templates t
     WHERE (nullif(trim(q), '') IS NULL OR t.search @@ websearch_to_tsquery('english', q))
       AND (search_templates.category IS NULL OR t.category = search_templates.category)
     ORDER BY rank DESC, t.popularity DESC, t.name
$$;
COMMENT ON FUNCTION api.search_templates(text, text) IS
  'Full-text search of the template library (web-search syntax: "lead email" -slack), best match first.';
GRANT EXECUTE ON FUNCTION api.search_templates(text, text) TO anon, authenticated;

-- Popularity is seen by every tenant, so no tenant may move it more than
-- once: it counts workspaces, each the first time it starts from the
-- template (issue 9: one member could inflate the global ranking by
-- copying a template over and over).
CREATE TABLE internal.template_uses (
    template_id   uuid NOT NULL REFERENCES api.workflow_templates (id) ON DELETE CASCADE,
    workspace_id  uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    first_used_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (template_id, workspace_id)
);
CREATE INDEX template_uses_workspace_id ON internal.template_uses (workspace_id);
COMMENT ON TABLE internal.template_uses IS
  'Which workspaces have created a workflow from which template (once each); workflow_templates.popularity counts its rows as they arrive.';
COMMENT ON COLUMN api.workflow_templates.popularity IS
  'How many workspaces have created a workflow from the template, each counted once (internal.template_uses).';

CREATE FUNCTION api.create_workflow_from_template(template_slug text, name text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
    t api.workflow_templates;
    wf uuid;
BEGIN
    SELECT * INTO t FROM api.workflow_templates x WHERE x.slug = template_slug AND x.is_public;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'template_slug: no template "%"', template_slug
            USING ERRCODE = 'PT404', HINT = 'Find one with /rpc/search_templates.';
    END IF;
    INSERT INTO api.workflows (workspace_id, name, description, category, tags)
    VALUES (ws, coalesce(create_workflow_from_template.name, t.name), t.description, t.category, t.tags)
    RETURNING id INTO wf;
    INSERT INTO api.workflow_nodes (workspace_id, workflow_id, node_key, node_type, label, config, position, ui)
    SELECT ws, wf, n ->> 'id', n ->> 'type', n #>> '{data,label}', coalesce(n #> '{data,config}', '{}'),
           coalesce(n -> 'position', jsonb_build_object('x', 250 * (ord - 1), 'y', 0)),
           n - 'id' - 'type' - 'position'
      FROM jsonb_array_elements(t.graph -> 'nodes') WITH ORDINALITY AS x (n, ord);
    INSERT INTO api.workflow_edges (workspace_id, workflow_id, edge_key, source_key, target_key, condition, ui)
    SELECT ws, wf, e ->> 'id', e ->> 'source', e ->> 'target', e -> 'condition', e - 'id' - 'source' - 'target' - 'condition'
      FROM jsonb_array_elements(t.graph -> 'edges') AS e;
    INSERT INTO internal.template_uses (template_id, workspace_id) VALUES (t.id, ws) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        UPDATE api.workflow_templates SET popularity = popularity + 1 WHERE id = t.id;
    END IF;
    RETURN wf;
END
$$;
COMMENT ON FUNCTION api.create_workflow_from_template(text, text) IS
  'Copies a template''s graph into a new draft workflow of the caller''s workspace; returns its id. The template''s popularity grows the first time a workspace does so.';
GRANT EXECUTE ON FUNCTION api.create_workflow_from_template(text, text) TO authenticated;

-- The owner may bump popularity (create_workflow_from_template) while acting for a workspace.
CREATE POLICY template_popularity ON api.workflow_templates FOR UPDATE TO flowtrack_owner USING (is_public) WITH CHECK (is_public);

CREATE TABLE api.workspace_daily_stats (
    workspace_id          uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    day                   date NOT NULL,
    leads_created         integer NOT NULL DEFAULT 0,
    executions_started    integer NOT NULL DEFAULT 0,
    executions_completed  integer NOT NULL DEFAULT 0,
    executions_failed     integer NOT NULL DEFAULT 0,
    emails_sent           integer NOT NULL DEFAULT 0,
    webhooks_delivered    integer NOT NULL DEFAULT 0,
    webhooks_failed       integer NOT NULL DEFAULT 0,
    success_rate          numeric(5, 2) GENERATED ALWAYS AS (
                              CASE WHEN executions_completed + executions_failed = 0 THEN NULL
                                   ELSE round(100.0 * executions_completed / (executions_completed + executions_failed), 2) END) STORED,
    refreshed_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, day)
);
COMMENT ON TABLE api.workspace_daily_stats IS
  'Pre-aggregated daily counters per workspace (UTC days) for dashboards; added to every minute by internal.roll_up_daily_stats (pg_cron), so eventually consistent (about a minute).';
SELECT flowtrack.enable_tenant_isolation('api.workspace_daily_stats'::regclass, ARRAY['owner'], key_scope => 'analytics');
GRANT SELECT ON api.workspace_daily_stats TO authenticated;

-- Incremental: each run adds what happened in [watermark, horizon) and moves
-- the watermark in the same transaction, so a second run adds nothing and no
-- run ever rescans history (nor undoes a day whose rows retention deleted).
-- Rows are bucketed by their own UTC day, so a run spanning midnight splits
-- correctly. The horizon stays behind every open transaction: a row is
-- stamped with its transaction's now() or later, so one not yet committed is
-- never older than its transaction's start.
CREATE TABLE internal.daily_stats_watermark (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    upto      timestamptz NOT NULL
);
COMMENT ON TABLE internal.daily_stats_watermark IS
  'Everything stamped before upto is counted in api.workspace_daily_stats. One row; its lock serialises rollups.';
INSERT INTO internal.daily_stats_watermark (upto) VALUES ('-infinity');

CREATE FUNCTION internal.daily_stats_horizon() RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- A transaction open for more than an hour (a forgotten session) stops
    -- holding the dashboards back; what it commits later is not counted.
    SELECT greatest(pg_catalog.clock_timestamp() - interval '1 hour',
                    least(pg_catalog.clock_timestamp(),
                          (SELECT min(a.xact_start) FROM pg_catalog.pg_stat_activity a
                            WHERE a.datname = pg_catalog.current_database() AND a.pid <> pg_catalog.pg_backend_pid()
                              AND a.backend_type IN ('client backend', 'background worker')
                              AND a.xact_start IS NOT NULL)))
$$;
COMMENT ON FUNCTION internal.daily_stats_horizon() IS
  'How far the daily-stats rollup may count: now, or the start of the oldest transaction still open in this database (its rows may not be visible yet), but never more than an hour back.';

CREATE FUNCTION internal.roll_up_daily_stats() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lo timestamptz;
    hi timestamptz;
    n  integer;
BEGIN
    SELECT w.upto INTO lo FROM internal.daily_stats_watermark w FOR UPDATE;
    -- Read after the lock: a rollup that waited for another sees its horizon move on.
    hi := internal.daily_stats_horizon();
    IF hi <= lo THEN
        RETURN 0;
    END IF;
    WITH counts AS (
        SELECT l.workspace_id, (l.created_at AT TIME ZONE 'UTC')::date AS day,
               count(*) AS leads, 0 AS started, 0 AS completed, 0 AS failed, 0 AS emails, 0 AS ok, 0 AS ko
          FROM api.leads l WHERE l.created_at >= lo AND l.created_at < hi GROUP BY 1, 2
        UNION ALL
        SELECT e.workspace_id, (e.created_at AT TIME ZONE 'UTC')::date, 0, count(*), 0, 0, 0, 0, 0
          FROM api.workflow_executions e WHERE e.created_at >= lo AND e.created_at < hi GROUP BY 1, 2
        UNION ALL
        SELECT e.workspace_id, (e.completed_at AT TIME ZONE 'UTC')::date, 0, 0,
               count(*) FILTER (WHERE e.status = 'completed'), count(*) FILTER (WHERE e.status IN ('failed', 'timed_out')), 0, 0, 0
          FROM api.workflow_executions e WHERE e.completed_at >= lo AND e.completed_at < hi GROUP BY 1, 2
        UNION ALL
        SELECT u.workspace_id, (u.occurred_at AT TIME ZONE 'UTC')::date, 0, 0, 0, 0, sum(u.amount), 0, 0
          FROM api.usage_events u
         WHERE u.occurred_at >= lo AND u.occurred_at < hi AND u.quota_key = 'email_sends_per_month' AND u.event_type = 'consumed'
         GROUP BY 1, 2
        UNION ALL
        SELECT d.workspace_id, (d.finished_at AT TIME ZONE 'UTC')::date, 0, 0, 0, 0, 0,
               count(*) FILTER (WHERE d.status = 'succeeded'), count(*) FILTER (WHERE d.status = 'failed')
          FROM api.webhook_deliveries d WHERE d.finished_at >= lo AND d.finished_at < hi GROUP BY 1, 2),
    summed AS (
        SELECT c.workspace_id, c.day, sum(c.leads)::integer AS leads, sum(c.started)::integer AS started,
               sum(c.completed)::integer AS completed, sum(c.failed)::integer AS failed, sum(c.emails)::integer AS emails,
               sum(c.ok)::integer AS ok, sum(c.ko)::integer AS ko
          FROM counts c
         -- A workspace deleted meanwhile has no stats row to add to.
         WHERE EXISTS (SELECT 1 FROM api.workspaces w WHERE w.id = c.workspace_id)
         GROUP BY 1, 2)
    INSERT INTO api.workspace_daily_stats AS s (workspace_id, day, leads_created, executions_started, executions_completed,
                                                executions_failed, emails_sent, webhooks_delivered, webhooks_failed)
    SELECT m.workspace_id, m.day, m.leads, m.started, m.completed, m.failed, m.emails, m.ok, m.ko FROM summed m
    ON CONFLICT (workspace_id, day) DO UPDATE
       SET leads_created = s.leads_created + excluded.leads_created,
           executions_started = s.executions_started + excluded.executions_started,
           executions_completed = s.executions_completed + excluded.executions_completed,
           executions_failed = s.executions_failed + excluded.executions_failed,
           emails_sent = s.emails_sent + excluded.emails_sent,
           webhooks_delivered = s.webhooks_delivered + excluded.webhooks_delivered,
           webhooks_failed = s.webhooks_failed + excluded.webhooks_failed,
           refreshed_at = pg_catalog.now();
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE internal.daily_stats_watermark SET upto = hi;
    RETURN n;
END
$$;
COMMENT ON FUNCTION internal.roll_up_daily_stats() IS
  'Adds the leads, executions started and finished, emails sent and deliveries ended since the watermark to api.workspace_daily_stats (by each row''s UTC day), then moves the watermark, in one transaction: idempotent, no rescans. Returns the stats rows touched. Operator/pg_cron function (runs across tenants).';
REVOKE ALL ON FUNCTION internal.roll_up_daily_stats(), internal.daily_stats_horizon() FROM PUBLIC;
