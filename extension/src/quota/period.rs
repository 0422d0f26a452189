//! Anniversary billing periods, and the conversions between PostgreSQL's
//! timestamps and chrono's, none of which may panic or loop.
//!
//! The two ranges differ: PostgreSQL stores 4714-11-24 BC to 294276 AD,
//! chrono the years -262143 to 262142. A timestamp chrono cannot hold, and a
//! period that starts or ends outside what PostgreSQL can store, are
//! reported as errors (SQLSTATE 22008, datetime_field_overflow), never as a
//! panic (XX000) and never by clamping, which would make a period that does
//! not contain its instant.

use chrono::{DateTime, Datelike, Months, Utc};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::error::raise;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// PostgreSQL's first timestamp, 4714-11-24 00:00 BC UTC, in its microseconds.
const PG_MIN_MICROS: i64 = -211_813_488_000_000_000;
/// One past PostgreSQL's last timestamp (294277-01-01 00:00 UTC).
const PG_END_MICROS: i64 = 9_223_371_331_200_000_000;

const RANGE_HINT: &str =
    "Billing periods are computed for instants between 4713 BC and 262142 AD, \
     at least one month inside PostgreSQL's timestamp range.";

/// A period bound that neither chrono nor PostgreSQL can represent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange;

/// A finite PostgreSQL timestamp (microseconds since 2000-01-01) as chrono's,
/// or None when chrono cannot hold it (after 262142 AD) or it is infinite.
pub fn chrono_of_pg_micros(micros: i64) -> Option<DateTime<Utc>> {
    if micros == i64::MIN || micros == i64::MAX {
        return None;
    }
    DateTime::from_timestamp_micros(micros.checked_add(PG_EPOCH_OFFSET_MICROS)?)
}

/// A chrono instant as PostgreSQL's microseconds, or None outside the range
/// PostgreSQL can store.
pub fn pg_micros_of_chrono(dt: DateTime<Utc>) -> Option<i64> {
    let micros = dt.timestamp_micros().checked_sub(PG_EPOCH_OFFSET_MICROS)?;
    (PG_MIN_MICROS..PG_END_MICROS)
        .contains(&micros)
        .then_some(micros)
}

/// `anchor` moved by `n` whole months, the day clamped to the month's end
/// (an anchor on Jan 31 renews on Feb 28/29, then Mar 31); None past
/// chrono's range.
pub fn add_months(anchor: DateTime<Utc>, n: i64) -> Option<DateTime<Utc>> {
    let m = Months::new(u32::try_from(n.unsigned_abs()).ok()?);
    if n >= 0 {
        anchor.checked_add_months(m)
    } else {
        anchor.checked_sub_months(m)
    }
}

/// The anniversary period `[anchor + n months, anchor + n+1 months)` that
/// contains `at`, computed without a search: `anchor + k months` always lies
/// in the calendar month k months after the anchor's, so the period starting
/// in `at`'s own month is the one, unless it starts later in that month than
/// `at`, and then the one before it is. Err when a bound is past chrono's
/// range.
pub fn period_containing(
    anchor: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), OutOfRange> {
    let months = i64::from(at.year()) * 12 + i64::from(at.month0())
        - (i64::from(anchor.year()) * 12 + i64::from(anchor.month0()));
    let in_at_month = add_months(anchor, months).ok_or(OutOfRange)?;
    let n = if in_at_month <= at {
        months
    } else {
        months - 1
    };
    let start = add_months(anchor, n).ok_or(OutOfRange)?;
    let end = add_months(anchor, n + 1).ok_or(OutOfRange)?;
    Ok((start, end))
}

/// A finite timestamp argument as chrono's, or an error naming `field`.
pub fn to_chrono(ts: TimestampWithTimeZone, field: &str) -> DateTime<Utc> {
    if !ts.is_finite() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{field}: must be a finite timestamp"),
            None,
            "Billing anchors and instants cannot be infinity.",
        );
    }
    chrono_of_pg_micros(ts.into()).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
            format!(
                "{field}: is after 262142-12-31, the last date billing periods are computed for"
            ),
            None,
            RANGE_HINT,
        )
    })
}

/// The billing period of `at` as PostgreSQL timestamps, or an error naming
/// `field` when a bound falls outside what chrono or PostgreSQL can hold.
pub fn pg_period(
    anchor: DateTime<Utc>,
    at: DateTime<Utc>,
    field: &str,
) -> (TimestampWithTimeZone, TimestampWithTimeZone) {
    let to_pg = |dt| pg_micros_of_chrono(dt).and_then(|m| TimestampWithTimeZone::try_from(m).ok());
    match period_containing(anchor, at) {
        Ok((start, end)) => match (to_pg(start), to_pg(end)) {
            (Some(start), Some(end)) => (start, end),
            _ => out_of_range(field),
        },
        Err(OutOfRange) => out_of_range(field),
    }
}

fn out_of_range(field: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
        format!("{field}: its billing period starts or ends outside the timestamps PostgreSQL can store"),
        None,
        RANGE_HINT,
    )
}

