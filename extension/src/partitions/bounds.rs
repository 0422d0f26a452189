//! Partition ranges, pure: which period a moment falls in, the ranges a
//! parent should have, and what is past retention. Ranges are whole UTC days,
//! weeks (Monday to Monday, ISO) or months, so a boundary never depends on
//! the session's time zone; they are compared as microseconds since the Unix
//! epoch.

use chrono::{Datelike, Days, Months, NaiveDate};

/// How long one partition covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Daily,
    Weekly,
    Monthly,
}

impl Interval {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(Self::Daily),
            "weekly" => Some(Self::Weekly),
            "monthly" => Some(Self::Monthly),
            _ => None,
        }
    }

    /// The `date_trunc` unit whose UTC truncation is this interval's floor.
    pub fn trunc_unit(self) -> &'static str {
        match self {
            Self::Daily => "day",
            Self::Weekly => "week",
            Self::Monthly => "month",
        }
    }

    /// The first day of the period containing `day`.
    pub fn floor(self, day: NaiveDate) -> NaiveDate {
        match self {
            Self::Daily => day,
            Self::Weekly => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
            Self::Monthly => day.with_day(1).expect("day 1 exists in every month"),
        }
    }

    /// The start of the period `n` periods after the one starting at `start`
    /// (a floor). None beyond chrono's calendar.
    pub fn step(self, start: NaiveDate, n: u32) -> Option<NaiveDate> {
        match self {
            Self::Daily => start.checked_add_days(Days::new(u64::from(n))),
            Self::Weekly => start.checked_add_days(Days::new(7 * u64::from(n))),
            Self::Monthly => start.checked_add_months(Months::new(n)),
        }
    }

    /// The suffix naming the partition that starts at `start`.
    pub fn suffix(self, start: NaiveDate) -> String {
        match self {
            Self::Monthly => start.format("%Y_%m").to_string(),
            Self::Daily | Self::Weekly => start.format("%Y_%m_%d").to_string(),
        }
    }
}

/// One partition's range [lo, hi), as UTC dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub lo: NaiveDate,
    pub hi: NaiveDate,
}

impl Range {
    pub fn of(interval: Interval, start: NaiveDate) -> Option<Self> {
        let lo = interval.floor(start);
        Some(Self {
            lo,
            hi: interval.step(lo, 1)?,
        })
    }

    pub fn lo_micros(self) -> i64 {
        micros(self.lo)
    }

    pub fn hi_micros(self) -> i64 {
        micros(self.hi)
    }

    /// Does [lo, hi) share a moment with the existing bound [lo_us, hi_us)?
    pub fn overlaps(self, lo_us: i64, hi_us: i64) -> bool {
        self.lo_micros() < hi_us && lo_us < self.hi_micros()
    }
}

/// Midnight UTC of `day`, in microseconds since the Unix epoch.
pub fn micros(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros()
}

/// The UTC day containing `us` (microseconds since the Unix epoch).
pub fn day_of_micros(us: i64) -> Option<NaiveDate> {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.date_naive())
}

/// The ranges a parent should have at `today`: the current period and
/// `premake` more.
pub fn wanted(interval: Interval, today: NaiveDate, premake: u32) -> Vec<Range> {
    let first = interval.floor(today);
    (0..=premake)
        .map_while(|i| interval.step(first, i).and_then(|d| Range::of(interval, d)))
        .collect()
}

/// An existing partition's bound, in microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub lo: i64,
    pub hi: i64,
}

