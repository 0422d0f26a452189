//! Usage quotas: anniversary billing periods, and the check-and-count step.
//!
//! A quota is one row of `api.usage_quotas` per workspace and key. Counting
//! is a single conditional UPDATE (`used + n <= hard_limit`), so it is atomic
//! under any concurrency and costs one row update; the row lock serialises
//! only callers of the same workspace and key. Plans are prepared once per
//! backend and kept, so a call does no parsing or planning.
//!
//! These functions report refusals as an outcome; the SQL wrappers
//! `internal.consume_quota` / `internal.check_quota` raise SQLSTATE PT429
//! (HTTP 429), because custom SQLSTATEs cannot be raised from pgrx.

use std::cell::RefCell;
use std::collections::HashMap;

use chrono::{DateTime, Datelike, Months, Utc};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgSqlErrorCode;

use crate::error::raise;

mod direct;
use direct::Direct;

/// Microseconds between the Unix epoch and Postgres' (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

fn to_chrono(ts: TimestampWithTimeZone, field: &str) -> DateTime<Utc> {
    let micros: i64 = ts.into();
    DateTime::from_timestamp_micros(micros.saturating_add(PG_EPOCH_OFFSET_MICROS))
        .filter(|_| ts.is_finite())
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("{field}: must be a finite timestamp"),
                None,
                "Billing anchors and instants cannot be infinity.",
            )
        })
}

fn to_pg(dt: DateTime<Utc>) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(dt.timestamp_micros() - PG_EPOCH_OFFSET_MICROS)
        .expect("a chrono instant from a finite timestamp is in Postgres' range")
}

/// `anchor` moved by `n` whole months, the day clamped to the month's end
/// (an anchor on Jan 31 renews on Feb 28/29, then Mar 31).
fn add_months(anchor: DateTime<Utc>, n: i64) -> DateTime<Utc> {
    let m = Months::new(n.unsigned_abs() as u32);
    let moved = if n >= 0 {
        anchor.checked_add_months(m)
    } else {
        anchor.checked_sub_months(m)
    };
    moved.unwrap_or(anchor)
}

/// The anniversary period `[anchor + n months, anchor + n+1 months)` that
/// contains `at`.
pub fn period_containing(
    anchor: DateTime<Utc>,
    at: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let mut n = i64::from(at.year() - anchor.year()) * 12 + i64::from(at.month())
        - i64::from(anchor.month());
    while add_months(anchor, n) > at {
        n -= 1;
    }
    while add_months(anchor, n + 1) <= at {
        n += 1;
    }
    (add_months(anchor, n), add_months(anchor, n + 1))
}

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
    let (start, end) = period_containing(to_chrono(anchor, "anchor"), to_chrono(at, "at"));
    TableIterator::once((to_pg(start), to_pg(end)))
}

thread_local! {
    /// Plans kept for the life of the backend, keyed by their SQL text.
    static PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

const UUID: PgOid = PgOid::BuiltIn(PgBuiltInOids::UUIDOID);
const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
const INT8: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8OID);

/// Run `f` with the kept plan for `sql`, preparing it on first use.
fn with_plan<'c, R>(
    client: &mut SpiClient<'c>,
    sql: &'static str,
    types: &[PgOid],
    f: impl FnOnce(&mut SpiClient<'c>, &OwnedPreparedStatement) -> R,
) -> R {
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if !plans.contains_key(sql) {
            let plan = client.prepare_mut(sql, types).unwrap_or_else(|e| {
                raise(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    "quota: cannot prepare statement",
                    Some(format!("{sql}: {e}")),
                    "",
                )
            });
            plans.insert(sql, plan.keep());
        }
        f(client, &plans[sql])
    })
}

/// Run `f`, which runs SQL, with `search_path = pg_catalog`, as a `SET
/// search_path` clause on the function would, but only on the paths that
/// run SQL: a SET clause makes every call pay Postgres 15's walk over all
/// settings at function exit (~2% of a consume_quota call at 32 clients),
/// and the direct path resolves no names. On an error, the (sub)transaction
/// abort restores the setting, as it does for a SET clause.
pub(crate) fn with_catalog_search_path<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: plain calls into the GUC machinery, in a transaction.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let result = f();
        pg_sys::AtEOXact_GUC(true, level);
        result
    }
}

