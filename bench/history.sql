-- Fixtures for ./dev bench history: 100 starter workspaces (executions kept
-- 90 days when they succeed, 180 when they fail), each with a lead and the
-- ingress benchmark's 3-node workflow (manual trigger -> condition -> update
-- lead), and one execution of it run by the real engine: the template every
-- simulated execution copies, with its steps and its log lines.
CREATE SCHEMA IF NOT EXISTS bench;
BEGIN;
INSERT INTO api.users (id, email, full_name) VALUES ('00000000-0000-4000-8000-00000000c001', 'history@flowtrack.dev', 'History');
INSERT INTO api.workspaces (id, name, slug, plan_id, owner_user_id)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'History ' || i, 'history-' || i, p.id,
       '00000000-0000-4000-8000-00000000c001'
  FROM generate_series(1, 100) i, api.subscription_plans p WHERE p.code = 'starter';
SELECT internal.sync_quotas(w.id) FROM api.workspaces w WHERE w.slug LIKE 'history-%';
UPDATE api.usage_quotas SET limit_value = NULL, hard_limit = NULL
 WHERE workspace_id IN (SELECT id FROM api.workspaces WHERE slug LIKE 'history-%');
INSERT INTO api.leads (workspace_id, email, custom_fields)
SELECT w.id, 'lead@' || w.slug || '.example', '{"budget": 5000}' FROM api.workspaces w WHERE w.slug LIKE 'history-%';
INSERT INTO api.workflows (workspace_id, name, status, published_version)
SELECT w.id, 'Qualify', 'active', 1 FROM api.workspaces w WHERE w.slug LIKE 'history-%';
INSERT INTO api.workflow_versions (workspace_id, workflow_id, version, graph)
SELECT f.workspace_id, f.id, 1,
 '{"nodes":[{"id":"start","type":"TRIGGER_MANUAL","data":{"config":{}}},
            {"id":"qualify","type":"LOGIC_CONDITION","data":{"config":{}}},
            {"id":"mark","type":"ACTION_UPDATE_LEAD","data":{"config":{"status":"QUALIFIED"}}}],
   "edges":[{"id":"e1","source":"start","target":"qualify"},
            {"id":"e2","source":"qualify","target":"mark","condition":{"op":"gt","path":"lead.fields.budget","value":1000}}]}'
  FROM api.workflows f JOIN api.workspaces w ON w.id = f.workspace_id WHERE w.slug LIKE 'history-%';
COMMIT;

-- The template: one real run, through the engine.
SELECT internal.start_execution(f.workspace_id, f.id, 'manual', '{"source": "history bench"}', 'template',
                                (SELECT l.id FROM api.leads l WHERE l.workspace_id = f.workspace_id))
  FROM api.workflows f JOIN api.workspaces w ON w.id = f.workspace_id WHERE w.slug = 'history-1';

CREATE TABLE bench.template AS
SELECT e.id, e.workspace_id, e.created_at FROM api.workflow_executions e WHERE e.idempotency_key = 'template';
-- Copies, not the live rows: simulated retention deletes the template too.
CREATE TABLE bench.template_execution AS
SELECT e.* FROM api.workflow_executions e JOIN bench.template t ON t.id = e.id;
CREATE TABLE bench.template_steps AS
SELECT s.* FROM api.execution_steps s JOIN bench.template t ON t.id = s.execution_id;
CREATE TABLE bench.template_logs AS
SELECT l.* FROM api.execution_logs l JOIN bench.template t ON t.id = l.execution_id;

-- The columns a copy writes: every stored column but generated ones and a
-- surrogate key that has a default; timestamps shift with the copy, the
-- execution and workspace ids are the copy's.
CREATE FUNCTION bench.copy_list(rel regclass, fk text, src text) RETURNS text[]
LANGUAGE sql AS $$
    SELECT ARRAY[string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
                 string_agg(CASE
                     WHEN a.attname = fk THEN 'n.id'
                     WHEN a.attname = 'workspace_id' THEN 'n.ws'
                     WHEN a.attname = 'workflow_id' THEN 'n.wf'
                     WHEN a.attname = 'lead_id' THEN 'n.lead'
                     WHEN a.attname = 'idempotency_key' THEN 'n.id::text'
                     WHEN a.attname = 'status' AND fk = 'id' THEN 'CASE WHEN n.failed THEN ''failed'' ELSE ' || src || '.status END'
                     WHEN a.atttypid = 'timestamptz'::regtype THEN src || '.' || quote_ident(a.attname) || ' + (n.t - bench_t.created_at)'
                     ELSE src || '.' || quote_ident(a.attname) END, ', ' ORDER BY a.attnum)]
      FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
       AND NOT (a.attname = 'id' AND fk <> 'id' AND (a.atthasdef OR a.attidentity <> ''))
$$;

-- One simulated month: n executions spread over [lo, lo + 1 month), 5%
-- failed, round-robin over the workspaces, each a copy of the template with
-- its steps and logs.
CREATE FUNCTION bench.push_month(lo timestamptz, n integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    e text[] := bench.copy_list('api.workflow_executions', 'id', 'x');
    s text[] := bench.copy_list('api.execution_steps', 'execution_id', 'x');
    l text[] := bench.copy_list('api.execution_logs', 'execution_id', 'x');
    span double precision := extract(epoch FROM (lo + interval '1 month') - lo);
BEGIN
    CREATE TEMP TABLE n ON COMMIT DROP AS
    SELECT gen_random_uuid() AS id, w.id AS ws, f.id AS wf, ld.id AS lead,
           lo + make_interval(secs => span * i / n) AS t, (i % 20 = 0) AS failed
      FROM generate_series(0, n - 1) i
      JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS k, id FROM api.workspaces WHERE slug LIKE 'history-%') w ON w.k = i % 100
      JOIN api.workflows f ON f.workspace_id = w.id
      JOIN api.leads ld ON ld.workspace_id = w.id
     ORDER BY t;
    EXECUTE format('INSERT INTO api.workflow_executions (%s) SELECT %s FROM n, bench.template bench_t
                      JOIN bench.template_execution x ON x.id = bench_t.id ORDER BY n.t', e[1], e[2]);
    EXECUTE format('INSERT INTO api.execution_steps (%s) SELECT %s FROM n, bench.template bench_t
                      JOIN bench.template_steps x ON x.execution_id = bench_t.id ORDER BY n.t', s[1], s[2]);
    EXECUTE format('INSERT INTO api.execution_logs (%s) SELECT %s FROM n, bench.template bench_t
                      JOIN bench.template_logs x ON x.execution_id = bench_t.id ORDER BY n.t', l[1], l[2]);
END
$$;

-- Table + index + TOAST bytes of executions, steps and logs (every partition).
CREATE FUNCTION bench.history_bytes() RETURNS bigint
LANGUAGE sql AS $$
    SELECT sum(pg_total_relation_size(t.relid))::bigint
      FROM (SELECT relid FROM pg_partition_tree('api.execution_logs') WHERE isleaf
            UNION ALL SELECT 'api.workflow_executions'::regclass UNION ALL SELECT 'api.execution_steps'::regclass) t
$$;
