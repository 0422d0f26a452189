-- The node-type registry (the graph engine reads it) and the engine's run
-- state on executions. Built-in types come from the extension; a deployment
-- adds its own with an INSERT. A worker action is executor job:<kind> for a
-- kind internal.jobs accepts (email, http_request, webhook): a new kind needs
-- a worker handler and the kind added to both CHECKs and registry.rs.
SELECT flowtrack.version();
GRANT EXECUTE ON FUNCTION flowtrack.builtin_node_types() TO flowtrack_owner;
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE api.node_types (
    node_type     text PRIMARY KEY CHECK (node_type ~ '^[A-Z][A-Z0-9_]*$'),
    category      text NOT NULL CHECK (category IN ('trigger', 'action', 'logic')),
    -- job:<kind> only for the kinds internal.jobs accepts: any other would
    -- pass here and fail every execution reaching the node.
    executor      text NOT NULL CHECK (executor IN ('trigger', 'condition', 'delay', 'update_lead', 'add_lead_event',
                                                    'job:email', 'job:http_request', 'job:webhook')),
    description   text NOT NULL,
    config_schema jsonb NOT NULL CHECK (jsonb_typeof(config_schema) = 'object'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((category = 'trigger') = (executor = 'trigger')),
    CHECK (category <> 'trigger' OR node_type LIKE 'TRIGGER\_%')
);
COMMENT ON TABLE api.node_types IS
  'Registry of workflow node types: category, what the engine does on reaching one (executor), and the JSON Schema its config must match. Shared by all workspaces; read-only over the API.';
COMMENT ON COLUMN api.node_types.executor IS
  'trigger | condition | delay | update_lead | add_lead_event (inside the database) | job:email, job:http_request, job:webhook (one internal.jobs row of that kind for the worker).';

INSERT INTO api.node_types (node_type, category, executor, description, config_schema)
SELECT node_type, category, executor, description, config_schema FROM flowtrack.builtin_node_types();

-- Not tenant data: everyone signed in may read the catalogue, nobody
-- writes it over the API.
SELECT internal.enable_catalog_read('api.node_types');
COMMENT ON POLICY catalog_read ON api.node_types IS 'The registry is a shared catalogue: readable by every caller.';
CREATE POLICY node_types_owner ON api.node_types FOR ALL TO flowtrack_owner USING (true) WITH CHECK (true);
COMMENT ON POLICY node_types_owner ON api.node_types IS 'Migrations (as the owner) maintain the registry.';
GRANT SELECT ON api.node_types TO authenticated;

ALTER TABLE api.workflow_executions ADD COLUMN graph_state jsonb NOT NULL DEFAULT '{}';
COMMENT ON COLUMN api.workflow_executions.graph_state IS
  'Graph engine run state: resolved edges (by index in the version graph), visits per node, open steps, nodes stopped by max_visits.';
