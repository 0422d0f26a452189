-- The demo workspace `./dev up` seeds: a plan, an owner, a public form and
-- one published, active lead-capture workflow. Idempotent: fixed ids, ON CONFLICT DO NOTHING.
-- Runs as superuser (not a migration: test clusters start without it).
BEGIN;

INSERT INTO api.users (id, email, full_name, email_verified_at)
VALUES ('00000000-0000-4000-8000-000000000001', 'owner@demo.flowtrack.dev', 'Dana Demo', now())
ON CONFLICT DO NOTHING;

INSERT INTO api.workspaces (id, name, slug, plan_id, owner_user_id)
SELECT '00000000-0000-4000-8000-0000000000a1', 'Demo Studio', 'demo', p.id, '00000000-0000-4000-8000-000000000001'
  FROM api.subscription_plans p WHERE p.code = 'starter'
ON CONFLICT DO NOTHING;

INSERT INTO api.workspace_members (workspace_id, user_id, role)
VALUES ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-000000000001', 'owner')
ON CONFLICT DO NOTHING;

INSERT INTO api.subscriptions (workspace_id, plan_id, status, anchor_at, current_period_start, current_period_end)
SELECT '00000000-0000-4000-8000-0000000000a1', p.id, 'active', bp.period_start, bp.period_start, bp.period_end
  FROM api.subscription_plans p, flowtrack.billing_period(date_trunc('month', now()), now()) bp
 WHERE p.code = 'starter'
   AND NOT EXISTS (SELECT 1 FROM api.subscriptions WHERE workspace_id = '00000000-0000-4000-8000-0000000000a1');

SELECT internal.sync_quotas('00000000-0000-4000-8000-0000000000a1');

-- The public form the workflow listens to: /p/demo/contact.
INSERT INTO api.forms (id, workspace_id, slug, name)
VALUES ('00000000-0000-4000-8000-0000000000c1', '00000000-0000-4000-8000-0000000000a1', 'contact', 'Contact us')
ON CONFLICT DO NOTHING;
INSERT INTO api.form_fields (workspace_id, form_id, field_key, label, field_type, required, position)
SELECT '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000c1', f.key, f.label, f.type, f.required, f.pos
  FROM (VALUES ('email', 'Email', 'email', true, 1), ('first_name', 'First name', 'text', false, 2),
               ('budget', 'Budget (USD)', 'number', false, 3)) AS f (key, label, type, required, pos)
ON CONFLICT DO NOTHING;

INSERT INTO api.workflows (id, workspace_id, created_by, name, description)
VALUES ('00000000-0000-4000-8000-0000000000f1', '00000000-0000-4000-8000-0000000000a1',
        '00000000-0000-4000-8000-000000000001', 'Lead capture',
        'Website form -> welcome email; budget over 1,000 -> mark the lead QUALIFIED.')
ON CONFLICT DO NOTHING;

INSERT INTO api.workflow_nodes (workspace_id, workflow_id, node_key, node_type, label, config, position)
SELECT '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000f1', n.key, n.type, n.label, n.config::jsonb, n.pos::jsonb
  FROM (VALUES
    ('form',    'TRIGGER_FORM',      'Contact form submitted', '{"form_id":"contact"}',                  '{"x":0,"y":0}'),
    ('qualify', 'LOGIC_CONDITION',   'Budget over 1,000?',     '{}',                                     '{"x":250,"y":0}'),
    ('mark',    'ACTION_UPDATE_LEAD','Mark qualified',         '{"status":"QUALIFIED"}',                 '{"x":500,"y":-80}'),
    ('welcome', 'ACTION_SEND_EMAIL', 'Send welcome email',     '{"to":"{{lead.email}}","subject":"Thanks!","body":"We will be in touch."}', '{"x":500,"y":80}')
  ) AS n (key, type, label, config, pos)
ON CONFLICT DO NOTHING;

INSERT INTO api.workflow_edges (workspace_id, workflow_id, edge_key, source_key, target_key, condition)
SELECT '00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000f1', e.key, e.src, e.dst, e.cond::jsonb
  FROM (VALUES
    ('e1', 'form',    'qualify', NULL),
    ('e2', 'qualify', 'mark',    '{"op":"gt","path":"lead.fields.budget","value":1000}'),
    ('e3', 'form',    'welcome', NULL)
  ) AS e (key, src, dst, cond)
ON CONFLICT DO NOTHING;

-- Publish and activate through the API functions, as the demo owner, so
-- the graph is validated and the active-workflow quota counts it.
SELECT set_config('request.jwt.claims', json_build_object(
           'role', 'authenticated', 'sub', '00000000-0000-4000-8000-000000000001',
           'workspace_id', '00000000-0000-4000-8000-0000000000a1', 'workspace_role', 'owner')::text, true);
SELECT api.publish_workflow('00000000-0000-4000-8000-0000000000f1', 'Initial version')
 WHERE (SELECT published_version FROM api.workflows WHERE id = '00000000-0000-4000-8000-0000000000f1') IS NULL;
SELECT api.activate_workflow('00000000-0000-4000-8000-0000000000f1');

COMMIT;
