#!/usr/bin/env bash
# Worker benchmark, run by `./dev bench worker` against a fresh cluster with
# every migration applied. FlowTrack's queue and worker (`flowtrack-worker
# run`, release build) against graphile-worker and pg-boss (pinned in
# bench/worker/package.json, installed into .flowtrack/bench-npm), each in
# its own database of the same cluster, all running the same no-op job:
#   1. burn-down: BURN_JOBS jobs enqueued in bulk, then timed from the worker's
#      first progress to an empty queue (bench/worker/drain.cjs), at each
#      system's best settings of a small sweep (SWEEP_JOBS jobs per try);
#   2. enqueue-to-start latency at a fixed offered load (an open-loop
#      generator, bench/worker/loadgen.cjs; commit time taken when the
#      commit's reply arrives, start time at the handler's entry);
#   3. enqueue throughput at ENQ_CLIENTS pgbench clients: FlowTrack's enqueue
#      next to a plain INSERT (no wake-up mechanism) and to enqueue plus a
#      pg_notify, with and without a parked worker; each peer's own enqueue;
#   4. cost per job during the burn-down (commits from pg_stat_database, WAL
#      bytes from pg_current_wal_lsn) and the queue tables' size and dead
#      tuples afterwards.
# Prints markdown tables and one "RESULT ..." line per figure.
#
# Environment (set by ./dev): BENCH_HOST (socket dir), BENCH_PORT, BENCH_DB,
# ROOT, the passwords from .flowtrack/secrets.env. Optional: the BENCH_*
# overrides of the parameters below, e.g. BENCH_SYSTEMS="graphile pgboss" to
# run the peers alone, or BENCH_FT_SWEEP_3="" to drop a sweep setting.
set -euo pipefail

: "${BENCH_HOST:?set by ./dev bench}" "${BENCH_PORT:?set by ./dev bench}" "${BENCH_DB:?set by ./dev bench}"
: "${ROOT:?set by ./dev bench}" "${FLOWTRACK_WORKER_PASSWORD:?}" "${FLOWTRACK_SUPERUSER_PASSWORD:?}"

# ----------------------------------------------------------- parameters ----

read -ra SYSTEMS <<<"${BENCH_SYSTEMS:-flowtrack graphile pgboss}"
PHASES=" ${BENCH_PHASES:-burn latency enqueue} "      # without burn, each system runs its first sweep setting
BURN_JOBS=${BENCH_BURN_JOBS:-200000}
SWEEP_JOBS=${BENCH_SWEEP_JOBS:-50000}
SWEEP_TIMEOUT_S=${BENCH_SWEEP_TIMEOUT_S:-60}   # a sweep setting slower than SWEEP_JOBS/this is cut off
LAT_RATE=${BENCH_LAT_RATE:-500}                # offered load, jobs/s
LAT_SECONDS=${BENCH_LAT_SECONDS:-20}
LAT_CONNS=${BENCH_LAT_CONNS:-16}               # generator connections (enough to stay open-loop)
ENQ_CLIENTS=${BENCH_ENQ_CLIENTS:-32}
ENQ_SECONDS=${BENCH_ENQ_SECONDS:-5}
ENQ_ROUNDS=${BENCH_ENQ_ROUNDS:-3}

# FlowTrack: the queue interface (sql/0006_jobs.sql) and the worker's
# environment (worker/src/config.rs). Sweep entries are env assignments.
FT_BIN=${BENCH_FT_BIN:-$ROOT/target/release/flowtrack-worker}
FT_ENQUEUE_SQL=${BENCH_FT_ENQUEUE_SQL:-"SELECT internal.enqueue_job('noop', '{}'::jsonb)"}
# The baselines "no wake-up at all": the same row by a plain INSERT (the
# floor), and by bench.enqueue_nowake, a copy of internal.enqueue_job made at
# setup from its catalog definition (same body, SET clauses and owner) with
# any flowtrack.wake_on_commit() call replaced by NULL, which isolates what
# the wake-up costs an enqueue. Wake-up triggers are switched off for both.
FT_PLAIN_SQL=${BENCH_FT_PLAIN_SQL:-"INSERT INTO internal.jobs (kind, payload) VALUES ('noop', '{}'::jsonb) RETURNING id"}
FT_NOWAKE_SQL=${BENCH_FT_NOWAKE_SQL:-"SELECT bench.enqueue_nowake('noop', '{}'::jsonb)"}
# Wake-ups fired by a trigger on the queue (flowtrack.wake_workers) are
# switched off for the two baselines and on for everything else.
FT_WAKE_TRIGGERS_SQL="SELECT tgname FROM pg_trigger WHERE tgrelid = 'internal.jobs'::regclass
                        AND tgfoid = coalesce(to_regprocedure('flowtrack.wake_workers()'), 0)"
