//! Partition management: `flowtrack.run_maintenance(now, only_parent)`.
//!
//! The parents and their settings live in `internal.partition_config`
//! (sql/0004_partitions.sql, which also has the registration function the
//! migrations call). One pass, per parent, in name order:
//! 1. rows that landed in the DEFAULT partition move to new partitions of
//!    their period (actions.rs, `rescue`);
//! 2. the current period's partition and `premake` more are created when
//!    missing, and a DEFAULT partition when there is none;
//! 3. partitions wholly older than `now - retention` are dropped or
//!    detached (into the archive schema, if one is set); never the newest
//!    one, nor one that reaches `now`.
//!
//! Each action is one returned row. The pass takes a transaction-level
//! advisory lock first, so concurrent passes run one after the other: the
//! second waits, then finds nothing left to do and returns no rows. Every
//! step checks the catalogs before acting, so a pass is idempotent.
//!
//! Modules: `bounds` (periods, ranges, expiry; pure), `naming` (names and
//! quoting; pure), `catalog` (reads), `actions` (DDL and the row moves),
//! `owner` (acting as the parent's owner), `spi` (running statements).

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

mod actions;
mod bounds;
mod catalog;
mod naming;
mod owner;
mod spi;

use bounds::{day_of_micros, expired, wanted, Bound, Range};

/// The advisory lock key of a pass: 'flow', 'part' as two int4s.
const LOCK: &str = "SELECT pg_catalog.pg_advisory_xact_lock(1718382455, 1885434484)";

type Row = (String, String, String, i64, String);

/// One maintenance pass over every managed parent (or only `only_parent`) as of
/// `now`; one row per action taken.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn run_maintenance(
    now: default!(TimestampWithTimeZone, "now()"),
    only_parent: default!(Option<pg_sys::Oid>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(parent, String),
        name!(partition, String),
        name!(action, String),
        name!(rows, i64),
        name!(detail, String),
    ),
> {
    let mut out: Vec<Row> = Vec::new();
    Spi::connect_mut(|client| {
        spi::exec(client, LOCK, &[]);
        let args: [DatumWithOid; 1] = [now.into()];
        let now_us: i64 = spi::one(
            client,
            "SELECT ((extract(epoch FROM $1::timestamptz) * 1000000)::bigint)::text",
            &args,
        )
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
        let today = day_of_micros(now_us).unwrap_or_default();
        for p in catalog::parents(client, now, only_parent) {
            let parent = naming::qualified(&p.schema, &p.name);
            if !owner::may_act_for(p.owner) {
                out.push((
                    parent,
                    String::new(),
                    "skip".into(),
                    0,
                    "the caller lacks the privileges of the parent's owner".into(),
                ));
                continue;
            }
            let done = owner::as_owner(p.owner, || maintain(client, &p, today, now_us));
            out.extend(done.into_iter().map(|(part, action, rows, detail)| {
                (parent.clone(), part, action.into(), rows, detail)
            }));
        }
    });
    TableIterator::new(out)
}

fn bounded(parts: &[catalog::Partition]) -> Vec<Bound> {
    parts.iter().filter_map(|x| x.bound).collect()
}

fn overlaps_any(r: Range, parts: &[catalog::Partition]) -> bool {
    bounded(parts).iter().any(|b| r.overlaps(b.lo, b.hi))
}

/// The periods (first days) of the rows in the default partition.
fn default_periods(
    client: &mut pgrx::spi::SpiClient<'_>,
    p: &catalog::Parent,
    default: &catalog::Partition,
) -> Vec<chrono::NaiveDate> {
    let sql = format!(
        "SELECT DISTINCT pg_catalog.to_char(pg_catalog.date_trunc({}, {} AT TIME ZONE 'UTC'), 'YYYY-MM-DD')
           FROM {} WHERE {} IS NOT NULL",
        naming::literal(p.interval.trunc_unit()),
        naming::ident(&p.key),
        naming::qualified(&default.schema, &default.name),
        naming::ident(&p.key),
    );
    let mut days: Vec<chrono::NaiveDate> = spi::rows(client, &sql, &[], 1)
        .0
        .into_iter()
        .filter_map(|r| r[0].as_deref().and_then(|s| s.parse().ok()))
        .collect();
    days.sort();
    days
}

