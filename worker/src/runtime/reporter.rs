//! Batched reports. Finished jobs send their outcome here; the reporter sends
//! them with one `internal.complete_jobs` and one `internal.fail_jobs` call per
//! flush, when a batch is full or the oldest outcome has waited
//! `report_flush`. A report the database did not get is kept and sent again
//! after a backoff (if its lease expired meanwhile the database says `stale`,
//! which is right: the job runs again elsewhere).
//!
//! One bad report must not hold up the rest: when the database refuses a
//! batch's content (not a transient failure), reports go one per call until
//! the buffer is empty, a refused one goes to the back, and a report refused
//! `MAX_REFUSALS` times is sent as a final failure naming the refusal.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::conn::{self, CallError};
use super::leases::State;
use super::Shared;
use crate::backoff::Backoff;
use crate::claim::{self, Completion, Failure};
use crate::job::Outcome;
use crate::metrics::Reported;

/// Refusals of one report, alone in its call, before its outcome is replaced.
const MAX_REFUSALS: u32 = 3;

/// A finished attempt, on its way to the database.
#[derive(Debug, Clone)]
pub struct Report {
    pub id: uuid::Uuid,
    pub fence: i32,
    pub kind: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
struct Pending {
    report: Report,
    /// Calls that carried this report and failed: after one, a `stale` answer
    /// may mean the failed call had in fact committed.
    failed_sends: u32,
    /// Times the database refused this report sent alone.
    refusals: u32,
}

/// Outcomes waiting to be sent, split by the call that will carry them.
#[derive(Debug)]
pub struct Buffer {
    done: VecDeque<Pending>,
    failed: VecDeque<Pending>,
    /// When the oldest waiting outcome arrived.
    oldest: Option<Instant>,
    batch: usize,
    flush_after: Duration,
    /// One report per call, after a refused batch.
    isolate: bool,
}

impl Buffer {
    pub fn new(batch: usize, flush_after: Duration) -> Self {
        Buffer {
            done: VecDeque::new(),
            failed: VecDeque::new(),
            oldest: None,
            batch: batch.max(1),
            flush_after,
            isolate: false,
        }
    }

    pub fn push(&mut self, mut report: Report, now: Instant) {
        // Postgres text and jsonb cannot hold NUL: a response body with one
        // would make the report unstorable.
        report.outcome = match report.outcome {
            Outcome::Done(result) => Outcome::Done(without_nul(result)),
            Outcome::Failed {
                error,
                retry,
                result,
            } => Outcome::Failed {
                error: error.replace('\0', "\u{FFFD}"),
                retry,
                result: without_nul(result),
            },
        };
        self.queue(Pending {
            report,
            failed_sends: 0,
            refusals: 0,
        });
        self.oldest.get_or_insert(now);
    }

    fn queue(&mut self, pending: Pending) {
        match pending.report.outcome {
            Outcome::Done(_) => self.done.push_back(pending),
            Outcome::Failed { .. } => self.failed.push_back(pending),
        }
    }

