#!/usr/bin/env bash
# Executions/s of the 3-node internal workflow (trigger -> condition ->
# update lead) at 1, 8 and 32 clients with pgbench: the graph engine
# (internal.start_execution) against a hand-written PL/pgSQL walk of the
# same graph over the same tables, in the same run. Also counts commits per
# execution from pg_stat_database. What execution logging costs: the engine
# also runs with flowtrack.execution_logs = off (the operator's switch) in
# the same rounds, and the log's bytes per line are measured at the end.
set -euo pipefail
# BENCH_PSQL runs psql as the cluster's OS user through as_pg (as ./dev does).
as_pg() { if [[ $EUID -eq 0 ]]; then (cd / && sudo -u postgres -- "$@"); else "$@"; fi; }
psql_() { $BENCH_PSQL "$@"; }
PGBENCH="/usr/lib/postgresql/15/bin/pgbench"
tmp=$(mktemp -d /tmp/flowtrack-bench-ingress.XXXX); chmod 755 "$tmp"
cp "$ROOT/bench/ingress.sql" "$tmp/" && chmod 644 "$tmp/ingress.sql"
psql_ -v ON_ERROR_STOP=1 -f "$tmp/ingress.sql" >/dev/null
WS=00000000-0000-4000-8000-00000000b0a1
cat >"$tmp/engine.sql" <<SQL
\set r random(1, 1000)
SELECT internal.start_execution('$WS', '00000000-0000-4000-8000-00000000bf01', 'manual', '{}',
       md5(random()::text || clock_timestamp()::text),
       (SELECT id FROM api.leads WHERE workspace_id = '$WS' AND email = 'lead' || :r || '@bench.example'));
SQL
cat >"$tmp/plpgsql.sql" <<SQL
\set r random(1, 1000)
SELECT bench.start_execution_plpgsql('$WS', '00000000-0000-4000-8000-00000000bf02', '{}',
       md5(random()::text || clock_timestamp()::text),
       (SELECT id FROM api.leads WHERE workspace_id = '$WS' AND email = 'lead' || :r || '@bench.example'));
