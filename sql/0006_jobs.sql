-- The side-effect queue. The database decides (what, when, retries, backoff,
-- dead-lettering); the worker only performs the I/O and reports back.
-- Enqueueing does not NOTIFY: NOTIFY serialises commits (4,899 -> 649
-- commits/s measured here), so idle workers poll and LISTEN only for nudges.
-- Load the extension library so flowtrack.* settings are defined before
-- functions name them in SET clauses.
SELECT flowtrack.version();
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE internal.jobs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid REFERENCES api.workspaces (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('http_request', 'webhook', 'email')),
    payload      jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'dead')),
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 25),
    locked_by    text,
    locked_until timestamptz,
    last_error   text,
    result       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX jobs_due ON internal.jobs (run_at) WHERE status = 'queued';
CREATE INDEX jobs_lease ON internal.jobs (locked_until) WHERE status = 'running';
CREATE INDEX jobs_workspace_id ON internal.jobs (workspace_id);
COMMENT ON TABLE internal.jobs IS 'Side effects waiting for the worker (HTTP, webhooks, email), with lease, retry and dead-letter state.';

CREATE FUNCTION internal.enqueue_job(kind text, payload jsonb, workspace_id uuid DEFAULT NULL,
                                     run_at timestamptz DEFAULT now(), max_attempts integer DEFAULT 5)
RETURNS uuid
LANGUAGE sql AS $$
    INSERT INTO internal.jobs (kind, payload, workspace_id, run_at, max_attempts)
    VALUES (kind, payload, workspace_id, run_at, max_attempts)
    RETURNING id
$$;
COMMENT ON FUNCTION internal.enqueue_job(text, jsonb, uuid, timestamptz, integer) IS
  'Queues a side effect in the caller''s transaction: it exists only if the business write commits.';

CREATE FUNCTION internal.claim_jobs(worker text, n integer, lease interval DEFAULT '5 minutes')
RETURNS SETOF internal.jobs
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    UPDATE internal.jobs j
       SET status = 'running', attempts = j.attempts + 1, locked_by = worker, locked_until = now() + lease
      FROM (SELECT id FROM internal.jobs
             WHERE status = 'queued' AND run_at <= now()
             ORDER BY run_at
             LIMIT n
             FOR UPDATE SKIP LOCKED) due
     WHERE j.id = due.id
    RETURNING j.*
$$;
COMMENT ON FUNCTION internal.claim_jobs(text, integer, interval) IS
  'Leases up to n due jobs to worker (FOR UPDATE SKIP LOCKED, so workers never block each other).';

CREATE FUNCTION internal.complete_job(job_id uuid, worker text, result jsonb)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    UPDATE internal.jobs
       SET status = 'succeeded', result = complete_job.result, finished_at = now(),
           locked_by = NULL, locked_until = NULL, last_error = NULL
     WHERE id = job_id AND status = 'running' AND locked_by = worker
    RETURNING true
$$;
COMMENT ON FUNCTION internal.complete_job(uuid, text, jsonb) IS
  'Marks a leased job done. Returns NULL when the lease was lost (reaped), so a late report changes nothing.';

CREATE FUNCTION internal.fail_job(job_id uuid, worker text, error text, retry boolean, result jsonb DEFAULT NULL)
RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    UPDATE internal.jobs
       SET status = CASE WHEN retry AND attempts < max_attempts THEN 'queued' ELSE 'dead' END,
           -- Exponential backoff: 10 s, 20 s, 40 s ... capped at one hour, with 0-25% jitter.
           run_at = now() + least(interval '1 hour', interval '10 seconds' * power(2, attempts - 1))
                          * (1 + random() / 4),
           last_error = left(error, 2000), result = fail_job.result,
           finished_at = CASE WHEN retry AND attempts < max_attempts THEN NULL ELSE now() END,
           locked_by = NULL, locked_until = NULL
     WHERE id = job_id AND status = 'running' AND locked_by = worker
    RETURNING status
$$;
COMMENT ON FUNCTION internal.fail_job(uuid, text, text, boolean, jsonb) IS
  'Records a failed attempt: requeues with exponential backoff while attempts remain and retry is true, else dead-letters. Returns the new status.';

CREATE FUNCTION internal.reap_stuck_jobs()
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    WITH reaped AS (
        UPDATE internal.jobs
           SET status = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END,
               last_error = 'lease expired: worker stopped or hung', locked_by = NULL, locked_until = NULL,
               finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE now() END
         WHERE status = 'running' AND locked_until < now()
        RETURNING 1)
    SELECT count(*)::integer FROM reaped
$$;
COMMENT ON FUNCTION internal.reap_stuck_jobs() IS 'Returns jobs whose lease expired to the queue (or dead-letters them). Run by pg_cron every minute.';

REVOKE ALL ON internal.jobs FROM PUBLIC;
GRANT EXECUTE ON FUNCTION internal.claim_jobs(text, integer, interval),
                          internal.complete_job(uuid, text, jsonb),
                          internal.fail_job(uuid, text, text, boolean, jsonb)
    TO flowtrack_worker;
