-- The graph engine's SQL surface: validate, publish, import/export (React
-- Flow, n8n), explain; start_execution, which advances the graph in the
-- caller's transaction; the worker reports job outcomes as step outcomes.
SELECT flowtrack.version();
GRANT EXECUTE ON FUNCTION
    flowtrack.max_import_bytes(),
    flowtrack.validate_graph(text),
    flowtrack.topological_order(text),
    flowtrack.successors(text, text, text),
    flowtrack.reachable(text, text),
    flowtrack.explain(text, text),
    flowtrack.react_flow_split(text),
    flowtrack.react_flow_join(text),
    flowtrack.n8n_to_flow(text),
    flowtrack.run_execution(uuid, uuid, uuid, integer, text, text, uuid, integer, integer),
    flowtrack.complete_step(uuid, text),
    flowtrack.fail_step(uuid, text),
    flowtrack.log_execution_event(uuid, uuid, uuid, text, text, jsonb, bigint)
TO flowtrack_owner;
SET LOCAL ROLE flowtrack_owner;

-- ---------------------------------------------------------------- graph ----

CREATE FUNCTION internal.workflow_graph(workflow_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'nodes', coalesce((SELECT jsonb_agg(jsonb_build_object(
                               'id', n.node_key, 'type', n.node_type, 'position', n.position,
                               'data', jsonb_build_object('label', n.label, 'config', n.config), 'ui', n.ui)
                             ORDER BY (n.ui #>> '{$rf,i}')::integer NULLS LAST, n.node_key)
                             FROM api.workflow_nodes n WHERE n.workflow_id = workflow_graph.workflow_id), '[]'),
        'edges', coalesce((SELECT jsonb_agg(jsonb_build_object(
                               'id', e.edge_key, 'source', e.source_key, 'target', e.target_key,
                               'sourceHandle', e.source_handle, 'targetHandle', e.target_handle,
                               'condition', e.condition, 'label', e.label, 'ui', e.ui)
                             ORDER BY (e.ui #>> '{$rf,i}')::integer NULLS LAST, e.edge_key)
                             FROM api.workflow_edges e WHERE e.workflow_id = workflow_graph.workflow_id), '[]'))
$$;
COMMENT ON FUNCTION internal.workflow_graph(uuid) IS
  'The draft graph of a workflow (visible to the caller) in canonical JSON: {nodes: [{id, type, data: {label, config}, position, ui}], edges: [...]}; what validation reads and publishing snapshots.';

CREATE FUNCTION internal.find_workflow(workflow_id uuid, write boolean DEFAULT false) RETURNS api.workflows
LANGUAGE plpgsql STABLE AS $$
DECLARE
    w api.workflows;
BEGIN
    SELECT * INTO w FROM api.workflows x
     WHERE x.id = find_workflow.workflow_id AND x.workspace_id = internal.require_workspace(write) AND x.deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow_id: no workflow % in this workspace', workflow_id
            USING ERRCODE = 'PT404', HINT = 'List workflows with GET /workflows.';
    END IF;
    RETURN w;
END
$$;
COMMENT ON FUNCTION internal.find_workflow(uuid, boolean) IS 'The caller''s workflow (PT404 otherwise); with write, refuses viewers.';

-- ---------------------------------------------------------- step budget ----

CREATE FUNCTION internal.step_budget(ws uuid) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT p.step_budget FROM api.workspaces w JOIN api.subscription_plans p ON p.id = w.plan_id WHERE w.id = ws
$$;
COMMENT ON FUNCTION internal.step_budget(uuid) IS
  'The steps one advance of an execution may create in this workspace: its plan''s step_budget (NULL for a workspace the caller cannot see).';

CREATE FUNCTION internal.max_steps(w api.workflows, budget integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(CASE WHEN jsonb_typeof(w.settings -> 'max_steps') = 'number'
                         THEN CASE WHEN (w.settings ->> 'max_steps')::numeric BETWEEN 1 AND 100000
                                   THEN floor((w.settings ->> 'max_steps')::numeric)::integer END END,
                    least(1000, coalesce(budget, 1000)))
$$;
COMMENT ON FUNCTION internal.max_steps(api.workflows, integer) IS
  'A workflow''s settings.max_steps when it is a number from 1 to 100000, else 1000 or the plan''s budget if lower. Settings change without a publish, so an ingress never fails on a bad one; validation reports it.';

CREATE FUNCTION internal.settings_problems(w api.workflows)
RETURNS TABLE (code text, node text, edge text, message text, hint text)
LANGUAGE sql STABLE AS $$
    WITH s AS (SELECT w.settings -> 'max_steps' AS v, internal.step_budget(w.workspace_id) AS budget),
         t AS (SELECT s.v, s.budget,
                      CASE WHEN jsonb_typeof(s.v) = 'number' THEN (s.v #>> '{}')::numeric END AS num FROM s)
    SELECT 'invalid_setting', NULL, NULL,
           format('settings.max_steps: %s is not an integer from 1 to 100000', left(t.v::text, 100)),
           'Set settings.max_steps to a whole number of steps, or remove it (default 1000).'
      FROM t
     WHERE t.v IS NOT NULL AND (t.num IS NULL OR t.num NOT BETWEEN 1 AND 100000 OR t.num % 1 <> 0)
    UNION ALL
    SELECT 'max_steps_over_plan', NULL, NULL,
           format('settings.max_steps: %s exceeds the %s steps per ingress the workspace''s plan allows', t.num, t.budget),
           format('Lower settings.max_steps to at most %s, or move to a larger plan.', t.budget)
      FROM t
     WHERE t.num BETWEEN 1 AND 100000 AND t.num % 1 = 0 AND t.num > t.budget
$$;
COMMENT ON FUNCTION internal.settings_problems(api.workflows) IS
  'Validation of a workflow''s settings, as validation problems: invalid_setting (max_steps not an integer from 1 to 100000), max_steps_over_plan (above the plan''s step_budget).';

CREATE FUNCTION api.validate_workflow(workflow_id uuid)
RETURNS TABLE (code text, node text, edge text, message text, hint text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    SELECT v.* FROM internal.find_workflow(workflow_id) w,
           LATERAL (SELECT * FROM flowtrack.validate_graph(internal.workflow_graph(w.id)::text)
                    UNION ALL SELECT * FROM internal.settings_problems(w)) v
$$;
COMMENT ON FUNCTION api.validate_workflow(uuid) IS
  'Every problem of the workflow''s draft graph and settings at once, as (code, node, edge, message, hint). No rows: it can be published. Codes: dangling_edge, unreachable_node, missing_trigger, unbounded_cycle, unknown_node_type, invalid_config, invalid_condition, invalid_node, duplicate_node, duplicate_edge, too_many_schedules, invalid_setting, max_steps_over_plan.';
GRANT EXECUTE ON FUNCTION api.validate_workflow(uuid) TO authenticated;

-- What publishing and rollback share: the problems of a graph and the
-- workflow's settings, and snapshotting a graph as the next version.
CREATE FUNCTION internal.graph_problems(w api.workflows, graph jsonb, OUT found jsonb, OUT n integer)
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(v)), pg_catalog.count(*)::integer
      FROM (SELECT * FROM flowtrack.validate_graph(graph::text) UNION ALL SELECT * FROM internal.settings_problems(w)) v
$$;
COMMENT ON FUNCTION internal.graph_problems(api.workflows, jsonb) IS
  'Every validation problem of graph and of w''s settings, as a JSON array (NULL when none), and how many.';

CREATE FUNCTION internal.publish_graph(w api.workflows, graph jsonb, change_note text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    next_version integer;
BEGIN
    SELECT coalesce(max(v.version), 0) + 1 INTO next_version FROM api.workflow_versions v WHERE v.workflow_id = w.id;
    INSERT INTO api.workflow_versions (workspace_id, workflow_id, version, graph, change_note, created_by)
    VALUES (w.workspace_id, w.id, next_version, graph, change_note, flowtrack.current_user_id());
    UPDATE api.workflows x SET published_version = next_version, published_at = pg_catalog.now() WHERE x.id = w.id;
    RETURN next_version;
END
$$;
COMMENT ON FUNCTION internal.publish_graph(api.workflows, jsonb, text) IS
  'Snapshots graph as the next immutable version of w (locked by the caller) and makes it the published one; returns its number.';

CREATE FUNCTION api.publish_workflow(workflow_id uuid, change_note text DEFAULT NULL)
RETURNS TABLE (version integer, problems integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    w api.workflows := internal.lock_workflow(workflow_id);
    graph jsonb := internal.workflow_graph(w.id);
    found jsonb;
    n integer;
BEGIN
    SELECT p.found, p.n INTO found, n FROM internal.graph_problems(w, graph) p;
    IF n > 0 THEN
        RAISE EXCEPTION 'workflow_id: workflow % has % validation problem(s); first: %', w.id, n, found -> 0 ->> 'message'
            USING ERRCODE = '23514', DETAIL = found::text,
                  HINT = 'Fix every problem listed (POST /rpc/validate_workflow), then publish again.';
    END IF;
    RETURN QUERY SELECT internal.publish_graph(w, graph, change_note), 0;
END
$$;
COMMENT ON FUNCTION api.publish_workflow(uuid, text) IS
  'Validates the draft graph and settings and snapshots it as the next immutable version, which new executions run; running executions keep theirs. 400 (23514) listing every problem in the detail when validation fails.';
GRANT EXECUTE ON FUNCTION api.publish_workflow(uuid, text) TO authenticated;

-- ------------------------------------------------------------- versions ----
-- Versions are append-only (0005). A rollback publishes an old graph as a
-- new head and puts the draft back to it; history is never edited.

CREATE FUNCTION internal.version_graph(w api.workflows, version integer, field text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    g jsonb;
BEGIN
    IF version IS NULL THEN
        RETURN internal.workflow_graph(w.id);
    END IF;
    SELECT v.graph INTO g FROM api.workflow_versions v WHERE v.workflow_id = w.id AND v.version = version_graph.version;
    IF g IS NULL THEN
        RAISE EXCEPTION '%: workflow % has no version %', field, w.id, version
            USING ERRCODE = 'PT404', HINT = 'List its versions with GET /workflow_versions?workflow_id=eq.<id>.';
    END IF;
    RETURN g;
END
$$;
COMMENT ON FUNCTION internal.version_graph(api.workflows, integer, text) IS
  'The graph of one published version of w, or its draft when version is NULL; PT404 naming field when there is no such version.';

CREATE FUNCTION internal.graph_items(graph jsonb) RETURNS TABLE (kind text, key text, doc jsonb)
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'node', n ->> 'id', n #- '{ui,$rf}' FROM pg_catalog.jsonb_array_elements(graph -> 'nodes') n
    UNION ALL
    SELECT 'edge', e ->> 'id', e #- '{ui,$rf}' FROM pg_catalog.jsonb_array_elements(graph -> 'edges') e
$$;
COMMENT ON FUNCTION internal.graph_items(jsonb) IS
  'A canonical graph''s nodes and edges by id, each without its canvas-ordering bookkeeping (ui.$rf): what a version diff compares.';

CREATE FUNCTION api.diff_workflow_versions(workflow_id uuid, from_version integer, to_version integer DEFAULT NULL)
RETURNS TABLE (kind text, key text, change text, fields text[], before jsonb, after jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    w api.workflows := internal.find_workflow(workflow_id);
    a jsonb := internal.version_graph(w, from_version, 'from_version');
    b jsonb := internal.version_graph(w, to_version, 'to_version');
BEGIN
    RETURN QUERY
    WITH old AS (SELECT * FROM internal.graph_items(a)),
         new AS (SELECT * FROM internal.graph_items(b))
    SELECT coalesce(o.kind, n.kind), coalesce(o.key, n.key),
           CASE WHEN o.doc IS NULL THEN 'added' WHEN n.doc IS NULL THEN 'removed' ELSE 'changed' END,
           CASE WHEN o.doc IS NOT NULL AND n.doc IS NOT NULL THEN
               (SELECT pg_catalog.array_agg(k ORDER BY k)
                  FROM (SELECT pg_catalog.jsonb_object_keys(o.doc) UNION SELECT pg_catalog.jsonb_object_keys(n.doc)) x (k)
                 WHERE (o.doc -> x.k) IS DISTINCT FROM (n.doc -> x.k)) END,
           o.doc, n.doc
      FROM old o FULL JOIN new n ON n.kind = o.kind AND n.key = o.key
     WHERE o.doc IS DISTINCT FROM n.doc
     ORDER BY 1 DESC, 2;
END
$$;
COMMENT ON FUNCTION api.diff_workflow_versions(uuid, integer, integer) IS
  'What changed from one version of a workflow to another (to_version NULL: the draft): one row per node or edge (by id) added, removed or changed, with the top-level fields that differ (type, data, position, ui, source, target, condition, ...), and both sides. Canvas ordering alone is not a change.';
GRANT EXECUTE ON FUNCTION api.diff_workflow_versions(uuid, integer, integer) TO authenticated;

CREATE FUNCTION api.rollback_workflow(workflow_id uuid, to_version integer, change_note text DEFAULT NULL)
RETURNS TABLE (version integer, rolled_back_to integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    w api.workflows := internal.lock_workflow(workflow_id);
    graph jsonb;
    found jsonb;
    n integer;
    next_version integer;
BEGIN
    IF to_version IS NULL THEN
        RAISE EXCEPTION 'to_version: required'
            USING ERRCODE = '22023', HINT = 'Name the published version to go back to.';
    END IF;
    graph := internal.version_graph(w, to_version, 'to_version');
    IF to_version = w.published_version THEN
        RAISE EXCEPTION 'to_version: version % is already the published version of workflow %', to_version, w.id
            USING ERRCODE = 'PT409', HINT = 'Roll back to an earlier version.';
    END IF;
    -- Node types and plan limits may have changed since that version was published.
    SELECT p.found, p.n INTO found, n FROM internal.graph_problems(w, graph) p;
    IF n > 0 THEN
        RAISE EXCEPTION 'to_version: version % of workflow % no longer validates (% problem(s)); first: %',
                        to_version, w.id, n, found -> 0 ->> 'message'
            USING ERRCODE = '23514', DETAIL = found::text,
                  HINT = 'Fix the draft and publish it instead (POST /rpc/validate_workflow lists the problems).';
    END IF;
    next_version := internal.publish_graph(w, graph, coalesce(change_note, pg_catalog.format('Rollback to version %s', to_version)));
    -- The draft follows, so the next publish starts from what now runs.
    DELETE FROM api.workflow_edges e WHERE e.workflow_id = w.id;
    DELETE FROM api.workflow_nodes d WHERE d.workflow_id = w.id;
    INSERT INTO api.workflow_nodes (workspace_id, workflow_id, node_key, node_type, label, config, position, ui)
    SELECT w.workspace_id, w.id, d ->> 'id', d ->> 'type', d #>> '{data,label}', coalesce(d #> '{data,config}', '{}'),
           coalesce(d -> 'position', '{"x":0,"y":0}'), coalesce(d -> 'ui', '{}')
      FROM pg_catalog.jsonb_array_elements(graph -> 'nodes') d;
    INSERT INTO api.workflow_edges (workspace_id, workflow_id, edge_key, source_key, target_key, source_handle,
                                    target_handle, condition, label, ui)
    SELECT w.workspace_id, w.id, e ->> 'id', e ->> 'source', e ->> 'target', e ->> 'sourceHandle', e ->> 'targetHandle',
           CASE WHEN pg_catalog.jsonb_typeof(e -> 'condition') = 'null' THEN NULL ELSE e -> 'condition' END,
           e ->> 'label', coalesce(e -> 'ui', '{}')
      FROM pg_catalog.jsonb_array_elements(graph -> 'edges') e;
    RETURN QUERY SELECT next_version, to_version;
END
$$;
COMMENT ON FUNCTION api.rollback_workflow(uuid, integer, text) IS
  'Publishes the graph of an earlier version as the next version (history is never edited) and resets the draft to it; new executions run it, running ones keep theirs. PT404 for an unknown version, PT409 for the version already published, 400 (23514) when that graph no longer validates. Viewers are refused.';
GRANT EXECUTE ON FUNCTION api.rollback_workflow(uuid, integer, text) TO authenticated;

CREATE FUNCTION internal.store_flow(w api.workflows, flow jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    rows jsonb := flowtrack.react_flow_split(flow::text);
    node_count integer;
BEGIN
    DELETE FROM api.workflow_edges e WHERE e.workflow_id = w.id;
    DELETE FROM api.workflow_nodes n WHERE n.workflow_id = w.id;
    INSERT INTO api.workflow_nodes (workspace_id, workflow_id, node_key, node_type, label, config, position, ui)
    SELECT w.workspace_id, w.id, r.node_key, r.node_type, r.label, r.config, r.position, r.ui
      FROM jsonb_to_recordset(rows -> 'nodes')
           AS r (node_key text, node_type text, label text, config jsonb, position jsonb, ui jsonb);
    GET DIAGNOSTICS node_count = ROW_COUNT;
    INSERT INTO api.workflow_edges (workspace_id, workflow_id, edge_key, source_key, target_key,
                                    source_handle, target_handle, condition, label, ui)
    SELECT w.workspace_id, w.id, r.edge_key, r.source_key, r.target_key, r.source_handle, r.target_handle,
           CASE WHEN jsonb_typeof(r.condition) = 'null' THEN NULL ELSE r.condition END, r.label, r.ui
      FROM jsonb_to_recordset(rows -> 'edges')
           AS r (edge_key text, source_key text, target_key text, source_handle text, target_handle text,
                 condition jsonb, label text, ui jsonb);
    IF rows -> 'viewport' IS NOT NULL AND jsonb_typeof(rows -> 'viewport') <> 'null' THEN
        UPDATE api.workflows SET viewport = rows -> 'viewport' WHERE id = w.id;
    END IF;
    RETURN node_count;
END
$$;
COMMENT ON FUNCTION internal.store_flow(api.workflows, jsonb) IS
  'Replaces a workflow''s nodes and edges with React Flow state (lossless: unknown fields go to ui). Returns the node count.';

-- One size cap for every way a graph comes in (React Flow canvases, n8n
-- exports). Real n8n templates reach 1.2 MB, so it is larger than the form
-- payload cap; what it bounds is the work one call may cause (every step
-- of an import is linear in the input).
-- The setting is superuser-only (a caller must not raise it), as superuser:
--   ALTER DATABASE flowtrack SET flowtrack.max_import_bytes = 4194304;
CREATE FUNCTION internal.max_import_bytes() RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT flowtrack.max_import_bytes()
$$;
COMMENT ON FUNCTION internal.max_import_bytes() IS
  'Largest graph import accepted, in bytes of JSON text (the superuser-only setting flowtrack.max_import_bytes, default 2 MiB); the same for every import path.';

CREATE FUNCTION internal.check_import_size(field text, doc text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF octet_length(doc) > internal.max_import_bytes() THEN
        RAISE EXCEPTION '%: % bytes exceed the import limit of % bytes', field, octet_length(doc), internal.max_import_bytes()
            USING ERRCODE = '54000', HINT = 'Split the workflow, or raise flowtrack.max_import_bytes.';
    END IF;
END
$$;
COMMENT ON FUNCTION internal.check_import_size(text, text) IS
  'Raises 54000 (HTTP 413) naming the field when an imported graph is over internal.max_import_bytes().';

CREATE FUNCTION api.import_react_flow(workflow_id uuid, flow jsonb)
RETURNS TABLE (nodes integer, edges integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    w api.workflows := internal.lock_workflow(workflow_id);
BEGIN
    PERFORM internal.check_import_size('flow', flow::text);
    IF flow IS NULL OR jsonb_typeof(flow) <> 'object' THEN
        RAISE EXCEPTION 'flow: must be a JSON object {nodes, edges, viewport}'
            USING ERRCODE = '22023', HINT = 'Send React Flow''s toObject() output.';
    END IF;
    RETURN QUERY SELECT internal.store_flow(w, flow),
                        CASE WHEN jsonb_typeof(flow -> 'edges') = 'array' THEN jsonb_array_length(flow -> 'edges') ELSE 0 END;
END
$$;
COMMENT ON FUNCTION api.import_react_flow(uuid, jsonb) IS
  'Replaces the workflow''s draft graph with React Flow canvas state ({nodes, edges, viewport} from toObject()). Positions, handles, labels and unknown fields survive export unchanged. 22023 names a node or edge that cannot be stored.';
GRANT EXECUTE ON FUNCTION api.import_react_flow(uuid, jsonb) TO authenticated;

CREATE FUNCTION api.export_react_flow(workflow_id uuid) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    SELECT flowtrack.react_flow_join(jsonb_build_object(
        'viewport', w.viewport,
        'nodes', coalesce((SELECT jsonb_agg(to_jsonb(n)) FROM api.workflow_nodes n WHERE n.workflow_id = w.id), '[]'),
        'edges', coalesce((SELECT jsonb_agg(to_jsonb(e)) FROM api.workflow_edges e WHERE e.workflow_id = w.id), '[]'))::text)
      FROM internal.find_workflow(workflow_id) w
$$;
COMMENT ON FUNCTION api.export_react_flow(uuid) IS
  'The workflow''s draft graph as React Flow state {nodes, edges, viewport}, exactly as last imported plus edits.';
GRANT EXECUTE ON FUNCTION api.export_react_flow(uuid) TO authenticated;

CREATE FUNCTION api.import_n8n(workflow jsonb, name text DEFAULT NULL)
RETURNS TABLE (workflow_id uuid, nodes integer, problems jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
    doc text := workflow::text;
    converted jsonb;
    w api.workflows;
BEGIN
    PERFORM internal.check_import_size('workflow', doc);
    IF workflow IS NULL OR jsonb_typeof(workflow) <> 'object' THEN
        RAISE EXCEPTION 'workflow: must be an n8n workflow export (a JSON object with nodes and connections)'
            USING ERRCODE = '22023', HINT = 'In n8n: Workflow menu, Download.';
    END IF;
    converted := flowtrack.n8n_to_flow(doc);
    INSERT INTO api.workflows (workspace_id, created_by, name, description)
    VALUES (ws, flowtrack.current_user_id(),
            left(coalesce(nullif(btrim(coalesce(import_n8n.name, workflow ->> 'name')), ''), 'Imported from n8n'), 200),
            'Imported from n8n')
    RETURNING * INTO w;
    RETURN QUERY SELECT w.id, internal.store_flow(w, converted -> 'flow'), converted -> 'problems';
END
$$;
COMMENT ON FUNCTION api.import_n8n(jsonb, text) IS
  'Creates a draft workflow from an n8n export (nodes + connections) through the node-type mapping. Returns every node, setting, condition or connection that could not be mapped as problems [{code, node, edge, message, hint}]; nothing is dropped (unmapped nodes arrive as N8N_* types). Validate before publishing.';
GRANT EXECUTE ON FUNCTION api.import_n8n(jsonb, text) TO authenticated;

CREATE FUNCTION api.workflow_order(workflow_id uuid) RETURNS TABLE ("position" integer, node text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    SELECT o.* FROM internal.find_workflow(workflow_id) w,
           flowtrack.topological_order(internal.workflow_graph(w.id)::text) o
$$;
COMMENT ON FUNCTION api.workflow_order(uuid) IS 'The draft graph''s nodes in topological order (loop back edges left out).';
GRANT EXECUTE ON FUNCTION api.workflow_order(uuid) TO authenticated;

CREATE FUNCTION api.explain_workflow(workflow_id uuid, context jsonb DEFAULT '{}')
RETURNS TABLE (node text, node_type text, runs boolean, reason text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    SELECT x.* FROM internal.find_workflow(workflow_id) w,
           flowtrack.explain(internal.workflow_graph(w.id)::text, context::text) x
$$;
COMMENT ON FUNCTION api.explain_workflow(uuid, jsonb) IS
  'Dry run of the draft graph for a context: per node, whether it would run and why (each edge condition with the values it saw).';
GRANT EXECUTE ON FUNCTION api.explain_workflow(uuid, jsonb) TO authenticated;

CREATE FUNCTION api.explain_execution(execution_id uuid)
RETURNS TABLE (node text, node_type text, runs boolean, reason text, log jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
#variable_conflict use_column
DECLARE
    e api.workflow_executions;
BEGIN
    SELECT * INTO e FROM api.workflow_executions x
     WHERE x.id = explain_execution.execution_id AND x.workspace_id = internal.require_workspace();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'execution_id: no execution % in this workspace', explain_execution.execution_id
            USING ERRCODE = 'PT404', HINT = 'List executions with GET /workflow_executions.';
    END IF;
    -- The execution's log lines (one index scan by execution_id), per node
    -- in order; nodes in the order their first line was written, then the
    -- nodes that never ran in graph order.
    RETURN QUERY
    WITH lines AS (
        SELECT coalesce(s.node_key, l.data ->> 'node') AS line_node,
               pg_catalog.min(l.created_at) AS first_at,
               pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'at', l.created_at, 'level', l.level, 'message', l.message,
                   'duration_ms', l.duration_ms, 'data', l.data) ORDER BY l.created_at, l.seq) AS lines
          FROM api.execution_logs l
          LEFT JOIN api.execution_steps s ON s.id = l.step_id AND s.workspace_id = l.workspace_id
         WHERE l.execution_id = e.id AND l.workspace_id = e.workspace_id
         GROUP BY 1)
    SELECT x.node, x.node_type, x.runs, x.reason, coalesce(g.lines, '[]'::jsonb)
      FROM api.workflow_versions v
     CROSS JOIN flowtrack.explain(v.graph::text, e.context::text) WITH ORDINALITY AS x (node, node_type, runs, reason, i)
      LEFT JOIN lines g ON g.line_node = x.node
     WHERE v.workflow_id = e.workflow_id AND v.version = e.version
     ORDER BY g.first_at NULLS LAST, x.i;
END
$$;
COMMENT ON FUNCTION api.explain_execution(uuid) IS
  'Per node of an execution''s pinned version: whether it was taken and why (each edge condition against the execution''s context), and its log lines in order (log: [{at, level, message, duration_ms, data}]: started, completed, failed, retrying, waiting). Nodes that ran come first, in the order they ran. PT404 for an execution not in the caller''s workspace.';
GRANT EXECUTE ON FUNCTION api.explain_execution(uuid) TO authenticated;

-- ------------------------------------------------------------ executions ----

-- The context conditions and templates see: the payload's own keys, plus
-- trigger (the payload), lead (with lead.fields = custom fields merged with
-- the submitted answers) and steps (each finished node's output).
CREATE FUNCTION internal.start_execution(ws uuid, workflow_id uuid, trigger_type text, payload jsonb,
                                                    idempotency_key text, lead_id uuid DEFAULT NULL,
                                                    OUT execution_id uuid, OUT created boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    w api.workflows;
    p jsonb := coalesce(payload, '{}');
    lead jsonb;
    ctx jsonb;
    max_steps integer;
    budget integer;
BEGIN
    PERFORM flowtrack.act_for(ws, 'owner');
    IF idempotency_key IS NULL OR length(idempotency_key) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'idempotency_key: must be 1 to 200 characters'
            USING ERRCODE = '22023', HINT = 'Use the trigger''s own event id, e.g. the form submission id.';
    END IF;
    SELECT * INTO w FROM api.workflows x WHERE x.id = start_execution.workflow_id AND x.deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow_id: no workflow % in this workspace', workflow_id
            USING ERRCODE = 'PT404', HINT = 'List workflows with GET /workflows.';
    END IF;
    IF w.status <> 'active' OR w.published_version IS NULL THEN
        RAISE EXCEPTION 'workflow_id: workflow % is not active', workflow_id
            USING ERRCODE = 'PT409', HINT = 'Publish and activate the workflow first.';
    END IF;
    IF jsonb_typeof(p) <> 'object' THEN
        p := jsonb_build_object('value', p);
    END IF;
    lead := p -> 'lead';
    IF (lead IS NULL OR jsonb_typeof(lead) <> 'object') AND start_execution.lead_id IS NOT NULL THEN
        SELECT to_jsonb(l) INTO lead FROM api.leads l WHERE l.id = start_execution.lead_id;
    END IF;
    IF jsonb_typeof(lead) = 'object' THEN
        lead := lead || jsonb_build_object('fields',
                    coalesce(lead -> 'custom_fields', '{}') || CASE WHEN jsonb_typeof(p -> 'fields') = 'object'
                                                                    THEN p -> 'fields' ELSE '{}' END);
    END IF;
    ctx := p || jsonb_build_object('trigger', p, 'lead', coalesce(lead, 'null'), 'steps', '{}'::jsonb);
    budget := coalesce(internal.step_budget(ws), 200);
    max_steps := internal.max_steps(w, budget);
    INSERT INTO api.workflow_executions AS e (workspace_id, workflow_id, version, status, trigger_type, trigger_payload,
                                              context, idempotency_key, lead_id, max_steps, started_at)
    VALUES (ws, w.id, w.published_version, 'running', trigger_type, p, ctx, idempotency_key, lead_id,
            max_steps, now())
    ON CONFLICT ON CONSTRAINT workflow_executions_workflow_id_idempotency_key_key DO NOTHING
    RETURNING e.id INTO execution_id;
    created := execution_id IS NOT NULL;
    IF NOT created THEN
        SELECT e.id INTO execution_id FROM api.workflow_executions e
         WHERE e.workflow_id = w.id AND e.idempotency_key = start_execution.idempotency_key;
        RETURN;
    END IF;
    -- An unverified owner's workspace sends no email (sql/0011). Checked
    -- here, before the engine, so the refusal keeps its SQLSTATE; the
    -- owner lookup comes first, so a verified workspace reads no graph.
    IF NOT coalesce(internal.owner_email_verified(ws), false)
       AND EXISTS (SELECT 1 FROM api.workflow_versions v, jsonb_array_elements(v.graph -> 'nodes') n
                    WHERE v.workflow_id = w.id AND v.version = w.published_version
                      AND n ->> 'type' = 'ACTION_SEND_EMAIL') THEN
        PERFORM internal.refuse_unverified_sender(ws);
    END IF;
    -- Advance the graph now, in this transaction: logic and lead updates
    -- run here, delays are scheduled, outside actions become jobs.
    PERFORM flowtrack.run_execution(execution_id, ws, w.id, w.published_version, trigger_type, ctx::text,
                                    start_execution.lead_id, max_steps, budget);
    -- The rows every execution of a workflow (its counter) or of a workspace
    -- (its quota) updates come last, the hottest last: their locks are held
    -- from here to commit only, not across the graph walk, so concurrent
    -- submissions queue on them for less time. Only a new execution is
    -- metered; over the plan this raises PT429 and everything above rolls
    -- back with it.
    UPDATE api.workflows SET total_executions = total_executions + 1, last_executed_at = now() WHERE id = w.id;
    PERFORM internal.consume_quota(ws, 'executions_per_month', 1);
END
$$;
COMMENT ON FUNCTION internal.start_execution(uuid, uuid, text, jsonb, text, uuid) IS
  'Starts (or, for a repeated idempotency_key, finds) an execution of an active workflow, pinned to its published version, and advances its graph in the same transaction, creating at most the plan''s step_budget steps (beyond that the execution fails with step_budget_exceeded). Counts one executions_per_month unit; PT429 over the plan.';

CREATE FUNCTION api.start_execution(workflow_id uuid, payload jsonb DEFAULT '{}', idempotency_key text DEFAULT NULL)
RETURNS TABLE (execution_id uuid, created boolean)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    SELECT * FROM internal.start_execution(internal.require_workspace(true), workflow_id, 'manual', payload,
                                           coalesce(idempotency_key, gen_random_uuid()::text))
$$;
COMMENT ON FUNCTION api.start_execution(uuid, jsonb, text) IS
  'Runs an active workflow manually. The same idempotency_key returns the same execution (created = false). HTTP 429 over the plan''s executions_per_month.';
GRANT EXECUTE ON FUNCTION api.start_execution(uuid, jsonb, text) TO authenticated;

-- Steps are reached by id from the worker and pg_cron, which act for no
-- workspace yet: the resolver (BYPASSRLS, nothing else) tells which.
CREATE FUNCTION internal.step_workspace(step_id uuid) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.workspace_id FROM api.execution_steps s WHERE s.id = step_id
$$;
COMMENT ON FUNCTION internal.step_workspace(uuid) IS
  'The workspace of an execution step, or NULL. Owned by flowtrack_resolver (BYPASSRLS).';

CREATE FUNCTION internal.due_steps(n integer) RETURNS TABLE (id uuid, workspace_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.id, s.workspace_id FROM api.execution_steps s
     WHERE s.status = 'scheduled' AND s.run_at <= now() ORDER BY s.run_at LIMIT n
$$;
COMMENT ON FUNCTION internal.due_steps(integer) IS
  'Scheduled (delay) steps whose run_at has come, oldest first. Owned by flowtrack_resolver (BYPASSRLS).';

CREATE FUNCTION internal.require_step_workspace(step_id uuid) RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
DECLARE
    ws uuid := internal.step_workspace(step_id);
BEGIN
    IF ws IS NULL THEN
        RAISE EXCEPTION 'step_id: no step %', step_id
            USING ERRCODE = 'PT404', HINT = 'Pass the step_id from the job payload.';
    END IF;
    RETURN ws;
END
$$;
COMMENT ON FUNCTION internal.require_step_workspace(uuid) IS 'The workspace that owns the step (PT404 when there is none).';

CREATE FUNCTION internal.complete_step(step_id uuid, output jsonb DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
BEGIN
    PERFORM flowtrack.act_for(internal.require_step_workspace(step_id), 'owner');
    RETURN flowtrack.complete_step(step_id, output::text);
END
$$;
COMMENT ON FUNCTION internal.complete_step(uuid, jsonb) IS
  'Worker-facing: a waiting step is done (job succeeded, delay over); the graph carries on from it in this transaction. Returns the execution status. 55000 when the step was already closed.';

CREATE FUNCTION internal.fail_step(step_id uuid, error text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
BEGIN
    PERFORM flowtrack.act_for(internal.require_step_workspace(step_id), 'owner');
    RETURN flowtrack.fail_step(step_id, coalesce(error, 'failed'));
END
$$;
COMMENT ON FUNCTION internal.fail_step(uuid, text) IS
  'Worker-facing: a waiting step failed for good; edges from its error handle carry on, otherwise the execution fails. Returns the execution status.';

REVOKE ALL ON FUNCTION internal.complete_step(uuid, jsonb), internal.fail_step(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION internal.complete_step(uuid, jsonb), internal.fail_step(uuid, text) TO flowtrack_worker;

-- A step whose advance raised (a due delay, a finished job): the step and
-- its execution fail with the error, so the step is not due again, the job
-- report that finished it still commits, and nothing else waits on it.
CREATE FUNCTION internal.fail_step_with_error(step_id uuid, sqlstate text, message text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    err jsonb := jsonb_build_object('code', 'step_error', 'sqlstate', sqlstate, 'message', message);
    exec uuid;
    node text;
    ws uuid;
    took bigint;
BEGIN
    UPDATE api.execution_steps s
       SET status = 'failed', error = err, completed_at = now(), attempt = s.attempt + 1
     WHERE s.id = step_id AND s.status IN ('scheduled', 'running', 'pending')
    RETURNING s.execution_id, s.node_key, s.workspace_id, s.duration_ms INTO exec, node, ws, took;
    IF exec IS NOT NULL THEN
        PERFORM flowtrack.log_execution_event(ws, exec, step_id, 'error', 'failed: ' || message,
                                              pg_catalog.jsonb_build_object('sqlstate', sqlstate), took);
    END IF;
    UPDATE api.workflow_executions e
       SET status = 'failed', error = err || jsonb_build_object('node', node), completed_at = now()
     WHERE e.id = exec AND e.status IN ('queued', 'running', 'waiting');
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'step % failed (% %) and could not be marked failed (% %)',
        step_id, sqlstate, message, SQLSTATE, SQLERRM;
END
$$;
COMMENT ON FUNCTION internal.fail_step_with_error(uuid, text, text) IS
  'Marks a step whose advance raised an error failed (with an error log line), and its execution failed with that error (code step_error, sqlstate, message, node). Used where one step''s failure must not roll back others: run_due_steps, job reports.';

-- A step's job that failed and will run again (the worker's fail_jobs with
-- retry, or a lease that expired under a vanished worker): the one place
-- both pass is the job going from running back to queued with its attempt
-- counted (release_jobs gives the attempt back and is no retry).
CREATE FUNCTION internal.log_step_retry() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM flowtrack.log_execution_event(
        NEW.workspace_id, (NEW.payload ->> 'execution_id')::uuid, (NEW.payload ->> 'step_id')::uuid, 'warn',
        pg_catalog.format('attempt %s failed, retrying: %s', NEW.attempts, NEW.last_error),
        pg_catalog.jsonb_build_object('attempt', NEW.attempts, 'run_at', NEW.run_at),
        (EXTRACT(epoch FROM pg_catalog.now() - NEW.created_at) * 1000)::bigint);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION internal.log_step_retry() IS
  'AFTER UPDATE trigger on internal.jobs: a step''s job that goes back to the queue for another attempt leaves a warn line (attempt, error, when it runs again) in its execution''s log.';
CREATE TRIGGER log_step_retry AFTER UPDATE OF status ON internal.jobs
    FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status = 'queued' AND NEW.attempts = OLD.attempts
          AND NEW.workspace_id IS NOT NULL AND NEW.payload ? 'step_id' AND NEW.payload ? 'execution_id')
    EXECUTE FUNCTION internal.log_step_retry();
COMMENT ON TRIGGER log_step_retry ON internal.jobs IS
  'Logs every retry of a step''s job (internal.log_step_retry); rows of other jobs and other updates (claims, heartbeats, releases) skip it in the WHEN clause.';

-- A job that carries a step id finishes its step: the worker's reports
-- (internal.complete_jobs, fail_jobs and the burials of dead jobs) continue
-- the graph.
CREATE FUNCTION internal.finish_job_step(ws uuid, step uuid, succeeded boolean, result jsonb, error text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- The queue's reports plan without nested loops (sql/0006_jobs.sql); the
-- engine's lookups need them back.
SET flowtrack.workspace_id = '' SET enable_nestloop = on AS $$
BEGIN
    PERFORM flowtrack.act_for(ws, 'owner');
    IF NOT EXISTS (SELECT 1 FROM api.execution_steps s
                    WHERE s.id = step AND s.workspace_id = ws AND s.status IN ('running', 'scheduled', 'pending')) THEN
        RETURN;
    END IF;
    -- A failing advance fails the step and its execution, not the job
    -- report: otherwise the job's lease would lapse and the side effect be
    -- performed again, forever.
    BEGIN
        IF succeeded THEN
            PERFORM flowtrack.complete_step(step, coalesce(result, '{}')::text);
        ELSE
            PERFORM flowtrack.fail_step(step, coalesce(error, 'job dead-lettered'));
        END IF;
    EXCEPTION
        -- Transient: the worker's report fails and is retried.
        WHEN serialization_failure OR deadlock_detected THEN RAISE;
        WHEN OTHERS THEN PERFORM internal.fail_step_with_error(step, SQLSTATE, SQLERRM);
    END;
END
$$;
COMMENT ON FUNCTION internal.finish_job_step(uuid, uuid, boolean, jsonb, text) IS
  'A job of a step ended: success completes the step with the job''s result, death fails it, and the graph advances in the reporting transaction; an advance that raises fails the step and its execution (internal.fail_step_with_error) and the job report still commits.';
REVOKE ALL ON FUNCTION internal.finish_job_step(uuid, uuid, boolean, jsonb, text) FROM PUBLIC;

CREATE FUNCTION internal.run_due_steps(n integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET flowtrack.workspace_id = '' AS $$
DECLARE
    due record;
    done integer := 0;
BEGIN
    FOR due IN SELECT * FROM internal.due_steps(n) LOOP
        PERFORM flowtrack.act_for(due.workspace_id, 'owner');
        -- Workers tick every second, several at once, and pg_cron every
        -- minute: a step another caller holds or has completed is skipped,
        -- not waited for.
        PERFORM 1 FROM api.execution_steps s WHERE s.id = due.id AND s.status = 'scheduled' FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        -- Each step in its own subtransaction: a step whose advance fails
        -- rolls back alone and is recorded as failed; every other step (of
        -- every other tenant) in the batch still commits. A cancel or a
        -- timeout (57014), a deadlock or a serialization failure stops it.
        BEGIN
            PERFORM flowtrack.complete_step(due.id, jsonb_build_object('waited_until', now())::text);
            done := done + 1;
        EXCEPTION
            -- Transient: the batch stops and runs again next minute.
            WHEN serialization_failure OR deadlock_detected THEN RAISE;
            WHEN OTHERS THEN PERFORM internal.fail_step_with_error(due.id, SQLSTATE, SQLERRM);
        END;
    END LOOP;
    RETURN done;
END
$$;
COMMENT ON FUNCTION internal.run_due_steps(integer) IS
  'Completes delay steps whose run_at has come and advances their executions, each in its own subtransaction: a step whose advance fails is marked failed with its execution (internal.fail_step_with_error) and the rest of the batch commits. Steps another caller holds are skipped (SKIP LOCKED). Returns the steps completed. Run through internal.release_due_work by the worker every second and by pg_cron every minute.';

RESET ROLE;
GRANT SELECT (id, workspace_id, status, run_at) ON api.execution_steps TO flowtrack_resolver;
ALTER FUNCTION internal.step_workspace(uuid) OWNER TO flowtrack_resolver;
ALTER FUNCTION internal.due_steps(integer) OWNER TO flowtrack_resolver;
GRANT EXECUTE ON FUNCTION internal.step_workspace(uuid), internal.due_steps(integer) TO flowtrack_owner;
