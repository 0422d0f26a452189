//! The queue's SQL interface, one thin wrapper per function. The database owns
//! every decision (leases, reclaiming, fencing, retries, backoff,
//! dead-lettering); these only move arrays in and rows out. `(id, fence)` names
//! a lease everywhere; a report under a fence that is no longer current
//! changes nothing and comes back `stale`.

use chrono::{DateTime, Utc};
use deadpool_postgres::Client;
use serde_json::Value;
use tokio_postgres::Error;
use uuid::Uuid;

use crate::job::Job;

/// A job as claimed, with its lease's end and when it was enqueued.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    pub lease_until: DateTime<Utc>,
    pub enqueued_at: DateTime<Utc>,
}

/// Claim up to `n` due jobs; when none is due, `claim_jobs` parks in the
/// database for up to `wait_ms` (or until an enqueue wakes it) and tries again.
pub async fn claim(
    client: &Client,
    worker: &str,
    n: i32,
    wait_ms: i32,
) -> Result<Vec<Claimed>, Error> {
    let statement = client
        .prepare_cached(
            "SELECT id, workspace_id, kind, payload, attempt, fence, lease_until, enqueued_at \
               FROM internal.claim_jobs($1, $2, $3)",
        )
        .await?;
    let rows = client.query(&statement, &[&worker, &n, &wait_ms]).await?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            job: Job {
                id: r.get(0),
                workspace_id: r.get(1),
                kind: r.get(2),
                payload: r.get(3),
                attempt: r.get(4),
                fence: r.get(5),
            },
            lease_until: r.get(6),
            enqueued_at: r.get(7),
        })
        .collect())
}

/// Extend the leases held; returns one row per lease still held, so a
/// missing id is a lease lost.
pub async fn heartbeat(
    client: &Client,
    worker: &str,
    ids: &[Uuid],
    fences: &[i32],
) -> Result<Vec<(Uuid, DateTime<Utc>)>, Error> {
    let statement = client
        .prepare_cached("SELECT id, lease_until FROM internal.heartbeat_jobs($1, $2, $3)")
        .await?;
    let rows = client.query(&statement, &[&worker, &ids, &fences]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One successful attempt to report.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: Uuid,
    pub fence: i32,
    pub result: Value,
}

/// One failed attempt to report.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub id: Uuid,
    pub fence: i32,
    pub error: String,
    pub retry: bool,
    pub result: Value,
}

/// `completed` or `stale` per job.
pub async fn complete(
    client: &Client,
    worker: &str,
    done: &[Completion],
) -> Result<Vec<(Uuid, String)>, Error> {
    let ids: Vec<Uuid> = done.iter().map(|c| c.id).collect();
    let fences: Vec<i32> = done.iter().map(|c| c.fence).collect();
    let results: Vec<&Value> = done.iter().map(|c| &c.result).collect();
    let statement = client
        .prepare_cached("SELECT id, outcome FROM internal.complete_jobs($1, $2, $3, $4)")
        .await?;
    let rows = client
        .query(&statement, &[&worker, &ids, &fences, &results])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// `retrying`, `dead` or `stale` per job (the database decides retry versus
/// dead from `retry`, the attempt count and the kind's max_attempts).
pub async fn fail(
    client: &Client,
    worker: &str,
    failed: &[Failure],
) -> Result<Vec<(Uuid, String)>, Error> {
    let ids: Vec<Uuid> = failed.iter().map(|f| f.id).collect();
    let fences: Vec<i32> = failed.iter().map(|f| f.fence).collect();
    let errors: Vec<&str> = failed.iter().map(|f| f.error.as_str()).collect();
    let retry: Vec<bool> = failed.iter().map(|f| f.retry).collect();
    let results: Vec<&Value> = failed.iter().map(|f| &f.result).collect();
    let statement = client
        .prepare_cached("SELECT id, outcome FROM internal.fail_jobs($1, $2, $3, $4, $5, $6)")
        .await?;
    let rows = client
        .query(
            &statement,
            &[&worker, &ids, &fences, &errors, &retry, &results],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Hand leases back without counting an attempt: `released` or `stale`.
pub async fn release(
    client: &Client,
    worker: &str,
    ids: &[Uuid],
    fences: &[i32],
) -> Result<Vec<(Uuid, String)>, Error> {
    let statement = client
        .prepare_cached("SELECT id, outcome FROM internal.release_jobs($1, $2, $3)")
        .await?;
    let rows = client.query(&statement, &[&worker, &ids, &fences]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One row of `internal.queue_status()`: a (workspace, kind) pair.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueRow {
    pub workspace_id: Option<Uuid>,
    pub kind: String,
    pub queued: i64,
    pub due: i64,
    pub running: i64,
    pub dead: i64,
    pub oldest_due_at: Option<DateTime<Utc>>,
    pub lag_seconds: Option<f64>,
}

pub async fn queue_status(client: &tokio_postgres::Client) -> Result<Vec<QueueRow>, Error> {
    let rows = client
        .query(
            "SELECT workspace_id, kind, queued, due, running, dead, oldest_due_at, lag_seconds \
               FROM internal.queue_status()",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| QueueRow {
            workspace_id: r.get(0),
            kind: r.get(1),
            queued: r.get::<_, Option<i64>>(2).unwrap_or(0),
            due: r.get::<_, Option<i64>>(3).unwrap_or(0),
            running: r.get::<_, Option<i64>>(4).unwrap_or(0),
            dead: r.get::<_, Option<i64>>(5).unwrap_or(0),
            oldest_due_at: r.get(6),
            lag_seconds: r.get(7),
        })
        .collect())
}