FT_REMAINING_SQL="SELECT count(*) FROM internal.jobs WHERE kind = 'noop'"
FT_UNTOUCHED_SQL="SELECT count(*) FROM internal.jobs WHERE kind = 'noop' AND status = 'queued'"
FT_TABLES="internal.jobs internal.dead_jobs"
FT_ENV=(FLOWTRACK_WAIT_MS=1000 FLOWTRACK_LOG_FORMAT=json)
read -ra FT_SWEEP_0 <<<"${BENCH_FT_SWEEP_0-FLOWTRACK_CONCURRENCY=32 FLOWTRACK_CLAIM_BATCH=32}"
read -ra FT_SWEEP_1 <<<"${BENCH_FT_SWEEP_1-FLOWTRACK_CONCURRENCY=16 FLOWTRACK_CLAIM_BATCH=16}"
read -ra FT_SWEEP_2 <<<"${BENCH_FT_SWEEP_2-FLOWTRACK_CONCURRENCY=64 FLOWTRACK_CLAIM_BATCH=64}"
read -ra FT_SWEEP_3 <<<"${BENCH_FT_SWEEP_3-FLOWTRACK_CONCURRENCY=128 FLOWTRACK_CLAIM_BATCH=128}"
# The queue alone through the Node harness (bench/worker/peer.cjs ftqueue),
# next to the service in the latency table; BENCH_LAT_EXTRA="" drops it.
read -ra FQ_SETTINGS <<<"${BENCH_FQ_SETTINGS:-FQ_LOOPS=4 FQ_BATCH=32 FQ_WAIT_MS=1000}"
read -ra LAT_EXTRA <<<"${BENCH_LAT_EXTRA-ftqueue}"
# Per-job handler starts, for the latency: JSON log lines carrying this
# message and the job's id (FLOWTRACK_LOG_FORMAT=json, RUST_LOG below). The
# worker logs "job done" after the handler with its duration in whole ms, so
# the start is that line's timestamp less ms: for a no-op, microseconds late
# at most (against FlowTrack).
FT_START_MESSAGE=${BENCH_FT_START_MESSAGE:-job done}
FT_RUST_LOG=${BENCH_FT_RUST_LOG:-flowtrack_worker=debug}

# graphile-worker 0.17: concurrency, local queue, batched completion
# (preset.worker.localQueue.size, completeJobBatchDelay, failJobBatchDelay).
# (The docs' starting point, 10 jobs with a local queue of 11, drained at a
# tenth of these in trials: left out to keep the run short.)
read -ra GW_SWEEP_0 <<<"${BENCH_GW_SWEEP_0-PEER_PROCS=2 GW_CONCURRENCY=50 GW_LOCAL_QUEUE=1000 GW_COMPLETE_DELAY=5 GW_FAIL_DELAY=5}"
read -ra GW_SWEEP_1 <<<"${BENCH_GW_SWEEP_1-PEER_PROCS=1 GW_CONCURRENCY=24 GW_LOCAL_QUEUE=500 GW_COMPLETE_DELAY=0 GW_FAIL_DELAY=0}"
read -ra GW_SWEEP_2 <<<"${BENCH_GW_SWEEP_2-PEER_PROCS=1 GW_CONCURRENCY=50 GW_LOCAL_QUEUE=1000 GW_COMPLETE_DELAY=5 GW_FAIL_DELAY=5}"
read -ra GW_SWEEP_3 <<<"${BENCH_GW_SWEEP_3-PEER_PROCS=2 GW_CONCURRENCY=24 GW_LOCAL_QUEUE=500 GW_COMPLETE_DELAY=0 GW_FAIL_DELAY=0}"
# pg-boss 10: work() loops x jobs per fetch; it polls (0.5 s is its minimum).
# A work() loop fetches at most one batch per polling interval, so its
# ceiling is PB_BATCH / PB_POLL_S jobs/s per loop.
# (4 loops x 1,000 drained at a quarter of 4 x 5,000 in trials.)
read -ra PB_SWEEP_0 <<<"${BENCH_PB_SWEEP_0-PEER_PROCS=1 PB_WORKERS=4 PB_BATCH=5000 PB_POLL_S=0.5}"
read -ra PB_SWEEP_1 <<<"${BENCH_PB_SWEEP_1-PEER_PROCS=1 PB_WORKERS=8 PB_BATCH=5000 PB_POLL_S=0.5}"
read -ra PB_SWEEP_2 <<<"${BENCH_PB_SWEEP_2-PEER_PROCS=1 PB_WORKERS=16 PB_BATCH=5000 PB_POLL_S=0.5}"
read -ra PB_SWEEP_3 <<<"${BENCH_PB_SWEEP_3-PEER_PROCS=2 PB_WORKERS=8 PB_BATCH=5000 PB_POLL_S=0.5}"

# --------------------------------------------------------------- plumbing ----

