#!/usr/bin/env bash
# One partition-maintenance pass: flowtrack.run_maintenance against pg_partman
# 4.7.2 (Debian postgresql-15-partman, installed by ./dev setup), run by
# `./dev bench partitions` against a fresh cluster (every migration applied).
#
# Both manage the same 50 parents, in their own schemas of one database:
# monthly, premake 4, retention 3 months (dropped), a few rows each. Before
# every timed pass each set is rebuilt with partitions from 8 months ago to
# next month (plus a default partition), so one pass has work of both kinds:
# per parent, 5 expired months to drop and 3 future months to create (400
# DDL statements per pass). Then a second pass, with nothing left to do, is
# timed too: that is what an hourly cron job costs most hours.
#
# Rounds alternate which tool goes first; the median of the rounds is
# printed with the ratio flowtrack / partman (goal: at most 1.0). Only
# flowtrack's 50 parents are registered for the run (FlowTrack's own tables
# are taken out of its config table in this throwaway database), as
# partman's part_config holds only its 50.
#
# Environment (set by ./dev): BENCH_HOST (socket dir), BENCH_PORT, BENCH_DB.
# Optional: BENCH_ROUNDS (default 5), BENCH_PARENTS (default 50).
set -euo pipefail

: "${BENCH_HOST:?set by ./dev bench}" "${BENCH_PORT:?set by ./dev bench}" "${BENCH_DB:?set by ./dev bench}"
ROUNDS=${BENCH_ROUNDS:-5}
PARENTS=${BENCH_PARENTS:-50}
PG_BIN=/usr/lib/postgresql/15/bin
PARTMAN_VERSION=4.7.2

as_pg() { if [[ $EUID -eq 0 ]]; then (cd / && sudo -u postgres -- "$@"); else "$@"; fi; }
conn=(-h "$BENCH_HOST" -p "$BENCH_PORT" -U postgres)
psql_q() { as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "${conn[@]}" -d "$BENCH_DB" "$@"; }

installed=$(dpkg-query -W -f '${Version}' postgresql-15-partman 2>/dev/null || true)
[[ $installed == "$PARTMAN_VERSION"* ]] \
  || { echo "need postgresql-15-partman $PARTMAN_VERSION (have: ${installed:-none}); run ./dev setup" >&2; exit 1; }

psql_q >/dev/null <<'SQL'
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
DELETE FROM internal.partition_config;
SQL
[[ $(psql_q -tAc "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'") == "$PARTMAN_VERSION" ]] \
  || { echo "pg_partman in the database is not $PARTMAN_VERSION" >&2; exit 1; }

