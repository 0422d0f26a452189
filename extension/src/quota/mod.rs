//! Usage quotas: anniversary billing periods, and the check-and-count step.
//!
//! A quota is one row of `api.usage_quotas` per workspace and key. Counting
//! is a single conditional UPDATE (`used + n <= hard_limit`), so it is atomic
//! under any concurrency and costs one row update; the row lock serialises
//! only callers of the same workspace and key. Plans are prepared once per
//! backend and kept (quota/plans.rs), so a call does no parsing or planning.
//! Every write goes through the executor: triggers, constraints, read-only
//! transactions, row-level security and statement hooks (pg_audit,
//! pg_stat_statements) all see it.
//!
//! The functions here run as their caller (no SECURITY DEFINER), and only
//! `flowtrack_owner` may call them: the SECURITY DEFINER SQL wrappers
//! `internal.consume_quota` / `internal.check_quota`, owned by it, act for
//! the workspace under row-level security, pin the search path and raise
//! SQLSTATE PT429 (HTTP 429) for a refusal, which these report as an
//! outcome because custom SQLSTATEs cannot be raised from pgrx.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use crate::error::raise;

pub(crate) mod period;
mod plans;

use plans::{first_row_read_only, with_catalog_search_path, with_plan};

/// The billing period (anchored on `anchor`, a subscription's anniversary)
/// that contains `at`.
#[pg_extern(immutable, strict, parallel_safe)]
fn billing_period(
    anchor: TimestampWithTimeZone,
    at: TimestampWithTimeZone,
) -> TableIterator<
    'static,
    (
        name!(period_start, TimestampWithTimeZone),
        name!(period_end, TimestampWithTimeZone),
    ),
> {
    let anchor = period::to_chrono(anchor, "anchor");
    let at = period::to_chrono(at, "at");
    TableIterator::once(period::pg_period(anchor, at, "at"))
}

const UUID: PgOid = PgOid::BuiltIn(PgBuiltInOids::UUIDOID);
const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
const INT8: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8OID);

fn spi_failed(what: &str, e: impl std::fmt::Display) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("quota: {what} failed"),
        Some(e.to_string()),
        "",
    )
}

const CLAIM_KEY: &str =
    "INSERT INTO internal.usage_idempotency (workspace_id, quota_key, idempotency_key, amount)
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true";

const RELEASE_KEY: &str = "DELETE FROM internal.usage_idempotency
     WHERE workspace_id = $1 AND quota_key = $2 AND idempotency_key = $3";

/// The whole common case in one statement: count and log the event. One
/// executor call instead of two (docs/BENCHMARKS.md, quota run 2). No join:
/// the key's kind is copied onto the quota row (run 3: the join to
/// api.quota_keys cost about 5% of a call).
const CONSUME: &str = "WITH q AS (
         UPDATE api.usage_quotas q SET used = q.used + $3, updated_at = now()
          WHERE q.workspace_id = $1 AND q.quota_key = $2 AND q.period_end > now()
            AND (q.hard_limit IS NULL OR q.used + $3 <= q.hard_limit)
         RETURNING q.used, q.limit_value, q.hard_limit, q.period_end, q.period_start,
                   q.used - $3 < q.limit_value AND q.used >= q.limit_value AS crossed, q.quota_kind <> 'gauge' AS resets),
     logged AS (
         INSERT INTO api.usage_events (workspace_id, quota_key, amount, idempotency_key, period_start)
         SELECT $1, $2, $3, $4, q.period_start FROM q)
     SELECT * FROM q";

/// The current period's row as it stands (columns as CONSUME returns them).
const STATE: &str = "SELECT q.used, q.limit_value, q.hard_limit, q.period_end, q.period_start, false, q.quota_kind <> 'gauge'
       FROM api.usage_quotas q
      WHERE q.workspace_id = $1 AND q.quota_key = $2 AND q.period_end > now()";

const KEY_KIND: &str = "SELECT k.kind FROM api.quota_keys k WHERE k.key = $1";

const SYNC: &str = "SELECT internal.sync_quotas($1)";

