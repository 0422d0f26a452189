//! Releases work that has come due: every `tick` (FLOWTRACK_TICK_MS, default
//! 1 s) one `internal.release_due_work()` call runs due delay steps and
//! fires due schedules, so they start within seconds instead of at
//! pg_cron's next minute (which stays as the safety net). It has its own
//! one-connection pool, so a claimer parked on every pooled connection never
//! delays it. Workers tick independently: the database skips rows another
//! caller holds. A failed call (database restarting) is logged, counted and
//! retried after a backoff; nothing here exits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::conn;
use crate::backoff::Backoff;
use crate::db::{self, Pool};
use crate::metrics::Metrics;

const RELEASE: &str = "SELECT steps, schedules FROM internal.release_due_work()";

/// Ticks every `every` until `stop` is signalled.
pub async fn run(
    url: String,
    every: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<Option<Instant>>,
) {
    let pool = match db::pool(&url, 1) {
        Ok(pool) => pool,
        Err(e) => {
            tracing::error!(error = %e, "ticker: no pool; due work waits for pg_cron");
            return;
        }
    };
    let mut backoff = Backoff::database();
    let mut wait = every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(Option::is_some) => return,
        }
        match release(&pool).await {
            Ok((steps, schedules)) => {
                backoff.reset();
                wait = every;
                if steps > 0 || schedules > 0 {
                    tracing::info!(steps, schedules, "released due work");
                }
            }
            Err(e) => {
                metrics.db_error("release_due_work");
                wait = backoff.next_delay().max(every);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                    "releasing due work failed");
            }
        }
    }
}

async fn release(pool: &Pool) -> Result<(i32, i32), conn::CallError> {
    let client = conn::client(pool).await?;
    let result = conn::timed(conn::CALL_TIMEOUT, client.query_one(RELEASE, &[]))
        .await
        .map(|row| {
            (
                row.get::<_, Option<i32>>(0).unwrap_or(0),
                row.get::<_, Option<i32>>(1).unwrap_or(0),
            )
        });
    conn::settle(client, &result);
    result
}
