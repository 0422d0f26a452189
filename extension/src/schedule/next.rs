//! When a cron expression fires next, after an instant, in a named IANA
//! timezone.
//!
//! The fire instants are those of the matching wall-clock minutes, where a
//! wall-clock time maps to
//! - its only instant, on an ordinary day;
//! - the FIRST of its two instants when the clocks fall back (so a schedule
//!   fires once, not twice, in the repeated hour);
//! - the first instant after the gap when the clocks spring forward over it
//!   (02:30 in Europe/Berlin on the last Sunday of March fires at 03:00
//!   CEST): a daily job still runs that day. Several skipped times map to
//!   the same instant and fire once.
//!
//! That mapping never decreases as wall-clock time grows, so the next fire
//! after `after` is the first matching wall-clock minute, from `after`'s own
//! one on, whose instant is later than `after`.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::cron::Cron;

/// How far the search looks ahead. A day-of-month with a `*`-started
/// weekday field must match both (`0 0 21 6 */7`: 21 June on a Sunday, 11
/// years apart from 2026; `0 0 29 2 SUN`-like combinations are 28 or more):
/// fifty years holds them all, and costs a walk over the matching months'
/// days only (under 20,000 steps).
const HORIZON_DAYS: i64 = 50 * 366;

/// A timezone by its IANA name (`Europe/Berlin`, `UTC`).
pub fn zone(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// The first matching wall-clock minute at or after `from` (whose seconds
/// are ignored), up to `limit`.
pub fn next_local(cron: &Cron, from: NaiveDateTime, limit: NaiveDate) -> Option<NaiveDateTime> {
    let mut date = from.date();
    let (mut h, mut m) = (from.hour(), from.minute());
    while date <= limit {
        if !cron.month_matches(date.month()) {
            let (y, mo) = if date.month() == 12 {
                (date.year() + 1, 1)
            } else {
                (date.year(), date.month() + 1)
            };
            date = NaiveDate::from_ymd_opt(y, mo, 1)?;
            (h, m) = (0, 0);
            continue;
        }
        if cron.day_matches(date) {
            if let Some((hh, mm)) = cron.time_at_or_after(h, m) {
                return date.and_hms_opt(hh, mm, 0);
            }
        }
        date = date.succ_opt()?;
        (h, m) = (0, 0);
    }
    None
}

/// The instant a wall-clock time fires at (see the module's rules).
pub fn resolve(tz: &Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    if let Some(t) = tz.from_local_datetime(&local).earliest() {
        return Some(t.with_timezone(&Utc));
    }
    // In a gap: the first wall-clock minute that exists again. Gaps last an
    // hour, at most a day (Pacific/Apia skipped 2011-12-30).
    let mut l = local;
    for _ in 0..2 * 1440 {
        l = l.checked_add_signed(Duration::minutes(1))?;
        if let Some(t) = tz.from_local_datetime(&l).earliest() {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

/// The first fire strictly after `after`, or None when there is none within
/// the horizon (or chrono's range).
pub fn next_after(cron: &Cron, tz: &Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(tz).naive_local();
    let mut from = local.with_second(0)?.with_nanosecond(0)?;
    let limit = from
        .date()
        .checked_add_signed(Duration::days(HORIZON_DAYS))?;
    loop {
        let l = next_local(cron, from, limit)?;
        let t = resolve(tz, l)?;
        if t > after {
            return Some(t);
        }
        // Only wall-clock times of the hour repeated by a fall-back (or
        // `after`'s own minute) come back at or before `after`.
        from = l.checked_add_signed(Duration::minutes(1))?;
    }
}

/// What a tick at `now` does with a schedule that was due at `due`: the
/// latest fire at or before `now` (`due` itself or a later missed one), how
/// many fires were due in all, and the first fire after `now`. At most
/// `cap` fires are walked; beyond that the count stops there and the
/// latest is the last one walked (a year of `* * * * *` is 525,600).
pub fn catch_up(
    cron: &Cron,
    tz: &Tz,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    cap: u32,
) -> (DateTime<Utc>, u32, Option<DateTime<Utc>>) {
    let (mut latest, mut count) = (due, 1u32);
    loop {
        match next_after(cron, tz, latest) {
            Some(t) if t <= now && count < cap => {
                latest = t;
                count += 1;
            }
            Some(t) if t <= now => return (latest, count, next_after(cron, tz, now)),
            other => return (latest, count, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, tz: &str, after: &str) -> String {
        let t = next_after(&Cron::parse(expr).unwrap(), &zone(tz).unwrap(), utc(after)).unwrap();
        t.to_rfc3339()
    }

    #[test]
    fn ordinary_fires() {
        // 2026-11-30 is a Monday.
        assert_eq!(
            next("0 8 * * 1", "UTC", "2026-11-30T07:59:59Z"),
            "2026-11-30T08:00:00+00:00"
        );
        assert_eq!(
            next("0 8 * * 1", "UTC", "2026-11-30T08:00:00Z"),
            "2026-12-07T08:00:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-12-31T23:59:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("0 8 * * 1", "Europe/Berlin", "2026-11-30T06:00:00Z"),
            "2026-11-30T07:00:00+00:00"
        );
        assert_eq!(
            next("0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 29 2 *", "UTC", "2097-01-01T00:00:00Z"),
            "2104-02-29T00:00:00+00:00"
        );
        assert_eq!(
            next("30 5 * * *", "Asia/Kolkata", "2026-06-01T00:00:00Z"),
            "2026-06-02T00:00:00+00:00"
        );
    }

    #[test]
    fn spring_forward_fires_at_the_end_of_the_gap() {
        // Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC).
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z"),
            "2026-03-29T01:00:00+00:00"
        );
        // ... and the day after, as usual.
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-03-29T01:00:00Z"),
            "2026-03-30T00:30:00+00:00"
        );
        // Every quarter hour: the skipped 02:00-02:45 and 03:00 fire once, at 03:00 CEST.
        assert_eq!(
            next("*/15 * * * *", "Europe/Berlin", "2026-03-29T00:45:00Z"),
            "2026-03-29T01:00:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "Europe/Berlin", "2026-03-29T01:00:00Z"),
            "2026-03-29T01:15:00+00:00"
        );
        // New York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC).
        assert_eq!(
            next("30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z"),
            "2026-03-08T07:00:00+00:00"
        );
    }

    #[test]
    fn fall_back_fires_once() {
        // Berlin: 2026-10-25 03:00 CEST -> 02:00 CET; 02:30 happens twice
        // (00:30 and 01:30 UTC) and fires at the first.
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z"),
            "2026-10-25T00:30:00+00:00"
        );
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-10-25T00:30:00Z"),
            "2026-10-26T01:30:00+00:00"
        );
        // Hourly: 02:00 fires once (00:00 UTC), the repeated hour does not, 03:00 CET does.
        assert_eq!(
            next("0 * * * *", "Europe/Berlin", "2026-10-25T00:00:00Z"),
            "2026-10-25T02:00:00+00:00"
        );
        // From inside the repeated hour.
        assert_eq!(
            next("45 2 * * *", "Europe/Berlin", "2026-10-25T01:10:00Z"),
            "2026-10-26T01:45:00+00:00"
        );
        // New York: 2026-11-01 02:00 EDT -> 01:00 EST; 01:30 fires at 05:30 UTC only.
        assert_eq!(
            next("30 1 * * *", "America/New_York", "2026-11-01T04:00:00Z"),
            "2026-11-01T05:30:00+00:00"
        );
        assert_eq!(
            next("30 1 * * *", "America/New_York", "2026-11-01T05:30:00Z"),
            "2026-11-02T06:30:00+00:00"
        );
    }

    #[test]
    fn catch_up_counts_missed_fires() {
        let c = Cron::parse("0 * * * *").unwrap();
        let (latest, n, next) = catch_up(
            &c,
            &Tz::UTC,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T05:30:00Z"),
            1000,
        );
        assert_eq!(
            (latest, n, next),
            (
                utc("2026-01-01T05:00:00Z"),
                6,
                Some(utc("2026-01-01T06:00:00Z"))
            )
        );
        let (latest, n, next) = catch_up(
            &c,
            &Tz::UTC,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T05:30:00Z"),
            3,
        );
        assert_eq!(
            (latest, n, next),
            (
                utc("2026-01-01T02:00:00Z"),
                3,
                Some(utc("2026-01-01T06:00:00Z"))
            )
        );
    }

    /// The definition, minute by minute: a UTC minute fires when its
    /// wall-clock time matches and it is that time's first instant, or when
    /// the clocks just skipped over a matching time.
    fn brute(cron: &Cron, tz: &Tz, after: DateTime<Utc>, minutes: u32) -> Option<DateTime<Utc>> {
        let floor = after.with_second(0).unwrap().with_nanosecond(0).unwrap();
        let mut t = floor + Duration::minutes(1);
        let mut prev = (t - Duration::minutes(1)).with_timezone(tz).naive_local();
        for _ in 0..minutes {
            let local = t.with_timezone(tz).naive_local();
            let first = tz
                .from_local_datetime(&local)
                .earliest()
                .map(|x| x.with_timezone(&Utc));
            if cron.matches(local) && first == Some(t) {
                return Some(t);
            }
            let mut skipped = prev + Duration::minutes(1);
            while skipped < local {
                if cron.matches(skipped) {
                    return Some(t);
                }
                skipped += Duration::minutes(1);
            }
            prev = local;
            t += Duration::minutes(1);
        }
        None
    }

    fn field(lo: u32, hi: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            (1..=(hi - lo).max(1)).prop_map(|k| format!("*/{k}")),
            (lo..=hi).prop_map(|a| a.to_string()),
            (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{a},{b}")),
            (lo..=hi, lo..=hi, 1..=5u32).prop_map(|(a, b, k)| format!(
                "{}-{}/{k}",
                a.min(b),
                a.max(b)
            )),
        ]
    }

    fn expr() -> impl Strategy<Value = String> {
        (
            field(0, 59),
            field(0, 23),
            prop_oneof![3 => Just("*".to_string()), 1 => field(1, 31)],
            prop_oneof![3 => Just("*".to_string()), 1 => field(1, 12)],
            field(0, 7),
        )
            .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
    }

    const ZONES: [&str; 7] = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "America/Santiago",
        "Pacific/Apia",
    ];

    /// Clock changes of each zone (UTC): Berlin and New York 2026, Lord
    /// Howe's half-hour shifts, Santiago, and the day Apia skipped.
    const CHANGES: [(usize, &str); 10] = [
        (1, "2026-03-29T01:00:00Z"),
        (1, "2026-10-25T01:00:00Z"),
        (2, "2026-03-08T07:00:00Z"),
        (2, "2026-11-01T06:00:00Z"),
        (3, "2026-04-04T15:00:00Z"),
        (3, "2026-10-03T15:30:00Z"),
        (5, "2026-04-05T03:00:00Z"),
        (5, "2026-09-06T04:00:00Z"),
        (6, "2011-12-29T10:00:00Z"),
        (6, "2021-09-25T14:00:00Z"),
    ];

    /// A zone and an instant: within hours of one of its clock changes, or
    /// anywhere in 2020-2030.
    fn zone_and_instant() -> impl Strategy<Value = (usize, DateTime<Utc>)> {
        prop_oneof![
            (0..CHANGES.len(), -4 * 3600i64..4 * 3600, 0..1_000_000i64).prop_map(|(i, s, us)| {
                (
                    CHANGES[i].0,
                    utc(CHANGES[i].1) + Duration::seconds(s) + Duration::microseconds(us),
                )
            }),
            (
                0..ZONES.len(),
                1_577_836_800i64..1_893_456_000,
                0..1_000_000i64
            )
                .prop_map(|(z, s, us)| {
                    (
                        z,
                        DateTime::from_timestamp(s, 0).unwrap() + Duration::microseconds(us),
                    )
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// next > after; it is a fire by the minute-by-minute definition;
        /// and no fire lies between after and it.
        #[test]
        fn next_is_the_first_fire_after(e in expr(), (z, after) in zone_and_instant()) {
            let cron = Cron::parse(&e);
            prop_assume!(cron.is_ok());
            let cron = cron.unwrap();
            let tz = zone(ZONES[z]).unwrap();
            let got = next_after(&cron, &tz, after);
            // Three days of minutes by brute force: every expression with a
            // `*` day field and month field fires within them or is compared
            // on the stretch it covers.
            let window = 3 * 1440;
            match brute(&cron, &tz, after, window) {
                Some(want) => prop_assert_eq!(got, Some(want), "{} in {} after {}", e, ZONES[z], after),
                None => {
                    let got = got.expect("a valid expression fires within the horizon");
                    prop_assert!(got > after + Duration::minutes(window as i64 - 1), "{} skipped to {}", e, got);
                    // It is a fire: the brute force from just before it finds it.
                    prop_assert_eq!(brute(&cron, &tz, got - Duration::minutes(1), 1), Some(got));
                }
            }
        }
    }
}