const SOFT_LIMIT: &str = "WITH marked AS (
         UPDATE api.usage_quotas q SET soft_limit_reached_at = now()
          WHERE q.workspace_id = $1 AND q.quota_key = $2 AND q.soft_limit_reached_at IS NULL
         RETURNING q.workspace_id, q.quota_key, q.period_start, q.limit_value, q.used)
     INSERT INTO api.usage_events (workspace_id, quota_key, event_type, amount, period_start, metadata)
     SELECT m.workspace_id, m.quota_key, 'soft_limit_reached', 0, m.period_start,
            jsonb_build_object('limit', m.limit_value, 'used', m.used)
       FROM marked m";

/// What the next period would hold, for check_quota when the current one has
/// ended: the plan's limits and the anchor its period is computed from, and
/// the gauge's count, which carries over.
const PROJECTED: &str =
    "SELECT l.limit_value, floor(l.limit_value * (1 + pl.overage_buffer))::bigint,
            coalesce(s.anchor_at, w.created_at),
            (SELECT q.used FROM api.usage_quotas q WHERE q.workspace_id = w.id AND q.quota_key = $2)
       FROM api.workspaces w
       LEFT JOIN api.subscriptions s ON s.workspace_id = w.id AND s.status <> 'canceled'
       JOIN api.subscription_plans pl ON pl.id = coalesce(s.plan_id, w.plan_id)
       LEFT JOIN api.plan_limits l ON l.plan_id = pl.id AND l.quota_key = $2
      WHERE w.id = $1";

/// A quota row as the check or the update left it.
#[derive(Debug, Clone, Copy)]
struct QuotaRow {
    used: i64,
    limit_value: Option<i64>,
    hard_limit: Option<i64>,
    period_end: TimestampWithTimeZone,
    crossed: bool,
    /// Period keys reset at period_end; gauges never do.
    resets: bool,
}

fn not_null<T>(value: Option<T>, column: &str) -> T {
    value.unwrap_or_else(|| spi_failed("reading the quota row", format!("{column} is NULL")))
}

fn fetch_row(
    client: &mut SpiClient<'_>,
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
) -> Option<QuotaRow> {
    let table = with_plan(client, sql, types, |client, plan| {
        client.update(plan, Some(1), args)
    });
    let table = table.unwrap_or_else(|e| spi_failed("quota update", e));
    if table.is_empty() {
        return None;
    }
    let row = table.first();
    let get_i64 = |i| {
        row.get::<i64>(i)
            .unwrap_or_else(|e| spi_failed("reading quota row", e))
    };
    let period_end = row
        .get::<TimestampWithTimeZone>(4)
        .unwrap_or_else(|e| spi_failed("reading quota row", e));
    Some(QuotaRow {
        used: not_null(get_i64(1), "used"),
        limit_value: get_i64(2),
        hard_limit: get_i64(3),
        period_end: not_null(period_end, "period_end"),
        crossed: row.get::<bool>(6).ok().flatten().unwrap_or(false),
        resets: row.get::<bool>(7).ok().flatten().unwrap_or(true),
    })
}

fn unknown_key(key: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        format!("quota_key: unknown quota key \"{key}\""),
        None,
        "See api.quota_keys for the known keys.",
    )
}

fn key_kind(client: &mut SpiClient<'_>, key: &str) -> String {
    let kind = with_plan(client, KEY_KIND, &[TEXT], |client, plan| {
        client.update(plan, Some(1), &[key.into()])
    })
    .and_then(|t| {
        if t.is_empty() {
            Ok(None)
        } else {
            t.first().get::<String>(1)
        }
    })
    .unwrap_or_else(|e| spi_failed("quota key lookup", e));
    kind.unwrap_or_else(|| unknown_key(key))
}

fn sync(client: &mut SpiClient<'_>, ws: pgrx::Uuid) {
    with_plan(client, SYNC, &[UUID], |client, plan| {
        client.update(plan, None, &[ws.into()])
    })
    .unwrap_or_else(|e| spi_failed("opening the quota period", e));
}

/// What a consume call did.
#[derive(Clone, Copy)]
enum Outcome {
    Ok,
    Replayed,
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Replayed => "replayed",
            Outcome::Refused => "refused",
        }
    }
}

