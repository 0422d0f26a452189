//! What the worker holds while it performs a side effect: the claimed job and
//! the lease it was claimed under, and how the attempt ended.

use serde_json::Value;
use uuid::Uuid;

/// A claimed job. `(id, fence)` names the lease: every report, heartbeat and
/// release passes both, and the database ignores a report whose fence is no
/// longer the job's current one (the lease expired and the job was claimed
/// again), returning `stale` instead.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub kind: String,
    pub payload: Value,
    /// 1 for the first attempt; release does not count as an attempt.
    pub attempt: i32,
    /// The claim's fencing token: the job's claim count, which only grows.
    pub fence: i32,
}

impl Job {
    /// The `Idempotency-Key` every request of this job carries: the job id,
    /// which stays the same across retries and reclaims.
    pub fn idempotency_key(&self) -> String {
        self.id.to_string()
    }
}

/// How an attempt ended, as the worker saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done(Value),
    /// Failed; `retry` says whether trying again could help. `result` is what
    /// the attempt saw (status, body excerpt, duration), recorded either way.
    Failed {
        error: String,
        retry: bool,
        result: Value,
    },
}

impl Outcome {
    pub fn failed(error: impl Into<String>, retry: bool) -> Self {
        Outcome::Failed {
            error: error.into(),
            retry,
            result: Value::Null,
        }
    }
}
