#!/usr/bin/env bash
# Quota benchmark, run by `./dev bench quota` against a fresh cluster with
# every migration applied.
#
# Throughput: internal.consume_quota on one hot workspace and spread over
# 1,000 workspaces, at 1, 8 and 32 clients, next to its peer, a plain
# single-row UPDATE of the same counter rows (the physical limit).
# Correctness: the naive SELECT-then-UPDATE pattern and consume_quota each race
# 32 clients against a cap of 1,000 on a fresh counter; the overshoot is
# printed.
#
# Environment (set by ./dev): BENCH_HOST (socket dir), BENCH_PORT, BENCH_DB.
# Optional: BENCH_SECONDS (per pgbench run, default 2), BENCH_ROUNDS (runs per
# variant and cell, interleaved, default 5), BENCH_CLIENTS
# (default "1 8 32"), BENCH_WORKSPACES (default 1000), BENCH_CAP (default 1000).
set -euo pipefail

: "${BENCH_HOST:?set by ./dev bench}" "${BENCH_PORT:?set by ./dev bench}" "${BENCH_DB:?set by ./dev bench}"
SECONDS_PER_RUN=${BENCH_SECONDS:-2}
ROUNDS=${BENCH_ROUNDS:-5}
read -ra CLIENTS <<<"${BENCH_CLIENTS:-1 8 32}"
NWS=${BENCH_WORKSPACES:-1000}
CAP=${BENCH_CAP:-1000}
RACE_CLIENTS=32
RACE_TX_PER_CLIENT=$(( (CAP * 3 + RACE_CLIENTS - 1) / RACE_CLIENTS ))  # about 3x the cap in attempts
PG_BIN=/usr/lib/postgresql/15/bin
KEY=executions_per_month

# Same convention as ./dev: the cluster belongs to the postgres OS user when we
# are root, so its clients run as that user, from a directory it can enter.
as_pg() { if [[ $EUID -eq 0 ]]; then (cd / && sudo -u postgres -- "$@"); else "$@"; fi; }
conn=(-h "$BENCH_HOST" -p "$BENCH_PORT" -U postgres)
psql_q() { as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "${conn[@]}" -d "$BENCH_DB" "$@"; }
psql_val() { psql_q -tA -c "$1"; }

tmp=$(mktemp -d /tmp/flowtrack-bench-quota.XXXXXX)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

# Workspace n has the id b0000000-0000-4000-8000-<n, 12 digits>, so a pgbench
# script can address any of them without a lookup table.
ws_expr() { echo "('b0000000-0000-4000-8000-' || lpad(($1)::text, 12, '0'))::uuid"; }
HOT=1                 # the hot workspace (also workspace 1 of the spread set)
NAIVE_WS=$((NWS + 1)) # capped counters for the overshoot race
SAFE_WS=$((NWS + 2))

# ---------------------------------------------------------------- setup ----

echo "quota benchmark: setting up $NWS workspaces (+2 for the overshoot race)" >&2
psql_q >/dev/null <<SQL
BEGIN;
INSERT INTO api.users (id, email, full_name)
SELECT $(ws_expr n), format('bench-%s@example.test', n), format('Bench owner %s', n)
  FROM generate_series(1, $SAFE_WS) AS n;
INSERT INTO api.workspaces (id, name, slug, plan_id, owner_user_id)
SELECT $(ws_expr n), format('Bench %s', n), format('bench-%s', n),
       (SELECT id FROM api.subscription_plans WHERE code = 'enterprise'), $(ws_expr n)
  FROM generate_series(1, $SAFE_WS) AS n;
INSERT INTO api.workspace_members (workspace_id, user_id, role)
SELECT $(ws_expr n), $(ws_expr n), 'owner' FROM generate_series(1, $SAFE_WS) AS n;
SELECT internal.sync_quotas($(ws_expr n)) FROM generate_series(1, $SAFE_WS) AS n;
COMMIT;

-- Enterprise is unlimited (limit NULL), so throughput calls never refuse.
-- The two race counters get a cap instead. The naive pattern's cap lives in
-- limit_value with hard_limit NULL: with hard_limit set, the table's CHECK
-- (used <= hard_limit) would turn its overshoot into errors that abort
-- pgbench clients instead of letting it show.
UPDATE api.usage_quotas SET limit_value = $CAP, hard_limit = NULL
 WHERE workspace_id = $(ws_expr "$NAIVE_WS") AND quota_key = '$KEY';
UPDATE api.usage_quotas SET limit_value = $CAP, hard_limit = $CAP
 WHERE workspace_id = $(ws_expr "$SAFE_WS") AND quota_key = '$KEY';

-- pgbench aborts a client on any error but a serialization failure or a
-- deadlock, so the race calls consume_quota through this catcher.
CREATE SCHEMA bench;
CREATE FUNCTION bench.try_consume(ws uuid) RETURNS boolean LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM internal.consume_quota(ws, '$KEY');
    RETURN true;
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    RETURN false;
END
\$\$;
CREATE TABLE bench.refusals (n bigint NOT NULL);
VACUUM ANALYZE api.users, api.workspaces, api.workspace_members, api.usage_quotas;
SQL

