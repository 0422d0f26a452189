#!/usr/bin/env bash
# History stays bounded: BENCH_EXECUTIONS (1,000,000) executions, each with
# the steps and log lines a real run of the 3-node ingress workflow leaves,
# pushed through BENCH_MONTHS (8) simulated months on the starter plan (90
# days for successes, 180 for the 5% that fail; logs 90 days). After each
# month: partition maintenance and retention as pg_cron runs them, with
# `now` moved to the month's end, then VACUUM as autovacuum would over a
# month. Reports per month the executions kept, the bytes of executions +
# steps + logs (tables, indexes, TOAST, every partition), and bytes per kept
# execution; the goal is at most 1 KB (n8n stores about 3 KB per run) and a
# total that plateaus once retention starts deleting.
set -euo pipefail
# BENCH_PSQL runs psql as the cluster's OS user through as_pg (as ./dev does).
as_pg() { if [[ $EUID -eq 0 ]]; then (cd / && sudo -u postgres -- "$@"); else "$@"; fi; }
psql_() { $BENCH_PSQL "$@"; }
TOTAL=${BENCH_EXECUTIONS:-1000000}
MONTHS=${BENCH_MONTHS:-8}
PER=$(( TOTAL / MONTHS ))
tmp=$(mktemp -d /tmp/flowtrack-bench-history.XXXX); chmod 755 "$tmp"
cp "$ROOT/bench/history.sql" "$tmp/" && chmod 644 "$tmp/history.sql"
psql_ -v ON_ERROR_STOP=1 -f "$tmp/history.sql" >/dev/null
# Months start at the next calendar month, so every simulated row is in the
# future of the real clock and maintenance runs with now => the simulated time.
base=$(psql_ -tAc "SELECT date_trunc('month', now()) + interval '1 month'")
echo "template run: $(psql_ -tAc "SELECT (SELECT count(*) FROM bench.template_steps) || ' steps, '
  || (SELECT count(*) FROM bench.template_logs) || ' log lines, execution row '
  || (SELECT pg_column_size(e.*) FROM bench.template_execution e) || ' bytes'")"
echo
echo "| month | pushed | kept | executions + steps + logs | bytes per kept execution | push s | maintenance + retention s |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for ((m = 0; m < MONTHS; m++)); do
  lo=$(psql_ -tAc "SELECT '$base'::timestamptz + make_interval(months => $m)")
  hi=$(psql_ -tAc "SELECT '$base'::timestamptz + make_interval(months => $m + 1)")
  t0=$(date +%s.%N)
  # Partitions for the month exist before its rows arrive (premake).
  psql_ -v ON_ERROR_STOP=1 -tAc "SELECT count(*) FROM flowtrack.run_maintenance(now => '$lo')" >/dev/null
  psql_ -v ON_ERROR_STOP=1 -c "SELECT bench.push_month('$lo', $PER)" >/dev/null
  t1=$(date +%s.%N)
  psql_ -v ON_ERROR_STOP=1 -tAc "SELECT count(*) FROM flowtrack.run_maintenance(now => '$hi')" >/dev/null
  while [[ $(psql_ -tAc "SELECT internal.prune_executions('$hi', 20000)") != 0 ]]; do :; done
  psql_ -c "VACUUM api.workflow_executions, api.execution_steps, api.execution_logs" >/dev/null
  t2=$(date +%s.%N)
  psql_ -tAc "SELECT (SELECT count(*) FROM api.workflow_executions e JOIN api.workspaces w ON w.id = e.workspace_id
                      WHERE w.slug LIKE 'history-%' AND e.idempotency_key <> 'template'), bench.history_bytes()" |
    awk -F'|' -v m=$((m + 1)) -v per="$PER" -v push="$(echo "$t1 - $t0" | bc)" -v maint="$(echo "$t2 - $t1" | bc)" \
      '{ printf "| %d | %d | %d | %.1f MB | %.0f | %.1f | %.1f |\n", m, m * per, $1, $2 / 1048576, $2 / ($1 ? $1 : 1), push, maint }'
done
echo
echo "rows per kept execution: $(psql_ -tAc "SELECT round((SELECT count(*) FROM api.execution_steps)::numeric / count(*), 2) || ' steps, '
  || round((SELECT count(*) FROM api.execution_logs)::numeric / count(*), 2) || ' log lines' FROM api.workflow_executions")"
echo "per-relation bytes:"
psql_ -tAc "SELECT format('  %-45s %8s', c.relname, pg_size_pretty(pg_relation_size(c.oid)))
              FROM pg_class c
             WHERE c.relkind IN ('r', 'i', 't')
               AND (c.oid IN (SELECT relid FROM pg_partition_tree('api.execution_logs'))
                    OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN ('api.workflow_executions'::regclass, 'api.execution_steps'::regclass)
                                 OR indrelid IN (SELECT relid FROM pg_partition_tree('api.execution_logs')))
                    OR c.oid IN ('api.workflow_executions'::regclass, 'api.execution_steps'::regclass))
               AND pg_relation_size(c.oid) > 0
             ORDER BY pg_relation_size(c.oid) DESC LIMIT 25"