    pub fn len(&self) -> usize {
        self.done.len() + self.failed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn batch(&self) -> usize {
        if self.isolate {
            1
        } else {
            self.batch
        }
    }

    /// When the next flush is due: at once for a full batch, else when the
    /// oldest outcome has waited `flush_after`; `None` when empty.
    pub fn due_at(&self) -> Option<Instant> {
        let oldest = self.oldest?;
        if self.done.len() >= self.batch() || self.failed.len() >= self.batch() {
            Some(oldest)
        } else {
            Some(oldest + self.flush_after)
        }
    }

    /// Up to one batch of each kind of outcome, oldest first.
    fn take(&mut self) -> (Vec<Pending>, Vec<Pending>) {
        let n = self.done.len().min(self.batch());
        let done = self.done.drain(..n).collect();
        let n = self.failed.len().min(self.batch());
        let failed = self.failed.drain(..n).collect();
        if self.is_empty() {
            self.oldest = None;
        }
        (done, failed)
    }

    /// A call carried these and failed (it may have committed) or was never
    /// made (`sent` false): they go back in front, to go first next time.
    fn put_back(&mut self, pending: Vec<Pending>, sent: bool, now: Instant) {
        for mut p in pending.into_iter().rev() {
            p.failed_sends += u32::from(sent);
            match p.report.outcome {
                Outcome::Done(_) => self.done.push_front(p),
                Outcome::Failed { .. } => self.failed.push_front(p),
            }
        }
        self.touch(now);
    }

    /// The database refused a call carrying `pending`. A batch is split up
    /// (one report per call from now on); a lone report goes to the back,
    /// and after `MAX_REFUSALS` its outcome becomes a final failure naming
    /// the refusal (or, if that was refused too, it is given up: its lease
    /// expires and the queue decides). Returns the reports given up.
    fn refused(&mut self, pending: Vec<Pending>, error: &str, now: Instant) -> Vec<Report> {
        let mut given_up = vec![];
        if pending.len() > 1 {
            self.isolate = true;
            self.put_back(pending, false, now);
            return given_up;
        }
        for mut p in pending {
            p.refusals += 1;
            if p.refusals < MAX_REFUSALS {
                self.queue(p);
                continue;
            }
            match p.report.outcome {
                Outcome::Done(_) => {
                    p.report.outcome = Outcome::Failed {
                        error: format!("worker: the database refused this job's result: {error}"),
                        retry: false,
                        result: Value::Null,
                    };
                    p.refusals = 0;
                    self.queue(p);
                }
                Outcome::Failed { ref error, .. }
                    if !error.starts_with("worker: the database refused") =>
                {
                    p.report.outcome = Outcome::Failed {
                        error: format!(
                            "worker: the database refused this job's failure report: {error}"
                        ),
                        retry: false,
                        result: Value::Null,
                    };
                    p.refusals = 0;
                    self.queue(p);
                }
                Outcome::Failed { .. } => given_up.push(p.report),
            }
        }
        self.touch(now);
        given_up
    }

    /// A flush went through: back to full batches once nothing is left.
    fn sent(&mut self) {
        if self.is_empty() {
            self.isolate = false;
        }
    }

    fn touch(&mut self, now: Instant) {
        if !self.is_empty() {
            self.oldest = Some(self.oldest.map_or(now, |o| o.min(now)));
        }
    }
}

/// `value` with every NUL in its strings (and keys) replaced.
fn without_nul(value: Value) -> Value {
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{FFFD}")),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), without_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Receives reports until every sender is gone, then sends what is left and
/// returns. Under shutdown, the runtime bounds how long that may take.
pub async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Report>) {
    let config = &shared.config;
    let mut buffer = Buffer::new(config.report_batch, config.report_flush);
    let mut backoff = Backoff::database();
    let mut retry_at: Option<Instant> = None;
    let mut closed = false;
    loop {
        shared.set_pending_reports(buffer.len());
        if closed && buffer.is_empty() {
            return;
        }
        let due = match (closed, buffer.due_at()) {
            (_, None) => None,
            // No more reports can arrive: send at once (after any backoff).
            (true, Some(_)) => Some(retry_at.unwrap_or_else(Instant::now)),
            (false, Some(at)) => Some(retry_at.map_or(at, |r| r.max(at))),
        };
        tokio::select! {
            report = rx.recv(), if !closed => match report {
                Some(report) => buffer.push(report, Instant::now()),
                None => closed = true,
            },
            _ = sleep_until(due), if due.is_some() => {
                match flush(&shared, &mut buffer).await {
                    Ok(()) => {
                        buffer.sent();
                        backoff.reset();
                        retry_at = None;
                    }
                    // Refused content: the next call carries something else.
                    Err(e) if e.is_refusal() => {
                        shared.metrics.db_error("report");
                        tracing::error!(error = %e, waiting = buffer.len(),
                            "the database refused a report; sending reports one by one");
                    }
                    Err(e) => {
                        shared.metrics.db_error("report");
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, waiting = buffer.len(), retry_in_ms = delay.as_millis() as u64,
                            "reporting outcomes failed; they are kept and sent again");
                        retry_at = Some(Instant::now() + delay);
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Sends one batch of each kind; on failure the unsent reports go back.
async fn flush(shared: &Shared, buffer: &mut Buffer) -> Result<(), CallError> {
    let (done, failed) = buffer.take();
    let mark = |pending: &[Pending], state: State| {
        for p in pending {
            shared.leases.set_state(p.report.id, p.report.fence, state);
        }
    };
    mark(&done, State::Sending);
    mark(&failed, State::Sending);
    let client = match conn::client(&shared.pool).await {
        Ok(client) => client,
        Err(e) => {
            mark(&done, State::Reported);
            mark(&failed, State::Reported);
            buffer.put_back(done, false, Instant::now());
            buffer.put_back(failed, false, Instant::now());
            return Err(e);
        }
    };
    let worker = shared.config.worker_name.as_str();
    if !done.is_empty() {
        let calls: Vec<Completion> = done
            .iter()
            .map(|p| Completion {
                id: p.report.id,
                fence: p.report.fence,
                result: match &p.report.outcome {
                    Outcome::Done(result) => result.clone(),
                    Outcome::Failed { .. } => Value::Null,
                },
            })
            .collect();
        let result =
            conn::timed(conn::CALL_TIMEOUT, claim::complete(&client, worker, &calls)).await;
        match result {
            Ok(rows) => answered(shared, &done, &rows),
            Err(e) => {
                mark(&done, State::Reported);
                mark(&failed, State::Reported);
                buffer.put_back(failed, false, Instant::now());
                if e.is_refusal() {
                    give_up(shared, buffer.refused(done, &e.to_string(), Instant::now()));
                } else {
                    buffer.put_back(done, true, Instant::now());
                }
                let failure = Err(e);
                conn::settle(client, &failure);
                return failure;
            }
        }
    }
    if !failed.is_empty() {
        let calls: Vec<Failure> = failed
            .iter()
            .map(|p| match &p.report.outcome {
                Outcome::Failed {
                    error,
                    retry,
                    result,
                } => Failure {
                    id: p.report.id,
                    fence: p.report.fence,
                    error: error.clone(),
                    retry: *retry,
                    result: result.clone(),
                },
                Outcome::Done(result) => Failure {
                    id: p.report.id,
                    fence: p.report.fence,
                    error: String::new(),
                    retry: false,
                    result: result.clone(),
                },
            })
            .collect();
        let result = conn::timed(conn::CALL_TIMEOUT, claim::fail(&client, worker, &calls)).await;
        match result {
            Ok(rows) => answered(shared, &failed, &rows),
            Err(e) => {
                mark(&failed, State::Reported);
                if e.is_refusal() {
                    give_up(
                        shared,
                        buffer.refused(failed, &e.to_string(), Instant::now()),
                    );
                } else {
                    buffer.put_back(failed, true, Instant::now());
                }
                let failure = Err(e);
                conn::settle(client, &failure);
                return failure;
            }
        }
    }
    Ok(())
}

/// Reports the database refused even as a plain failure: forgotten here;
/// their leases expire and the queue retries or buries the job.
fn give_up(shared: &Shared, reports: Vec<Report>) {
    for r in reports {
        shared.leases.remove(r.id, r.fence);
        tracing::error!(job_id = %r.id, kind = %r.kind,
            "the database refused every report for this job; giving up on it (its lease will expire)");
    }
}

/// Records the database's answer for each report sent.
fn answered(shared: &Shared, sent: &[Pending], rows: &[(uuid::Uuid, String)]) {
    let answers: std::collections::HashMap<uuid::Uuid, &str> = rows
        .iter()
        .map(|(id, outcome)| (*id, outcome.as_str()))
        .collect();
    for p in sent {
        let r = &p.report;
        shared.leases.remove(r.id, r.fence);
        match answers.get(&r.id).copied().and_then(Reported::parse) {
            Some(Reported::Stale) => {
                shared.metrics.reported(&r.kind, Reported::Stale);
                if p.failed_sends > 0 {
                    tracing::warn!(job_id = %r.id, kind = %r.kind, fence = r.fence,
                        "report stale: the lease's fence is no longer current (this report was sent again after a \
                         connection failure; the first send may have been applied)");
                } else {
                    tracing::warn!(job_id = %r.id, kind = %r.kind, fence = r.fence,
                        "report stale: the lease's fence is no longer current; the database kept its state \
                         (the job was reclaimed, released, cancelled or already reported)");
                }
            }
            Some(outcome) => {
                shared.metrics.reported(&r.kind, outcome);
                match outcome {
                    Reported::Dead => tracing::warn!(job_id = %r.id, kind = %r.kind, "job dead"),
                    Reported::Retrying => {
                        tracing::info!(job_id = %r.id, kind = %r.kind, "job will be retried")
                    }
                    _ => tracing::debug!(job_id = %r.id, kind = %r.kind, "job completed"),
                }
            }
            None => tracing::warn!(job_id = %r.id, kind = %r.kind,
                answer = answers.get(&r.id).copied().unwrap_or("(no row)"), "unexpected answer to a report"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(done: bool) -> Report {
        Report {
            id: uuid::Uuid::new_v4(),
            fence: 1,
            kind: "noop".into(),
            outcome: if done {
                Outcome::Done(json!({}))
            } else {
                Outcome::failed("boom", true)
            },
        }
    }

    fn ids(pending: &[Pending]) -> Vec<uuid::Uuid> {
        pending.iter().map(|p| p.report.id).collect()
    }

    #[test]
    fn flushes_when_full_or_old() {
        let t0 = Instant::now();
        let mut b = Buffer::new(3, Duration::from_millis(5));
        assert_eq!(b.due_at(), None);
        b.push(report(true), t0);
        assert_eq!(b.due_at(), Some(t0 + Duration::from_millis(5)));
        b.push(report(false), t0 + Duration::from_millis(1));
        b.push(report(true), t0 + Duration::from_millis(2));
        assert_eq!(b.due_at(), Some(t0 + Duration::from_millis(5)));
        b.push(report(true), t0 + Duration::from_millis(3));
        assert_eq!(b.due_at(), Some(t0), "a full batch is due at once");
        let (done, failed) = b.take();
        assert_eq!((done.len(), failed.len()), (3, 1));
        assert!(b.is_empty());
        assert_eq!(b.due_at(), None);
    }

    #[test]
    fn takes_one_batch_of_each_oldest_first() {
        let t0 = Instant::now();
        let mut b = Buffer::new(2, Duration::from_millis(5));
        let reports: Vec<Report> = (0..5).map(|_| report(true)).collect();
        for r in &reports {
            b.push(r.clone(), t0);
        }
        let (done, failed) = b.take();
        assert!(failed.is_empty());
        assert_eq!(ids(&done), [reports[0].id, reports[1].id]);
        assert_eq!(b.len(), 3);
        // A failed call puts its reports back in front, marked as sent once.
        b.put_back(done, true, t0);
        let (again, _) = b.take();
        assert_eq!(ids(&again), [reports[0].id, reports[1].id]);
        assert!(again.iter().all(|p| p.failed_sends == 1));
        let (rest, _) = b.take();
        assert_eq!(rest[0].report.id, reports[2].id);
    }

    #[test]
    fn a_refused_report_does_not_hold_up_the_others() {
        let t0 = Instant::now();
        let mut b = Buffer::new(10, Duration::ZERO);
        let reports: Vec<Report> = (0..3).map(|_| report(true)).collect();
        for r in &reports {
            b.push(r.clone(), t0);
        }
        // The batch is refused: one per call from now on.
        let (done, _) = b.take();
        assert!(b.refused(done, "bad", t0).is_empty());
        let (first, _) = b.take();
        assert_eq!(ids(&first), [reports[0].id]);
        // Say reports[0] is the bad one: it goes to the back; the others pass.
        assert!(b.refused(first, "bad", t0).is_empty());
        let (next, _) = b.take();
        assert_eq!(ids(&next), [reports[1].id]);
        let (next, _) = b.take();
        assert_eq!(ids(&next), [reports[2].id]);
        // Refused alone MAX_REFUSALS times, its result becomes a final failure.
        for _ in 1..MAX_REFUSALS {
            let (bad, _) = b.take();
            assert_eq!(ids(&bad), [reports[0].id]);
            assert!(b.refused(bad, "22P05: bad", t0).is_empty());
        }
        let (done, failed) = b.take();
        assert!(done.is_empty());
        assert_eq!(ids(&failed), [reports[0].id]);
        match &failed[0].report.outcome {
            Outcome::Failed { error, retry, .. } => {
                assert!(
                    error.starts_with("worker: the database refused this job's result: 22P05"),
                    "{error}"
                );
                assert!(!retry);
            }
            other => panic!("{other:?}"),
        }
        // And if even that is refused MAX_REFUSALS times, it is given up.
        let mut pending = failed;
        for _ in 1..MAX_REFUSALS {
            assert!(b.refused(pending, "bad", t0).is_empty());
            pending = b.take().1;
        }
        let given_up = b.refused(pending, "bad", t0);
        assert_eq!(given_up.len(), 1);
        assert!(b.is_empty());
        b.sent();
        assert_eq!(b.batch(), 10, "full batches again once the buffer is empty");
    }

    #[test]
    fn nul_never_reaches_the_database() {
        let mut b = Buffer::new(10, Duration::ZERO);
        let mut r = report(false);
        r.outcome = Outcome::Failed {
            error: "bad\0byte".into(),
            retry: true,
            result: json!({"body\0": ["a\0b", {"c": "\0"}], "n": 1}),
        };
        b.push(r, Instant::now());
        let (_, failed) = b.take();
        let text = format!("{:?}", failed[0].report.outcome);
        assert!(!text.contains("\\0"), "{text}");
        assert!(text.contains("bad\u{FFFD}byte"), "{text}");
    }
}
