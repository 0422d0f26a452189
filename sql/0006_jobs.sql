-- The side-effect queue. The database decides (what, when, leases, retries,
-- backoff, dead-lettering); the worker only performs the I/O and reports.
--
-- Shape, and why:
-- * internal.jobs holds live jobs only (queued or running). A finished job
--   leaves it: success deletes the row (its result lives where the user looks
--   for it: the step's output, the webhook delivery), a dead one moves to
--   internal.dead_jobs. So the table claims scan stays as small as the work
--   in hand, and its dead tuples are what autovacuum clears behind one claim
--   and one delete per job, however many jobs have ever run.
-- * Leases are seconds (internal.job_kinds.lease_seconds, 30 by default),
--   extended by heartbeats. An expired lease is reclaimed by the next claim,
--   not by a cron minute.
-- * Fencing: every claim increments jobs.claims and hands it out as the
--   lease's token. Reports, heartbeats and releases name (id, fence); under
--   a stale fence they change nothing and say 'stale'. The count never goes
--   back (not on release, not on requeue), so an old token never matches again.
-- * Fairness: a claim takes due jobs workspace by workspace (an index skip
--   scan from a random starting workspace), at most its share of the batch
--   from each, so one workspace's flood cannot stand in front of the others.
-- * Enqueueing does not NOTIFY: NOTIFY serialises commits (4,899 -> 649
--   commits/s measured here). An enqueue sets the latch of a parked worker
--   after it commits, through the extension's shared memory
--   (extension/src/wake, ARCHITECTURE "Wake-ups").
SELECT flowtrack.version();
-- The queue's functions (owned by flowtrack_owner) park, wait and wake.
GRANT EXECUTE ON FUNCTION flowtrack.worker_park(), flowtrack.worker_wait(integer), flowtrack.worker_unpark(),
                          flowtrack.wake_on_commit(), flowtrack.wake_workers()
    TO flowtrack_owner;
-- A worker killed while its claim is parked leaves a backend that would
-- wake at the next enqueue, claim jobs for a client that is gone, and hold
-- them for a lease. Sessions of the worker login check their client every
-- 250 ms while a statement runs (a parked wait included) and end when it
-- is gone.
ALTER ROLE flowtrack_worker SET client_connection_check_interval = '250ms';
SET LOCAL ROLE flowtrack_owner;

CREATE TABLE internal.job_kinds (
    kind                 text PRIMARY KEY CHECK (kind ~ '^[a-z][a-z0-9_]{1,39}$'),
    lease_seconds        integer NOT NULL DEFAULT 30 CHECK (lease_seconds BETWEEN 1 AND 3600),
    max_attempts         integer NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 25),
    backoff_base_seconds double precision NOT NULL DEFAULT 10 CHECK (backoff_base_seconds BETWEEN 0 AND 3600),
    backoff_max_seconds  double precision NOT NULL DEFAULT 3600 CHECK (backoff_max_seconds BETWEEN 0 AND 86400)
);
COMMENT ON TABLE internal.job_kinds IS
  'What the worker can do, and the queue policy for each: lease length, attempts before a job is dead, exponential backoff between attempts.';
COMMENT ON COLUMN internal.job_kinds.lease_seconds IS 'How long a claim lasts without a heartbeat; the worker heartbeats every third of it.';
COMMENT ON COLUMN internal.job_kinds.max_attempts IS 'Attempts (claims that were not released) before a failing job is dead.';
COMMENT ON COLUMN internal.job_kinds.backoff_base_seconds IS 'Wait before the second attempt; doubles per attempt, with jitter.';
COMMENT ON COLUMN internal.job_kinds.backoff_max_seconds IS 'Longest wait between attempts.';
INSERT INTO internal.job_kinds (kind, lease_seconds, max_attempts) VALUES
    ('http_request', 30, 5),
    ('webhook', 30, 8),
    ('email', 60, 5),
    ('noop', 30, 5);
REVOKE ALL ON internal.job_kinds FROM PUBLIC;

CREATE TABLE internal.jobs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid REFERENCES api.workspaces (id) ON DELETE CASCADE,
    kind         text NOT NULL REFERENCES internal.job_kinds (kind),
    payload      jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running')),
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer CHECK (max_attempts BETWEEN 1 AND 25),
    claims       integer NOT NULL DEFAULT 0,
    locked_by    text,
    locked_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- The claim's index: per workspace (system jobs under the nil uuid), oldest due first.
CREATE INDEX jobs_due ON internal.jobs
    ((coalesce(workspace_id, '00000000-0000-0000-0000-000000000000'::uuid)), run_at) WHERE status = 'queued';