fn maintain(
    client: &mut pgrx::spi::SpiClient<'_>,
    p: &catalog::Parent,
    today: chrono::NaiveDate,
    now_us: i64,
) -> Vec<actions::Done> {
    let mut done = Vec::new();
    let mut parts = catalog::partitions(client, p.oid);
    let default_has_rows = |client: &mut pgrx::spi::SpiClient<'_>, parts: &[catalog::Partition]| {
        parts.iter().find(|x| x.bound.is_none()).is_some_and(|d| {
            spi::one(
                client,
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {})::text",
                    naming::qualified(&d.schema, &d.name)
                ),
                &[],
            )
            .as_deref()
                == Some("true")
        })
    };
    let missing = |parts: &[catalog::Partition]| -> Vec<Range> {
        wanted(p.interval, today, p.premake)
            .into_iter()
            .filter(|r| !overlaps_any(*r, parts))
            .collect()
    };
    let no_default = !parts.iter().any(|x| x.bound.is_none());
    if no_default || !missing(&parts).is_empty() || default_has_rows(client, &parts) {
        // Keep new rows out of the default partition until this transaction
        // ends: a row of a range being created would make the CREATE fail.
        // Writers lock the parent before any partition, so taking the
        // parent first cannot deadlock with them.
        spi::exec(
            client,
            &format!(
                "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                naming::qualified(&p.schema, &p.name)
            ),
            &[],
        );
        parts = catalog::partitions(client, p.oid);
        if let Some(default) = parts.iter().find(|x| x.bound.is_none()).cloned() {
            for day in default_periods(client, p, &default) {
                let Some(r) = Range::of(p.interval, day) else {
                    continue;
                };
                if overlaps_any(r, &parts) {
                    done.push((
                        naming::qualified(&default.schema, &default.name),
                        "skip",
                        0,
                        format!(
                            "rows of [{}, {}) stay: an existing partition overlaps that range",
                            r.lo, r.hi
                        ),
                    ));
                    continue;
                }
                // Periods are distinct, so their ranges never overlap.
                done.push(actions::rescue(client, p, &default, &parts, r));
            }
            parts = catalog::partitions(client, p.oid);
        }
        // Wanted ranges never overlap each other: one catalog read after.
        for r in missing(&parts) {
            done.push(actions::create(client, p, &parts, r));
        }
        if !parts.iter().any(|x| x.bound.is_none()) {
            done.push(actions::create_default(client, p, &parts));
        }
        parts = catalog::partitions(client, p.oid);
    }
    if let Some(cutoff) = p.cutoff {
        let with_bounds: Vec<&catalog::Partition> =
            parts.iter().filter(|x| x.bound.is_some()).collect();
        let bounds: Vec<Bound> = with_bounds.iter().filter_map(|x| x.bound).collect();
        for i in expired(&bounds, cutoff, now_us) {
            done.push(actions::expire(client, p, with_bounds[i]));
        }
    }
    done
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.run_maintenance(timestamptz, oid) IS
  'One partition maintenance pass as of now (default now()) over every parent in internal.partition_config, or only the one given: rescues rows from the DEFAULT partition into partitions of their period, creates the current and premake future partitions (and a DEFAULT one), drops or detaches partitions wholly past retention (never the newest, never one reaching now). One row per action: parent, partition, action (rescue, create, drop, detach, skip), rows moved, detail. SECURITY INVOKER: each parent''s DDL runs as that parent''s owner (a security-restricted operation, as VACUUM does), and parents whose owner''s privileges the caller lacks are skipped. Serialised by an advisory lock: a concurrent pass waits, then finds nothing to do. Idempotent.';
"#,
    name = "comments_partitions",
    requires = [run_maintenance]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::bounds::{micros, Bound};
    use super::{catalog, naming};
    use chrono::NaiveDate;
    use pgrx::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> i64 {
        micros(NaiveDate::from_ymd_opt(y, m, day).unwrap())
    }

    /// Bounds read back from pg_get_expr are the same instants in any
    /// session time zone, MINVALUE / MAXVALUE included, and names that need
    /// quotes survive the round trip through `naming::ident`.
    #[pg_test]
    fn bounds_read_back_in_any_time_zone() {
        let schema = "Odd \"s\"";
        let parent = naming::qualified(schema, "T'1");
        Spi::run(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {parent} (at timestamptz NOT NULL) PARTITION BY RANGE (at);
             CREATE TABLE {s}.a PARTITION OF {parent} FOR VALUES FROM (MINVALUE) TO ('2024-02-29 00:00:00+00');
             CREATE TABLE {s}.b PARTITION OF {parent} FOR VALUES FROM ('2024-02-29 00:00:00+00') TO ('2024-03-01 00:00:00+00');
             CREATE TABLE {s}.c PARTITION OF {parent} FOR VALUES FROM ('2024-03-01 00:00:00+00') TO (MAXVALUE);",
            s = naming::ident(schema)
        ))
        .unwrap();
        let oid = Spi::get_one_with_args::<pg_sys::Oid>(
            "SELECT $1::regclass::oid",
            &[parent.as_str().into()],
        )
        .unwrap()
        .unwrap();
        for tz in ["UTC", "Pacific/Kiritimati", "America/St_Johns"] {
            Spi::run(&format!("SET LOCAL TimeZone = '{tz}'")).unwrap();
            let got: Vec<(String, Option<Bound>)> = Spi::connect_mut(|c| {
                catalog::partitions(c, oid)
                    .into_iter()
                    .map(|p| (p.name, p.bound))
                    .collect()
            });
            assert_eq!(
                got,
                vec![
                    (
                        "a".into(),
                        Some(Bound {
                            lo: i64::MIN,
                            hi: d(2024, 2, 29)
                        })
                    ),
                    (
                        "b".into(),
                        Some(Bound {
                            lo: d(2024, 2, 29),
                            hi: d(2024, 3, 1)
                        })
                    ),
                    (
                        "c".into(),
                        Some(Bound {
                            lo: d(2024, 3, 1),
                            hi: i64::MAX
                        })
                    ),
                ],
                "{tz}"
            );
        }
    }
}