fn spi_failed(what: &str, e: pgrx::spi::SpiError) -> ! {
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
/// executor call instead of two measured 6.3k -> see docs/BENCHMARKS.md. No
/// join: the key's kind is copied onto the quota row (run 3: the join to
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

const STATE: &str = "SELECT q.used, q.limit_value, q.hard_limit, q.period_end, q.period_start, false, q.quota_kind <> 'gauge'
       FROM api.usage_quotas q
      WHERE q.workspace_id = $1 AND q.quota_key = $2 AND q.period_end > now()";

const KEY_KIND: &str = "SELECT kind FROM api.quota_keys WHERE key = $1";

const SYNC: &str = "SELECT internal.sync_quotas($1)";

const SOFT_LIMIT: &str = "WITH marked AS (
         UPDATE api.usage_quotas q SET soft_limit_reached_at = now()
          WHERE q.workspace_id = $1 AND q.quota_key = $2 AND q.soft_limit_reached_at IS NULL
         RETURNING q.workspace_id, q.quota_key, q.period_start, q.limit_value, q.used)
     INSERT INTO api.usage_events (workspace_id, quota_key, event_type, amount, period_start, metadata)
     SELECT workspace_id, quota_key, 'soft_limit_reached', 0, period_start,
            jsonb_build_object('limit', limit_value, 'used', used)
       FROM marked";

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
    let get_ts = |i| {
        row.get::<TimestampWithTimeZone>(i)
            .unwrap_or_else(|e| spi_failed("reading quota row", e))
            .expect("period bounds are NOT NULL")
    };
    Some(QuotaRow {
        used: get_i64(1).expect("used is NOT NULL"),
        limit_value: get_i64(2),
        hard_limit: get_i64(3),
        period_end: get_ts(4),
        crossed: row.get::<bool>(6).ok().flatten().unwrap_or(false),
        resets: row.get::<bool>(7).ok().flatten().unwrap_or(true),
    })
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
    kind.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("quota_key: unknown quota key \"{key}\""),
            None,
            "See api.quota_keys for the known keys.",
        )
    })
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
    // A replayed key changes nothing. Claiming one is SQL; the common case,
    // a counter without a key, runs no SQL at all.
    if let Some(k) = idempotency_key {
        let claimed = sql(|client| {
            let args = [ws.into(), key.into(), k.into(), amount.into()];
            !with_plan(
                client,
                CLAIM_KEY,
                &[UUID, TEXT, TEXT, INT8],
                |client, plan| client.update(plan, Some(1), &args),
            )
            .unwrap_or_else(|e| spi_failed("idempotency key", e))
            .is_empty()
        });
        if !claimed {
            let args = [ws.into(), key.into()];
            let row = sql(|client| fetch_row(client, STATE, &[UUID, TEXT], &args));
            return (Outcome::Replayed, row);
        }
    }
    let (outcome, row) = match direct::consume(ws, key, amount, idempotency_key) {
        Direct::Counted(row) => (Outcome::Ok, Some(row)),
        Direct::Refused(row) => (Outcome::Refused, Some(row)),
        Direct::Fallback => sql(|client| consume_sql(client, ws, key, amount, idempotency_key)),
    };
    match (outcome, row, idempotency_key) {
        (Outcome::Ok, Some(row), _) if row.crossed => sql(|client| soft_limit(client, ws, key)),
        // A refused call must not keep its key: the caller may retry it once
        // there is room.
        (Outcome::Refused, _, Some(k)) => sql(|client| {
            let release = [ws.into(), key.into(), k.into()];
            with_plan(client, RELEASE_KEY, &[UUID, TEXT, TEXT], |client, plan| {
                client.update(plan, None, &release)
            })
            .unwrap_or_else(|e| spi_failed("idempotency key", e));
        }),
        _ => {}
    }
    (outcome, row)
}

/// Run `f` with an SPI connection and `search_path = pg_catalog`.
fn sql<R>(f: impl FnOnce(&mut SpiClient<'_>) -> R) -> R {
    with_catalog_search_path(|| Spi::connect_mut(f))
}

/// The SQL path: one conditional UPDATE that counts and logs, for what the
/// direct path leaves (see quota/direct.rs). Opens or rolls the period when
/// it is missing or over, at most once.
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
CREATE FUNCTION flowtrack.consume_quota(ws uuid, key text, amount bigint DEFAULT 1, idempotency_key text DEFAULT NULL)
RETURNS flowtrack.quota_outcome
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'consume_quota_row';
-- No SET search_path clause: the function sets it itself around the SQL it
-- runs (with_catalog_search_path in quota/mod.rs).
"#,
    name = "consume_quota_row",
);

