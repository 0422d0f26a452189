//! Batched reports. Finished jobs send their outcome here; the reporter sends
//! them with one `internal.complete_jobs` and one `internal.fail_jobs` call per
//! flush, when a batch is full or the oldest outcome has waited
//! `report_flush`. A report the database did not get is kept and sent again
//! after a backoff (if its lease expired meanwhile the database says `stale`,
//! which is right: the job runs again elsewhere).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::conn::{self, CallError};
use super::leases::State;
use super::Shared;
use crate::backoff::Backoff;
use crate::claim::{self, Completion, Failure};
use crate::job::Outcome;
use crate::metrics::Reported;

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
}

impl Buffer {
    pub fn new(batch: usize, flush_after: Duration) -> Self {
        Buffer {
            done: VecDeque::new(),
            failed: VecDeque::new(),
            oldest: None,
            batch: batch.max(1),
            flush_after,
        }
    }

    pub fn push(&mut self, report: Report, now: Instant) {
        let pending = Pending {
            report,
            failed_sends: 0,
        };
        match pending.report.outcome {
            Outcome::Done(_) => self.done.push_back(pending),
            Outcome::Failed { .. } => self.failed.push_back(pending),
        }
        self.oldest.get_or_insert(now);
    }

    pub fn len(&self) -> usize {
        self.done.len() + self.failed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the next flush is due: at once for a full batch, else when the
    /// oldest outcome has waited `flush_after`; `None` when empty.
    pub fn due_at(&self) -> Option<Instant> {
        let oldest = self.oldest?;
        if self.done.len() >= self.batch || self.failed.len() >= self.batch {
            Some(oldest)
        } else {
            Some(oldest + self.flush_after)
        }
    }

    /// Up to one batch of each kind of outcome, oldest first.
    fn take(&mut self) -> (Vec<Pending>, Vec<Pending>) {
        let n = self.done.len().min(self.batch);
        let done = self.done.drain(..n).collect();
        let n = self.failed.len().min(self.batch);
        let failed = self.failed.drain(..n).collect();
        if self.is_empty() {
            self.oldest = None;
        }
        (done, failed)
    }

    /// Returns unsent reports to the front, to go first next time; `sent`
    /// says a call carried them and failed (it may have committed).
    fn put_back(&mut self, pending: Vec<Pending>, sent: bool, now: Instant) {
        for mut p in pending.into_iter().rev() {
            p.failed_sends += u32::from(sent);
            match p.report.outcome {
                Outcome::Done(_) => self.done.push_front(p),
                Outcome::Failed { .. } => self.failed.push_front(p),
            }
        }
        if !self.is_empty() {
            self.oldest = Some(self.oldest.map_or(now, |o| o.min(now)));
        }
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
                        backoff.reset();
                        retry_at = None;
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
    for p in done.iter().chain(failed.iter()) {
        shared
            .leases
            .set_state(p.report.id, p.report.fence, State::Sending);
    }
    let unsend = |shared: &Shared, pending: &[Pending]| {
        for p in pending {
            shared
                .leases
                .set_state(p.report.id, p.report.fence, State::Reported);
        }
    };
    let client = match conn::client(&shared.pool).await {
        Ok(client) => client,
        Err(e) => {
            unsend(shared, &done);
            unsend(shared, &failed);
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
                    Outcome::Failed { .. } => serde_json::Value::Null,
                },
            })
            .collect();
        let result =
            conn::timed(conn::CALL_TIMEOUT, claim::complete(&client, worker, &calls)).await;
        match result {
            Ok(rows) => answered(shared, &done, &rows),
            Err(e) => {
                let failure = Err(e);
                unsend(shared, &done);
                unsend(shared, &failed);
                buffer.put_back(done, true, Instant::now());
                buffer.put_back(failed, false, Instant::now());
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
                let failure = Err(e);
                unsend(shared, &failed);
                buffer.put_back(failed, true, Instant::now());
                conn::settle(client, &failure);
                return failure;
            }
        }
    }
    Ok(())
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
                         (the job was reclaimed, released or already reported)");
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
        assert_eq!(
            done.iter().map(|p| p.report.id).collect::<Vec<_>>(),
            [reports[0].id, reports[1].id]
        );
        assert_eq!(b.len(), 3);
        // A failed call puts its reports back in front, marked as sent once.
        b.put_back(done, true, t0);
        let (again, _) = b.take();
        assert_eq!(
            again.iter().map(|p| p.report.id).collect::<Vec<_>>(),
            [reports[0].id, reports[1].id]
        );
        assert!(again.iter().all(|p| p.failed_sends == 1));
        let (rest, _) = b.take();
        assert_eq!(rest[0].report.id, reports[2].id);
    }
}
