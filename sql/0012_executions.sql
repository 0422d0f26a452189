-- Executions: one row per run of a workflow, pinned to the version it started
-- on, with an idempotency key unique per workflow. Steps and logs hold what
-- the graph engine does with it. Starting an execution is a metered event
-- (executions_per_month).
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE api.workflow_executions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id    uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    workflow_id     uuid NOT NULL,
    version         integer NOT NULL CHECK (version > 0),
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'waiting', 'completed', 'failed', 'cancelled', 'timed_out')),
    trigger_type    text NOT NULL CHECK (trigger_type IN ('form', 'webhook', 'schedule', 'demo_booked', 'manual', 'api')),
    trigger_payload jsonb NOT NULL DEFAULT '{}',
    context         jsonb NOT NULL DEFAULT '{}',
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    lead_id         uuid,
    error           jsonb,
    step_count      integer NOT NULL DEFAULT 0,
    max_steps       integer NOT NULL DEFAULT 1000 CHECK (max_steps BETWEEN 1 AND 100000),
    retry_count     integer NOT NULL DEFAULT 0,
    started_at      timestamptz,
    completed_at    timestamptz,
    duration_ms     integer GENERATED ALWAYS AS
                    ((extract(epoch FROM completed_at - started_at) * 1000)::integer) STORED,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, idempotency_key),
    UNIQUE (workspace_id, id),
    CONSTRAINT workflow_executions_workflow_fk FOREIGN KEY (workspace_id, workflow_id)
        REFERENCES api.workflows (workspace_id, id) ON DELETE CASCADE,
    CONSTRAINT workflow_executions_version_fk FOREIGN KEY (workflow_id, version)
        REFERENCES api.workflow_versions (workflow_id, version),
    CONSTRAINT workflow_executions_lead_fk FOREIGN KEY (workspace_id, lead_id)
        REFERENCES api.leads (workspace_id, id) ON DELETE SET NULL (lead_id)
);
CREATE INDEX workflow_executions_workspace_workflow ON api.workflow_executions (workspace_id, workflow_id);
CREATE INDEX workflow_executions_workspace_created ON api.workflow_executions (workspace_id, created_at DESC);
CREATE INDEX workflow_executions_workflow_status ON api.workflow_executions (workflow_id, status, created_at DESC);
CREATE INDEX workflow_executions_version ON api.workflow_executions (workflow_id, version);
CREATE INDEX workflow_executions_lead ON api.workflow_executions (workspace_id, lead_id);
CREATE INDEX workflow_executions_unfinished ON api.workflow_executions (status)
    WHERE status IN ('queued', 'running', 'waiting');
COMMENT ON TABLE api.workflow_executions IS
  'One run of a workflow, pinned to the published version it started on. (workflow_id, idempotency_key) is unique: the same trigger twice is one execution.';
COMMENT ON COLUMN api.workflow_executions.max_steps IS 'Guard against runaway loops: the engine fails the execution after this many steps.';

