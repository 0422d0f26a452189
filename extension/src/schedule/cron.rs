//! Five-field cron expressions (minute hour day-of-month month day-of-week),
//! as Vixie cron reads them: `*`, lists (`1,15`), ranges (`1-5`), steps
//! (`*/15`, `1-30/5`, `5/15` = `5-max/15`), month names (JAN-DEC) and day
//! names (SUN-SAT, 0 and 7 both Sunday). When both day fields are
//! restricted (neither starts with `*`) a day matches if EITHER matches;
//! otherwise both must (the classic rule). No seconds, no `L`/`W`/`#`, no
//! `@daily` macros: an expression that uses them is refused, naming the
//! field, rather than read some other way.

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// A parsed expression: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    pub minutes: u64,
    pub hours: u32,
    /// Bits 1..=31.
    pub days: u32,
    /// Bits 1..=12.
    pub months: u16,
    /// Bits 0..=6, Sunday = 0.
    pub weekdays: u8,
    /// Whether the day-of-month field started with `*` (unrestricted).
    days_star: bool,
    weekdays_star: bool,
}

/// Why an expression was refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} field: {}", self.field, self.message)
    }
}

/// What every error about an expression suggests.
pub const HINT: &str = "Use five fields: minute (0-59) hour (0-23) day-of-month (1-31) month (1-12 or JAN-DEC) \
     day-of-week (0-7 or SUN-SAT), each *, a value, a range a-b, a list a,b or a step */n; e.g. \"0 8 * * MON\".";

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ],
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    },
];

impl Field {
    fn err(&self, message: String) -> CronError {
        CronError {
            field: self.name,
            message,
        }
    }

    /// A number or (for months and weekdays) a three-letter name.
    fn value(&self, s: &str) -> Result<u32, CronError> {
        if let Ok(n) = s.parse::<u32>() {
            if n < self.min || n > self.max {
                return Err(self.err(format!("{n} is out of range {}-{}", self.min, self.max)));
            }
            return Ok(n);
        }
        let upper = s.to_ascii_uppercase();
        match self.names.iter().position(|&n| n == upper) {
            Some(i) => Ok(i as u32 + if self.name == "month" { 1 } else { 0 }),
            None if s.is_empty() => Err(self.err("empty value".into())),
            None => Err(self.err(format!("\"{}\" is not a value", truncate(s)))),
        }
    }

    /// The bits one field allows.
    fn parse(&self, text: &str) -> Result<u64, CronError> {
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step = s.parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                        self.err(format!(
                            "step \"{}\" is not a whole number from 1",
                            truncate(s)
                        ))
                    })?;
                    (r, Some(step))
                }
                None => (part, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(self.err(format!(
                        "range {a}-{b} runs backwards (ranges do not wrap around)"
                    )));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `5/15` means from 5 to the end, every 15.
                (a, if step.is_some() { self.max } else { a })
            };
            let step = step.unwrap_or(1);
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(bits)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(20).collect()
}