PG_BIN=/usr/lib/postgresql/15/bin
NPM_DIR=$ROOT/.flowtrack/bench-npm
export NODE_PATH=$NPM_DIR/node_modules
JS=$ROOT/bench/worker
as_pg() { if [[ $EUID -eq 0 ]]; then (cd / && sudo -u postgres -- "$@"); else "$@"; fi; }
psql_db() { local db=$1; shift; as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$BENCH_HOST" -p "$BENCH_PORT" -U postgres -d "$db" "$@"; }
val() { psql_db "$1" -tAc "$2"; }
say() { printf '%s %s\n' "$(date -u +%T)" "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

tmp=$(mktemp -d /tmp/flowtrack-bench-worker.XXXXXX)
chmod 755 "$tmp"
# Each worker's log and each burn-down's poll series stay here after the run.
LOGS=$ROOT/.flowtrack/bench-worker-logs
rm -rf "$LOGS" && mkdir -p "$LOGS"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# The peers, pinned by bench/worker/package-lock.json: installed once into
# .flowtrack/bench-npm (never globally), again when the lock file changes.
if ! cmp -s "$JS/package-lock.json" "$NPM_DIR/package-lock.json" 2>/dev/null || [[ ! -d $NPM_DIR/node_modules ]]; then
  say "npm ci (graphile-worker, pg-boss) into $NPM_DIR"
  rm -rf "$NPM_DIR" && mkdir -p "$NPM_DIR"
  cp "$JS/package.json" "$JS/package-lock.json" "$NPM_DIR/"
  (cd "$NPM_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
GW_VERSION=$(node -p "require('$NODE_PATH/graphile-worker/package.json').version")
PB_VERSION=$(node -p "require('$NODE_PATH/pg-boss/package.json').version")

# Each peer gets its own login role and database, created here.
PEER_PASSWORD=$(openssl rand -hex 16)
for s in graphile pgboss; do
  psql_db postgres -c "CREATE ROLE bench_$s LOGIN PASSWORD '$PEER_PASSWORD'" -c "CREATE DATABASE bench_$s OWNER bench_$s" >/dev/null
done
tcp_url() { echo "postgres://$1:$2@127.0.0.1:$BENCH_PORT/$3"; }

# sys_* describe each system to the phases below.
sys_db() { case $1 in flowtrack|ftqueue) echo "$BENCH_DB" ;; *) echo "bench_$1" ;; esac; }
sys_worker_url() {
  case $1 in
    flowtrack|ftqueue) tcp_url flowtrack_worker "$FLOWTRACK_WORKER_PASSWORD" "$BENCH_DB" ;;
    *) tcp_url "bench_$1" "$PEER_PASSWORD" "bench_$1" ;;
  esac
}
# Reads the queue (the poller, the generator): FlowTrack's tables are the owner's.
sys_admin_url() {
  case $1 in
    flowtrack|ftqueue) tcp_url postgres "$FLOWTRACK_SUPERUSER_PASSWORD" "$BENCH_DB" ;;
    *) sys_worker_url "$1" ;;
  esac
}
sys_remaining_sql() {
  case $1 in
    flowtrack|ftqueue) echo "$FT_REMAINING_SQL" ;;
    graphile) echo "SELECT count(*) FROM graphile_worker._private_jobs" ;;
    pgboss) echo "SELECT count(*) FROM pgboss.job WHERE name = 'noop' AND state < 'completed'" ;;
  esac
}
# Jobs no worker has claimed yet (the burn-down's clock starts at the first claim).
sys_untouched_sql() {
  case $1 in
    flowtrack) echo "$FT_UNTOUCHED_SQL" ;;
    graphile) echo "SELECT count(*) FROM graphile_worker._private_jobs WHERE locked_at IS NULL" ;;
    pgboss) echo "SELECT count(*) FROM pgboss.job WHERE name = 'noop' AND state = 'created'" ;;
  esac
}
# One job, returning its id: what an application runs to enqueue.
sys_enqueue_sql() {
  case $1 in
    flowtrack|ftqueue) echo "$FT_ENQUEUE_SQL" ;;
    graphile) echo "SELECT id FROM graphile_worker.add_job('noop', '{}'::json)" ;;
    pgboss) node "$JS/peer.cjs" pgboss send-sql | sed 's/;$//' ;;  # what send('noop', {}) runs
  esac
}
# The tables a system's jobs live in (for sizes and dead tuples).
sys_tables_sql() {
  case $1 in
    flowtrack|ftqueue) echo "SELECT unnest(string_to_array('$FT_TABLES', ' '))::regclass" ;;
    graphile) echo "SELECT 'graphile_worker._private_jobs'::regclass" ;;
    pgboss) echo "SELECT 'pgboss.job'::regclass UNION ALL SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'pgboss.job'::regclass UNION ALL SELECT 'pgboss.archive'::regclass" ;;
  esac
}
sys_settings() { local -n _cfg="${2}"; echo "${_cfg[*]}"; }
sys_sweep() {
  local p
  case $1 in flowtrack) p=FT ;; graphile) p=GW ;; pgboss) p=PB ;; esac
  for i in 0 1 2 3; do
    local -n _s="${p}_SWEEP_$i"
    (( ${#_s[@]} )) && echo "${p}_SWEEP_$i"
  done
  return 0
}
# The worker command, with a settings array's assignments in its environment.
worker_cmd() {
  local sys=$1 cfg=$2 trace=$3
  local -n _c="$cfg"
  case $sys in
    # Per-job debug logs only when timing starts (the latency), never in the burn-down.
    flowtrack) echo env "${FT_ENV[@]}" ${trace:+RUST_LOG=$FT_RUST_LOG} "${_c[@]}" DATABASE_URL="$(sys_worker_url flowtrack)" "$FT_BIN" run ;;
    *) echo env "${_c[@]}" PEER_URL="$(sys_worker_url "$sys")" TRACE="$trace" node "$JS/peer.cjs" "$sys" run ;;  # ftqueue too
  esac
}

