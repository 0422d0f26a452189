//! The leases this worker holds: every claimed job from its claim until the
//! database has its report (or it was released or lost). The heartbeat
//! extends them; shutdown releases those still being performed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where a held lease is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The side effect is running.
    Performing,
    /// Done; the outcome waits in the reporter's buffer.
    Reported,
    /// The report call is in progress: the heartbeat leaves it alone, so a
    /// job that the report just finished is not mistaken for a lost lease.
    Sending,
}

#[derive(Debug, Clone)]
struct Lease {
    fence: i32,
    kind: String,
    /// Renew when this passes: a third into the lease.
    renew_at: Instant,
    state: State,
}

/// A lease to hand back: id, fence and kind.
pub type Held = (Uuid, i32, String);

/// Never renew less than this far ahead, even for a lease already over (a
/// clock skew between worker and database): the heartbeat then runs at once.
const MIN_RENEW: Duration = Duration::from_millis(100);

/// When to renew a lease ending at `lease_until`, seen from `now`/`wall_now`.
fn renew_at(lease_until: DateTime<Utc>, now: Instant, wall_now: DateTime<Utc>) -> Instant {
    let left = (lease_until - wall_now).to_std().unwrap_or(Duration::ZERO);
    now + (left / 3).max(MIN_RENEW)
}

#[derive(Debug, Default)]
pub struct Leases {
    map: Mutex<HashMap<Uuid, Lease>>,
}

impl Leases {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Lease>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, id: Uuid, fence: i32, kind: &str, lease_until: DateTime<Utc>) {
        let lease = Lease {
            fence,
            kind: kind.to_string(),
            renew_at: renew_at(lease_until, Instant::now(), Utc::now()),
            state: State::Performing,
        };
        self.map().insert(id, lease);
    }

    /// Moves the lease `(id, fence)` to `state`, if still held.
    pub fn set_state(&self, id: Uuid, fence: i32, state: State) {
        if let Some(lease) = self.map().get_mut(&id).filter(|l| l.fence == fence) {
            lease.state = state;
        }
    }

    /// Forgets the lease `(id, fence)`: reported, released or lost.
    pub fn remove(&self, id: Uuid, fence: i32) {
        let mut map = self.map();
        if map.get(&id).is_some_and(|l| l.fence == fence) {
            map.remove(&id);
        }
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some lease is due for renewal at `now`.
    pub fn renewal_due(&self, now: Instant) -> bool {
        self.map()
            .values()
            .any(|l| l.state != State::Sending && l.renew_at <= now)
    }

    /// Every lease the heartbeat should extend (all but those being reported).
    pub fn to_renew(&self) -> (Vec<Uuid>, Vec<i32>) {
        self.map()
            .iter()
            .filter(|(_, l)| l.state != State::Sending)
            .map(|(id, l)| (*id, l.fence))
            .unzip()
    }

    /// Applies a heartbeat's answer: `held` lists the leases it extended out
    /// of those `sent`. Returns the leases found lost (id and kind), which are
    /// forgotten; a lease reported meanwhile is not counted as lost.
    pub fn renewed(
        &self,
        sent: &[(Uuid, i32)],
        held: &[(Uuid, DateTime<Utc>)],
    ) -> Vec<(Uuid, String)> {
        let (now, wall_now) = (Instant::now(), Utc::now());
        let held: HashMap<Uuid, DateTime<Utc>> = held.iter().copied().collect();
        let mut map = self.map();
        let mut lost = vec![];
        for (id, fence) in sent {
            let Some(lease) = map.get_mut(id).filter(|l| l.fence == *fence) else {
                continue;
            };
            match held.get(id) {
                Some(until) => lease.renew_at = renew_at(*until, now, wall_now),
                None if lease.state != State::Sending => {
                    lost.push((*id, lease.kind.clone()));
                    map.remove(id);
                }
                None => {}
            }
        }
        lost
    }

    /// The leases whose jobs are still being performed.
    pub fn performing(&self) -> Vec<Held> {
        self.map()
            .iter()
            .filter(|(_, l)| l.state == State::Performing)
            .map(|(id, l)| (*id, l.fence, l.kind.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease_for(seconds: i64) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(seconds)
    }

    #[test]
    fn renews_a_third_into_the_lease() {
        let now = Instant::now();
        let wall = Utc::now();
        let at = renew_at(wall + chrono::Duration::seconds(30), now, wall);
        assert_eq!(at - now, Duration::from_secs(10));
        let at = renew_at(wall - chrono::Duration::seconds(5), now, wall);
        assert_eq!(at - now, MIN_RENEW);
    }

    #[test]
    fn heartbeat_bookkeeping() {
        let leases = Leases::new();
        let (a, b, c, d) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        leases.insert(a, 1, "noop", lease_for(30));
        leases.insert(b, 2, "noop", lease_for(30));
        leases.insert(c, 3, "email", lease_for(30));
        leases.insert(d, 4, "email", lease_for(0));
        assert!(leases.renewal_due(Instant::now() + Duration::from_millis(150)));
        assert!(!leases.renewal_due(Instant::now() - Duration::from_secs(1)));
        leases.set_state(c, 3, State::Sending);
        leases.set_state(b, 2, State::Reported);
        let (ids, fences) = leases.to_renew();
        assert_eq!(ids.len(), 3);
        assert!(!ids.contains(&c));
        // a held, b lost, c (being reported) missing is not lost, d lost.
        let sent: Vec<(Uuid, i32)> = ids.into_iter().zip(fences).chain([(c, 3)]).collect();
        let mut lost = leases.renewed(&sent, &[(a, lease_for(30))]);
        lost.sort();
        let mut expected = vec![(b, "noop".to_string()), (d, "email".to_string())];
        expected.sort();
        assert_eq!(lost, expected);
        assert_eq!(leases.len(), 2);
        assert_eq!(leases.performing(), vec![(a, 1, "noop".to_string())]);
        // A fence that is not the held one changes nothing.
        leases.remove(a, 9);
        assert_eq!(leases.len(), 2);
        leases.remove(a, 1);
        leases.remove(c, 3);
        assert!(leases.is_empty());
    }
}
