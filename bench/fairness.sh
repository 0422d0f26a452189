#!/usr/bin/env bash
# Fairness across tenants: enqueue-to-start latency (p50, p99) of the jobs of
# ten small workspaces, each enqueueing 20 no-op jobs/s (pgbench, one job per
# transaction), run by the real worker (release build):
#   quiet - nothing else queued;
#   flood - one more workspace enqueues 100x the ten together (20,000 jobs/s,
#           500 per transaction; BENCH_FLOOD_TPS=4 makes it 100x each one,
#           2,000 jobs/s);
#   fifo  - the same flood with the claim replaced, in this throwaway
#           cluster only, by plain oldest-first (what the queue did before):
#           the peer that shows what the fair claim buys.
# Goal (issue 10): the small workspaces' p99 under the flood at most 2x quiet.
# Start times come from a statement-level trigger on internal.jobs that logs
# each claimed row (id, workspace, due time, clock time) into bench.starts;
# every scenario pays it alike.
set -euo pipefail
as_pg() { if [[ $EUID -eq 0 ]]; then (cd / && sudo -u postgres -- "$@"); else "$@"; fi; }
psql_() { $BENCH_PSQL "$@"; }
PGBENCH="/usr/lib/postgresql/15/bin/pgbench"
DURATION=${BENCH_SECONDS:-20}
tmp=$(mktemp -d /tmp/flowtrack-bench-fairness.XXXX); chmod 755 "$tmp"

psql_ -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE SCHEMA bench;
CREATE TABLE bench.starts (id uuid, workspace_id uuid, due timestamptz, started timestamptz);
-- The trigger fires inside the queue's functions, as flowtrack_owner: it
-- runs as its (superuser) owner to reach schema bench, in this throwaway
-- cluster only.
CREATE FUNCTION bench.log_starts() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO bench.starts SELECT n.id, n.workspace_id, n.run_at, pg_catalog.clock_timestamp()
      FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE n.status = 'running' AND o.status = 'queued';
    RETURN NULL;
END $$;
CREATE TRIGGER bench_log_starts AFTER UPDATE ON internal.jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bench.log_starts();
INSERT INTO api.users (id, email, full_name) VALUES ('00000000-0000-4000-8000-00000000f001', 'fair@flowtrack.dev', 'Fair');
-- Workspaces ...f100 (the flood) and ...f101 to ...f110 (the small ones).
INSERT INTO api.workspaces (id, name, slug, plan_id, owner_user_id)
SELECT ('00000000-0000-4000-8000-000000000' || (100 + i))::uuid, 'Fair ' || i, 'fair-' || i, p.id,
       '00000000-0000-4000-8000-00000000f001'
  FROM generate_series(0, 10) i, api.subscription_plans p WHERE p.code = 'enterprise';