/// Which of `existing` (any order) are wholly before `cutoff` and may go:
/// never one that contains or follows `now`, and never the newest, so at
/// least one partition always remains. Returns indices into `existing`,
/// oldest first.
pub fn expired(existing: &[Bound], cutoff: i64, now: i64) -> Vec<usize> {
    let Some(newest) = (0..existing.len()).max_by_key(|&i| (existing[i].hi, existing[i].lo)) else {
        return Vec::new();
    };
    let mut out: Vec<usize> = (0..existing.len())
        .filter(|&i| i != newest && existing[i].hi <= cutoff && existing[i].hi <= now)
        .collect();
    out.sort_by_key(|&i| existing[i].lo);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn floors() {
        assert_eq!(Interval::Monthly.floor(d(2024, 2, 29)), d(2024, 2, 1));
        assert_eq!(Interval::Daily.floor(d(2024, 2, 29)), d(2024, 2, 29));
        // 2024-02-29 is a Thursday; its ISO week starts Monday the 26th.
        assert_eq!(Interval::Weekly.floor(d(2024, 2, 29)), d(2024, 2, 26));
        // A week that spans the new year.
        assert_eq!(Interval::Weekly.floor(d(2027, 1, 1)), d(2026, 12, 28));
    }

    #[test]
    fn wanted_crosses_year_and_leap_day() {
        let got = wanted(Interval::Monthly, d(2026, 11, 30), 2);
        let los: Vec<_> = got.iter().map(|r| r.lo).collect();
        assert_eq!(los, vec![d(2026, 11, 1), d(2026, 12, 1), d(2027, 1, 1)]);
        assert_eq!(got[2].hi, d(2027, 2, 1));
        let days = wanted(Interval::Daily, d(2024, 2, 28), 2);
        let los: Vec<_> = days.iter().map(|r| r.lo).collect();
        assert_eq!(los, vec![d(2024, 2, 28), d(2024, 2, 29), d(2024, 3, 1)]);
        // Not a leap year: 28 February is followed by 1 March.
        let days = wanted(Interval::Daily, d(2023, 2, 28), 1);
        assert_eq!(days[0].hi, d(2023, 3, 1));
        assert_eq!(days[1].lo, d(2023, 3, 1));
    }

    #[test]
    fn suffixes() {
        assert_eq!(Interval::Monthly.suffix(d(2026, 1, 1)), "2026_01");
        assert_eq!(Interval::Daily.suffix(d(2024, 2, 29)), "2024_02_29");
    }

    #[test]
    fn expiry_keeps_the_newest_and_the_current() {
        let b = |lo: NaiveDate, hi: NaiveDate| Bound {
            lo: micros(lo),
            hi: micros(hi),
        };
        let parts = [
            b(d(2026, 2, 1), d(2026, 3, 1)),
            b(d(2026, 1, 1), d(2026, 2, 1)),
            b(d(2026, 3, 1), d(2026, 4, 1)),
        ];
        // Cutoff after everything: all but the newest go, oldest first.
        assert_eq!(
            expired(&parts, micros(d(2030, 1, 1)), micros(d(2030, 1, 1))),
            vec![1, 0]
        );
        // Cutoff mid-February: only January.
        assert_eq!(
            expired(&parts, micros(d(2026, 2, 14)), micros(d(2026, 5, 1))),
            vec![1]
        );
        assert!(expired(&[], 0, 0).is_empty());
    }

    fn any_day() -> impl Strategy<Value = NaiveDate> {
        (1i32..=9000, 0u64..366).prop_map(|(y, o)| {
            d(y, 1, 1)
                .checked_add_days(Days::new(o))
                .unwrap_or(d(y, 12, 31))
        })
    }

    fn any_interval() -> impl Strategy<Value = Interval> {
        prop_oneof![
            Just(Interval::Daily),
            Just(Interval::Weekly),
            Just(Interval::Monthly)
        ]
    }

    proptest! {
        /// The period containing a day contains it, and consecutive wanted
        /// ranges tile time: no gap, no overlap.
        #[test]
        fn ranges_contain_and_tile(day in any_day(), iv in any_interval(), premake in 0u32..40) {
            let r = Range::of(iv, day).unwrap();
            prop_assert!(r.lo <= day && day < r.hi);
            prop_assert_eq!(iv.floor(r.lo), r.lo);
            let w = wanted(iv, day, premake);
            prop_assert_eq!(w.len() as u32, premake + 1);
            prop_assert_eq!(w[0], r);
            for pair in w.windows(2) {
                prop_assert_eq!(pair[0].hi, pair[1].lo);
                prop_assert!(!pair[0].overlaps(pair[1].lo_micros(), pair[1].hi_micros()));
            }
        }

        /// Expiry never takes the newest partition, nor one ending after now
        /// or after the cutoff.
        #[test]
        fn expiry_is_safe(los in proptest::collection::vec(0i64..1000, 0..20), cutoff in 0i64..1200, now in 0i64..1200) {
            let parts: Vec<Bound> = los.iter().map(|&lo| Bound { lo, hi: lo + 10 }).collect();
            let gone = expired(&parts, cutoff, now);
            if !parts.is_empty() {
                prop_assert!(gone.len() < parts.len());
            }
            for &i in &gone {
                prop_assert!(parts[i].hi <= cutoff && parts[i].hi <= now);
            }
        }
    }
}
