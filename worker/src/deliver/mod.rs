//! Side effects, one module per kind of job. Each takes the claimed job and
//! returns an [`Outcome`]; the database decides what the outcome means
//! (retry, dead, the step's output). The pool is for what a side effect must
//! read or record under its lease (credentials, refreshed tokens), never for
//! decisions.

pub mod auth;
pub mod connection;
pub mod egress;
pub mod email;
pub mod http;
pub mod oauth;
pub mod signature;
pub mod smtp;
pub mod ssrf;
pub mod webhook;

use serde_json::json;

use crate::db::Pool;
use crate::job::{Job, Outcome};

/// Perform one job. Blocking I/O runs on the blocking pool, so many jobs can
/// be in flight without holding up the caller's runtime.
pub async fn perform(pool: &Pool, job: &Job) -> Outcome {
    match job.kind.as_str() {
        // Does nothing: the benchmarks' and tests' job.
        "noop" => Outcome::Done(json!({})),
        "http_request" => http::perform_job(pool, job).await,
        "webhook" => webhook::perform(pool, job).await,
        "email" => email::perform(pool, job).await,
        other => Outcome::failed(
            format!("kind: this worker has no handler for job kind \"{other}\""),
            false,
        ),
    }
}
