//! The SQL face of schedules: `flowtrack.cron_next` (the next fire after an
//! instant) and `flowtrack.cron_catch_up` (what a late tick does), both
//! raising 22023 naming the field (`cron` or `timezone`) with a hint, and
//! the check graph validation runs on a TRIGGER_SCHEDULE node's config.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde_json::Value;

use super::cron::{self, Cron};
use super::next;
use crate::error::raise;
use crate::quota::period::{chrono_of_pg_micros, pg_micros_of_chrono};

pub const TZ_HINT: &str =
    "Use an IANA timezone name such as UTC, Europe/Berlin or America/New_York.";

/// Most missed fires one tick walks through (a year of every minute).
const CATCH_UP_CAP: u32 = 600_000;

fn zone_or_raise(timezone: &str, field: &str) -> Tz {
    next::zone(timezone).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "{field}: \"{}\" is not an IANA timezone name",
                timezone.chars().take(100).collect::<String>()
            ),
            None,
            TZ_HINT,
        )
    })
}

fn cron_or_raise(expr: &str) -> Cron {
    Cron::parse(expr).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("cron: {e}"),
            None,
            cron::HINT,
        )
    })
}

fn instant(ts: TimestampWithTimeZone, field: &str) -> DateTime<Utc> {
    if !ts.is_finite() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{field}: must be a finite timestamp"),
            None,
            "Schedules fire at real instants, never at infinity.",
        );
    }
    chrono_of_pg_micros(ts.into()).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
            format!("{field}: is past the dates schedules are computed for"),
            None,
            "Pass an instant before the year 262142.",
        )
    })
}

fn to_pg(t: Option<DateTime<Utc>>) -> Option<TimestampWithTimeZone> {
    t.and_then(pg_micros_of_chrono)
        .and_then(|m| TimestampWithTimeZone::try_from(m).ok())
}

/// The first fire of `cron` strictly after `after`, in `timezone`; NULL
/// when it never fires again (past the timestamps PostgreSQL stores).
#[pg_extern(immutable, strict, parallel_safe)]
fn cron_next(
    cron: &str,
    timezone: &str,
    after: TimestampWithTimeZone,
) -> Option<TimestampWithTimeZone> {
    let c = cron_or_raise(cron);
    let tz = zone_or_raise(timezone, "timezone");
    to_pg(next::next_after(&c, &tz, instant(after, "after")))
}

/// Whether `name` is an IANA timezone schedules can be read in.
#[pg_extern(immutable, strict, parallel_safe)]
fn is_timezone(name: &str) -> bool {
    next::zone(name).is_some()
}

/// A tick at `now` for a schedule due at `due`: the fire it runs (the
/// latest at or before `now`), how many fires were due, and the next.
#[pg_extern(immutable, strict, parallel_safe)]
fn cron_catch_up(
    cron: &str,
    timezone: &str,
    due: TimestampWithTimeZone,
    now: TimestampWithTimeZone,
) -> TableIterator<
    'static,
    (
        name!(fire_at, Option<TimestampWithTimeZone>),
        name!(due_fires, i32),
        name!(next_run_at, Option<TimestampWithTimeZone>),
    ),
> {
    let c = cron_or_raise(cron);
    let tz = zone_or_raise(timezone, "timezone");
    let (due, now) = (instant(due, "due"), instant(now, "now"));
    let (latest, count, upcoming) = if due <= now {
        next::catch_up(&c, &tz, due, now, CATCH_UP_CAP)
    } else {
        (due, 0, Some(due))
    };
    TableIterator::once((to_pg(Some(latest)), count as i32, to_pg(upcoming)))
}

/// What is wrong with a TRIGGER_SCHEDULE node's config (its `cron` and
/// optional `timezone`), as (message, hint); the JSON Schema has already
/// checked their types.
pub fn config_problem(config: &Value) -> Option<(String, &'static str)> {
    if let Some(expr) = config.get("cron").and_then(Value::as_str) {
        if let Err(e) = Cron::parse(expr) {
            return Some((format!("config.cron: {e}"), cron::HINT));
        }
    }
    if let Some(tz) = config.get("timezone").and_then(Value::as_str) {
        if next::zone(tz).is_none() {
            return Some((
                format!(
                    "config.timezone: \"{}\" is not an IANA timezone name",
                    tz.chars().take(100).collect::<String>()
                ),
                TZ_HINT,
            ));
        }
    }
    None
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.cron_next(text, text, timestamptz) IS
  'The first fire of a five-field cron expression strictly after an instant, in an IANA timezone: a wall-clock time the clocks skip fires at the end of the gap, one they repeat fires at its first instant. 22023 naming cron or timezone when either is invalid.';
COMMENT ON FUNCTION flowtrack.is_timezone(text) IS
  'Whether a name is an IANA timezone (the tz database compiled into the extension) that schedules can be read in.';
COMMENT ON FUNCTION flowtrack.cron_catch_up(text, text, timestamptz, timestamptz) IS
  'What a tick at now does with a schedule due at due: fire_at, the latest fire at or before now; due_fires, how many were due (1 on time, more after downtime); next_run_at, the first fire after now.';
"#,
    name = "comments_schedule",
    requires = [cron_next, cron_catch_up, is_timezone]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn cron_next_from_sql() {
        let same = Spi::get_one::<bool>(
            "SELECT flowtrack.cron_next('30 2 * * *', 'Europe/Berlin', '2026-03-28 12:00Z') = '2026-03-29 01:00Z'",
        )
        .unwrap();
        assert_eq!(same, Some(true));
    }

    #[pg_test(error = "cron: minute field: 61 is out of range 0-59")]
    fn cron_next_names_the_field() {
        Spi::run("SELECT flowtrack.cron_next('61 * * * *', 'UTC', now())").unwrap();
    }

    #[pg_test(error = "timezone: \"Mars/Olympus\" is not an IANA timezone name")]
    fn cron_next_names_the_timezone() {
        Spi::run("SELECT flowtrack.cron_next('0 * * * *', 'Mars/Olympus', now())").unwrap();
    }

    #[pg_test]
    fn catch_up_after_downtime() {
        let row = Spi::get_one::<String>(
            "SELECT format('%s %s %s', fire_at = '2026-01-01 05:00Z', due_fires, next_run_at = '2026-01-01 06:00Z')
               FROM flowtrack.cron_catch_up('0 * * * *', 'UTC', '2026-01-01 00:00Z', '2026-01-01 05:30Z')",
        )
        .unwrap();
        assert_eq!(row.as_deref(), Some("t 6 t"));
    }
}
