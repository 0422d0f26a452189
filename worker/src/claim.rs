//! Claiming and reporting jobs. The queue is `internal.jobs`; these calls are
//! thin wrappers over its SQL functions, which own every decision (leases,
//! retries, backoff, dead-lettering, fencing).

use serde_json::Value;
use tokio_postgres::Client;

use crate::job::{Job, Outcome};

/// Claim up to `n` due jobs; with `wait_ms` > 0 and nothing due, the
/// database waits that long (or less) before answering.
pub async fn claim(
    client: &Client,
    worker: &str,
    n: i32,
    wait_ms: i32,
) -> Result<Vec<Job>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, workspace_id, kind, payload, attempt, fence FROM internal.claim_jobs($1, $2, $3)",
            &[&worker, &n, &wait_ms],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Job {
            id: r.get(0),
            workspace_id: r.get(1),
            kind: r.get(2),
            payload: r.get(3),
            attempt: r.get(4),
            fence: r.get(5),
        })
        .collect())
}

/// Report one outcome; returns the queue's verdict (completed, retrying,
/// dead, or stale when the lease was lost and the report changed nothing).
pub async fn report(
    client: &Client,
    worker: &str,
    job: &Job,
    outcome: &Outcome,
) -> Result<String, tokio_postgres::Error> {
    let row = match outcome {
        Outcome::Done(result) => {
            client
                .query_one(
                    "SELECT outcome FROM internal.complete_jobs($1, ARRAY[$2::uuid], ARRAY[$3::integer], ARRAY[$4::jsonb])",
                    &[&worker, &job.id, &job.fence, result],
                )
                .await?
        }
        Outcome::Failed {
            error,
            retry,
            result,
        } => {
            let result: &Value = result;
            client
                .query_one(
                    "SELECT outcome FROM internal.fail_jobs($1, ARRAY[$2::uuid], ARRAY[$3::integer], ARRAY[$4::text],
                                                            ARRAY[$5::boolean], ARRAY[$6::jsonb])",
                    &[&worker, &job.id, &job.fence, error, retry, result],
                )
                .await?
        }
    };
    Ok(row.get(0))
}
