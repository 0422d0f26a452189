-- Benchmark fixtures for ./dev bench ingress: a workspace with 1,000 leads
-- and two identical 3-node workflows (manual trigger -> condition -> update
-- lead): one run by the graph engine, one by a hand-written PL/pgSQL walk of
-- the same version graph over the same tables.
CREATE SCHEMA IF NOT EXISTS bench;
BEGIN;
-- Verified, like any workspace that sends email (the gate in sql/0011).
INSERT INTO api.users (id, email, full_name, email_verified_at) VALUES ('00000000-0000-4000-8000-00000000b001', 'bench@flowtrack.dev', 'Bench', now());
INSERT INTO api.workspaces (id, name, slug, plan_id, owner_user_id)
SELECT '00000000-0000-4000-8000-00000000b0a1', 'Bench', 'bench', id, '00000000-0000-4000-8000-00000000b001'
  FROM api.subscription_plans WHERE code = 'enterprise';
SELECT internal.sync_quotas('00000000-0000-4000-8000-00000000b0a1');
UPDATE api.usage_quotas SET limit_value = NULL, hard_limit = NULL WHERE workspace_id = '00000000-0000-4000-8000-00000000b0a1';
INSERT INTO api.leads (workspace_id, email, custom_fields)
SELECT '00000000-0000-4000-8000-00000000b0a1', 'lead' || i || '@bench.example', jsonb_build_object('budget', 500 + i * 3)
  FROM generate_series(1, 1000) i;
INSERT INTO api.workflows (id, workspace_id, name, status, published_version)
VALUES ('00000000-0000-4000-8000-00000000bf01', '00000000-0000-4000-8000-00000000b0a1', 'engine', 'active', 1),
       ('00000000-0000-4000-8000-00000000bf02', '00000000-0000-4000-8000-00000000b0a1', 'plpgsql', 'active', 1);
INSERT INTO api.workflow_versions (workspace_id, workflow_id, version, graph)
SELECT '00000000-0000-4000-8000-00000000b0a1', id, 1,
 '{"nodes":[{"id":"start","type":"TRIGGER_MANUAL","data":{"config":{}}},
            {"id":"qualify","type":"LOGIC_CONDITION","data":{"config":{}}},
            {"id":"mark","type":"ACTION_UPDATE_LEAD","data":{"config":{"status":"QUALIFIED"}}}],
   "edges":[{"id":"e1","source":"start","target":"qualify"},
            {"id":"e2","source":"qualify","target":"mark","condition":{"op":"gt","path":"lead.fields.budget","value":1000}}]}'
  FROM api.workflows WHERE workspace_id = '00000000-0000-4000-8000-00000000b0a1';
COMMIT;

-- The hand-written walk: internal.start_execution's statements verbatim
-- (the idempotent insert first; the workflow counter and the quota, the two
-- hot rows, last), with a breadth-first walk of the version graph in
-- PL/pgSQL in between (conditions of the shape
-- {"op":"gt","path":...,"value":...}), writing the same steps, lead update
-- and execution row.
CREATE FUNCTION bench.start_execution_plpgsql(ws uuid, workflow_id uuid, payload jsonb, idempotency_key text, lead_id uuid)
RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, api, internal, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    w api.workflows;
    g jsonb;
    lead jsonb;
    ctx jsonb;
    exec_id uuid;
    queue text[];
    cur text;
    node jsonb;
    e jsonb;
    c jsonb;
    actual jsonb;
    steps integer := 0;
BEGIN
    PERFORM flowtrack.act_for(ws, 'owner');
    SELECT * INTO w FROM api.workflows x WHERE x.id = start_execution_plpgsql.workflow_id AND x.deleted_at IS NULL;
    SELECT to_jsonb(l) INTO lead FROM api.leads l WHERE l.id = start_execution_plpgsql.lead_id;
    lead := lead || jsonb_build_object('fields', coalesce(lead -> 'custom_fields', '{}'));
    ctx := payload || jsonb_build_object('trigger', payload, 'lead', lead, 'steps', '{}'::jsonb);
    -- The email gate, as internal.start_execution checks it.
    IF NOT coalesce(internal.owner_email_verified(ws), false)
       AND EXISTS (SELECT 1 FROM api.workflow_versions v, jsonb_array_elements(v.graph -> 'nodes') n
                    WHERE v.workflow_id = w.id AND v.version = w.published_version AND n ->> 'type' = 'ACTION_SEND_EMAIL') THEN
        PERFORM internal.refuse_unverified_sender(ws);
    END IF;
    INSERT INTO api.workflow_executions AS x (workspace_id, workflow_id, version, status, trigger_type, trigger_payload,
                                              context, idempotency_key, lead_id, started_at)
    VALUES (ws, w.id, w.published_version, 'running', 'manual', payload, ctx, idempotency_key, lead_id, now())
    ON CONFLICT ON CONSTRAINT workflow_executions_workflow_id_idempotency_key_key DO NOTHING
    RETURNING x.id INTO exec_id;
    IF exec_id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT v.graph INTO g FROM api.workflow_versions v WHERE v.workflow_id = w.id AND v.version = w.published_version;
    SELECT array_agg(n ->> 'id') INTO queue FROM jsonb_array_elements(g -> 'nodes') n WHERE n ->> 'type' LIKE 'TRIGGER\_%';
    WHILE cardinality(queue) > 0 LOOP
        cur := queue[1];
        queue := queue[2:];
        SELECT n INTO node FROM jsonb_array_elements(g -> 'nodes') n WHERE n ->> 'id' = cur;
        steps := steps + 1;
        IF node ->> 'type' = 'ACTION_UPDATE_LEAD' THEN
            UPDATE api.leads SET status = node #>> '{data,config,status}' WHERE id = lead_id AND workspace_id = ws;
        END IF;
        INSERT INTO api.execution_steps (workspace_id, execution_id, node_key, node_type, status, started_at, completed_at)
        VALUES (ws, exec_id, cur, node ->> 'type', 'completed', now(), now());
        FOR e IN SELECT x FROM jsonb_array_elements(g -> 'edges') x WHERE x ->> 'source' = cur LOOP
            c := e -> 'condition';
            IF c IS NULL OR jsonb_typeof(c) = 'null' THEN
                queue := queue || (e ->> 'target');
            ELSE
                actual := ctx #> string_to_array(c ->> 'path', '.');
                IF c ->> 'op' = 'gt' AND (actual #>> '{}')::numeric > (c ->> 'value')::numeric THEN
                    queue := queue || (e ->> 'target');
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    UPDATE api.workflow_executions SET status = 'completed', step_count = steps, completed_at = now() WHERE id = exec_id;
    UPDATE api.workflows SET total_executions = total_executions + 1, last_executed_at = now() WHERE id = w.id;
    PERFORM internal.consume_quota(ws, 'executions_per_month', 1);
    RETURN exec_id;
END
$$;
-- Same privileges as the engine: internal.start_execution is SECURITY
-- DEFINER owned by flowtrack_owner, so every statement it runs passes the
-- tenant policies (FORCE ROW LEVEL SECURITY). Owned by the superuser, the walk
-- would skip them and compare less work against more.
ALTER FUNCTION bench.start_execution_plpgsql(uuid, uuid, jsonb, text, uuid) OWNER TO flowtrack_owner;
