-- Workflows as graphs: nodes and edges (React Flow compatible), immutable
-- published versions, and the form fields a form trigger collects.
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE api.workflows (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id     uuid NOT NULL DEFAULT flowtrack.current_workspace_id()
                     REFERENCES api.workspaces (id) ON DELETE CASCADE,
    created_by       uuid DEFAULT flowtrack.current_user_id() REFERENCES api.users (id) ON DELETE SET NULL,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description      text CHECK (length(description) <= 5000),
    status           text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'paused', 'archived')),
    category         text,
    tags             text[] NOT NULL DEFAULT '{}',
    viewport         jsonb NOT NULL DEFAULT '{"x":0,"y":0,"zoom":1}',
    settings         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    published_version integer,
    total_executions bigint NOT NULL DEFAULT 0,
    last_executed_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    deleted_at       timestamptz,
    -- Children reference (workspace_id, id), so a row can never point into
    -- another tenant's workflow (foreign-key checks bypass RLS).
    UNIQUE (workspace_id, id)
);
CREATE INDEX workflows_workspace_status ON api.workflows (workspace_id, status) WHERE deleted_at IS NULL;
CREATE INDEX workflows_created_by ON api.workflows (created_by);
CREATE INDEX workflows_tags ON api.workflows USING gin (tags);
COMMENT ON TABLE api.workflows IS 'A workflow: a graph of trigger, action and logic nodes. Executions run its published version.';
COMMENT ON COLUMN api.workflows.published_version IS 'Version executions start on; NULL until first published.';
CREATE TRIGGER touch BEFORE UPDATE ON api.workflows FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE TABLE api.workflow_nodes (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL DEFAULT flowtrack.current_workspace_id() REFERENCES api.workspaces (id) ON DELETE CASCADE,
    workflow_id  uuid NOT NULL,
    node_key     text NOT NULL CHECK (length(node_key) BETWEEN 1 AND 200),
    node_type    text NOT NULL CHECK (node_type ~ '^[A-Z][A-Z0-9_]*$'),
    label        text,
    config       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    position     jsonb NOT NULL DEFAULT '{"x":0,"y":0}',
    ui           jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Keys are unique per workflow of a workspace: with the workspace left
    -- out, a node_key on another tenant's workflow_id answered 23505 when the
    -- key existed there and 23503 when it did not (issue 9). Now the foreign
    -- key below answers for both, like for a workflow that does not exist.
    UNIQUE (workspace_id, workflow_id, node_key),
    CONSTRAINT workflow_nodes_workflow_fk FOREIGN KEY (workspace_id, workflow_id)
        REFERENCES api.workflows (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX workflow_nodes_trigger ON api.workflow_nodes (workspace_id, node_type) WHERE node_type LIKE 'TRIGGER_%';
COMMENT ON TABLE api.workflow_nodes IS 'Graph nodes. node_key is the React Flow node id; ui keeps every other React Flow field verbatim.';
CREATE TRIGGER touch BEFORE UPDATE ON api.workflow_nodes FOR EACH ROW EXECUTE FUNCTION internal.touch_updated_at();

CREATE TABLE api.workflow_edges (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id  uuid NOT NULL DEFAULT flowtrack.current_workspace_id() REFERENCES api.workspaces (id) ON DELETE CASCADE,
    workflow_id   uuid NOT NULL,
    edge_key      text NOT NULL CHECK (length(edge_key) BETWEEN 1 AND 200),
    source_key    text NOT NULL,
    target_key    text NOT NULL,
    source_handle text,
    target_handle text,
    condition     jsonb,
    label         text,
    ui            jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, workflow_id, edge_key),  -- per tenant, as for nodes
    CONSTRAINT workflow_edges_workflow_fk FOREIGN KEY (workspace_id, workflow_id)
        REFERENCES api.workflows (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX workflow_edges_source ON api.workflow_edges (workflow_id, source_key);
COMMENT ON TABLE api.workflow_edges IS 'Directed edges between node keys; condition (JSON) gates the edge at run time.';

CREATE TABLE api.workflow_versions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL DEFAULT flowtrack.current_workspace_id() REFERENCES api.workspaces (id) ON DELETE CASCADE,
    workflow_id  uuid NOT NULL,
    version      integer NOT NULL CHECK (version > 0),
    graph        jsonb NOT NULL,
    change_note  text,
    created_by   uuid REFERENCES api.users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, version),
    CONSTRAINT workflow_versions_workflow_fk FOREIGN KEY (workspace_id, workflow_id)
        REFERENCES api.workflows (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX workflow_versions_workspace_workflow ON api.workflow_versions (workspace_id, workflow_id);
CREATE INDEX workflow_versions_created_by ON api.workflow_versions (created_by);
COMMENT ON TABLE api.workflow_versions IS 'Immutable snapshot of a workflow graph at publish time. Executions pin one.';

CREATE FUNCTION internal.forbid_version_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'workflow_versions: published versions are immutable'
        USING ERRCODE = '55000', HINT = 'Publish a new version instead.';
END
$$;
COMMENT ON FUNCTION internal.forbid_version_change() IS 'Keeps workflow_versions append-only.';
CREATE TRIGGER immutable BEFORE UPDATE ON api.workflow_versions
    FOR EACH ROW EXECUTE FUNCTION internal.forbid_version_change();

SELECT flowtrack.enable_tenant_isolation(t, key_scope => 'workflows')
  FROM unnest(ARRAY['api.workflows', 'api.workflow_nodes', 'api.workflow_edges', 'api.workflow_versions']::regclass[]) AS t;

-- Status and published_version change only through publish/activate RPCs,
-- which enforce validation and the active-workflow quota.
GRANT SELECT, DELETE ON api.workflows TO authenticated;
GRANT INSERT (workspace_id, name, description, category, tags, viewport, settings) ON api.workflows TO authenticated;
GRANT UPDATE (name, description, category, tags, viewport, settings, deleted_at) ON api.workflows TO authenticated;
GRANT SELECT, DELETE ON api.workflow_nodes, api.workflow_edges TO authenticated;
SELECT internal.grant_client_writes(t) FROM unnest(ARRAY['api.workflow_nodes', 'api.workflow_edges']::regclass[]) AS t;
GRANT SELECT ON api.workflow_versions TO authenticated;