/// Days in each month of a leap year: what a day-of-month must fit in some
/// year for the expression to fire at all.
const MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let parts: Vec<&str> = expr.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(CronError {
                field: "expression",
                message: format!(
                    "\"{}\" has {} fields, not 5",
                    expr.chars().take(100).collect::<String>(),
                    parts.len()
                ),
            });
        }
        let mut bits = [0u64; 5];
        for (i, f) in FIELDS.iter().enumerate() {
            bits[i] = f.parse(parts[i])?;
        }
        // 7 is Sunday too.
        let weekdays = ((bits[4] & 0x7f) | (bits[4] >> 7)) as u8;
        let cron = Cron {
            minutes: bits[0],
            hours: bits[1] as u32,
            days: bits[2] as u32,
            months: bits[3] as u16,
            weekdays,
            days_star: parts[2].starts_with('*'),
            weekdays_star: parts[4].starts_with('*'),
        };
        // With the weekday field `*`, the day of the month alone picks the
        // days: some picked day must exist in some picked month (in a leap
        // year), or the expression never fires (`0 0 30 2 *`).
        if cron.weekdays_star {
            let possible = (1..=12u32)
                .filter(|m| cron.months & (1 << m) != 0)
                .any(|m| (1..=MAX_DAYS[m as usize - 1]).any(|d| cron.days & (1 << d) != 0));
            if !possible {
                return Err(CronError {
                    field: "day-of-month",
                    message: format!(
                        "\"{}\" never occurs in month(s) \"{}\", so the schedule would never fire",
                        truncate(parts[2]),
                        truncate(parts[3])
                    ),
                });
            }
        }
        Ok(cron)
    }

    pub fn month_matches(&self, month: u32) -> bool {
        self.months & (1 << month) != 0
    }

    /// The day rule: with both day fields restricted, either may match.
    pub fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.days_star, self.weekdays_star) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// Whether a wall-clock minute matches (seconds are ignored): the
    /// definition the tests hold the search to.
    #[cfg(test)]
    pub fn matches(&self, t: chrono::NaiveDateTime) -> bool {
        self.month_matches(t.date().month())
            && self.day_matches(t.date())
            && self.hours & (1 << chrono::Timelike::hour(&t)) != 0
            && self.minutes & (1 << chrono::Timelike::minute(&t)) != 0
    }

    /// The first allowed (hour, minute) of a day at or after `(h, m)`.
    pub fn time_at_or_after(&self, h: u32, m: u32) -> Option<(u32, u32)> {
        (h..24)
            .filter(|&hh| self.hours & (1 << hh) != 0)
            .find_map(|hh| {
                let from = if hh == h { m } else { 0 };
                let mins = self.minutes >> from << from;
                (mins != 0).then(|| (hh, mins.trailing_zeros()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(v: &[u32]) -> u64 {
        v.iter().fold(0, |b, &x| b | 1 << x)
    }

    #[test]
    fn fields_lists_ranges_steps_names() {
        let c = Cron::parse("*/15 8-10,18 1,15 JAN-mar,dec MON-FRI").unwrap();
        assert_eq!(c.minutes, bits(&[0, 15, 30, 45]));
        assert_eq!(c.hours as u64, bits(&[8, 9, 10, 18]));
        assert_eq!(c.days as u64, bits(&[1, 15]));
        assert_eq!(c.months as u64, bits(&[1, 2, 3, 12]));
        assert_eq!(c.weekdays as u64, bits(&[1, 2, 3, 4, 5]));
        let c = Cron::parse("5/20 1-10/3 * * 7").unwrap();
        assert_eq!(c.minutes, bits(&[5, 25, 45]));
        assert_eq!(c.hours as u64, bits(&[1, 4, 7, 10]));
        assert_eq!(c.weekdays, 1, "7 is Sunday");
        let all = Cron::parse("* * * * *").unwrap();
        assert_eq!(all.minutes, (1u64 << 60) - 1);
        assert_eq!(all.weekdays, 0x7f);
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        // 2026-06-01 is a Monday, 2026-06-13 a Saturday.
        let either = Cron::parse("0 0 13 * MON").unwrap();
        assert!(either.day_matches(d(2026, 6, 1)));
        assert!(either.day_matches(d(2026, 6, 13)));
        assert!(!either.day_matches(d(2026, 6, 2)));
        // A star (even stepped) in one field: only the other restricts.
        let dom_only = Cron::parse("0 0 13 * *").unwrap();
        assert!(!dom_only.day_matches(d(2026, 6, 1)));
        let dow_only = Cron::parse("0 0 */1 * MON").unwrap();
        assert!(dow_only.day_matches(d(2026, 6, 1)));
        assert!(!dow_only.day_matches(d(2026, 6, 13)));
    }

    #[test]
    fn errors_name_the_field() {
        let e = |s: &str| Cron::parse(s).unwrap_err();
        assert_eq!(e("0 8 * *").field, "expression");
        assert_eq!(e("60 * * * *").field, "minute");
        assert!(e("60 * * * *").message.contains("60 is out of range 0-59"));
        assert_eq!(e("* 24 * * *").field, "hour");
        assert_eq!(e("* * 0 * *").field, "day-of-month");
        assert_eq!(e("* * * 13 *").field, "month");
        assert_eq!(e("* * * FOO *").field, "month");
        assert_eq!(e("* * * * 8").field, "day-of-week");
        assert_eq!(e("*/0 * * * *").field, "minute");
        assert_eq!(e("10-5 * * * *").field, "minute");
        assert_eq!(e("1,,2 * * * *").field, "minute");
        assert_eq!(e("@daily * * * *").field, "minute");
        assert_eq!(e("0 0 L * *").field, "day-of-month");
        let never = e("0 0 30 2 *");
        assert_eq!(never.field, "day-of-month");
        assert!(never.message.contains("never"), "{never}");
        // Feb 29 exists in leap years; Feb 30 with a weekday fires on it.
        assert!(Cron::parse("0 0 29 2 *").is_ok());
        assert!(Cron::parse("0 0 30 2 MON").is_ok());
    }

    #[test]
    fn first_time_of_day() {
        let c = Cron::parse("30 8,17 * * *").unwrap();
        assert_eq!(c.time_at_or_after(0, 0), Some((8, 30)));
        assert_eq!(c.time_at_or_after(8, 30), Some((8, 30)));
        assert_eq!(c.time_at_or_after(8, 31), Some((17, 30)));
        assert_eq!(c.time_at_or_after(17, 31), None);
    }
}