# Empty the system's queue of benchmark jobs, vacuum, checkpoint: every
# measurement starts from the same clean table and no dirty pages.
reset_queue() {
  local sys=$1 db; db=$(sys_db "$1")
  case $sys in
    flowtrack|ftqueue) psql_db "$db" -c "DELETE FROM internal.jobs WHERE kind = 'noop'" >/dev/null ;;
    graphile) psql_db "$db" -c "DELETE FROM graphile_worker._private_jobs" >/dev/null ;;
    pgboss) psql_db "$db" -c "DELETE FROM pgboss.job WHERE name = 'noop'" -c "DELETE FROM pgboss.archive WHERE name = 'noop'" >/dev/null ;;
  esac
  vacuum_queue "$sys"
}
vacuum_queue() {
  local sys t db
  for sys in "$@"; do
    db=$(sys_db "$sys")
    for t in $(val "$db" "$(sys_tables_sql "$sys")"); do psql_db "$db" -c "VACUUM ANALYZE $t" >/dev/null; done
  done
  psql_db postgres -c CHECKPOINT >/dev/null
}
fill_queue() {
  local sys=$1 n=$2
  case $sys in
    flowtrack) psql_db "$BENCH_DB" -c "SELECT count(internal.enqueue_job('noop', '{}'::jsonb)) FROM generate_series(1, $n)" >/dev/null ;;
    *) PEER_URL=$(sys_worker_url "$sys") node "$JS/peer.cjs" "$sys" fill "$n" ;;
  esac
}

# Counters read from the postgres database, so reading them adds nothing to
# the measured database's commits.
counters() { val postgres "SELECT xact_commit, xact_rollback, pg_current_wal_lsn() FROM pg_stat_database WHERE datname = '$(sys_db "$1")'"; }
wal_diff() { val postgres "SELECT pg_wal_lsn_diff('$2', '$1')::bigint"; }
# Table sizes and tuples of a system's queue tables, summed: bytes|live|dead.
table_stats() {
  local db; db=$(sys_db "$1")
  val "$db" "SELECT coalesce(sum(pg_total_relation_size(t)), 0)::bigint, coalesce(sum(s.n_live_tup), 0), coalesce(sum(s.n_dead_tup), 0)
               FROM ($(sys_tables_sql "$1")) AS q(t) LEFT JOIN pg_stat_user_tables s ON s.relid = q.t"
}

# The poll series also records what autovacuum is doing, every table's dead
# tuples (a claim that walks dead index entries slows down) and the session
# holding the oldest snapshot in the database (what keeps them from going).
DIAG_SQL="(SELECT string_agg(regexp_replace(query, '^autovacuum: ', ''), '; ') FROM pg_stat_activity
            WHERE backend_type = 'autovacuum worker'),
          (SELECT string_agg(relname || '=' || n_dead_tup, ' ') FROM pg_stat_user_tables WHERE n_dead_tup > 1000),
          (SELECT usename || ' xmin age ' || age(backend_xmin) || ': ' || left(query, 80) FROM pg_stat_activity
            WHERE backend_xmin IS NOT NULL AND datname = current_database() AND pid <> pg_backend_pid()
            ORDER BY age(backend_xmin) DESC LIMIT 1)"
# burn SYS CFG N TIMEOUT: fills the queue with N jobs, drains it with the
# worker at CFG; prints drain.cjs's JSON line plus the cost fields.
burn() {
  local sys=$1 cfg=$2 n=$3 timeout=$4 c0 c1 x0 r0 l0 x1 r1 l1 out
  say "burn $sys $cfg $n: reset"
  reset_queue "$sys"
  say "burn $sys $cfg $n: fill"
  fill_queue "$sys" "$n"
  say "burn $sys $cfg $n: vacuum"
  # Every system's tables, so no autovacuum of an earlier run's leftovers
  # lands in this run's WAL.
  vacuum_queue "${SYSTEMS[@]}"
  sleep 1
  IFS='|' read -r x0 r0 l0 <<<"$(counters "$sys")"
  say "burn $sys $cfg $n: drain"
  # shellcheck disable=SC2046
  out=$(DRAIN_URL=$(sys_admin_url "$sys") DRAIN_SQL=$(sys_remaining_sql "$sys") DRAIN_START_SQL=$(sys_untouched_sql "$sys") DRAIN_TOTAL=$n \
        DRAIN_TIMEOUT_S=$timeout WORKER_LOG=$LOGS/burn-$sys-$cfg-$n.log DRAIN_SERIES=$LOGS/burn-$sys-$cfg-$n.tsv \
        DRAIN_DIAG_SQL="$DIAG_SQL" \
        node "$JS/drain.cjs" -- $(worker_cmd "$sys" "$cfg" "")) || { tail -n 20 "$LOGS/burn-$sys-$cfg-$n.log" >&2; return 1; }
  say "burn $sys $cfg $n: done $out"
  sleep 1.5  # the worker has exited; give the stats collector its flush
  IFS='|' read -r x1 r1 l1 <<<"$(counters "$sys")"
  node -e '
    const o = JSON.parse(process.argv[1]); const [dx, dr, wal] = process.argv.slice(2).map(Number);
    o.commits_per_job = +((dx - o.polls) / o.jobs).toFixed(4);
    o.rollbacks = dr;
    o.wal_bytes_per_job = Math.round(wal / o.jobs);
    console.log(JSON.stringify(o));' "$out" $((x1 - x0)) $((r1 - r0)) "$(wal_diff "$l0" "$l1")"
}
jf() { node -p "const o = JSON.parse(process.argv[1]); o['$2'] ?? 'n/a'" "$1"; }   # a field of a JSON line

