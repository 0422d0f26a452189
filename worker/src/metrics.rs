//! The worker's Prometheus metrics, rendered in the text exposition format
//! 0.0.4. Counters and histograms are per job kind (workspaces would be
//! unbounded label cardinality; `flowtrack-worker status` shows them). Queue
//! depth and lag come from `internal.queue_status()`, refreshed on a timer by
//! the runtime, so a scrape never touches the database.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::claim::QueueRow;

/// Bucket bounds in seconds, shared by both histograms: 1 ms to 2 minutes.
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// What the worker did per kind.
#[derive(Debug, Clone, Default)]
struct KindStats {
    claimed: u64,
    succeeded: u64,
    failed: u64,
    retried: u64,
    dead: u64,
    stale: u64,
    released: u64,
    leases_lost: u64,
    in_flight: i64,
    duration: Histogram,
    latency: Histogram,
}

/// The queue as `internal.queue_status()` last showed it, summed per kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueGauges {
    pub queued: i64,
    pub due: i64,
    pub running: i64,
    pub dead: i64,
    pub lag_seconds: f64,
}

/// How the database answered one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    Completed,
    Retrying,
    Dead,
    Stale,
    Released,
}

impl Reported {
    pub fn parse(outcome: &str) -> Option<Self> {
        Some(match outcome {
            "completed" => Reported::Completed,
            "retrying" => Reported::Retrying,
            "dead" => Reported::Dead,
            "stale" => Reported::Stale,
            "released" => Reported::Released,
            _ => return None,
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    kinds: BTreeMap<String, KindStats>,
    queue: BTreeMap<String, QueueGauges>,
    db_errors: BTreeMap<&'static str, u64>,
}

/// A metric family's name, help text, and how to read its value.
type Family<T, V> = (&'static str, &'static str, fn(&T) -> V);
type HistogramFamily = (&'static str, &'static str, fn(&KindStats) -> &Histogram);

/// Shared by every task; one short lock per event.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_kind(&self, kind: &str, f: impl FnOnce(&mut KindStats)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.kinds.get_mut(kind) {
            Some(stats) => f(stats),
            None => f(inner.kinds.entry(kind.to_string()).or_default()),
        }
    }

    /// A job was claimed `latency` seconds after it was enqueued; it is now in flight.
    pub fn claimed(&self, kind: &str, latency: f64) {
        self.with_kind(kind, |s| {
            s.claimed += 1;
            s.in_flight += 1;
            s.latency.observe(latency);
        });
    }

    /// A claimed job was handed back without being performed (shutdown).
    pub fn not_started(&self, kind: &str) {
        self.with_kind(kind, |s| s.in_flight -= 1);
    }

    /// A job's side effect ended after `seconds`.
    pub fn performed(&self, kind: &str, seconds: f64) {
        self.with_kind(kind, |s| {
            s.in_flight -= 1;
            s.duration.observe(seconds);
        });
    }

    pub fn reported(&self, kind: &str, outcome: Reported) {
        self.with_kind(kind, |s| match outcome {
            Reported::Completed => s.succeeded += 1,
            Reported::Retrying => {
                s.failed += 1;
                s.retried += 1;
            }
            Reported::Dead => {
                s.failed += 1;
                s.dead += 1;
            }
            Reported::Stale => s.stale += 1,
            Reported::Released => s.released += 1,
        });
    }

    pub fn lease_lost(&self, kind: &str) {
        self.with_kind(kind, |s| s.leases_lost += 1);
    }

    /// A database call (`call` names it) failed and will be retried.
    pub fn db_error(&self, call: &'static str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.db_errors.entry(call).or_default() += 1;
    }

    /// Replaces the queue gauges; kinds that left the queue read 0.
    pub fn set_queue(&self, rows: &[QueueRow]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for gauges in inner.queue.values_mut() {
            *gauges = QueueGauges::default();
        }
        for (kind, gauges) in by_kind(rows) {
            inner.queue.insert(kind, gauges);
        }
    }

