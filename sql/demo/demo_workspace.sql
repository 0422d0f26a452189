-- The demo workspace `./dev up` seeds: a plan, an owner, and one published
-- lead-capture workflow. Idempotent: fixed ids, ON CONFLICT DO NOTHING.
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

INSERT INTO api.workflows (id, workspace_id, created_by, name, description, status, published_version, published_at)
VALUES ('00000000-0000-4000-8000-0000000000f1', '00000000-0000-4000-8000-0000000000a1',
        '00000000-0000-4000-8000-000000000001', 'Lead capture',
        'Website form -> qualify by budget -> mark qualified leads and email them.', 'active', 1, now())
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

INSERT INTO api.workflow_versions (workspace_id, workflow_id, version, graph, change_note, created_by)
SELECT w.workspace_id, w.id, 1,
       jsonb_build_object(
         'nodes', (SELECT jsonb_agg(jsonb_build_object('id', n.node_key, 'type', n.node_type, 'data',
                                    jsonb_build_object('label', n.label, 'config', n.config), 'position', n.position)
                                    ORDER BY n.node_key)
                     FROM api.workflow_nodes n WHERE n.workflow_id = w.id),
         'edges', (SELECT jsonb_agg(jsonb_build_object('id', e.edge_key, 'source', e.source_key, 'target', e.target_key,
                                    'condition', e.condition) ORDER BY e.edge_key)
                     FROM api.workflow_edges e WHERE e.workflow_id = w.id)),
       'Initial version', w.created_by
  FROM api.workflows w
 WHERE w.id = '00000000-0000-4000-8000-0000000000f1'
ON CONFLICT DO NOTHING;

-- The published workflow holds one of the plan's active-workflow slots.
UPDATE api.usage_quotas SET used = (SELECT count(*) FROM api.workflows
                                     WHERE workspace_id = '00000000-0000-4000-8000-0000000000a1'
                                       AND status = 'active' AND deleted_at IS NULL)
 WHERE workspace_id = '00000000-0000-4000-8000-0000000000a1' AND quota_key = 'workflows';

COMMIT;
