#!/usr/bin/env bash
# Validation + topological order on generated graphs of 100, 1,000 and
# 10,000 nodes: the extension against a plain-SQL recursive-CTE
# implementation of the same checks, measured in the same run.
set -euo pipefail
# BENCH_PSQL runs psql as the cluster's OS user through as_pg (as ./dev does).
as_pg() { if [[ $EUID -eq 0 ]]; then (cd / && sudo -u postgres -- "$@"); else "$@"; fi; }
psql_() { $BENCH_PSQL "$@"; }
cp "$ROOT/bench/graph.sql" /tmp/flowtrack-bench-graph.sql && chmod 644 /tmp/flowtrack-bench-graph.sql
psql_ -v ON_ERROR_STOP=1 -f /tmp/flowtrack-bench-graph.sql >/dev/null
echo "| nodes | edges | extension (ms) | plain SQL (ms) | ratio |"
echo "| ---: | ---: | ---: | ---: | ---: |"
for n in 100 1000 10000; do
  psql_ -c "SELECT bench.generate($n)" >/dev/null
  edges=$(psql_ -tAc "SELECT count(*) FROM bench.edges WHERE g = $n")
  # Both must agree that the generated graph is valid and fully ordered.
  rust_check=$(psql_ -tAc "SELECT bench.rust($n)")
  reps=20; [[ $n -ge 10000 ]] && reps=5
  rust=$(psql_ -tAc "SELECT bench.time('rust', $n, $reps)")
  sql_reps=5; [[ $n -ge 1000 ]] && sql_reps=2
  if [[ $n -ge 10000 ]]; then
    sql=$(psql_ -tA -c "SET statement_timeout = '300s'" -c "SELECT bench.time('plain_sql', $n, 1)" 2>/dev/null || echo "")
  else
    sql=$(psql_ -tAc "SELECT bench.time('plain_sql', $n, $sql_reps)")
  fi
  if [[ -n $sql ]]; then
    ratio=$(awk -v a="$sql" -v b="$rust" 'BEGIN { printf "%.1fx", a / b }')
  else
    sql="> 300000 (timeout)"; ratio="> $(awk -v b="$rust" 'BEGIN { printf "%.0fx", 300000 / b }')"
  fi
  echo "| $n | $edges | $rust | $sql | $ratio |"
  [[ $rust_check == "$n" ]] || echo "  (warning: extension found $rust_check, expected 0 problems and $n ordered nodes)"
done