#[cfg(test)]
mod unit {
    use std::sync::mpsc;
    use std::time::Duration;

    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
    }

    /// `period_containing` on another thread, failing the test if it has
    /// not returned within a few seconds (it used to loop forever).
    fn bounded(
        anchor: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), OutOfRange> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(period_containing(anchor, at)));
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("period_containing({anchor}, {at}) did not return"))
    }

    #[test]
    fn month_ends_clamp_and_boundaries_belong_to_the_new_period() {
        let anchor = utc(2026, 1, 31, 12);
        assert_eq!(
            period_containing(anchor, utc(2026, 3, 1, 0)),
            Ok((utc(2026, 2, 28, 12), utc(2026, 3, 31, 12)))
        );
        assert_eq!(
            period_containing(anchor, utc(2026, 3, 31, 12)).map(|p| p.0),
            Ok(utc(2026, 3, 31, 12))
        );
        assert_eq!(
            period_containing(anchor, utc(2026, 1, 15, 0)),
            Ok((utc(2025, 12, 31, 12), anchor))
        );
    }

    #[test]
    fn the_last_months_chrono_can_hold_end_in_an_error_not_a_loop() {
        // The period of 262142-12-20 ends on 262143-01-15, past chrono's
        // range: the old search fell back to the anchor there and never left
        // its loop.
        let anchor = utc(262_142, 12, 15, 0);
        assert_eq!(bounded(anchor, utc(262_142, 12, 20, 0)), Err(OutOfRange));
        assert_eq!(
            bounded(utc(2026, 1, 1, 0), DateTime::<Utc>::MAX_UTC),
            Err(OutOfRange)
        );
        assert_eq!(
            bounded(DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC),
            Err(OutOfRange)
        );
        assert_eq!(
            bounded(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC),
            Err(OutOfRange)
        );
        // The last whole period before the end is still computed.
        assert_eq!(
            bounded(anchor, utc(262_142, 12, 10, 0)),
            Ok((utc(262_142, 11, 15, 0), anchor))
        );
    }

    #[test]
    fn conversions_refuse_what_the_other_side_cannot_hold() {
        assert_eq!(chrono_of_pg_micros(i64::MAX), None, "infinity");
        assert_eq!(chrono_of_pg_micros(i64::MIN), None, "-infinity");
        assert_eq!(chrono_of_pg_micros(PG_END_MICROS - 1), None, "294276 AD");
        assert_eq!(chrono_of_pg_micros(0), Some(utc(2000, 1, 1, 0)));
        let pg_min = chrono_of_pg_micros(PG_MIN_MICROS).unwrap();
        assert_eq!(pg_micros_of_chrono(pg_min), Some(PG_MIN_MICROS));
        assert_eq!(
            pg_micros_of_chrono(pg_min - chrono::Duration::microseconds(1)),
            None,
            "before 4714-11-24 BC"
        );
        assert_eq!(pg_micros_of_chrono(DateTime::<Utc>::MIN_UTC), None);
        assert_eq!(
            pg_micros_of_chrono(DateTime::<Utc>::MAX_UTC).map(|m| m < PG_END_MICROS),
            Some(true)
        );
    }

    /// Any instant chrono can hold, at microsecond precision.
    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        let lo = DateTime::<Utc>::MIN_UTC.timestamp_micros();
        let hi = DateTime::<Utc>::MAX_UTC.timestamp_micros();
        prop_oneof![
            // Anywhere in the range, ends included.
            lo..=hi,
            // Near today, where month-end clamping is exercised densely.
            1_600_000_000_000_000i64..1_900_000_000_000_000,
            // Near either end of the range.
            lo..lo + 100_000_000_000_000,
            hi - 100_000_000_000_000..=hi,
        ]
        .prop_map(|m| DateTime::from_timestamp_micros(m).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn the_period_contains_its_instant_and_ends_where_the_next_starts(
            anchor in instant(),
            at in instant(),
        ) {
            // Always returns (the strategy reaches both ends of chrono's range).
            match period_containing(anchor, at) {
                Ok((start, end)) => {
                    prop_assert!(start <= at && at < end, "{start} <= {at} < {end}");
                    let days = (end - start).num_days();
                    prop_assert!((28..=31).contains(&days), "{days} days");
                    // Periods tile time: the period of its end starts there.
                    if let Ok((next_start, _)) = period_containing(anchor, end) {
                        prop_assert_eq!(next_start, end);
                    }
                    // And the anchor starts one of them.
                    if anchor.year().abs() < 262_142 {
                        prop_assert_eq!(period_containing(anchor, anchor).map(|p| p.0), Ok(anchor));
                    }
                }
                // Only a bound past chrono's range is an error: `at` in its
                // first or last year.
                Err(OutOfRange) => prop_assert!(
                    at.year() >= 262_142 || at.year() <= -262_143,
                    "{anchor} {at}"
                ),
            }
        }

        #[test]
        fn instants_in_postgres_range_round_trip(micros in PG_MIN_MICROS..PG_END_MICROS) {
            match chrono_of_pg_micros(micros) {
                Some(dt) => prop_assert_eq!(pg_micros_of_chrono(dt), Some(micros)),
                None => prop_assert!(micros > 8_000_000_000_000_000_000, "{micros}"),
            }
        }
    }
}