const CLAIM_KEY_TYPES: [PgOid; 4] = [UUID, TEXT, TEXT, INT8];

/// Count `amount` against `ws`'s quota `key`, atomically. Outcome `ok`,
/// `replayed` (this `idempotency_key` was already counted; nothing changes)
/// or `refused` (it would pass the hard limit; nothing changes). Opens or
/// rolls the period lazily, records a usage event, and records the first
/// crossing of 100% once per period. A refused call releases its key.
fn consume(
    ws: pgrx::Uuid,
    key: &str,
    amount: i64,
    idempotency_key: Option<&str>,
) -> (Outcome, Option<QuotaRow>) {
    if amount <= 0 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("amount: must be a positive integer, got {amount}"),
            None,
            "Use internal.release_quota to give usage back.",
        );
    }
    with_catalog_search_path(|| {
        Spi::connect_mut(|client| {
            // A replayed key changes nothing.
            if let Some(k) = idempotency_key {
                let args = [ws.into(), key.into(), k.into(), amount.into()];
                let claimed = !with_plan(client, CLAIM_KEY, &CLAIM_KEY_TYPES, |client, plan| {
                    client.update(plan, Some(1), &args)
                })
                .unwrap_or_else(|e| spi_failed("idempotency key", e))
                .is_empty();
                if !claimed {
                    let row = fetch_row(client, STATE, &[UUID, TEXT], &args[..2]);
                    return (Outcome::Replayed, row);
                }
            }
            let (outcome, row) = consume_sql(client, ws, key, amount, idempotency_key);
            match (outcome, row, idempotency_key) {
                (Outcome::Ok, Some(row), _) if row.crossed => soft_limit(client, ws, key),
                // A refused call must not keep its key: the caller may retry
                // it once there is room.
                (Outcome::Refused, _, Some(k)) => {
                    let release = [ws.into(), key.into(), k.into()];
                    with_plan(client, RELEASE_KEY, &[UUID, TEXT, TEXT], |client, plan| {
                        client.update(plan, None, &release)
                    })
                    .unwrap_or_else(|e| spi_failed("idempotency key", e));
                }
                _ => {}
            }
            (outcome, row)
        })
    })
}

/// One conditional UPDATE that counts and logs. Opens or rolls the period
/// when it is missing or over, at most once.
fn consume_sql(
    client: &mut SpiClient<'_>,
    ws: pgrx::Uuid,
    key: &str,
    amount: i64,
    idempotency_key: Option<&str>,
) -> (Outcome, Option<QuotaRow>) {
    let args = [ws.into(), key.into(), amount.into(), idempotency_key.into()];
    for attempt in 0..2 {
        if let Some(row) = fetch_row(client, CONSUME, &[UUID, TEXT, INT8, TEXT], &args) {
            return (Outcome::Ok, Some(row));
        }
        // No current row passed: over the limit, or the period is missing or
        // over. Tell them apart.
        if let Some(current) = fetch_row(client, STATE, &[UUID, TEXT], &args[..2]) {
            return (Outcome::Refused, Some(current));
        }
        key_kind(client, key);
        if attempt == 0 {
            sync(client, ws);
        }
    }
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        "workspace_id: no quota period could be opened for this workspace",
        None,
        "The workspace must exist and have a plan.",
    )
}

/// Record the first crossing of 100% in this period, once.
fn soft_limit(client: &mut SpiClient<'_>, ws: pgrx::Uuid, key: &str) {
    let args = [ws.into(), key.into()];
    with_plan(client, SOFT_LIMIT, &[UUID, TEXT], |client, plan| {
        client.update(plan, None, &args)
    })
    .unwrap_or_else(|e| spi_failed("soft-limit event", e));
}