results=()
result() { results+=("RESULT bench=worker $*"); }

# ---------------------------------------------------------------- machine ----

pg_setting() { val postgres "SELECT current_setting('$1')"; }
psql_db postgres -c "CREATE TABLE bench_commit_probe (x int)" >/dev/null
echo 'INSERT INTO bench_commit_probe VALUES (1);' >"$tmp/probe.sql"; chmod 644 "$tmp/probe.sql"
commit_ms=$(as_pg "$PG_BIN/pgbench" -h "$BENCH_HOST" -p "$BENCH_PORT" -U postgres -n -c 1 -T 2 -f "$tmp/probe.sql" postgres 2>&1 \
  | awk '/^latency average/ { print $4 }')
echo "## machine"
echo "cpu:      $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
echo "ram:      $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "postgres: $(val postgres 'SELECT version()')"
echo "settings: fsync=$(pg_setting fsync) synchronous_commit=$(pg_setting synchronous_commit)" \
     "wal_sync_method=$(pg_setting wal_sync_method) full_page_writes=$(pg_setting full_page_writes)" \
     "shared_buffers=$(pg_setting shared_buffers)"
echo "commit:   a 1-client INSERT commit took ${commit_ms} ms (the disk flush sets every enqueue's floor)"
echo "peers:    graphile-worker $GW_VERSION, pg-boss $PB_VERSION, node $(node --version); flowtrack-worker at $(git -C "$ROOT" rev-parse --short HEAD)"
echo "start:    $(date -u +%FT%TZ), load average $(load)"
result "figure=commit_ms value=$commit_ms load=\"$(load)\""

# ---------------------------------------------------------------- setup ----

for s in "${SYSTEMS[@]}"; do
  case $s in
    flowtrack)
      fn=$(val "$BENCH_DB" "SELECT p.oid FROM pg_proc p WHERE p.oid = 'internal.enqueue_job'::regproc")
      owner=$(val "$BENCH_DB" "SELECT proowner::regrole FROM pg_proc WHERE oid = $fn")
      {
        echo "CREATE SCHEMA bench; GRANT USAGE ON SCHEMA bench TO $owner;"
        val "$BENCH_DB" "SELECT pg_get_functiondef($fn)" \
          | sed -E '1s/FUNCTION internal\.enqueue_job\(/FUNCTION bench.enqueue_nowake(/; s/flowtrack\.wake_on_commit\(\)/NULL/g'
        echo ";"
        echo "ALTER FUNCTION bench.enqueue_nowake($(val "$BENCH_DB" "SELECT pg_get_function_identity_arguments($fn)")) OWNER TO $owner;"
      } | psql_db "$BENCH_DB" >/dev/null ;;
    graphile|pgboss) PEER_URL=$(sys_worker_url "$s") node "$JS/peer.cjs" "$s" setup ;;
  esac
done

# ------------------------------------------------------------ 1. burn-down ----

echo
echo "## 1. burn-down (sweep: $SWEEP_JOBS jobs per setting; best setting re-run with $BURN_JOBS)"
echo "| system | setting | jobs | jobs/s | load |"
echo "| :-- | :-- | --: | --: | :-- |"
declare -A BEST BEST_RATE BURN
for s in "${SYSTEMS[@]}"; do
  mapfile -t sweep < <(sys_sweep "$s")   # (not through head: SIGPIPE under pipefail)
  BEST[$s]=${sweep[0]:-}
  BURN[$s]='{}'
  declare -g "AFTER_BURN_$s=0|0|0"