    /// The text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(4096);
        let counters: [Family<KindStats, u64>; 8] = [
            (
                "flowtrack_worker_jobs_claimed_total",
                "Jobs claimed.",
                |s| s.claimed,
            ),
            (
                "flowtrack_worker_jobs_succeeded_total",
                "Jobs reported completed.",
                |s| s.succeeded,
            ),
            (
                "flowtrack_worker_jobs_failed_total",
                "Failed attempts the database accepted (retried + dead).",
                |s| s.failed,
            ),
            (
                "flowtrack_worker_jobs_retried_total",
                "Failed attempts queued again with backoff.",
                |s| s.retried,
            ),
            (
                "flowtrack_worker_jobs_dead_total",
                "Jobs dead-lettered.",
                |s| s.dead,
            ),
            (
                "flowtrack_worker_jobs_stale_total",
                "Reports refused because the lease's fence was no longer current.",
                |s| s.stale,
            ),
            (
                "flowtrack_worker_jobs_released_total",
                "Leases handed back unperformed at shutdown.",
                |s| s.released,
            ),
            (
                "flowtrack_worker_leases_lost_total",
                "Leases a heartbeat found lost.",
                |s| s.leases_lost,
            ),
        ];
        for (name, help, get) in counters {
            header(&mut out, name, help, "counter");
            for (kind, stats) in &inner.kinds {
                let _ = writeln!(out, "{name}{{kind=\"{}\"}} {}", escape(kind), get(stats));
            }
        }
        header(
            &mut out,
            "flowtrack_worker_jobs_in_flight",
            "Jobs being performed now.",
            "gauge",
        );
        for (kind, stats) in &inner.kinds {
            let _ = writeln!(
                out,
                "flowtrack_worker_jobs_in_flight{{kind=\"{}\"}} {}",
                escape(kind),
                stats.in_flight
            );
        }
        let histograms: [HistogramFamily; 2] = [
            (
                "flowtrack_worker_job_duration_seconds",
                "Time to perform a job's side effect.",
                |s| &s.duration,
            ),
            (
                "flowtrack_worker_enqueue_to_start_seconds",
                "From enqueued_at to the claim that started the attempt.",
                |s| &s.latency,
            ),
        ];
        for (name, help, get) in histograms {
            header(&mut out, name, help, "histogram");
            for (kind, stats) in &inner.kinds {
                histogram(&mut out, name, kind, get(stats));
            }
        }
        let gauges: [Family<QueueGauges, f64>; 5] = [
            (
                "flowtrack_queue_depth",
                "Jobs queued (due or not), from internal.queue_status().",
                |g| g.queued as f64,
            ),
            ("flowtrack_queue_due", "Jobs queued and due now.", |g| {
                g.due as f64
            }),
            (
                "flowtrack_queue_running",
                "Jobs leased by some worker.",
                |g| g.running as f64,
            ),
            ("flowtrack_queue_dead", "Dead jobs.", |g| g.dead as f64),
            (
                "flowtrack_queue_lag_seconds",
                "Age of the oldest due job (largest across workspaces).",
                |g| g.lag_seconds,
            ),
        ];
        for (name, help, get) in gauges {
            header(&mut out, name, help, "gauge");
            for (kind, g) in &inner.queue {
                let _ = writeln!(out, "{name}{{kind=\"{}\"}} {}", escape(kind), get(g));
            }
        }
        header(
            &mut out,
            "flowtrack_worker_db_errors_total",
            "Database calls that failed and were retried, by call.",
            "counter",
        );
        for (call, n) in &inner.db_errors {
            let _ = writeln!(
                out,
                "flowtrack_worker_db_errors_total{{call=\"{call}\"}} {n}"
            );
        }
        out
    }
}