// flowtrack.consume_quota returns one composite row, not a set, so that the
// plpgsql wrapper evaluates it as a plain expression instead of running a
// query with a function scan (about 6 µs of a call; docs/BENCHMARKS.md).
// pgrx's #[pg_extern] has no cheap single-composite return, hence a raw
// version-1 C function; its SQL is in the extension_sql! below.
#[no_mangle]
#[doc(hidden)]
pub extern "C" fn pg_finfo_consume_quota_row() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// flowtrack.consume_quota(ws, key, amount, idempotency_key) as one
/// flowtrack.quota_outcome row.
#[pg_guard]
#[no_mangle]
#[doc(hidden)]
pub unsafe extern "C-unwind" fn consume_quota_row(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    use pgrx::fcinfo::pg_getarg;
    let (Some(ws), Some(key), Some(amount)) = (
        pg_getarg::<pgrx::Uuid>(fcinfo, 0),
        pg_getarg::<&str>(fcinfo, 1),
        pg_getarg::<i64>(fcinfo, 2),
    ) else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "consume_quota: workspace, key and amount must not be NULL",
            None,
            "Pass a workspace id, a quota key and a positive amount.",
        )
    };
    let idempotency_key = pg_getarg::<&str>(fcinfo, 3);
    let (outcome, row) = consume(ws, key, amount, idempotency_key);

    // The row type, resolved once per call site and kept with it.
    let flinfo = (*fcinfo).flinfo;
    if (*flinfo).fn_extra.is_null() {
        let mut desc: pg_sys::TupleDesc = std::ptr::null_mut();
        if pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut desc)
            != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE
        {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "consume_quota: must return flowtrack.quota_outcome",
                None,
                "",
            );
        }
        let old = pg_sys::MemoryContextSwitchTo((*flinfo).fn_mcxt);
        let kept = pg_sys::BlessTupleDesc(pg_sys::CreateTupleDescCopy(desc));
        pg_sys::MemoryContextSwitchTo(old);
        (*flinfo).fn_extra = kept.cast();
    }
    let desc = (*flinfo).fn_extra as pg_sys::TupleDesc;
    let limit_value = row.and_then(|r| r.limit_value);
    let mut values = [
        row.map(|r| r.used).into_datum(),
        limit_value.into_datum(),
        limit_value
            .zip(row)
            .map(|(l, r)| (l - r.used).max(0))
            .into_datum(),
        row.filter(|r| r.resets).map(|r| r.period_end).into_datum(),
        matches!(outcome, Outcome::Replayed).into_datum(),
        row.and_then(|r| r.hard_limit).into_datum(),
        outcome.as_str().into_datum(),
    ];
    let mut datums = values.map(|v| v.unwrap_or(pg_sys::Datum::from(0)));
    let mut nulls = values.each_mut().map(|v| v.is_none());
    let tuple = pg_sys::heap_form_tuple(desc, datums.as_mut_ptr(), nulls.as_mut_ptr());
    pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
}

extension_sql!(
    r#"
CREATE TYPE flowtrack.quota_outcome AS (
    used        bigint,      -- the counter after the call
    limit_value bigint,      -- the plan's limit (NULL: unlimited)
    remaining   bigint,      -- limit_value - used, at least 0 (NULL: unlimited)
    resets_at   timestamptz, -- end of the period (NULL for gauges)
    replayed    boolean,     -- this idempotency key was already counted
    hard_limit  bigint,      -- the limit with the overage buffer (NULL: unlimited)
    outcome     text         -- ok | replayed | refused
);
COMMENT ON TYPE flowtrack.quota_outcome IS
  'What flowtrack.consume_quota did: outcome ok, replayed or refused, and the quota as the call left it.';
-- Runs as its caller (internal.consume_quota, owned by flowtrack_owner), not
-- as the superuser who created the extension. No SET search_path clause: the
-- function sets search_path = pg_catalog, pg_temp itself around the SQL it
-- runs (with_catalog_search_path in quota/plans.rs).
CREATE FUNCTION flowtrack.consume_quota(ws uuid, key text, amount bigint DEFAULT 1, idempotency_key text DEFAULT NULL)
RETURNS flowtrack.quota_outcome
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'consume_quota_row';
"#,
    name = "consume_quota_row",
);