CREATE INDEX jobs_lease ON internal.jobs (locked_until) WHERE status = 'running';
-- No index on workspace_id alone: every claim and enqueue would maintain it,
-- and the one reader, a workspace's deletion cascading here, scans a table
-- that holds only live jobs.
-- Every job leaves a dead row version behind its claim and its delete:
-- vacuum by count, not by a fraction of a table whose size swings with the
-- backlog, and without cost sleeps (the table is small once drained).
ALTER TABLE internal.jobs SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
                               autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 2000,
                               autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 2000,
                               autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE internal.jobs IS
  'Live side effects for the worker (HTTP, webhooks, email): queued or running under a lease. Finished jobs leave: succeeded ones are deleted, dead ones move to internal.dead_jobs.';
COMMENT ON COLUMN internal.jobs.attempts IS 'Claims that counted as attempts (a release gives one back).';
COMMENT ON COLUMN internal.jobs.max_attempts IS 'Overrides the kind''s max_attempts for this job; NULL takes the kind''s.';
COMMENT ON COLUMN internal.jobs.claims IS 'Times claimed: the fencing token of the current lease. Never decreases.';
COMMENT ON COLUMN internal.jobs.locked_by IS 'Name of the worker holding the lease, for logs and status; fencing is by claims.';

