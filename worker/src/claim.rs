//! Claiming and reporting jobs. The queue is `internal.jobs`; these calls are
//! thin wrappers over its SQL functions, which own every decision (leases,
//! retries, backoff, dead-lettering).

use tokio_postgres::Client;

use crate::job::{Job, Outcome};

/// Claim up to `n` due jobs (`FOR UPDATE SKIP LOCKED` inside the function).
pub async fn claim(
    client: &Client,
    worker: &str,
    n: i32,
) -> Result<Vec<Job>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, kind, payload, attempts FROM internal.claim_jobs($1, $2)",
            &[&worker, &n],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Job {
            id: r.get(0),
            kind: r.get(1),
            payload: r.get(2),
            attempt: r.get(3),
            fence: r.get(3),
            workspace_id: None,
        })
        .collect())
}

pub async fn report(
    client: &Client,
    worker: &str,
    job: &Job,
    outcome: &Outcome,
) -> Result<(), tokio_postgres::Error> {
    match outcome {
        Outcome::Done(result) => {
            client
                .execute(
                    "SELECT internal.complete_job($1, $2, $3)",
                    &[&job.id, &worker, result],
                )
                .await?;
        }
        Outcome::Failed {
            error,
            retry,
            result,
        } => {
            client
                .execute(
                    "SELECT internal.fail_job($1, $2, $3, $4, $5)",
                    &[&job.id, &worker, error, retry, result],
                )
                .await?;
        }
    }
    Ok(())
}