/// Read-only: would `amount` more of `key` be allowed for `ws`? With used,
/// limit, remaining and resets_at (NULL for gauges, which never reset). When
/// the period has ended, reports the state the next consumption would open.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe, security_definer)]
#[search_path(pg_catalog)]
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
    Spi::connect_mut(|client| {
        let kind = key_kind(client, key);
        let args = [ws.into(), key.into()];
        let (used, limit, hard, resets_at) = match fetch_row(
            client,
            STATE,
            &[UUID, TEXT],
            &args[..],
        ) {
            Some(r) => (r.used, r.limit_value, r.hard_limit, r.period_end),
            None => {
                let projected = client
                    .select(
                        "SELECT l.limit_value, floor(l.limit_value * (1 + pl.overage_buffer))::bigint,
                                coalesce(s.anchor_at, w.created_at),
                                (SELECT q.used FROM api.usage_quotas q WHERE q.workspace_id = w.id AND q.quota_key = $2)
                           FROM api.workspaces w
                           LEFT JOIN api.subscriptions s ON s.workspace_id = w.id AND s.status <> 'canceled'
                           JOIN api.subscription_plans pl ON pl.id = coalesce(s.plan_id, w.plan_id)
                           LEFT JOIN api.plan_limits l ON l.plan_id = pl.id AND l.quota_key = $2
                          WHERE w.id = $1",
                        Some(1),
                        &args,
                    )
                    .unwrap_or_else(|e| spi_failed("projecting the next period", e));
                if projected.is_empty() {
                    raise(
                        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                        "workspace_id: no such workspace",
                        None,
                        "Pass the id of a workspace you belong to.",
                    );
                }
                let row = projected.first();
                let limit = row.get::<i64>(1).ok().flatten();
                let hard = row.get::<i64>(2).ok().flatten();
                let anchor = row
                    .get::<TimestampWithTimeZone>(3)
                    .ok()
                    .flatten()
                    .expect("anchor is NOT NULL");
                let carried = if kind == "gauge" {
                    row.get::<i64>(4).ok().flatten().unwrap_or(0)
                } else {
                    0
                };
                let now = to_chrono(
                    TimestampWithTimeZone::try_from(unsafe {
                        pg_sys::GetCurrentTransactionStartTimestamp()
                    })
                    .expect("now is finite"),
                    "now",
                );
                let (_, end) = period_containing(to_chrono(anchor, "anchor"), now);
                (carried, limit, hard, to_pg(end))
            }
        };
        TableIterator::once((
            hard.is_none_or(|h| used + amount <= h),
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
  'The anniversary billing period [anchor + n months, anchor + n+1 months) containing at; month-end anchors clamp (Jan 31 -> Feb 28 -> Mar 31).';
COMMENT ON FUNCTION flowtrack.consume_quota(uuid, text, bigint, text) IS
  'Atomically counts amount against a workspace quota: locks and rewrites the quota row and appends the usage event (the executor-free path in quota/direct.rs, else one conditional UPDATE statement); one flowtrack.quota_outcome row, outcome ok, replayed or refused. internal.consume_quota wraps it and raises PT429.';
COMMENT ON FUNCTION flowtrack.check_quota(uuid, text, bigint) IS
  'Read-only quota check: allowed, used, limit_value, remaining, resets_at (NULL for gauges).';
"#,
    name = "comments_quota",
    requires = [billing_period, "consume_quota_row", check_quota]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use chrono::{TimeZone, Utc};
    use pgrx::prelude::*;

    use super::period_containing;

    #[pg_test]
    fn periods_follow_the_anniversary_and_clamp_month_ends() {
        let anchor = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let (start, end) = period_containing(anchor, at);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap());
        // Exactly on the boundary belongs to the new period.
        let (start, _) =
            period_containing(anchor, Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap());
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap());
        // Before the anchor: the period that ends at the anchor.
        let (start, end) =
            period_containing(anchor, Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap());
        assert_eq!(
            (start, end),
            (
                Utc.with_ymd_and_hms(2025, 12, 31, 12, 0, 0).unwrap(),
                anchor
            )
        );
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
    }

    #[pg_test(error = "amount: must be a positive integer, got 0")]
    fn consume_rejects_non_positive_amounts() {
        Spi::run("SELECT flowtrack.consume_quota(gen_random_uuid(), 'leads', 0)").unwrap();
    }
}