CREATE TABLE internal.dead_jobs (
    id           uuid PRIMARY KEY,
    workspace_id uuid REFERENCES api.workspaces (id) ON DELETE CASCADE,
    kind         text NOT NULL REFERENCES internal.job_kinds (kind),
    payload      jsonb NOT NULL,
    attempts     integer NOT NULL,
    claims       integer NOT NULL,
    reason       text NOT NULL CHECK (reason IN ('failed', 'max_attempts', 'lease_expired', 'cancelled')),
    last_error   text,
    result       jsonb,
    created_at   timestamptz NOT NULL,
    died_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_jobs_workspace ON internal.dead_jobs (workspace_id, died_at DESC);
CREATE INDEX dead_jobs_kind ON internal.dead_jobs (kind);
-- Retention reads the oldest burials first.
CREATE INDEX dead_jobs_died_at ON internal.dead_jobs (died_at);
COMMENT ON TABLE internal.dead_jobs IS
  'Jobs that will not run again by themselves: failed for good, out of attempts, or cancelled. Owners and admins requeue them (api.requeue_job).';
COMMENT ON COLUMN internal.dead_jobs.reason IS
  'failed: the worker said retrying cannot help; max_attempts: the last attempt failed; lease_expired: the last attempt''s worker vanished; cancelled: api.cancel_job.';
COMMENT ON COLUMN internal.dead_jobs.claims IS 'The job''s claim count, carried back on requeue so old fencing tokens stay stale.';
REVOKE ALL ON internal.jobs, internal.dead_jobs FROM PUBLIC;

-- A dead job is kept 30 days for its owners to inspect and requeue; its
-- outcome already lives in its step or delivery.
CREATE FUNCTION internal.prune_dead_jobs(at timestamptz DEFAULT now(), batch integer DEFAULT 5000) RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH doomed AS (SELECT d.id FROM internal.dead_jobs d WHERE d.died_at < at - interval '30 days' ORDER BY d.died_at LIMIT batch),
         gone AS (DELETE FROM internal.dead_jobs d USING doomed x WHERE d.id = x.id RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;
COMMENT ON FUNCTION internal.prune_dead_jobs(timestamptz, integer) IS
  'Deletes up to batch dead jobs buried more than 30 days before at; returns how many. Operator/pg_cron function.';
REVOKE ALL ON FUNCTION internal.prune_dead_jobs(timestamptz, integer) FROM PUBLIC;

-- Wake parked workers once an enqueuing transaction commits.
CREATE TRIGGER wake_workers AFTER INSERT ON internal.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION flowtrack.wake_workers();

CREATE FUNCTION internal.enqueue_job(kind text, payload jsonb, workspace_id uuid DEFAULT NULL,
                                     run_at timestamptz DEFAULT pg_catalog.now(), max_attempts integer DEFAULT NULL)
RETURNS uuid
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO internal.jobs (kind, payload, workspace_id, run_at, max_attempts)
    VALUES (kind, payload, workspace_id, run_at, max_attempts)
    RETURNING id
$$;
COMMENT ON FUNCTION internal.enqueue_job(text, jsonb, uuid, timestamptz, integer) IS
  'Queues a side effect in the caller''s transaction: it exists only if the business write commits.';

-- ------------------------------------------------------------ claiming ----

-- Due jobs, fairly: walk the workspaces that have due jobs (a loose index
-- scan over jobs_due, from a random workspace, wrapping round), at most n of
-- them, and take up to ceil(n / workspaces) of the oldest due jobs of each.
-- Rows another worker is claiming are skipped, never waited for.
CREATE FUNCTION internal.claim_due(worker text, n integer, at timestamptz)
RETURNS TABLE (id uuid, workspace_id uuid, kind text, payload jsonb, attempt integer, fence integer,
               lease_until timestamptz, enqueued_at timestamptz)
-- PL/pgSQL, not SQL: a SQL function is planned again at every call (this
-- statement: 0.3 ms of planning with warm caches, measured), PL/pgSQL keeps
-- the plan for the session.
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH RECURSIVE
    start AS (SELECT pg_catalog.gen_random_uuid() AS k),
    fwd (k) AS (
        -- The start as a scalar subquery: an index condition, not a filter.
        (SELECT coalesce(j.workspace_id, '00000000-0000-0000-0000-000000000000'::uuid)
           FROM internal.jobs j
          WHERE j.status = 'queued' AND j.run_at <= at
            AND coalesce(j.workspace_id, '00000000-0000-0000-0000-000000000000'::uuid) >= (SELECT start.k FROM start)
          ORDER BY 1 LIMIT 1)
        UNION ALL
        SELECT (SELECT coalesce(j.workspace_id, '00000000-0000-0000-0000-000000000000'::uuid)
                  FROM internal.jobs j
                 WHERE j.status = 'queued' AND j.run_at <= at
                   AND coalesce(j.workspace_id, '00000000-0000-0000-0000-000000000000'::uuid) > fwd.k
                 ORDER BY 1 LIMIT 1)
          FROM fwd WHERE fwd.k IS NOT NULL),
    wrap (k) AS (
        (SELECT coalesce(j.workspace_id, '00000000-0000-0000-0000-000000000000'::uuid)
           FROM internal.jobs j
          WHERE j.status = 'queued' AND j.run_at <= at
          ORDER BY 1 LIMIT 1)
        UNION ALL
        SELECT (SELECT coalesce(j.workspace_id, '00000000-0000-0000-0000-000000000000'::uuid)
                  FROM internal.jobs j
                 WHERE j.status = 'queued' AND j.run_at <= at
                   AND coalesce(j.workspace_id, '00000000-0000-0000-0000-000000000000'::uuid) > wrap.k
                 ORDER BY 1 LIMIT 1)
          FROM wrap, start WHERE wrap.k < start.k),
    keys AS MATERIALIZED (
        SELECT k FROM ((SELECT fwd.k FROM fwd WHERE fwd.k IS NOT NULL LIMIT n)
                       UNION ALL
                       (SELECT wrap.k FROM wrap, start WHERE wrap.k IS NOT NULL AND wrap.k < start.k LIMIT n)) a
         LIMIT n),
    share AS (SELECT pg_catalog.ceil(n::numeric / pg_catalog.count(*))::integer AS per FROM keys HAVING pg_catalog.count(*) > 0),
    picked AS (
        SELECT x.id FROM keys, share,
               LATERAL (SELECT j.id FROM internal.jobs j
                         WHERE j.status = 'queued' AND j.run_at <= at
                           AND coalesce(j.workspace_id, '00000000-0000-0000-0000-000000000000'::uuid) = keys.k
                         ORDER BY j.run_at
                         LIMIT share.per
                           FOR UPDATE SKIP LOCKED) x
         LIMIT n)
    UPDATE internal.jobs j
       SET status = 'running', attempts = j.attempts + 1, claims = j.claims + 1, locked_by = worker,
           locked_until = at + pg_catalog.make_interval(secs => k.lease_seconds)
      FROM picked, internal.job_kinds k
     WHERE j.id = picked.id AND k.kind = j.kind
    RETURNING j.id, j.workspace_id, j.kind, j.payload, j.attempts, j.claims, j.locked_until, j.run_at;
END
$$;
COMMENT ON FUNCTION internal.claim_due(text, integer, timestamptz) IS
  'Leases up to n jobs due at the time at (the caller''s clock: a claim that waited must not judge by its transaction''s start) to worker, fairly across workspaces (each gets at most its share of the batch; the walk starts at a random workspace), skipping rows other workers are claiming. Called by claim_jobs.';

-- Jobs whose worker vanished: back to the queue for the next claim, or dead
-- when that was their last attempt. Run by every claim: with no expired
-- lease it is one probe of jobs_lease.
CREATE FUNCTION internal.expire_leases(at timestamptz) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    requeued integer;
    buried integer;
BEGIN
    WITH expired AS (
        SELECT j.id FROM internal.jobs j JOIN internal.job_kinds k ON k.kind = j.kind
         WHERE j.status = 'running' AND j.locked_until < at
           AND j.attempts < coalesce(j.max_attempts, k.max_attempts)
           FOR UPDATE OF j SKIP LOCKED)
    UPDATE internal.jobs j
       SET status = 'queued', run_at = at, locked_by = NULL, locked_until = NULL,
           last_error = 'lease expired: the worker stopped or hung (attempt ' || j.attempts || ')'
      FROM expired WHERE j.id = expired.id;
    GET DIAGNOSTICS requeued = ROW_COUNT;
    buried := internal.bury_jobs(ARRAY(
        SELECT j.id FROM internal.jobs j JOIN internal.job_kinds k ON k.kind = j.kind
         WHERE j.status = 'running' AND j.locked_until < at
           AND j.attempts >= coalesce(j.max_attempts, k.max_attempts)
           FOR UPDATE OF j SKIP LOCKED),
        'lease_expired', 'lease expired on the last attempt: the worker stopped or hung');
    RETURN requeued + buried;
END
$$;
COMMENT ON FUNCTION internal.expire_leases(timestamptz) IS
  'Requeues running jobs whose lease expired by the time at (at once: their worker is gone), or buries them when that was the last attempt. Returns how many. Called by each claim.';

CREATE FUNCTION internal.claim_jobs(worker text, n integer, wait_ms integer DEFAULT 0)
RETURNS TABLE (id uuid, workspace_id uuid, kind text, payload jsonb, attempt integer, fence integer,
               lease_until timestamptz, enqueued_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    next_due timestamptz;
BEGIN
    IF n IS NULL OR n NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'n: claim between 1 and 1000 jobs, not %', n
            USING ERRCODE = '22023', HINT = 'Claim what you can run now: the free slots of the worker.';
    END IF;
    IF wait_ms IS NULL OR wait_ms NOT BETWEEN 0 AND 60000 THEN
        RAISE EXCEPTION 'wait_ms: wait between 0 and 60000 ms, not %', wait_ms
            USING ERRCODE = '22023', HINT = 'A parked worker is woken by enqueues; wait_ms is only the polling fallback.';
    END IF;
    PERFORM internal.expire_leases(pg_catalog.clock_timestamp());
    -- Park before looking, so an enqueue that commits after this look finds
    -- the worker parked and wakes it (ARCHITECTURE "Wake-ups" has the
    -- proof). Park, look and wait are one statement: a park ends with its
    -- transaction, and the look must come after it.
    IF wait_ms > 0 THEN
        PERFORM flowtrack.worker_park();
    END IF;
    RETURN QUERY SELECT * FROM internal.claim_due(worker, n, pg_catalog.clock_timestamp());
    IF FOUND OR wait_ms = 0 THEN
        IF wait_ms > 0 THEN
            PERFORM flowtrack.worker_unpark();
        END IF;
        RETURN;
    END IF;
    -- Nothing due: sleep until an enqueue's commit wakes us, the polling
    -- fallback, or the next job's run_at (a retry's backoff), whichever
    -- comes first.
    SELECT pg_catalog.min(j.run_at) INTO next_due FROM internal.jobs j WHERE j.status = 'queued';
    IF next_due IS NOT NULL THEN
        wait_ms := least(wait_ms, greatest(1,
            pg_catalog.ceil(extract(epoch FROM next_due - pg_catalog.clock_timestamp()) * 1000)));
    END IF;
    PERFORM flowtrack.worker_wait(wait_ms);
    PERFORM internal.expire_leases(pg_catalog.clock_timestamp());
    RETURN QUERY SELECT * FROM internal.claim_due(worker, n, pg_catalog.clock_timestamp());
END
$$;
COMMENT ON FUNCTION internal.claim_jobs(text, integer, integer) IS
  'The worker''s claim: reclaims expired leases, then leases up to n due jobs fairly across workspaces; each row carries its fencing token (fence) and lease end. With wait_ms > 0 and nothing due, parks and waits (woken by the next enqueue''s commit through shared memory, or after wait_ms, or at the next retry''s run_at), then claims again.';

-- ----------------------------------------------------------- reporting ----

-- Reports join arrays (unnest) to the jobs they name. The planner knows
-- neither side's size: an array parameter is "10 rows", and the queue's
-- statistics are whatever it held at the last ANALYZE, often empty. With a
-- nested loop it rescanned the array once per running job: a heartbeat of
-- 20,000 leases took 123 s (measured; a benchmark's heartbeat ran for 20
-- minutes). So the reporting functions turn nested loops off for their own
-- statements (SET enable_nestloop = off: hash joins, 123 ms for the same
-- call), and what they call to carry the graph on (finish_job_step,
-- record_delivery) turns them back on for its own queries.

-- Move jobs out of the queue for good, and tell what waited on them: a
-- step fails (its graph carries on down error edges, or the execution
-- fails), a webhook delivery is marked failed.
CREATE FUNCTION internal.bury_jobs(ids uuid[], reason text, error text,
                                   result_ids uuid[] DEFAULT NULL, results jsonb[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_nestloop = off AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        WITH gone AS (
            DELETE FROM internal.jobs j
             WHERE j.id = ANY (ids)
            RETURNING j.*)
        INSERT INTO internal.dead_jobs AS d (id, workspace_id, kind, payload, attempts, claims, reason, last_error, result, created_at)
        SELECT g.id, g.workspace_id, g.kind, g.payload, g.attempts, g.claims, reason,
               coalesce(error, g.last_error), x.result, g.created_at
          FROM gone g
          LEFT JOIN unnest(result_ids, results) AS x (id, result) ON x.id = g.id
        RETURNING d.id, d.workspace_id, d.kind, d.payload, d.attempts, d.last_error, d.result
    LOOP
        n := n + 1;
        IF r.workspace_id IS NOT NULL AND r.payload ? 'step_id' THEN
            PERFORM internal.finish_job_step(r.workspace_id, (r.payload ->> 'step_id')::uuid, false, r.result, r.last_error);
        END IF;
        IF r.kind = 'webhook' AND r.workspace_id IS NOT NULL THEN
            PERFORM internal.record_delivery(r.id, r.workspace_id, 'failed', r.attempts, r.result, r.last_error);
        END IF;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION internal.bury_jobs(uuid[], text, text, uuid[], jsonb[]) IS
  'Moves jobs to internal.dead_jobs with a reason (and the error, or each job''s last error; the last attempt''s result by id from result_ids/results), failing the steps and webhook deliveries that waited on them. Returns how many.';

CREATE FUNCTION internal.complete_jobs(worker text, ids uuid[], fences integer[], results jsonb[])
RETURNS TABLE (id uuid, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = ''
SET enable_nestloop = off AS $$
DECLARE
    r record;
    done uuid[] := '{}';
BEGIN
    IF pg_catalog.cardinality(ids) IS DISTINCT FROM pg_catalog.cardinality(fences)
       OR pg_catalog.cardinality(ids) IS DISTINCT FROM pg_catalog.cardinality(results) THEN
        RAISE EXCEPTION 'ids, fences, results: one entry per job, in the same order'
            USING ERRCODE = '22023', HINT = 'Pass three arrays of equal length.';
    END IF;
    FOR r IN
        DELETE FROM internal.jobs j
         USING unnest(ids, fences, results) AS x (id, fence, result)
         WHERE j.id = x.id AND j.claims = x.fence AND j.status = 'running'
        RETURNING j.id, j.workspace_id, j.kind, j.payload, j.attempts, x.result
    LOOP
        done := done || r.id;
        IF r.workspace_id IS NOT NULL AND r.payload ? 'step_id' THEN
            PERFORM internal.finish_job_step(r.workspace_id, (r.payload ->> 'step_id')::uuid, true, r.result, NULL);
        END IF;
        IF r.kind = 'webhook' AND r.workspace_id IS NOT NULL THEN
            PERFORM internal.record_delivery(r.id, r.workspace_id, 'succeeded', r.attempts, r.result, NULL);
        END IF;
    END LOOP;
    RETURN QUERY SELECT x.id, CASE WHEN x.id = ANY (done) THEN 'completed' ELSE 'stale' END
                   FROM unnest(ids) AS x (id);
END
$$;
COMMENT ON FUNCTION internal.complete_jobs(text, uuid[], integer[], jsonb[]) IS
  'Batched success reports: each (id, fence) still leased is done and leaves the queue; a job''s step completes with the result and its execution advances; a webhook delivery is recorded. Returns completed, or stale for a lease that is no longer the job''s (nothing changed).';

CREATE FUNCTION internal.fail_jobs(worker text, ids uuid[], fences integer[], errors text[], retry boolean[], results jsonb[])
RETURNS TABLE (id uuid, outcome text, run_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = ''
SET enable_nestloop = off AS $$
DECLARE
    r record;
    retried uuid[] := '{}';
    retry_at timestamptz[] := '{}';
    dead uuid[];
BEGIN
    IF pg_catalog.cardinality(ids) IS DISTINCT FROM pg_catalog.cardinality(fences)
       OR pg_catalog.cardinality(ids) IS DISTINCT FROM pg_catalog.cardinality(errors)
       OR pg_catalog.cardinality(ids) IS DISTINCT FROM pg_catalog.cardinality(retry)
       OR pg_catalog.cardinality(ids) IS DISTINCT FROM pg_catalog.cardinality(results) THEN
        RAISE EXCEPTION 'ids, fences, errors, retry, results: one entry per job, in the same order'
            USING ERRCODE = '22023', HINT = 'Pass five arrays of equal length.';
    END IF;
    -- Attempts left: back to the queue after an exponential backoff with
    -- jitter (half to all of base * 2^(attempt-1), capped), so retries of a
    -- failing endpoint spread out instead of arriving together.
    FOR r IN
        UPDATE internal.jobs j
           SET status = 'queued', locked_by = NULL, locked_until = NULL,
               last_error = pg_catalog.left(x.error, 2000),
               run_at = pg_catalog.now() + pg_catalog.make_interval(secs =>
                   least(k.backoff_max_seconds,
                                    k.backoff_base_seconds * pg_catalog.power(2, j.attempts - 1))
                   * (0.5 + pg_catalog.random() / 2))
          FROM unnest(ids, fences, errors, retry, results) AS x (id, fence, error, retry, result),
               internal.job_kinds k
         WHERE j.id = x.id AND j.claims = x.fence AND j.status = 'running' AND k.kind = j.kind
           AND x.retry AND j.attempts < coalesce(j.max_attempts, k.max_attempts)
        RETURNING j.id, j.workspace_id, j.kind, j.attempts, j.run_at, j.last_error, x.result
    LOOP
        retried := retried || r.id;
        retry_at := retry_at || r.run_at;
        IF r.kind = 'webhook' AND r.workspace_id IS NOT NULL THEN
            PERFORM internal.record_delivery(r.id, r.workspace_id, 'retrying', r.attempts, r.result, r.last_error);
        END IF;
    END LOOP;
    -- A parked claimer computed its sleep before these retries existed:
    -- wake it, so it sleeps until the earliest retry instead of the fallback.
    IF pg_catalog.cardinality(retried) > 0 THEN
        PERFORM flowtrack.wake_on_commit();
    END IF;
    -- The rest that are still leased: dead, with the worker's error.
    SELECT pg_catalog.array_agg(j.id) INTO dead
      FROM internal.jobs j JOIN unnest(ids, fences) AS x (id, fence) ON j.id = x.id AND j.claims = x.fence
     WHERE j.status = 'running';
    IF dead IS NOT NULL THEN
        -- One bury per reason; the errors differ per job, so set them first.
        UPDATE internal.jobs j SET last_error = pg_catalog.left(x.error, 2000)
          FROM unnest(ids, errors) AS x (id, error) WHERE j.id = x.id AND j.id = ANY (dead);
        PERFORM internal.bury_jobs(
            ARRAY(SELECT j.id FROM internal.jobs j JOIN unnest(ids, retry) AS x (id, retry) ON x.id = j.id
                   WHERE j.id = ANY (dead) AND NOT x.retry),
            'failed', NULL, ids, results);
        PERFORM internal.bury_jobs(
            ARRAY(SELECT j.id FROM internal.jobs j WHERE j.id = ANY (dead)),
            'max_attempts', NULL, ids, results);
    END IF;
    RETURN QUERY
        SELECT x.id,
               CASE WHEN x.id = ANY (retried) THEN 'retrying' WHEN x.id = ANY (dead) THEN 'dead' ELSE 'stale' END,
               retry_at[pg_catalog.array_position(retried, x.id)]
          FROM unnest(ids) AS x (id);
END
$$;
COMMENT ON FUNCTION internal.fail_jobs(text, uuid[], integer[], text[], boolean[], jsonb[]) IS
  'Batched failure reports: each (id, fence) still leased is retried after exponential backoff with jitter while retry is true and attempts remain, else dead (reason failed or max_attempts, with the error). Returns retrying (and when), dead, or stale (nothing changed).';

CREATE FUNCTION internal.heartbeat_jobs(worker text, ids uuid[], fences integer[])
RETURNS TABLE (id uuid, lease_until timestamptz)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = ''
SET enable_nestloop = off AS $$
    UPDATE internal.jobs j
       SET locked_until = pg_catalog.now() + pg_catalog.make_interval(secs => k.lease_seconds)
      FROM unnest(ids, fences) AS x (id, fence), internal.job_kinds k
     WHERE j.id = x.id AND j.claims = x.fence AND j.status = 'running' AND k.kind = j.kind
    RETURNING j.id, j.locked_until
$$;
COMMENT ON FUNCTION internal.heartbeat_jobs(text, uuid[], integer[]) IS
  'Extends the leases still held by another lease length; returns one row per extended lease. A job missing from the answer was lost (expired and reclaimed, or cancelled).';

CREATE FUNCTION internal.release_jobs(worker text, ids uuid[], fences integer[])
RETURNS TABLE (id uuid, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = ''
SET enable_nestloop = off AS $$
DECLARE
    released uuid[];
BEGIN
    WITH r AS (
        UPDATE internal.jobs j
           SET status = 'queued', attempts = j.attempts - 1, run_at = pg_catalog.now(),
               locked_by = NULL, locked_until = NULL
          FROM unnest(ids, fences) AS x (id, fence)
         WHERE j.id = x.id AND j.claims = x.fence AND j.status = 'running'
        RETURNING j.id)
    SELECT pg_catalog.array_agg(r.id) INTO released FROM r;
    IF released IS NOT NULL THEN
        PERFORM flowtrack.wake_on_commit();
    END IF;
    RETURN QUERY SELECT x.id, CASE WHEN x.id = ANY (released) THEN 'released' ELSE 'stale' END
                   FROM unnest(ids) AS x (id);
END
$$;
COMMENT ON FUNCTION internal.release_jobs(text, uuid[], integer[]) IS
  'A stopping worker hands back leases it will not finish: the jobs are due again at once, and the attempt does not count. Returns released or stale.';

CREATE FUNCTION internal.queue_status()
RETURNS TABLE (workspace_id uuid, kind text, queued bigint, due bigint, running bigint, dead bigint,
               oldest_due_at timestamptz, lag_seconds double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
    SELECT s.workspace_id, s.kind, sum(s.queued)::bigint, sum(s.due)::bigint, sum(s.running)::bigint,
           sum(s.dead)::bigint, min(s.oldest_due_at),
           coalesce(extract(epoch FROM pg_catalog.now() - min(s.oldest_due_at))::double precision, 0)
      FROM (SELECT j.workspace_id, j.kind,
                   pg_catalog.count(*) FILTER (WHERE j.status = 'queued') AS queued,
                   pg_catalog.count(*) FILTER (WHERE j.status = 'queued' AND j.run_at <= pg_catalog.now()) AS due,
                   pg_catalog.count(*) FILTER (WHERE j.status = 'running') AS running,
                   0 AS dead,
                   pg_catalog.min(j.run_at) FILTER (WHERE j.status = 'queued' AND j.run_at <= pg_catalog.now()) AS oldest_due_at
              FROM internal.jobs j GROUP BY 1, 2
            UNION ALL
            SELECT d.workspace_id, d.kind, 0, 0, 0, pg_catalog.count(*), NULL
              FROM internal.dead_jobs d GROUP BY 1, 2) s
     GROUP BY 1, 2
     ORDER BY 1 NULLS FIRST, 2
$$;
COMMENT ON FUNCTION internal.queue_status() IS
  'Queue depth per workspace and kind: queued, due now, running, dead; the oldest due job and how late it is (lag). For flowtrack-worker status and its metrics.';

-- ------------------------------------------- cancel and requeue (users) ----

-- Owners and admins manage their workspace's jobs.
CREATE FUNCTION internal.require_job_manager() RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ws uuid := internal.require_workspace(true);
BEGIN
    IF flowtrack.current_workspace_role() NOT IN ('owner', 'admin') THEN
        RAISE EXCEPTION 'workspace_role: only owners and admins cancel or requeue jobs'
            USING ERRCODE = '42501', HINT = 'Ask an owner or admin of the workspace.';
    END IF;
    RETURN ws;
END
$$;
COMMENT ON FUNCTION internal.require_job_manager() IS 'The caller''s workspace when the caller is its owner or an admin; else 42501.';

CREATE FUNCTION api.workspace_jobs(state text DEFAULT NULL)
RETURNS TABLE (id uuid, kind text, status text, attempts integer, run_at timestamptz, last_error text,
               reason text, step_id uuid, created_at timestamptz, died_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_job_manager();
BEGIN
    IF state IS NOT NULL AND state NOT IN ('queued', 'running', 'dead') THEN
        RAISE EXCEPTION 'state: unknown job state "%"', state
            USING ERRCODE = '22023', HINT = 'States: queued, running, dead (or none for all).';
    END IF;
    RETURN QUERY
        SELECT j.id, j.kind, j.status, j.attempts, j.run_at, j.last_error, NULL::text,
               (j.payload ->> 'step_id')::uuid, j.created_at, NULL::timestamptz
          FROM internal.jobs j
         WHERE j.workspace_id = ws AND (workspace_jobs.state IS NULL OR j.status = workspace_jobs.state)
        UNION ALL
        SELECT d.id, d.kind, 'dead', d.attempts, NULL, d.last_error, d.reason,
               (d.payload ->> 'step_id')::uuid, d.created_at, d.died_at
          FROM internal.dead_jobs d
         WHERE d.workspace_id = ws AND (workspace_jobs.state IS NULL OR workspace_jobs.state = 'dead')
         ORDER BY 9 DESC
         LIMIT 1000;
END
$$;
COMMENT ON FUNCTION api.workspace_jobs(text) IS
  'Owners and admins: the workspace''s side-effect jobs (queued, running, dead; newest first, at most 1,000), without payloads, which may hold personal data.';

CREATE FUNCTION api.cancel_job(job_id uuid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_job_manager();
BEGIN
    PERFORM flowtrack.act_for(ws, 'owner');
    -- A running job is cancelled too: its worker's report comes back stale.
    IF internal.bury_jobs(ARRAY(SELECT j.id FROM internal.jobs j
                                 WHERE j.id = cancel_job.job_id AND j.workspace_id = ws FOR UPDATE),
                          'cancelled', 'cancelled by ' || coalesce(flowtrack.current_user_id()::text, 'an owner')) = 0 THEN
        RAISE EXCEPTION 'job_id: no queued or running job % in this workspace', job_id
            USING ERRCODE = 'PT404', HINT = 'List jobs with POST /rpc/workspace_jobs.';
    END IF;
    RETURN 'cancelled';
END
$$;
COMMENT ON FUNCTION api.cancel_job(uuid) IS
  'Owners and admins: cancels a queued or running job of the workspace. It moves to the dead jobs (reason cancelled), its step fails and a running worker''s report is ignored.';

CREATE FUNCTION api.requeue_job(job_id uuid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET flowtrack.workspace_id = '' AS $$
DECLARE
    ws uuid := internal.require_job_manager();
    d internal.dead_jobs;
BEGIN
    DELETE FROM internal.dead_jobs x WHERE x.id = requeue_job.job_id AND x.workspace_id = ws RETURNING * INTO d;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job_id: no dead job % in this workspace', job_id
            USING ERRCODE = 'PT404', HINT = 'List dead jobs with POST /rpc/workspace_jobs {"state": "dead"}.';
    END IF;
    IF d.payload ? 'step_id' THEN
        -- Its step failed when the job died; the execution has moved on.
        RAISE EXCEPTION 'job_id: job % belongs to a workflow step, which failed when the job died', job_id
            USING ERRCODE = '55000', HINT = 'Re-run the execution instead.';
    END IF;
    -- Attempts start over; the claim count carries on, so the old leases'
    -- tokens stay stale.
    INSERT INTO internal.jobs (id, workspace_id, kind, payload, attempts, claims, created_at)
    VALUES (d.id, d.workspace_id, d.kind, d.payload, 0, d.claims, d.created_at);
    RETURN 'queued';
END
$$;
COMMENT ON FUNCTION api.requeue_job(uuid) IS
  'Owners and admins: puts a dead job of the workspace back in the queue, due now, with its attempts reset. Jobs of workflow steps are refused (55000): re-run the execution.';

REVOKE ALL ON FUNCTION internal.claim_due(text, integer, timestamptz), internal.expire_leases(timestamptz),
                       internal.bury_jobs(uuid[], text, text, uuid[], jsonb[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION internal.claim_jobs(text, integer, integer),
                          internal.complete_jobs(text, uuid[], integer[], jsonb[]),
                          internal.fail_jobs(text, uuid[], integer[], text[], boolean[], jsonb[]),
                          internal.heartbeat_jobs(text, uuid[], integer[]),
                          internal.release_jobs(text, uuid[], integer[]),
                          internal.queue_status()
    TO flowtrack_worker;
GRANT EXECUTE ON FUNCTION api.workspace_jobs(text), api.cancel_job(uuid), api.requeue_job(uuid) TO authenticated;