# The same tables for both: an id, the partition key, a payload, an index on
# the key (each new partition gets it), five rows in the current month.
tables_sql() {
  local schema=$1
  cat <<SQL
DROP SCHEMA IF EXISTS $schema CASCADE;
CREATE SCHEMA $schema;
SELECT format('CREATE TABLE $schema.t%s (id bigint NOT NULL, at timestamptz NOT NULL, payload text)
                 PARTITION BY RANGE (at); CREATE INDEX ON $schema.t%s (at)', i, i)
  FROM generate_series(1, $PARENTS) i \gexec
SQL
}

setup_partman() {
  psql_q >/dev/null <<SQL
SET client_min_messages = warning;
DELETE FROM partman.part_config WHERE parent_table LIKE 'bench_pm.%';
DROP SCHEMA IF EXISTS bench_pm CASCADE;
$(tables_sql bench_pm)
SELECT partman.create_parent('bench_pm.t' || i, 'at', 'native', 'monthly', p_premake := 1,
         p_start_partition := to_char(date_trunc('month', now()) - interval '8 months', 'YYYY-MM-DD'))
  FROM generate_series(1, $PARENTS) i;
-- infinite_time_partitions stays off: with it, partman counts premake from
-- this instant rather than from the current partition, and near a month's
-- end makes one month more than flowtrack (5 ahead instead of 4).
UPDATE partman.part_config SET premake = 4, retention = '3 months', retention_keep_table = false
 WHERE parent_table LIKE 'bench_pm.%';
SELECT format('INSERT INTO bench_pm.t%s SELECT g, now() - g * interval ''1 minute'', ''row'' FROM generate_series(1, 5) g', i)
  FROM generate_series(1, $PARENTS) i \gexec
VACUUM ANALYZE;
SQL
}

setup_flowtrack() {
  psql_q >/dev/null <<SQL
SET client_min_messages = warning;
DELETE FROM internal.partition_config;
$(tables_sql bench_ft)
SELECT format('ALTER TABLE bench_ft.t%s OWNER TO flowtrack_owner', i) FROM generate_series(1, $PARENTS) i \gexec
ALTER SCHEMA bench_ft OWNER TO flowtrack_owner;
INSERT INTO internal.partition_config (parent, partition_interval, premake, retention, partition_schema)
SELECT ('bench_ft.t' || i)::regclass, 'monthly', 1, NULL, 'bench_ft' FROM generate_series(1, $PARENTS) i;
-- The same history as partman's: one pass per month from 8 months ago.
SELECT count(*) FROM generate_series(8, 0, -1) k,
       LATERAL flowtrack.run_maintenance(date_trunc('month', now()) - k * interval '1 month') m;
UPDATE internal.partition_config SET premake = 4, retention = interval '3 months';
SELECT format('INSERT INTO bench_ft.t%s SELECT g, now() - g * interval ''1 minute'', ''row'' FROM generate_series(1, 5) g', i)
  FROM generate_series(1, $PARENTS) i \gexec
VACUUM ANALYZE;
SQL
}

# time_ms SQL: wall time of one statement (its own transaction, commit
# included), as psql's \timing reports it.
time_ms() {
  psql_q -c '\timing on' -c "$1" | awk '/^Time:/ { print $2 }' | tail -1
}

partitions_of() {
  psql_q -tAc "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE c.relnamespace = '$1'::regnamespace AND c.relkind = 'r'"
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

PM_RUN="SELECT partman.run_maintenance(p_analyze := false, p_jobmon := false)"
FT_RUN="SELECT count(*) FROM flowtrack.run_maintenance()"

declare -a pm_work ft_work pm_idle ft_idle
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  setup_partman
  setup_flowtrack
  before_pm=$(partitions_of bench_pm) before_ft=$(partitions_of bench_ft)
  if (( round % 2 )); then order=(pm ft); else order=(ft pm); fi
  for who in "${order[@]}"; do
    if [[ $who == pm ]]; then
      pm_work+=("$(time_ms "$PM_RUN")"); pm_idle+=("$(time_ms "$PM_RUN")")
    else
      ft_work+=("$(time_ms "$FT_RUN")"); ft_idle+=("$(time_ms "$FT_RUN")")
    fi
  done
  after_pm=$(partitions_of bench_pm) after_ft=$(partitions_of bench_ft)
  printf 'round %d: partman %s ms (then %s ms idle), partitions %s -> %s; flowtrack %s ms (then %s ms idle), partitions %s -> %s\n' \
    "$round" "${pm_work[-1]}" "${pm_idle[-1]}" "$before_pm" "$after_pm" \
    "${ft_work[-1]}" "${ft_idle[-1]}" "$before_ft" "$after_ft"
done

# Both must end with the same partitions per parent: months from 3 ago to 4
# ahead and a default one.
set_of() {
  psql_q -tAc "SELECT string_agg(right(c.relname, 7), ',' ORDER BY right(c.relname, 7))
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '$1'::regclass"
}
pm_set=$(set_of bench_pm.t1) ft_set=$(set_of bench_ft.t1)
echo "t1 after the passes: partman [$pm_set], flowtrack [$ft_set]"
[[ $pm_set == "$ft_set" ]] || { echo "the two tools disagree on the partitions: no comparison" >&2; exit 1; }

pm_w=$(printf '%s\n' "${pm_work[@]}" | median) ft_w=$(printf '%s\n' "${ft_work[@]}" | median)
pm_i=$(printf '%s\n' "${pm_idle[@]}" | median) ft_i=$(printf '%s\n' "${ft_idle[@]}" | median)
echo
echo "one maintenance pass over $PARENTS monthly parents, premake 4, retention 3 months (median of $ROUNDS rounds):"
printf '  %-34s %12s %12s %8s\n' "" "partman" "flowtrack" "ratio"
printf '  %-34s %9s ms %9s ms %7.2fx\n' "with work (drop 5 + create 3 each)" "$pm_w" "$ft_w" "$(echo "$ft_w / $pm_w" | bc -l)"
printf '  %-34s %9s ms %9s ms %7.2fx\n' "nothing to do" "$pm_i" "$ft_i" "$(echo "$ft_i / $pm_i" | bc -l)"
echo "  goal: flowtrack at most 1.0x partman's time"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
