//! Side effects, one module per kind of job. Each takes the job's payload and
//! returns an [`Outcome`](crate::claim::Outcome); none touches the database.

pub mod email;
pub mod http;

use crate::claim::{Job, Outcome};

/// Perform one job. Blocking I/O, so callers run it on a blocking thread.
pub fn perform(job: &Job) -> Outcome {
    match job.kind.as_str() {
        "http_request" | "webhook" => http::perform(&job.payload),
        "email" => email::perform(&job.payload),
        other => Outcome::Failed {
            error: format!("kind: this worker has no handler for job kind \"{other}\""),
            retry: false,
            result: serde_json::Value::Null,
        },
    }
}