done
[[ $PHASES == *" burn "* ]] && for s in "${SYSTEMS[@]}"; do
  BEST[$s]=''
  BEST_RATE[$s]=0
  for cfg in $(sys_sweep "$s"); do
    line=$(burn "$s" "$cfg" "$SWEEP_JOBS" "$SWEEP_TIMEOUT_S") || line='{"rate":0,"error":"timed out or failed"}'
    rate=$(jf "$line" rate)
    echo "| $s | $(sys_settings "$s" "$cfg") | $SWEEP_JOBS | $rate$( [[ $rate == 0 ]] && echo ' (cut off)') | $(load) |"
    if (( rate > BEST_RATE[$s] )); then BEST_RATE[$s]=$rate; BEST[$s]=$cfg; fi
  done
  [[ -n ${BEST[$s]:-} ]] || { echo "FAIL: no setting of $s drained the queue" >&2; exit 1; }
done
echo
echo "| system | best setting | jobs | seconds | jobs/s | commits/job | WAL bytes/job | load |"
echo "| :-- | :-- | --: | --: | --: | --: | --: | :-- |"
[[ $PHASES == *" burn "* ]] && for s in "${SYSTEMS[@]}"; do
  BURN[$s]=$(burn "$s" "${BEST[$s]}" "$BURN_JOBS" 900)
  l=${BURN[$s]}
  echo "| $s | $(sys_settings "$s" "${BEST[$s]}") | $BURN_JOBS | $(jf "$l" seconds) | $(jf "$l" rate) | $(jf "$l" commits_per_job) | $(jf "$l" wal_bytes_per_job) | $(load) |"
  result "figure=burn_down system=$s jobs_per_s=$(jf "$l" rate) seconds=$(jf "$l" seconds) jobs=$BURN_JOBS" \
         "commits_per_job=$(jf "$l" commits_per_job) wal_bytes_per_job=$(jf "$l" wal_bytes_per_job)" \
         "settings=\"$(sys_settings "$s" "${BEST[$s]}")\" load=\"$(load)\""
  declare -g "AFTER_BURN_$s=$(table_stats "$s")"
done

# -------------------------------------------------------------- 2. latency ----

# Handler starts from the FlowTrack worker's JSON log (lines with
# FT_START_MESSAGE and a job id) as "id<TAB><TAB>wall_ms".
ft_starts() {
  node -e '
    const fs = require("fs"); const want = process.argv[2];
    for (const l of fs.readFileSync(process.argv[1], "utf8").split("\n")) {
      if (!l.startsWith("{")) continue;
      let o; try { o = JSON.parse(l); } catch { continue; }
      const f = { ...o, ...(o.span || {}), ...(o.fields || {}) };
      if (f.message !== want) continue;
      const id = f.job_id ?? f.job ?? f.id; if (!id) continue;
      const at = Date.parse(o.timestamp) + Number((/\.\d{3}(\d+)/.exec(o.timestamp) || [, "0"])[1].padEnd(3, "0").slice(0, 3)) / 1000;
      console.log(`${id}\t\t${(at - (Number(f.ms) || 0)).toFixed(3)}`);
    }' "$1" "$FT_START_MESSAGE"
}

echo
echo "## 2. enqueue-to-start latency ($LAT_RATE jobs/s offered for $LAT_SECONDS s, open loop, $LAT_CONNS connections; each system at its best burn-down setting)"
echo "| system | achieved jobs/s | enqueue p50 / p99 ms | start p50 ms | p90 | p99 | max | jobs timed | load |"
echo "| :-- | --: | --: | --: | --: | --: | --: | --: | :-- |"
lat_systems=("${SYSTEMS[@]}")
[[ $PHASES == *" latency "* ]] || lat_systems=()
if [[ " ${SYSTEMS[*]} " == *" flowtrack "* ]]; then lat_systems+=("${LAT_EXTRA[@]}"); BEST[ftqueue]=FQ_SETTINGS; fi
for s in "${lat_systems[@]}"; do
  reset_queue "$s"
  rm -f "$tmp/trace-$s"*
  : >"$LOGS/latency-$s.log"
  # shellcheck disable=SC2046
  $(worker_cmd "$s" "${BEST[$s]}" "$tmp/trace-$s") >"$LOGS/latency-$s.log" 2>&1 &
  wpid=$!; pids+=("$wpid")
  if [[ $s == flowtrack ]]; then
    # Ready once it holds a connection and has had a moment to park.
    for _ in $(seq 1 100); do
      [[ $(val postgres "SELECT count(*) FROM pg_stat_activity WHERE usename = 'flowtrack_worker'") -gt 0 ]] && break; sleep 0.1
    done
    sleep 1
  else
    for _ in $(seq 1 300); do grep -q '^ready' "$LOGS/latency-$s.log" && break; sleep 0.1; done
  fi
  gen=$(LG_URL=$(sys_admin_url "$s") LG_SQL=$(sys_enqueue_sql "$s") LG_RATE=$LAT_RATE LG_SECONDS=$LAT_SECONDS \
        LG_CONNS=$LAT_CONNS LG_OUT="$tmp/commits-$s" node "$JS/loadgen.cjs")
  for _ in $(seq 1 600); do [[ $(val "$(sys_db "$s")" "$(sys_remaining_sql "$s")") == 0 ]] && break; sleep 0.1; done
  sleep 0.5
  kill -TERM "$wpid"; wait "$wpid" || true
  if [[ $s == flowtrack ]]; then ft_starts "$LOGS/latency-$s.log" >"$tmp/trace-$s"; fi
  if [[ -s $tmp/trace-$s || -n $(compgen -G "$tmp/trace-$s.*") ]]; then
    lat=$(node "$JS/latency.cjs" "$tmp/commits-$s" "$tmp/trace-$s"*)
  else
    lat='{"jobs":0,"note":"no handler-start trace"}'
  fi
  echo "| $s | $(jf "$gen" achieved_rate) | $(jf "$gen" enqueue_p50_ms) / $(jf "$gen" enqueue_p99_ms) | $(jf "$lat" p50_ms) | $(jf "$lat" p90_ms) | $(jf "$lat" p99_ms) | $(jf "$lat" max_ms) | $(jf "$lat" jobs) of $(jf "$gen" jobs) | $(load) |"
  result "figure=latency system=$s offered_per_s=$LAT_RATE achieved_per_s=$(jf "$gen" achieved_rate)" \
         "p50_ms=$(jf "$lat" p50_ms) p90_ms=$(jf "$lat" p90_ms) p99_ms=$(jf "$lat" p99_ms) max_ms=$(jf "$lat" max_ms)" \
         "jobs=$(jf "$lat" jobs) missing=$(jf "$lat" missing) clock=$(jf "$lat" clock) generator_late_p99_ms=$(jf "$gen" late_p99_ms)" \
         "settings=\"$(sys_settings "$s" "${BEST[$s]}")\" load=\"$(load)\""