/// Read-only: would `amount` more of `key` be allowed for `ws`? With used,
/// limit, remaining and resets_at (NULL for gauges, which never reset). When
/// the period has ended, reports the state the next consumption would open.
/// STABLE, and truly so: its statements run read-only (quota/plans.rs).
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn check_quota(
    ws: pgrx::Uuid,
    key: &str,
    amount: default!(i64, 1),
) -> TableIterator<
    'static,
    (
        name!(allowed, bool),
        name!(used, i64),
        name!(limit_value, Option<i64>),
        name!(remaining, Option<i64>),
        name!(resets_at, Option<TimestampWithTimeZone>),
    ),
> {
    Spi::connect(|_| {
        let kind = first_row_read_only(KEY_KIND, &[TEXT], &[key.into()], |row| {
            row.and_then(|r| r.get::<String>(1))
        })
        .unwrap_or_else(|| unknown_key(key));
        let args = [ws.into(), key.into()];
        let current = first_row_read_only(STATE, &[UUID, TEXT], &args, |row| {
            row.map(|r| {
                (
                    not_null(r.get::<i64>(1), "used"),
                    r.get::<i64>(2),
                    r.get::<i64>(3),
                    not_null(r.get::<TimestampWithTimeZone>(4), "period_end"),
                )
            })
        });
        let (used, limit, hard, resets_at) = current.unwrap_or_else(|| {
            let projected = first_row_read_only(PROJECTED, &[UUID, TEXT], &args, |row| {
                row.map(|r| {
                    (
                        r.get::<i64>(1),
                        r.get::<i64>(2),
                        not_null(r.get::<TimestampWithTimeZone>(3), "anchor_at"),
                        r.get::<i64>(4),
                    )
                })
            });
            let Some((limit, hard, anchor, gauge_used)) = projected else {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    "workspace_id: no such workspace",
                    None,
                    "Pass the id of a workspace you belong to.",
                );
            };
            let carried = if kind == "gauge" {
                gauge_used.unwrap_or(0)
            } else {
                0
            };
            // SAFETY: reads the transaction's start time, what now() returns.
            let now = TimestampWithTimeZone::try_from(unsafe {
                pg_sys::GetCurrentTransactionStartTimestamp()
            })
            .map(|now| period::to_chrono(now, "now"))
            .unwrap_or_else(|e| spi_failed("reading now()", e));
            let (_, end) = period::pg_period(period::to_chrono(anchor, "anchor_at"), now, "now");
            (carried, limit, hard, end)
        });
        TableIterator::once((
            hard.is_none_or(|h| used.checked_add(amount).is_some_and(|total| total <= h)),
            used,
            limit,
            limit.map(|l| (l - used).max(0)),
            (kind != "gauge").then_some(resets_at),
        ))
    })
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.billing_period(timestamptz, timestamptz) IS
  'The anniversary billing period [anchor + n months, anchor + n+1 months) containing at; month-end anchors clamp (Jan 31 -> Feb 28 -> Mar 31). 22008 when the period falls outside the timestamps PostgreSQL can store.';
COMMENT ON FUNCTION flowtrack.consume_quota(uuid, text, bigint, text) IS
  'Atomically counts amount against a workspace quota with one conditional UPDATE that also appends the usage event (kept plans, through the executor); one flowtrack.quota_outcome row, outcome ok, replayed or refused. Runs as its caller: only flowtrack_owner may call it, through internal.consume_quota, which acts for the workspace and raises PT429.';
COMMENT ON FUNCTION flowtrack.check_quota(uuid, text, bigint) IS
  'Read-only quota check (STABLE; its statements run read-only): allowed, used, limit_value, remaining, resets_at (NULL for gauges). Runs as its caller: only flowtrack_owner may call it, through internal.check_quota.';
