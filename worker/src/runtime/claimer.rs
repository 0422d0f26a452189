//! The claim loop. `concurrency` slots bound the jobs in flight; whenever at
//! least one is free the claimer asks for `min(claim_batch, free slots)` jobs
//! and starts each as its own task, so a claim never waits for the slowest
//! job of an earlier batch. When nothing is due, `claim_jobs` parks in the
//! database until an enqueue wakes it or `wait_ms` passes.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_postgres::NoTls;

use super::conn::{self, CallError};
use super::leases::State;
use super::reporter::Report;
use super::Shared;
use crate::backoff::Backoff;
use crate::claim::{self, Claimed};
use crate::deliver;
use crate::job::Outcome;

/// Longest wait for a parked claim to answer after shutdown cancelled it.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the claimer leaves behind when it stops.
pub struct Stopped {
    /// The jobs still being performed.
    pub tasks: JoinSet<()>,
    /// Jobs a claim returned after shutdown began: never started, to release.
    pub unstarted: Vec<Claimed>,
}

pub struct Claimer {
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    reports: mpsc::UnboundedSender<Report>,
}

impl Claimer {
    pub fn new(shared: Arc<Shared>, reports: mpsc::UnboundedSender<Report>) -> Self {
        let slots = Arc::new(Semaphore::new(shared.config.concurrency));
        Claimer {
            shared,
            slots,
            tasks: JoinSet::new(),
            reports,
        }
    }

    /// Claims and starts jobs until `stop` holds a shutdown time.
    pub async fn run(mut self, mut stop: watch::Receiver<Option<Instant>>) -> Stopped {
        let config = self.shared.config.clone();
        let mut backoff = Backoff::database();
        loop {
            // Reap finished tasks so the set does not grow.
            while self.tasks.try_join_next().is_some() {}
            if stop.borrow().is_some() {
                break;
            }
            let mut permits = tokio::select! {
                permit = self.slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = stop.wait_for(Option::is_some) => break,
            };
            let more = config.claim_batch.min(1 + self.slots.available_permits()) - 1;
            if more > 0 {
                if let Ok(extra) = self.slots.clone().try_acquire_many_owned(more as u32) {
                    permits.merge(extra);
                }
            }
            let n = permits.num_permits();
            let started = Instant::now();
            match self.claim(n, &mut stop).await {
                Ok(claimed) => {
                    backoff.reset();
                    if stop.borrow().is_some() {
                        return self.stopped(claimed);
                    }
                    let empty = claimed.is_empty();
                    for job in claimed {
                        let permit = permits.split(1).expect("one permit per claimed job");
                        self.start(job, permit);
                    }
                    drop(permits);
                    // Without parking (wait_ms = 0), empty claims are spaced by poll_ms.
                    if empty && config.wait.is_zero() {
                        let rest = config.poll.saturating_sub(started.elapsed());
                        tokio::select! {
                            _ = tokio::time::sleep(rest) => {}
                            _ = stop.wait_for(Option::is_some) => {}
                        }
                    }
                }
                Err(e) => {
                    drop(permits);
                    self.shared.metrics.db_error("claim");
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, failures = backoff.failures(),
                        "claim failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(Option::is_some) => {}
                    }
                }
            }
        }
        self.stopped(vec![])
    }

    fn stopped(self, unstarted: Vec<Claimed>) -> Stopped {
        for job in &unstarted {
            self.shared.metrics.claimed(&job.job.kind, 0.0);
            self.shared.metrics.not_started(&job.job.kind);
        }
        Stopped {
            tasks: self.tasks,
            unstarted,
        }
    }

    /// One `claim_jobs` call. If shutdown begins while it is parked, the query
    /// is cancelled (it rolls back and claims nothing) unless it already
    /// returned jobs, which come back to be released.
    async fn claim(
        &self,
        n: usize,
        stop: &mut watch::Receiver<Option<Instant>>,
    ) -> Result<Vec<Claimed>, CallError> {
        let config = &self.shared.config;
        let client = conn::client(&self.shared.pool).await?;
        let cancel = client.cancel_token();
        let wait_ms = config.wait.as_millis() as i32;
        let limit = config.wait + conn::CALL_TIMEOUT;
        let result = {
            let call = conn::timed(
                limit,
                claim::claim(&client, &config.worker_name, n as i32, wait_ms),
            );
            tokio::pin!(call);
            tokio::select! {
            result = &mut call => result,
            _ = stop.wait_for(Option::is_some) => {
                if let Err(e) = cancel.cancel_query(NoTls).await {
                    tracing::debug!(error = %e, "could not cancel the parked claim");
                }
                match tokio::time::timeout(CANCEL_WAIT, &mut call).await {
                    Ok(Ok(claimed)) => Ok(claimed),
                    // Cancelled: nothing was claimed.
                    Ok(Err(CallError::Sql(e))) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => Ok(vec![]),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(CallError::Timeout(CANCEL_WAIT)),
                }
            }
            }
        };
        conn::settle(client, &result);
        result
    }

    /// Starts one claimed job as its own task, holding one slot.
    fn start(&mut self, claimed: Claimed, permit: OwnedSemaphorePermit) {
        let Claimed {
            job,
            lease_until,
            enqueued_at,
        } = claimed;
        let latency = (chrono::Utc::now() - enqueued_at)
            .to_std()
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.shared.metrics.claimed(&job.kind, latency);
        self.shared
            .leases
            .insert(job.id, job.fence, &job.kind, lease_until);
        let shared = self.shared.clone();
        let reports = self.reports.clone();
        self.tasks.spawn(async move {
            let began = Instant::now();
            let outcome = AssertUnwindSafe(deliver::perform(&shared.pool, &job))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Outcome::failed("worker: the job's handler panicked", true));
            shared
                .metrics
                .performed(&job.kind, began.elapsed().as_secs_f64());
            match &outcome {
                Outcome::Done(_) => {
                    tracing::debug!(job_id = %job.id, kind = %job.kind, attempt = job.attempt,
                    ms = began.elapsed().as_millis() as u64, "job done")
                }
                Outcome::Failed { error, retry, .. } => {
                    tracing::warn!(job_id = %job.id, kind = %job.kind,
                    attempt = job.attempt, retry, error = %error, "job failed")
                }
            }
            shared.leases.set_state(job.id, job.fence, State::Reported);
            let _ = reports.send(Report {
                id: job.id,
                fence: job.fence,
                kind: job.kind,
                outcome,
            });
            drop(permit);
        });
    }
}