got=$(psql_val "SELECT count(*) FROM api.usage_quotas WHERE quota_key = '$KEY' AND hard_limit IS NULL
                 AND workspace_id IN (SELECT $(ws_expr n) FROM generate_series(1, $NWS) n)")
[[ $got == "$NWS" ]] || { echo "setup: expected $NWS unlimited counters, found $got" >&2; exit 1; }

# ------------------------------------------------------- pgbench scripts ----

# -D n_max=1 pins every call on the hot workspace; -D n_max=1000 spreads them.
cat >"$tmp/consume.sql" <<SQL
\set n random(1, :n_max)
SELECT internal.consume_quota($(ws_expr :n), '$KEY');
SQL
cat >"$tmp/consume_idem.sql" <<SQL
\set n random(1, :n_max)
\set k random(1, 1000000000000000)
SELECT internal.consume_quota($(ws_expr :n), '$KEY', 1, :tag::text || '-' || :client_id::text || '-' || :k::text);
SQL
cat >"$tmp/update.sql" <<SQL
\set n random(1, :n_max)
UPDATE api.usage_quotas SET used = used + 1 WHERE workspace_id = $(ws_expr :n) AND quota_key = '$KEY';
SQL
# Naive: read, decide in the client, write; two autocommit statements, no lock.
cat >"$tmp/naive.sql" <<SQL
SELECT used, limit_value AS cap FROM api.usage_quotas
 WHERE workspace_id = $(ws_expr "$NAIVE_WS") AND quota_key = '$KEY' \gset
\if :used < :cap
UPDATE api.usage_quotas SET used = used + 1 WHERE workspace_id = $(ws_expr "$NAIVE_WS") AND quota_key = '$KEY';
\endif
SQL
cat >"$tmp/safe.sql" <<SQL
SELECT bench.try_consume($(ws_expr "$SAFE_WS"))::int AS ok \gset
\if :ok = 0
INSERT INTO bench.refusals VALUES (1);
\endif
SQL
chmod 644 "$tmp"/*.sql

# pgbench_run SCRIPT CLIENTS [pgbench args...]: prints tps; fails loudly on any
# failed or aborted transaction. PGBENCH_OPTIONS, if set, becomes PGOPTIONS.
pgbench_run() {
  local script=$1 clients=$2; shift 2
  local threads=$(( clients < 2 ? 1 : 2 )) out=$tmp/pgbench.out
  if ! as_pg env PGOPTIONS="${PGBENCH_OPTIONS:-}" "$PG_BIN/pgbench" "${conn[@]}" -n -M prepared -c "$clients" -j "$threads" \
        -f "$tmp/$script" "$@" "$BENCH_DB" >"$out" 2>&1; then
    echo "pgbench $script -c $clients failed:" >&2; cat "$out" >&2; return 1
  fi
  if grep -Eq '^number of failed transactions: [1-9]' "$out"; then
    echo "pgbench $script -c $clients had failed transactions:" >&2; cat "$out" >&2; return 1
  fi
  sed -nE 's/^tps = ([0-9.]+) .*/\1/p' "$out"
}

# --------------------------------------------------------------- machine ----

pg_setting() { psql_val "SELECT current_setting('$1')"; }
echo
echo "## machine"
echo "cpu:      $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
echo "ram:      $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "postgres: $(psql_val 'SELECT version()')"
echo "settings: fsync=$(pg_setting fsync) synchronous_commit=$(pg_setting synchronous_commit)" \
     "wal_sync_method=$(pg_setting wal_sync_method) full_page_writes=$(pg_setting full_page_writes)" \
     "shared_buffers=$(pg_setting shared_buffers)"
echo "runs:     pgbench -M prepared -T $SECONDS_PER_RUN x $ROUNDS interleaved rounds per variant, -j 1 at 1 client and -j 2 above, same host"

# ------------------------------------------------------------ throughput ----

# Each cell is ROUNDS short pgbench runs per variant, interleaved (the order
# flips every round) so that the plain UPDATE and consume_quota see the same
# machine: on a shared host a disk flush swings from well under 0.1 ms to
# several ms, which would swamp one long run of each. tps is the median run;
# ratio is the median of the per-round ratios, with its range.
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratios() { local -n _num=$1 _den=$2; local i; for i in "${!_num[@]}"; do awk -v a="${_num[$i]}" -v b="${_den[$i]}" 'BEGIN { print a / b }'; done; }
fmt_ratio() { local r; r=$(ratios "$1" "$2" | sort -g); printf '%.2f (%.2f-%.2f)' "$(median $r)" "$(head -n1 <<<"$r")" "$(tail -n1 <<<"$r")"; }