done

# ---------------------------------------------------- 3. enqueue throughput ----

# pgbench_tps SYS SCRIPT: one ENQ_SECONDS run at ENQ_CLIENTS clients; fails
# loudly on failed transactions.
pgbench_tps() {
  local db; db=$(sys_db "$1")
  local out=$tmp/pgbench.out
  if ! as_pg "$PG_BIN/pgbench" -h "$BENCH_HOST" -p "$BENCH_PORT" -U postgres -n -M prepared -c "$ENQ_CLIENTS" -j 2 \
        -T "$ENQ_SECONDS" -f "$tmp/$2.sql" "$db" >"$out" 2>&1 || grep -Eq '^number of failed transactions: [1-9]' "$out"; then
    echo "pgbench $2 failed:" >&2; cat "$out" >&2; return 1
  fi
  sed -nE 's/^tps = ([0-9.]+) .*/\1/p' "$out" | cut -d. -f1
}
# set_wake on|off: FlowTrack's wake-up triggers (none when enqueue_job wakes itself).
set_wake() {
  local t
  for t in $(val "$BENCH_DB" "$FT_WAKE_TRIGGERS_SQL"); do
    psql_db "$BENCH_DB" -c "ALTER TABLE internal.jobs $([[ $1 == on ]] && echo ENABLE || echo DISABLE) TRIGGER $t" >/dev/null
  done
}
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
wait_empty() { for _ in $(seq 1 600); do [[ $(val "$(sys_db "$1")" "$(sys_remaining_sql "$1")") == 0 ]] && return 0; sleep 0.1; done; return 1; }

echo
echo "## 3. enqueue throughput ($ENQ_CLIENTS pgbench clients, -M prepared, $ENQ_ROUNDS interleaved ${ENQ_SECONDS}s runs: median tx/s, median of the per-round ratios; no worker unless 'worker parked'; load after the last run)"
if [[ " ${SYSTEMS[*]} " == *" flowtrack "* ]]; then
  triggers=$(val "$BENCH_DB" "$FT_WAKE_TRIGGERS_SQL" | paste -sd' ')
  echo "(FlowTrack's wake-up triggers on internal.jobs, switched off for the two baselines: ${triggers:-none})"
fi
echo "| system | enqueue | tx/s (runs) | vs no-wake-up enqueue | vs plain INSERT | load |"
echo "| :-- | :-- | --: | --: | --: | :-- |"
declare -A ENQ
variants=()
for s in "${SYSTEMS[@]}"; do
  case $s in
    flowtrack)
      echo "$FT_PLAIN_SQL;" >"$tmp/ft_plain.sql"
      echo "$FT_NOWAKE_SQL;" >"$tmp/ft_nowake.sql"
      echo "$FT_ENQUEUE_SQL;" >"$tmp/ft_enqueue.sql"
      printf '%s;\n%s;\n' "BEGIN" "$FT_ENQUEUE_SQL" >"$tmp/ft_notify.sql"
      echo "SELECT pg_notify('flowtrack_jobs', '');" >>"$tmp/ft_notify.sql"; echo "COMMIT;" >>"$tmp/ft_notify.sql"
      variants+=(flowtrack:ft_plain flowtrack:ft_nowake flowtrack:ft_enqueue flowtrack:ft_notify
                 flowtrack:ft_nowake:parked flowtrack:ft_enqueue:parked) ;;
    graphile) echo "SELECT graphile_worker.add_job('noop', '{}'::json);" >"$tmp/gw_add_job.sql"; variants+=(graphile:gw_add_job) ;;
    pgboss) echo "$(sys_enqueue_sql pgboss);" >"$tmp/pb_send.sql"; variants+=(pgboss:pb_send) ;;
  esac
