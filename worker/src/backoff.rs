//! Exponential backoff with jitter for database calls that failed. The worker
//! never exits on a database error: each loop (claim, report, heartbeat,
//! release) waits `next()` and tries again, and a success resets the delay.

use std::time::Duration;

/// Delays of `base * 2^n` capped at `max`, each drawn uniformly from its
/// upper half ("equal jitter"), so workers that lost the database together do
/// not come back in lock step, and no delay is ever near zero.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// The worker's database backoff: 100 ms doubling to 10 s.
    pub fn database() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt; counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(unit_random())
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(30));
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A uniform number in [0, 1) from the OS random source (through uuid's v4,
/// which the crate already uses; backoffs are rare, so the syscall is cheap).
fn unit_random() -> f64 {
    // The low 53 bits: a v4 uuid's fixed version and variant bits lie above.
    let bits = uuid::Uuid::new_v4().as_u128() as u64 & ((1u64 << 53) - 1);
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = vec![];
        for _ in 0..8 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(b.failures(), 8);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut delays = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            delays.insert(b.next_delay().as_micros());
        }
        assert!(
            delays.len() > 40,
            "only {} distinct delays of 50",
            delays.len()
        );
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::database();
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
    }
}
