-- Executions: one row per run of a workflow, pinned to the version it started
-- on, with an idempotency key unique per workflow. Steps and logs hold what
-- the graph engine (0031) does with it.
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
    -- bigint: a run that waits on delays lasts years (LOGIC_DELAY allows
    -- 3,650 days); integer milliseconds overflow after 24.8 days.
    duration_ms     bigint GENERATED ALWAYS AS
                    ((extract(epoch FROM completed_at - started_at) * 1000)::bigint) STORED,
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
    -- bigint, as on executions: a delay step lasts up to ten years.
    duration_ms  bigint GENERATED ALWAYS AS
                 ((extract(epoch FROM completed_at - started_at) * 1000)::bigint) STORED,
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

-- Execution logs: 90 days (seed 000), monthly partitions dropped whole.
SELECT internal.manage_partitions('api.execution_logs', 'monthly', premake => 4, retention => interval '90 days');

SELECT flowtrack.enable_tenant_isolation(t, key_scope => 'executions')
  FROM unnest(ARRAY['api.workflow_executions', 'api.execution_steps', 'api.execution_logs']::regclass[]) AS t;
-- Executions are written by the engine only; members read them.
GRANT SELECT ON api.workflow_executions, api.execution_steps, api.execution_logs TO authenticated;

-- Starting an execution (internal.start_execution, api.start_execution)
-- belongs to the graph engine: sql/0031_graph_engine.sql.

-- pg_cron is the superuser's: keep every partitioned table's months ahead.
RESET ROLE;
SELECT cron.schedule('flowtrack-partitions', '17 3 * * *',
    $$SELECT count(*) FROM flowtrack.run_maintenance()$$);