/// `rows` summed per kind: counts add up, lag is the largest.
pub fn by_kind(rows: &[QueueRow]) -> BTreeMap<String, QueueGauges> {
    let mut kinds: BTreeMap<String, QueueGauges> = BTreeMap::new();
    for row in rows {
        let g = kinds.entry(row.kind.clone()).or_default();
        g.queued += row.queued;
        g.due += row.due;
        g.running += row.running;
        g.dead += row.dead;
        g.lag_seconds = g.lag_seconds.max(row.lag_seconds.unwrap_or(0.0));
    }
    kinds
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, kind: &str, h: &Histogram) {
    let kind = escape(kind);
    let mut cumulative = 0;
    for (bound, n) in BUCKETS.iter().zip(h.counts.iter()) {
        cumulative += n;
        let _ = writeln!(
            out,
            "{name}_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "{name}_sum{{kind=\"{kind}\"}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{kind=\"{kind}\"}} {}", h.count);
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn counts_and_renders() {
        let m = Metrics::new();
        m.claimed("noop", 0.002);
        m.claimed("noop", 0.5);
        m.claimed("email", 200.0);
        m.performed("noop", 0.0001);
        m.reported("noop", Reported::Completed);
        m.reported("noop", Reported::Retrying);
        m.reported("email", Reported::Dead);
        m.reported("email", Reported::Stale);
        m.db_error("claim");
        let text = m.render();
        assert_eq!(
            sample(&text, "flowtrack_worker_jobs_claimed_total{kind=\"noop\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "flowtrack_worker_jobs_succeeded_total{kind=\"noop\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_worker_jobs_failed_total{kind=\"noop\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_worker_jobs_retried_total{kind=\"noop\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_worker_jobs_dead_total{kind=\"email\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_worker_jobs_failed_total{kind=\"email\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_worker_jobs_stale_total{kind=\"email\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_worker_jobs_in_flight{kind=\"noop\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_worker_db_errors_total{call=\"claim\"}"),
            Some(1.0)
        );
        let latency = "flowtrack_worker_enqueue_to_start_seconds";
        assert_eq!(
            sample(
                &text,
                &format!("{latency}_bucket{{kind=\"noop\",le=\"0.001\"}}")
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("{latency}_bucket{{kind=\"noop\",le=\"0.0025\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("{latency}_bucket{{kind=\"noop\",le=\"0.5\"}}")
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("{latency}_bucket{{kind=\"email\",le=\"120\"}}")
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("{latency}_bucket{{kind=\"email\",le=\"+Inf\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, &format!("{latency}_count{{kind=\"noop\"}}")),
            Some(2.0)
        );
        let sum = sample(&text, &format!("{latency}_sum{{kind=\"noop\"}}")).unwrap();
        assert!((sum - 0.502).abs() < 1e-9, "{sum}");
        // Every sample line belongs to a declared metric family.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "undeclared {line}");
            }
        }
    }

    #[test]
    fn queue_gauges_sum_per_kind_and_reset() {
        let m = Metrics::new();
        let row = |kind: &str, queued, lag| QueueRow {
            workspace_id: Some(uuid::Uuid::new_v4()),
            kind: kind.into(),
            queued,
            due: queued,
            running: 1,
            dead: 2,
            oldest_due_at: None,
            lag_seconds: Some(lag),
        };
        m.set_queue(&[
            row("noop", 3, 1.5),
            row("noop", 4, 0.25),
            row("email", 1, 9.0),
        ]);
        let text = m.render();
        assert_eq!(
            sample(&text, "flowtrack_queue_depth{kind=\"noop\"}"),
            Some(7.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_queue_running{kind=\"noop\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_queue_dead{kind=\"noop\"}"),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_queue_lag_seconds{kind=\"noop\"}"),
            Some(1.5)
        );
        m.set_queue(&[row("email", 1, 9.0)]);
        let text = m.render();
        assert_eq!(
            sample(&text, "flowtrack_queue_depth{kind=\"noop\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "flowtrack_queue_lag_seconds{kind=\"email\"}"),
            Some(9.0)
        );
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