echo
echo "## throughput (tps, median of $ROUNDS x ${SECONDS_PER_RUN}s runs; ratio vs plain UPDATE: median (min-max) over rounds)"
printf '| %-22s | %7s | %12s | %13s | %16s | %17s | %16s |\n' \
  scenario clients "plain UPDATE" consume_quota ratio "consume_quota+key" ratio
printf '| %-22s | %7s | %12s | %13s | %16s | %17s | %16s |\n' ":--" "--:" "--:" "--:" "--:" "--:" "--:"
run=0 one_client_ms=n/a
# The last row repeats the widest cell without waiting for the disk
# (synchronous_commit=off): what is left is CPU, the functions' own cost.
cells=()
for c in "${CLIENTS[@]}"; do cells+=("hot $c"); done
for c in "${CLIENTS[@]}"; do cells+=("spread $c"); done
cells+=("nosync ${CLIENTS[-1]}")
for cell in "${cells[@]}"; do
  read -r scenario c <<<"$cell"
  case $scenario in
    hot) n_max=$HOT label="1 hot workspace" PGBENCH_OPTIONS="" ;;
    spread) n_max=$NWS label="$NWS workspaces" PGBENCH_OPTIONS="" ;;
    nosync) n_max=$NWS label="$NWS ws, no fsync wait" PGBENCH_OPTIONS="-c synchronous_commit=off" ;;
  esac
  psql_q -c CHECKPOINT
  upd=() con=() idem=()
  for ((r = 0; r < ROUNDS; r++)); do
    order=(update consume idem); (( r % 2 )) && order=(idem consume update)
    for v in "${order[@]}"; do
      run=$((run + 1))
      case $v in
        update) upd+=("$(pgbench_run update.sql "$c" -T "$SECONDS_PER_RUN" -D n_max="$n_max")") ;;
        consume) con+=("$(pgbench_run consume.sql "$c" -T "$SECONDS_PER_RUN" -D n_max="$n_max")") ;;
        idem) idem+=("$(pgbench_run consume_idem.sql "$c" -T "$SECONDS_PER_RUN" -D n_max="$n_max" -D tag="run$run")") ;;
      esac
    done
  done
  printf '| %-22s | %7s | %12.0f | %13.0f | %16s | %17.0f | %16s |\n' "$label" "$c" \
    "$(median "${upd[@]}")" "$(median "${con[@]}")" "$(fmt_ratio con upd)" \
    "$(median "${idem[@]}")" "$(fmt_ratio idem upd)"
  if [[ $scenario == hot && $c == 1 ]]; then one_client_ms=$(awk -v t="$(median "${upd[@]}")" 'BEGIN { printf "%.2f", 1000 / t }'); fi
done
PGBENCH_OPTIONS=""
echo "(a plain UPDATE by 1 client took $one_client_ms ms: one round trip plus one WAL flush)"

# ------------------------------------------------------------- overshoot ----

echo
echo "## overshoot ($RACE_CLIENTS clients x $RACE_TX_PER_CLIENT attempts against a cap of $CAP)"
pgbench_run naive.sql "$RACE_CLIENTS" -t "$RACE_TX_PER_CLIENT" >/dev/null
pgbench_run safe.sql "$RACE_CLIENTS" -t "$RACE_TX_PER_CLIENT" >/dev/null
naive_used=$(psql_val "SELECT used FROM api.usage_quotas WHERE workspace_id = $(ws_expr "$NAIVE_WS") AND quota_key = '$KEY'")
safe=$(psql_val "
  SELECT (SELECT used FROM api.usage_quotas WHERE workspace_id = $(ws_expr "$SAFE_WS") AND quota_key = '$KEY'),
         (SELECT count(*) FROM api.usage_events WHERE workspace_id = $(ws_expr "$SAFE_WS") AND event_type = 'consumed'),
         (SELECT count(*) FROM bench.refusals)")
IFS='|' read -r safe_used safe_events safe_refused <<<"$safe"
printf '| %-24s | %5s | %6s | %9s |\n' pattern cap used overshoot
printf '| %-24s | %5s | %6s | %9s |\n' ":--" "--:" "--:" "--:"
printf '| %-24s | %5d | %6d | %9d |\n' "naive SELECT then UPDATE" "$CAP" "$naive_used" $((naive_used - CAP))
printf '| %-24s | %5d | %6d | %9d |\n' "consume_quota" "$CAP" "$safe_used" $((safe_used - CAP))
echo "consume_quota: $safe_events consumed events recorded, $safe_refused calls refused with PT429" \
     "($((safe_used + safe_refused)) of $((RACE_CLIENTS * RACE_TX_PER_CLIENT)) attempts accounted for)"

status=0
if (( safe_used != CAP || safe_events != CAP || safe_used + safe_refused != RACE_CLIENTS * RACE_TX_PER_CLIENT )); then
  echo "FAIL: consume_quota did not stop exactly at the cap" >&2
  status=1
fi
exit $status