"#,
    name = "comments_quota",
    requires = [billing_period, "consume_quota_row", check_quota]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The SQLSTATE and message `sql` fails with, or "ok".
    fn error_of(sql: &str) -> String {
        Spi::run(
            "CREATE OR REPLACE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE q; RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $$",
        )
        .unwrap();
        Spi::get_one_with_args::<String>("SELECT pg_temp.error_of($1)", &[sql.into()])
            .unwrap()
            .unwrap()
    }

    #[pg_test]
    fn billing_period_from_sql() {
        Spi::run("SET LOCAL timezone = 'UTC'").unwrap();
        let got = Spi::get_two::<String, String>(
            "SELECT period_start::text, period_end::text
               FROM flowtrack.billing_period('2026-01-10 00:00+00', '2026-11-23 09:00+00')",
        )
        .unwrap();
        assert_eq!(got.0.as_deref(), Some("2026-11-10 00:00:00+00"));
        assert_eq!(got.1.as_deref(), Some("2026-12-10 00:00:00+00"));
        // Month ends clamp, and a boundary belongs to the new period.
        let got = Spi::get_two::<String, String>(
            "SELECT period_start::text, period_end::text
               FROM flowtrack.billing_period('2026-01-31 12:00+00', '2026-03-31 12:00+00')",
        )
        .unwrap();
        assert_eq!(got.0.as_deref(), Some("2026-03-31 12:00:00+00"));
        assert_eq!(got.1.as_deref(), Some("2026-04-30 12:00:00+00"));
    }

    #[pg_test]
    fn billing_periods_outside_the_timestamp_range_are_22008() {
        // Before 4714-11-24 BC, PostgreSQL's first timestamp: the period of
        // 4714-11-30 BC anchored on the 15th starts on 4714-11-15 BC (this
        // panicked, XX000).
        let err = error_of(
            "SELECT * FROM flowtrack.billing_period('4714-12-15 00:00+00 BC', '4714-11-30 00:00+00 BC')",
        );
        assert!(err.starts_with("22008 at: its billing period"), "{err}");
        // After 262142 AD, chrono's last year: the period would end in
        // 262143 (this looped forever, without an interrupt check).
        let err = error_of(
            "SELECT * FROM flowtrack.billing_period('262142-12-15 00:00+00', '262142-12-20 00:00+00')",
        );
        assert!(err.starts_with("22008 at: its billing period"), "{err}");
        // An argument chrono cannot hold at all (this said 22023, "must be a
        // finite timestamp").
        let err = error_of(
            "SELECT * FROM flowtrack.billing_period('2026-01-01 00:00+00', '294276-12-31 00:00+00')",
        );
        assert!(err.starts_with("22008 at: is after 262142-12-31"), "{err}");
        let err =
            error_of("SELECT * FROM flowtrack.billing_period('infinity', '2026-01-01 00:00+00')");
        assert!(
            err.starts_with("22023 anchor: must be a finite timestamp"),
            "{err}"
        );
    }

    #[pg_test]
    fn the_errors_carry_a_hint() {
        Spi::run(
            "CREATE OR REPLACE FUNCTION pg_temp.hint_of(q text) RETURNS text LANGUAGE plpgsql AS $$
             DECLARE h text;
             BEGIN EXECUTE q; RETURN NULL;
             EXCEPTION WHEN OTHERS THEN GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT; RETURN h; END $$",
        )
        .unwrap();
        let hint = Spi::get_one::<String>(
            "SELECT pg_temp.hint_of('SELECT * FROM flowtrack.billing_period(''2026-01-01'', ''294276-12-31'')')",
        )
        .unwrap()
        .unwrap_or_default();
        assert!(hint.contains("262142 AD"), "{hint}");
    }

    #[pg_test]
    fn quota_functions_run_as_their_caller() {
        let definer = Spi::get_one::<bool>(
            "SELECT bool_or(prosecdef) FROM pg_catalog.pg_proc
              WHERE oid IN ('flowtrack.consume_quota(uuid, text, bigint, text)'::regprocedure,
                            'flowtrack.check_quota(uuid, text, bigint)'::regprocedure)",
        )
        .unwrap();
        assert_eq!(definer, Some(false));
        let volatility = Spi::get_one::<String>(
            "SELECT provolatile::text FROM pg_catalog.pg_proc
              WHERE oid = 'flowtrack.check_quota(uuid, text, bigint)'::regprocedure",
        )
        .unwrap();
        assert_eq!(volatility.as_deref(), Some("s"));
    }

    #[pg_test(error = "amount: must be a positive integer, got 0")]
    fn consume_rejects_non_positive_amounts() {
        Spi::run("SELECT flowtrack.consume_quota(gen_random_uuid(), 'leads', 0)").unwrap();
    }
}