CREATE TABLE api.execution_steps (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES api.workspaces (id) ON DELETE CASCADE,
    execution_id uuid NOT NULL,
    node_key     text NOT NULL,
    node_type    text NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'scheduled', 'running', 'completed', 'failed', 'skipped')),
    attempt      integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 25),
    run_at       timestamptz NOT NULL DEFAULT now(),
    input        jsonb,
    output       jsonb,
    error        jsonb,
    started_at   timestamptz,
    completed_at timestamptz,
    duration_ms  integer GENERATED ALWAYS AS
                 ((extract(epoch FROM completed_at - started_at) * 1000)::integer) STORED,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT execution_steps_execution_fk FOREIGN KEY (workspace_id, execution_id)
        REFERENCES api.workflow_executions (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX execution_steps_execution ON api.execution_steps (workspace_id, execution_id, created_at);
CREATE INDEX execution_steps_workspace_id ON api.execution_steps (workspace_id);
CREATE INDEX execution_steps_due ON api.execution_steps (run_at) WHERE status = 'scheduled';
COMMENT ON TABLE api.execution_steps IS 'One visit of one node within an execution, with its input, output, attempts and timing.';

CREATE TABLE api.execution_logs (
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    step_id      uuid,
    level        text NOT NULL DEFAULT 'info' CHECK (level IN ('debug', 'info', 'warn', 'error')),
    message      text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX execution_logs_execution ON api.execution_logs (execution_id, created_at);
CREATE INDEX execution_logs_workspace ON api.execution_logs (workspace_id, created_at DESC);
COMMENT ON TABLE api.execution_logs IS 'Detailed execution log lines. Partitioned monthly by created_at; old months are dropped, not deleted.';

SELECT internal.ensure_monthly_partitions('api.execution_logs'::regclass);

SELECT flowtrack.enable_tenant_isolation('api.workflow_executions'::regclass);
SELECT flowtrack.enable_tenant_isolation('api.execution_steps'::regclass);
SELECT flowtrack.enable_tenant_isolation('api.execution_logs'::regclass);
-- Executions are written by the engine only; members read them.
GRANT SELECT ON api.workflow_executions, api.execution_steps, api.execution_logs TO authenticated;

CREATE FUNCTION internal.start_execution(ws uuid, workflow_id uuid, trigger_type text, payload jsonb,
                                         idempotency_key text, lead_id uuid DEFAULT NULL,
                                         OUT execution_id uuid, OUT created boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, api, internal
SET flowtrack.workspace_id = '' SET flowtrack.workspace_role = '' AS $$
DECLARE
    w api.workflows;
BEGIN
    PERFORM set_config('flowtrack.workspace_id', ws::text, true);
    PERFORM set_config('flowtrack.workspace_role', 'owner', true);
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
    INSERT INTO api.workflow_executions AS e (workspace_id, workflow_id, version, trigger_type, trigger_payload,
                                              idempotency_key, lead_id)
    VALUES (ws, w.id, w.published_version, trigger_type, coalesce(payload, '{}'), idempotency_key, lead_id)
    ON CONFLICT ON CONSTRAINT workflow_executions_workflow_id_idempotency_key_key DO NOTHING
    RETURNING e.id INTO execution_id;
    created := execution_id IS NOT NULL;
    IF NOT created THEN
        SELECT e.id INTO execution_id FROM api.workflow_executions e
         WHERE e.workflow_id = w.id AND e.idempotency_key = start_execution.idempotency_key;
        RETURN;
    END IF;
    -- Only a new execution is metered; over the plan this raises PT429 and
    -- the insert above rolls back with it.
    PERFORM internal.consume_quota(ws, 'executions_per_month', 1);
    UPDATE api.workflows SET total_executions = total_executions + 1, last_executed_at = now() WHERE id = w.id;
END
$$;
COMMENT ON FUNCTION internal.start_execution(uuid, uuid, text, jsonb, text, uuid) IS
  'Starts (or, for a repeated idempotency_key, finds) an execution of an active workflow, pinned to its published version. Counts one executions_per_month unit; PT429 over the plan.';

CREATE FUNCTION api.start_execution(workflow_id uuid, payload jsonb DEFAULT '{}', idempotency_key text DEFAULT NULL)
RETURNS TABLE (execution_id uuid, created boolean)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, api, internal AS $$
    SELECT * FROM internal.start_execution(internal.require_workspace(true), workflow_id, 'manual', payload,
                                           coalesce(idempotency_key, gen_random_uuid()::text))
$$;
COMMENT ON FUNCTION api.start_execution(uuid, jsonb, text) IS
  'Runs an active workflow manually. The same idempotency_key returns the same execution (created = false). HTTP 429 over the plan''s executions_per_month.';
GRANT EXECUTE ON FUNCTION api.start_execution(uuid, jsonb, text) TO authenticated;

-- pg_cron is the superuser's: keep every partitioned table's months ahead.
RESET ROLE;
SELECT cron.schedule('flowtrack-partitions', '17 3 * * *',
    $$SELECT internal.ensure_monthly_partitions(p::regclass)
        FROM unnest(ARRAY['api.usage_events', 'api.execution_logs']) AS p$$);