done
chmod 644 "$tmp"/*.sql
declare -A RUNS LOADS
[[ $PHASES == *" enqueue "* ]] || variants=()
for ((r = 0; r < ENQ_ROUNDS; r++)); do
  order=("${variants[@]}")
  if (( r % 2 )) && (( ${#variants[@]} )); then mapfile -t order < <(printf '%s\n' "${variants[@]}" | tac); fi
  for v in "${order[@]}"; do
    IFS=: read -r s script parked <<<"$v"
    reset_queue "$s"
    case $script in ft_plain|ft_nowake) set_wake off ;; ft_*) set_wake on ;; esac
    if [[ -n $parked ]]; then
      # shellcheck disable=SC2046
      $(worker_cmd "$s" "${BEST[$s]}" "") >"$LOGS/enqueue-$v.log" 2>&1 &
      wpid=$!; pids+=("$wpid"); sleep 2   # started, found nothing, parked
    fi
    RUNS[$v]+="$(pgbench_tps "$s" "$script") "
    LOADS[$v]=$(load)
    if [[ -n $parked ]]; then wait_empty "$s" || say "worker did not drain after $v"; kill -TERM "$wpid"; wait "$wpid" || true; fi
  done
done
[[ " ${SYSTEMS[*]} " == *" flowtrack "* ]] && set_wake on
# The median of the per-round ratios: rounds interleave, so each round's
# pair saw the same machine.
ratio() {
  local -a a=(${RUNS[$1]:-}) b=(${RUNS[$2]:-}) r=()
  local i
  for i in "${!a[@]}"; do [[ -n ${b[$i]:-} ]] && r+=("$(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { if (y > 0) print x / y }')"); done
  (( ${#r[@]} )) && printf '%.2f' "$(median "${r[@]}")" || echo n/a
}
for v in "${variants[@]}"; do
  IFS=: read -r s script parked <<<"$v"
  tps=$(median ${RUNS[$v]})
  ENQ[$v]=$tps
  # Like for like: the no-wake-up copy with the worker in the same state.
  nowake=flowtrack:ft_nowake${parked:+:parked}
  case $script in
    ft_plain) what="plain INSERT (no wake-up mechanism)" ;;
    ft_nowake) what="enqueue_job's pre-wake-up copy (no wake-up mechanism)" ;;
    ft_enqueue) what="\`$FT_ENQUEUE_SQL\`" ;;
    ft_notify) what="enqueue + \`pg_notify\` per transaction" ;;
    gw_add_job) what="\`graphile_worker.add_job\` (its pg_notify inside)" ;;
    pb_send) what="the SQL of \`send('noop', {})\`" ;;
  esac
  [[ $parked == parked ]] && what="$what, worker parked"
  echo "| $s | $what | $tps ($(echo ${RUNS[$v]} | tr ' ' '/')) | $(ratio "$v" "$nowake") | $(ratio "$v" flowtrack:ft_plain) | ${LOADS[$v]} |"
  result "figure=enqueue system=$s variant=$script${parked:+_parked} clients=$ENQ_CLIENTS tx_per_s=$tps" \
         "ratio_to_nowake=$(ratio "$v" "$nowake") ratio_to_plain=$(ratio "$v" flowtrack:ft_plain) load=\"${LOADS[$v]}\""
done

# ------------------------------------------------------------- 4. cost ----

echo
echo "## 4. cost per job (during the $BURN_JOBS-job burn-down) and the queue tables"
echo "| system | commits/job | WAL bytes/job | rollbacks | tables after burn-down: size / live / dead | at the end of the run: size / live / dead |"
echo "| :-- | --: | --: | --: | --: | --: |"
for s in "${SYSTEMS[@]}"; do
  sleep 0.5
  v="AFTER_BURN_$s"; IFS='|' read -r b1 l1 d1 <<<"${!v}"
  IFS='|' read -r b2 l2 d2 <<<"$(table_stats "$s")"
  l=${BURN[$s]}
  echo "| $s | $(jf "$l" commits_per_job) | $(jf "$l" wal_bytes_per_job) | $(jf "$l" rollbacks) | $((b1 / 1024)) kB / $l1 / $d1 | $((b2 / 1024)) kB / $l2 / $d2 |"
  result "figure=tables system=$s after_burn_bytes=$b1 after_burn_live=$l1 after_burn_dead=$d1 end_bytes=$b2 end_live=$l2 end_dead=$d2"
done
echo "(tables: FlowTrack $FT_TABLES; graphile-worker graphile_worker._private_jobs; pg-boss pgboss.job with its partitions and pgboss.archive)"

echo
echo "end:      $(date -u +%FT%TZ), load average $(load)"
echo
echo "## machine-readable"
printf '%s\n' "${results[@]}"
