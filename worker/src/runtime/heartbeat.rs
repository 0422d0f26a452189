//! Keeps leases alive: whenever some lease is a third into its length, one
//! `internal.heartbeat_jobs` call extends every lease held. A lease the
//! database no longer grants is logged and forgotten; the job's report will
//! come back `stale`, and the job runs again under its new lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::conn;
use super::Shared;
use crate::backoff::Backoff;
use crate::claim;

/// How often the heartbeat checks whether a lease needs renewing.
const TICK: Duration = Duration::from_millis(100);

/// Runs until `stop` turns true (after shutdown has released or reported
/// every lease).
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::database();
    let mut next_try = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = Instant::now();
        if now < next_try || !shared.leases.renewal_due(now) {
            continue;
        }
        let (ids, fences) = shared.leases.to_renew();
        if ids.is_empty() {
            continue;
        }
        match beat(&shared, &ids, &fences).await {
            Ok(held) => {
                backoff.reset();
                let sent: Vec<(uuid::Uuid, i32)> = ids.into_iter().zip(fences).collect();
                for (id, kind) in shared.leases.renewed(&sent, &held) {
                    shared.metrics.lease_lost(&kind);
                    tracing::warn!(job_id = %id, kind = %kind,
                        "lease lost (expired and reclaimed, or released): its report will be stale");
                }
            }
            Err(e) => {
                shared.metrics.db_error("heartbeat");
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, leases = ids.len(), retry_in_ms = delay.as_millis() as u64,
                    "heartbeat failed");
                next_try = Instant::now() + delay;
            }
        }
    }
}

async fn beat(
    shared: &Shared,
    ids: &[uuid::Uuid],
    fences: &[i32],
) -> Result<Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)>, conn::CallError> {
    let client = conn::client(&shared.pool).await?;
    let result = conn::timed(
        conn::CALL_TIMEOUT,
        claim::heartbeat(&client, &shared.config.worker_name, ids, fences),
    )
    .await;
    conn::settle(client, &result);
    result
}