SQL
cat >"$tmp/small.sql" <<'SQL'
\set w 101 + :client_id % 10
SELECT internal.enqueue_job('noop', '{}', ('00000000-0000-4000-8000-000000000' || :w)::uuid);
SQL
cat >"$tmp/flood.sql" <<'SQL'
INSERT INTO internal.jobs (workspace_id, kind, payload)
SELECT '00000000-0000-4000-8000-000000000100', 'noop', '{}' FROM generate_series(1, 500);
SQL
chmod 644 "$tmp"/*.sql

worker_url="postgres://flowtrack_worker:$FLOWTRACK_WORKER_PASSWORD@127.0.0.1:$BENCH_PORT/$BENCH_DB"
start_worker() {
  DATABASE_URL="$worker_url" FLOWTRACK_CONCURRENCY=${BENCH_CONCURRENCY:-64} FLOWTRACK_CLAIM_BATCH=${BENCH_BATCH:-100} \
    RUST_LOG=warn "$ROOT/target/release/flowtrack-worker" run >"$tmp/worker.log" 2>&1 &
  worker_pid=$!
}
worker_pid=
stop_worker() {
  [[ -n $worker_pid ]] || return 0
  kill -TERM "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true; worker_pid=
}
trap 'stop_worker' EXIT

pgb() { # clients rate file
  (cd / && sudo -u postgres "$PGBENCH" -h "$BENCH_HOST" -p "$BENCH_PORT" -U postgres -n -M prepared \
    -c "$1" -j 2 -R "$2" -T "$DURATION" -f "$tmp/$3" "$BENCH_DB" >"$tmp/$3.out" 2>&1)
}

scenario() { # name flood?
  psql_ -c "TRUNCATE bench.starts" -c "DELETE FROM internal.jobs" -c "VACUUM internal.jobs" -c CHECKPOINT >/dev/null
  start_worker
  sleep 1
  local t0; t0=$(psql_ -tAc "SELECT clock_timestamp()")
  if [[ $2 == yes ]]; then pgb 2 "${BENCH_FLOOD_TPS:-40}" flood.sql & fpid=$!; fi
  pgb 10 200 small.sql
  [[ $2 == yes ]] && wait "$fpid"
  sleep 2
  stop_worker
  # Small jobs never started count as started now: a lower bound on their
  # latency, so a starved workspace cannot drop out of its own percentile.
  psql_ -c "INSERT INTO bench.starts SELECT id, workspace_id, run_at, clock_timestamp() FROM internal.jobs
             WHERE workspace_id <> '00000000-0000-4000-8000-000000000100'" >/dev/null
  psql_ -tA -F ' ' -c "
    SELECT '$1',
           count(*),
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started - due)) * 1000)::numeric, 2),
           round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started - due)) * 1000)::numeric, 2),
           (SELECT count(*) FROM bench.starts WHERE workspace_id = '00000000-0000-4000-8000-000000000100'),
           (SELECT count(*) FROM internal.jobs WHERE workspace_id = '00000000-0000-4000-8000-000000000100')
      FROM bench.starts
     WHERE workspace_id <> '00000000-0000-4000-8000-000000000100' AND due >= '$t0'"
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); ${DURATION} s per scenario; flood $(( ${BENCH_FLOOD_TPS:-40} * 500 )) jobs/s"
echo "| scenario | small jobs | p50 ms | p99 ms | flood jobs run | flood backlog at end |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
quiet=$(scenario quiet no); flood=$(scenario flood yes)
# The peer: oldest-first claiming (the queue before issue 10), same flood.
psql_ -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SET ROLE flowtrack_owner;
CREATE OR REPLACE FUNCTION internal.claim_due(worker text, n integer, at timestamptz)
RETURNS TABLE (id uuid, workspace_id uuid, kind text, payload jsonb, attempt integer, fence integer,
               lease_until timestamptz, enqueued_at timestamptz)
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE internal.jobs j
       SET status = 'running', attempts = j.attempts + 1, claims = j.claims + 1, locked_by = worker,
           locked_until = at + pg_catalog.make_interval(secs => k.lease_seconds)
      FROM (SELECT x.id FROM internal.jobs x WHERE x.status = 'queued' AND x.run_at <= at
             ORDER BY x.run_at LIMIT n FOR UPDATE SKIP LOCKED) picked, internal.job_kinds k
     WHERE j.id = picked.id AND k.kind = j.kind
    RETURNING j.id, j.workspace_id, j.kind, j.payload, j.attempts, j.claims, j.locked_until, j.run_at
$$;
CREATE INDEX bench_jobs_fifo ON internal.jobs (run_at) WHERE status = 'queued';
SQL
fifo=$(scenario fifo yes)
for row in "$quiet" "$flood" "$fifo"; do
  read -r name n p50 p99 fn backlog <<<"$row"
  echo "| $name | $n | $p50 | $p99 | $fn | $backlog |"
done
read -r _ _ _ q99 _ _ <<<"$quiet"; read -r _ _ _ f99 _ _ <<<"$flood"; read -r _ _ _ o99 _ _ <<<"$fifo"
awk -v q="$q99" -v f="$f99" -v o="$o99" 'BEGIN {
  printf "p99 under the flood / quiet: fair claim %.2fx (goal <= 2x), oldest-first %.2fx\n", f / q, o / q }'
