-- Executions: one row per run of a workflow, pinned to the version it started
-- on, with an idempotency key unique per workflow. Steps and logs hold what
-- the graph engine (0031) does with it.
SELECT flowtrack.version();
GRANT EXECUTE ON FUNCTION flowtrack.execution_logs_flushing() TO flowtrack_owner;
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
-- The daily-stats rollup reads executions started and finished since its
-- watermark. Both keys grow with time, so inserts append to the right edge.
CREATE INDEX workflow_executions_created_at ON api.workflow_executions (created_at);
CREATE INDEX workflow_executions_completed_at ON api.workflow_executions (completed_at) WHERE completed_at IS NOT NULL;
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
-- No index on workspace_id alone: execution_steps_execution leads with it,
-- which serves the workspace foreign key and RLS (25 bytes a step saved).
CREATE INDEX execution_steps_due ON api.execution_steps (run_at) WHERE status = 'scheduled';
COMMENT ON TABLE api.execution_steps IS 'One visit of one node within an execution, with its input, output, attempts and timing.';

-- Log lines cost bytes on every execution kept (issue 11: table + index
-- bytes per execution, with its steps and lines, at most 1 KB): no
-- surrogate key (lines are appended, read by execution, never updated or
-- referenced), one index, short messages (a line names its step, it does
-- not copy the step's output), data NULL unless there is something to add.
-- Columns in alignment order: no padding between them.
CREATE TABLE api.execution_logs (
    workspace_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    step_id      uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- bigint, as on steps: a delay step lasts up to ten years.
    duration_ms  bigint,
    seq          integer NOT NULL DEFAULT 1,
    level        text NOT NULL DEFAULT 'info' CHECK (level IN ('debug', 'info', 'warn', 'error')),
    message      text NOT NULL CHECK (length(message) <= 400),
    data         jsonb
) PARTITION BY RANGE (created_at);
-- explain_execution and GET /execution_logs?execution_id=eq.… read one
-- execution's lines; the tenant policy then filters them by workspace_id.
-- One key per execution: B-tree deduplication keeps a run's lines in one
-- posting list.
CREATE INDEX execution_logs_execution ON api.execution_logs (execution_id);
COMMENT ON TABLE api.execution_logs IS
  'One line per step event of an execution (started, completed, failed, retrying, waiting), written by the graph engine in the event''s transaction with one INSERT per transaction. Ordered by (created_at, seq). Partitioned monthly by created_at; old months are dropped, not deleted.';
COMMENT ON COLUMN api.execution_logs.step_id IS 'The step the line is about (api.execution_steps.id); NULL for a line about the whole execution.';
COMMENT ON COLUMN api.execution_logs.duration_ms IS 'Milliseconds from the step''s start to this event (0 for a step that ran inline); NULL for a start.';
COMMENT ON COLUMN api.execution_logs.seq IS 'Order of the line among those its transaction wrote (they share created_at, the commit''s clock).';

-- Execution logs: 90 days (seed 000), monthly partitions dropped whole.
SELECT internal.manage_partitions('api.execution_logs', 'monthly', premake => 4, retention => interval '90 days');

SELECT flowtrack.enable_tenant_isolation(t, key_scope => 'executions')
  FROM unnest(ARRAY['api.workflow_executions', 'api.execution_steps', 'api.execution_logs']::regclass[]) AS t;
-- Executions are written by the engine only; members read them.
GRANT SELECT ON api.workflow_executions, api.execution_steps, api.execution_logs TO authenticated;
-- The engine writes a transaction's log lines with one INSERT at commit,
-- which may hold several workspaces' lines (a worker's batch of job
-- reports): admitted while the engine's flush runs (graph/logs.rs), and
-- only for the owner, whose role the flush takes.
CREATE POLICY engine_flush ON api.execution_logs FOR INSERT TO flowtrack_owner
    WITH CHECK ((SELECT flowtrack.execution_logs_flushing()));
COMMENT ON POLICY engine_flush ON api.execution_logs IS
  'The graph engine''s one INSERT per transaction of execution log lines (flowtrack.execution_logs_flushing() is true only around it); every other write goes through the tenant policies.';

-- Starting an execution (internal.start_execution, api.start_execution)
-- belongs to the graph engine: sql/0031_graph_engine.sql.

-- Retention. Executions are deleted, not time-partitioned: idempotency keys
-- must stay unique across months (a partitioned table enforces uniqueness
-- only within its partition key), a waiting run may last years, and how long
-- a run is kept depends on its plan and its outcome, not on the month it
-- started (docs/ARCHITECTURE.md, "History and retention"). Each run deletes
-- one bounded batch (steps follow by cascade) and commits; pg_cron runs it
-- every minute, so no lock is held for long and a backlog drains over runs.
CREATE FUNCTION internal.prune_executions(at timestamptz DEFAULT now(), batch integer DEFAULT 5000) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    WITH doomed AS (
        SELECT x.workspace_id, x.id
          FROM api.workspaces w
          JOIN api.subscription_plans p ON p.id = w.plan_id
          CROSS JOIN LATERAL (
              -- created_at <= completed_at, so the older bound narrows the
              -- scan of (workspace_id, created_at) before the heap is read.
              SELECT e.workspace_id, e.id FROM api.workflow_executions e
               WHERE e.workspace_id = w.id
                 AND e.created_at < at - pg_catalog.make_interval(days => least(p.succeeded_retention_days, p.failed_retention_days))
                 AND ((e.status = 'completed'
                       AND e.completed_at < at - pg_catalog.make_interval(days => p.succeeded_retention_days))
                   OR (e.status IN ('failed', 'cancelled', 'timed_out')
                       AND e.completed_at < at - pg_catalog.make_interval(days => p.failed_retention_days)))
               LIMIT batch) x
         LIMIT batch)
    DELETE FROM api.workflow_executions e USING doomed d WHERE e.workspace_id = d.workspace_id AND e.id = d.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION internal.prune_executions(timestamptz, integer) IS
  'Deletes up to batch finished executions (and, by cascade, their steps) that ended before their plan''s retention: succeeded_retention_days for completed runs, failed_retention_days for failed, cancelled and timed-out ones. Queued, running and waiting runs are never deleted. Returns how many. Operator/pg_cron function (runs across tenants).';
REVOKE ALL ON FUNCTION internal.prune_executions(timestamptz, integer) FROM PUBLIC;