SQL
chmod 644 "$tmp"/*.sql
DURATION=${BENCH_SECONDS:-10}
# Before each run: VACUUM the rows every execution updates (the workspace's
# quota row, the workflow counters, the leads), so no run starts on the long
# version chains the previous run left on them, and a CHECKPOINT, so no run
# pays for the previous one's dirty pages.
# Side "nolog" is the engine with execution logging switched off for its
# sessions (a superuser setting, passed as a connection option).
tps() {
  local script=$1 opts=
  [[ $1 == nolog ]] && { script=engine; opts="-c flowtrack.execution_logs=off"; }
  psql_ -c "VACUUM api.usage_quotas, api.workflows, api.leads" -c CHECKPOINT >/dev/null
  (cd / && sudo -u postgres env PGOPTIONS="$opts" "$PGBENCH" -h "$BENCH_HOST" -p "$BENCH_PORT" -U postgres -n -M prepared \
      -c "$2" -j "$(( $2 < 2 ? 1 : 2 ))" -T "$DURATION" -f "$tmp/$script.sql" "$BENCH_DB" 2>&1) \
    | awk '/^tps/ { printf "%.0f", $3 }'
}
commits() { psql_ -tAc "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }
runs() { psql_ -tAc "SELECT count(*) FROM api.workflow_executions WHERE workflow_id = '$1' AND status = 'completed'"; }
# Warm-up, not measured. The first executions pay one-off costs: each lead's
# first NEW -> QUALIFIED update fires the status-change triggers (lead event,
# webhook fan-out) and autovacuum analyzes the freshly loaded tables. Without
# this, whichever side is measured first (the engine) pays them all.
psql_ -c "ANALYZE" >/dev/null
for s in engine plpgsql; do
  (cd / && sudo -u postgres "$PGBENCH" -h "$BENCH_HOST" -p "$BENCH_PORT" -U postgres -n -M prepared -c 4 -j 2 -t 750 \
      -f "$tmp/$s.sql" "$BENCH_DB" >/dev/null 2>&1)
done
# Each client count: ROUNDS runs of each side, interleaved (the order flips
# every round) so both see the same machine; exec/s is the median run, the
# ratio the median of the per-round ratios with its range.
ROUNDS=${BENCH_ROUNDS:-5}
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
range() { local s; s=$(printf '%s\n' "$@" | sort -g); printf '%.2f-%.2f' "$(head -n1 <<<"$s")" "$(tail -n1 <<<"$s")"; }
echo "| clients | engine (exec/s) | hand-written PL/pgSQL (exec/s) | ratio (min-max) | engine, logs off (exec/s) | logs on / off (min-max) |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
for c in 1 8 32; do
  es=() ps=() ns=() rs=() ls=()
  for ((r = 0; r < ROUNDS; r++)); do
    if (( r % 2 )); then
      n=$(tps nolog "$c"); p=$(tps plpgsql "$c"); e=$(tps engine "$c")
    else
      e=$(tps engine "$c"); p=$(tps plpgsql "$c"); n=$(tps nolog "$c")
    fi
    es+=("$e") ps+=("$p") ns+=("$n")
    rs+=("$(awk -v a="$e" -v b="$p" 'BEGIN { print a / b }')")
    ls+=("$(awk -v a="$e" -v b="$n" 'BEGIN { print a / b }')")
  done
  printf '| %s | %.0f | %.0f | %.2fx (%s) | %.0f | %.2fx (%s) |\n' "$c" "$(median "${es[@]}")" "$(median "${ps[@]}")" \
    "$(median "${rs[@]}")" "$(range "${rs[@]}")" "$(median "${ns[@]}")" "$(median "${ls[@]}")" "$(range "${ls[@]}")"
done
# One commit per execution: a fixed number of engine transactions, the
# commit counter before and after (the two psql reads commit once each).
before_c=$(commits); before_r=$(runs 00000000-0000-4000-8000-00000000bf01)
(cd / && sudo -u postgres "$PGBENCH" -h "$BENCH_HOST" -p "$BENCH_PORT" -U postgres -n -M prepared -c 4 -t 500 \
    -f "$tmp/engine.sql" "$BENCH_DB" >/dev/null 2>&1)
sleep 1
after_c=$(commits); after_r=$(runs 00000000-0000-4000-8000-00000000bf01)
echo
echo "commits per execution: $(( after_c - before_c - 2 )) commits for $(( after_r - before_r )) completed executions"
qualified=$(psql_ -tAc "SELECT count(*) FILTER (WHERE s.node_key = 'mark') || '/' || count(DISTINCT s.execution_id)
                         FROM api.execution_steps s JOIN api.workflow_executions e ON e.id = s.execution_id
                        WHERE e.workflow_id = '00000000-0000-4000-8000-00000000bf01'")
echo "engine executions that reached 'mark' / all: $qualified"
# The log's cost in bytes: every partition's heap, index and TOAST over the
# lines stored, and lines per logged execution.
psql_ -c "VACUUM ANALYZE api.execution_logs" >/dev/null
psql_ -tAc "SELECT format('execution_logs: %s lines, %s per logged execution, %s bytes per line (table %s + index %s)',
                          n, round(n::numeric / nullif(e, 0), 2), round(t::numeric / nullif(n, 0)),
                          round(h::numeric / nullif(n, 0)), round(i::numeric / nullif(n, 0)))
              FROM (SELECT (SELECT count(*) FROM api.execution_logs) AS n,
                           (SELECT count(DISTINCT execution_id) FROM api.execution_logs) AS e,
                           sum(pg_total_relation_size(c.inhrelid)) AS t,
                           sum(pg_table_size(c.inhrelid)) AS h,
                           sum(pg_indexes_size(c.inhrelid)) AS i
                      FROM pg_inherits c WHERE c.inhparent = 'api.execution_logs'::regclass) x"
rm -rf "$tmp"
