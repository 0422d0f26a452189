//! `flowtrack-worker run`: the service. Tasks: the claimer (claims into
//! `concurrency` slots, one task per job), the reporter (batched
//! complete/fail), the heartbeat (extends leases), the queue-status refresher,
//! the ticker (runs due delays and schedules every second) and the
//! `/metrics` responder. Every database call goes through the pool and
//! retries with backoff; nothing here exits on a database error.
//!
//! Shutdown (SIGTERM/SIGINT): claiming stops at once; jobs in flight get until
//! the grace period ends; those still running then are aborted and released
//! (`internal.release_jobs`); the reporter sends every outcome it holds; exit 0.

mod claimer;
mod conn;
mod heartbeat;
mod leases;
mod reporter;
mod ticker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::backoff::Backoff;
use crate::claim;
use crate::config::{redact_url, Config};
use crate::db::{self, Pool};
use crate::metrics::{Metrics, Reported};
use crate::{metrics_server, shutdown};
use leases::Leases;

/// Time left after the grace period to release leases and send reports.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// What every task shares.
pub struct Shared {
    pub config: Config,
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    pub leases: Leases,
    pending_reports: AtomicUsize,
}

impl Shared {
    fn set_pending_reports(&self, n: usize) {
        self.pending_reports.store(n, Ordering::Relaxed);
    }
}

/// Runs until a signal and a clean drain (`Ok`), or returns why it could not
/// start or could not hand everything back (`Err`: exit 1).
pub async fn run(config: Config) -> Result<(), String> {
    let pool = db::pool(&config.database_url, config.pool_size)?;
    let metrics = Arc::new(Metrics::new());
    let listener = match config.metrics_addr {
        Some(addr) => Some(
            metrics_server::bind(addr)
                .await
                .map_err(|e| format!("metrics address {addr}: {e}"))?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(None::<Instant>);
    shutdown::listen(stop_tx).map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let shared = Arc::new(Shared {
        config,
        pool,
        metrics,
        leases: Leases::new(),
        pending_reports: AtomicUsize::new(0),
    });
    let config = &shared.config;
    tracing::info!(worker = %config.worker_name, database = %redact_url(&config.database_url),
        concurrency = config.concurrency, claim_batch = config.claim_batch, wait_ms = config.wait.as_millis() as u64,
        pool_size = config.pool_size, grace_s = config.grace.as_secs_f64(),
        metrics = ?config.metrics_addr, tick_ms = config.tick.map(|t| t.as_millis() as u64),
        "worker starting");

    let mut background = tokio::task::JoinSet::new();
    if let Some(listener) = listener {
        background.spawn(metrics_server::serve(listener, shared.metrics.clone()));
        background.spawn(refresh_queue_status(shared.clone(), stop_rx.clone()));
    }
    if let Some(every) = config.tick {
        background.spawn(ticker::run(
            config.database_url.clone(),
            every,
            shared.metrics.clone(),
            stop_rx.clone(),
        ));
    }
    let (beat_stop, beat_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat::run(shared.clone(), beat_rx));
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let reporter = tokio::spawn(reporter::run(shared.clone(), reports_rx));

    let stopped = claimer::Claimer::new(shared.clone(), reports_tx)
        .run(stop_rx.clone())
        .await;
    let signalled = stop_rx.borrow().unwrap_or_else(Instant::now);
    let grace_end = signalled + config.grace;
    let final_end = grace_end.max(Instant::now()) + FINAL_FLUSH;
    let mut tasks = stopped.tasks;
    tracing::info!(
        in_flight = tasks.len(),
        grace_left_ms = grace_end
            .saturating_duration_since(Instant::now())
            .as_millis() as u64,
        "claiming stopped; draining"
    );

    let drained = tokio::time::timeout_at(grace_end.into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        tracing::warn!(
            still_running = tasks.len(),
            "grace period over: aborting the jobs still running and releasing them"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    let mut to_release: Vec<leases::Held> = shared.leases.performing();
    for job in &stopped.unstarted {
        to_release.push((job.job.id, job.job.fence, job.job.kind.clone()));
    }
    let released = release(&shared, &to_release, final_end).await;

    // Every sender is gone now (claimer and job tasks): the reporter sends
    // what it holds and returns.
    let flushed = tokio::time::timeout_at(final_end.into(), reporter)
        .await
        .is_ok();
    let unsent = shared.pending_reports.load(Ordering::Relaxed);
    beat_stop.send_replace(true);
    let _ = heartbeat.await;
    background.abort_all();
    let elapsed = signalled.elapsed();
    if released && flushed {
        tracing::info!(
            drain_ms = elapsed.as_millis() as u64,
            released = to_release.len(),
            "stopped cleanly"
        );
        Ok(())
    } else {
        Err(format!(
            "stopped without handing everything back ({} releases failed, {unsent} reports unsent); \
             their leases expire and the jobs run again",
            if released { 0 } else { to_release.len() }
        ))
    }
}

/// Releases `held` leases, retrying until `deadline`. True when done.
async fn release(shared: &Shared, held: &[leases::Held], deadline: Instant) -> bool {
    if held.is_empty() {
        return true;
    }
    let ids: Vec<uuid::Uuid> = held.iter().map(|h| h.0).collect();
    let fences: Vec<i32> = held.iter().map(|h| h.1).collect();
    let mut backoff = Backoff::database();
    loop {
        let attempt = async {
            let client = conn::client(&shared.pool).await?;
            let result = conn::timed(
                conn::CALL_TIMEOUT,
                claim::release(&client, &shared.config.worker_name, &ids, &fences),
            )
            .await;
            conn::settle(client, &result);
            result
        };
        match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(Ok(rows)) => {
                let answers: std::collections::HashMap<uuid::Uuid, String> =
                    rows.into_iter().collect();
                for (id, fence, kind) in held {
                    shared.leases.remove(*id, *fence);
                    let answer = answers.get(id).map(String::as_str).unwrap_or("(no row)");
                    match Reported::parse(answer) {
                        Some(Reported::Stale) => {
                            shared.metrics.reported(kind, Reported::Stale);
                            tracing::warn!(job_id = %id, kind = %kind, "release stale: the lease was already lost");
                        }
                        Some(outcome) => shared.metrics.reported(kind, outcome),
                        None => {
                            tracing::warn!(job_id = %id, kind = %kind, answer, "unexpected answer to a release")
                        }
                    }
                }
                tracing::info!(released = held.len(), "leases released");
                return true;
            }
            Ok(Err(e)) => {
                shared.metrics.db_error("release");
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "release failed");
                if Instant::now() + delay >= deadline {
                    return false;
                }
                tokio::time::sleep(delay).await;
            }
            Err(_) => return false,
        }
    }
}

/// Reads `internal.queue_status()` every `queue_status_every` for the gauges,
/// so scrapes never reach the database.
async fn refresh_queue_status(shared: Arc<Shared>, mut stop: watch::Receiver<Option<Instant>>) {
    let mut interval = tokio::time::interval(shared.config.queue_status_every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(Option::is_some) => return,
        }
        let result = async {
            let client = conn::client(&shared.pool).await?;
            let result = conn::timed(conn::CALL_TIMEOUT, claim::queue_status(&client)).await;
            conn::settle(client, &result);
            result
        }
        .await;
        match result {
            Ok(rows) => shared.metrics.set_queue(&rows),
            Err(e) => {
                shared.metrics.db_error("queue_status");
                tracing::warn!(error = %e, "reading internal.queue_status() failed");
            }
        }
    }
}
