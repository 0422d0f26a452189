#!/usr/bin/env bash
# What an enqueue pays for wake-ups, run by `./dev bench wake` against a fresh
# cluster (flowtrack preloaded, every migration applied).
#
# pgbench clients each commit one INSERT into a scratch queue table; the
# tables differ only in their statement-level AFTER INSERT trigger:
#   plain   none (the ceiling)
#   wake    flowtrack.wake_workers(), nobody parked (busy workers)
#   parked  flowtrack.wake_workers(), while one worker connection loops
#           "park, claim (DELETE) what is there, wait", woken by the commits
#   notify  a trigger that calls pg_notify (the tax this replaces)
# Variants are interleaved round by round; the median of the rounds is
# printed, with its ratio to plain. In the parked variant the worker also
# shares the CPU with the enqueuers, as a real one would.
#
# Environment (set by ./dev): BENCH_HOST (socket dir), BENCH_PORT, BENCH_DB.
# Optional: BENCH_SECONDS (per run, default 5), BENCH_ROUNDS (default 3),
# BENCH_CLIENTS (default 32).
set -euo pipefail

: "${BENCH_HOST:?set by ./dev bench}" "${BENCH_PORT:?set by ./dev bench}" "${BENCH_DB:?set by ./dev bench}"
SECONDS_PER_RUN=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-32}
PG_BIN=/usr/lib/postgresql/15/bin
VARIANTS=(plain wake parked notify)

as_pg() { if [[ $EUID -eq 0 ]]; then (cd / && sudo -u postgres -- "$@"); else "$@"; fi; }
conn=(-h "$BENCH_HOST" -p "$BENCH_PORT" -U postgres)
psql_q() { as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "${conn[@]}" -d "$BENCH_DB" "$@"; }

tmp=$(mktemp -d /tmp/flowtrack-bench-wake.XXXXXX)
chmod 755 "$tmp"
worker_pid=
cleanup() { [[ -n $worker_pid ]] && kill "$worker_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

psql_q >/dev/null <<'SQL'
CREATE SCHEMA bench;
CREATE TABLE bench.q_plain (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE bench.q_wake (LIKE bench.q_plain INCLUDING ALL);
CREATE TABLE bench.q_parked (LIKE bench.q_plain INCLUDING ALL);
CREATE TABLE bench.q_notify (LIKE bench.q_plain INCLUDING ALL);
CREATE TRIGGER wake AFTER INSERT ON bench.q_wake
    FOR EACH STATEMENT EXECUTE FUNCTION flowtrack.wake_workers();
CREATE TRIGGER wake AFTER INSERT ON bench.q_parked
    FOR EACH STATEMENT EXECUTE FUNCTION flowtrack.wake_workers();
CREATE FUNCTION bench.notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('bench_jobs', '');
    RETURN NULL;
END $$;
CREATE TRIGGER notify AFTER INSERT ON bench.q_notify
    FOR EACH STATEMENT EXECUTE FUNCTION bench.notify();
-- The worker's round, as internal.claim_jobs does it: park, claim, wait, claim.
CREATE FUNCTION bench.round(wait_ms integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    PERFORM flowtrack.worker_park();
    DELETE FROM bench.q_parked;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM flowtrack.worker_unpark();
        RETURN n;
    END IF;
    PERFORM flowtrack.worker_wait(wait_ms);
    DELETE FROM bench.q_parked;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
SQL
[[ $(psql_q -tAc "SELECT enabled FROM flowtrack.wake_stats()") == t ]] \
  || { echo "flowtrack is not preloaded: wake-ups are off" >&2; exit 1; }

for v in "${VARIANTS[@]}"; do
  table=q_$v
  echo "INSERT INTO bench.$table DEFAULT VALUES;" >"$tmp/$v.sql"
done
echo "SELECT bench.round(1000);" >"$tmp/worker.sql"
chmod 644 "$tmp"/*.sql

tps() { sed -n 's/^tps = \([0-9]*\)[.0-9]* .*/\1/p' | head -1; }

declare -A results
echo "wake benchmark: $CLIENTS clients, $ROUNDS rounds of ${SECONDS_PER_RUN}s per variant" >&2
for round in $(seq 1 "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do
    if [[ $v == parked ]]; then
      as_pg "$PG_BIN/pgbench" -n "${conn[@]}" -c 1 -T $((SECONDS_PER_RUN + 2)) -f "$tmp/worker.sql" "$BENCH_DB" \
        >"$tmp/worker.out" 2>&1 &
      worker_pid=$!
      sleep 0.5
    fi
    before=$(psql_q -tAc "SELECT wakes || ' ' || coalesced FROM flowtrack.wake_stats()")
    t=$(as_pg "$PG_BIN/pgbench" -n "${conn[@]}" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -f "$tmp/$v.sql" "$BENCH_DB" | tps)
    after=$(psql_q -tAc "SELECT wakes || ' ' || coalesced FROM flowtrack.wake_stats()")
    if [[ $v == parked ]]; then
      wait "$worker_pid" || true
      worker_pid=
      read -r w0 c0 <<<"$before"; read -r w1 c1 <<<"$after"
      echo "  round $round parked: worker rounds $(tps <"$tmp/worker.out")/s, wakes $((w1 - w0)), coalesced $((c1 - c0))" >&2
    fi
    results[$v]+="$t "
    echo "  round $round $v: $t tps" >&2
  done
  psql_q -c "TRUNCATE bench.q_plain, bench.q_wake, bench.q_parked, bench.q_notify" >/dev/null
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
plain=$(median <<<"${results[plain]}")
echo "| enqueue ($CLIENTS clients, one INSERT per commit) | commits/s (median of $ROUNDS) | vs plain |"
echo "| --- | ---: | ---: |"
for v in "${VARIANTS[@]}"; do
  m=$(median <<<"${results[$v]}")
  echo "| $v | $m | $(awk -v a="$m" -v b="$plain" 'BEGIN { printf "%.2f", a / b }') |"
done
