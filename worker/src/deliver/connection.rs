//! A job's connection, as the database hands it to the worker: only under the
//! job's live lease (`internal.job_connection(job_id, fence)`), only the
//! connection the job names within its own workspace, decrypted for this one
//! use and never logged or recorded.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::Pool;
use crate::job::{Job, Outcome};

/// One connection with its plaintext credentials. `Debug` leaves them out.
#[derive(Clone)]
pub struct Connection {
    pub id: Uuid,
    pub integration_id: String,
    /// oauth2, api_key, bearer, basic, smtp or none (the catalog's).
    pub auth_type: String,
    pub credentials: Value,
    pub expires_at: Option<DateTime<Utc>>,
    pub oauth_token_url: Option<String>,
    pub api_key_header: Option<String>,
    pub api_key_prefix: String,
    /// Compare-and-set token for storing refreshed tokens.
    pub version: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("integration_id", &self.integration_id)
            .field("auth_type", &self.auth_type)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

const SELECT: &str = "SELECT connection_id, integration_id, auth_type, credentials, expires_at, \
     oauth_token_url, api_key_header, api_key_prefix, credentials_version \
     FROM internal.job_connection($1, $2, $3)";

/// What a database error means for the job: the functions' own refusals
/// (a connection not in the workspace, disabled, without credentials) are
/// final; a lost lease and connection trouble are retried (a lost lease's
/// report is ignored as stale anyway).
pub fn db_failure(what: &str, e: &tokio_postgres::Error) -> Outcome {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let lease_lost = code == "PT409" && db.message().starts_with("job:");
            let ours = code.starts_with("PT") || code == "22P02" || code == "22023";
            let hint = db.hint().map(|h| format!(" ({h})")).unwrap_or_default();
            Outcome::failed(format!("{}{hint}", db.message()), lease_lost || !ours)
        }
        None => Outcome::failed(format!("{what}: database unavailable: {e}"), true),
    }
}

/// The job's connection, or `None` when it uses none.
pub async fn load_with(
    client: &impl GenericClient,
    job: &Job,
    lock: bool,
) -> Result<Option<Connection>, Outcome> {
    let row = client
        .query_opt(SELECT, &[&job.id, &job.fence, &lock])
        .await
        .map_err(|e| db_failure("connection", &e))?;
    Ok(row.map(|r| Connection {
        id: r.get(0),
        integration_id: r.get(1),
        auth_type: r.get(2),
        credentials: r.get::<_, Option<Value>>(3).unwrap_or(Value::Null),
        expires_at: r.get(4),
        oauth_token_url: r.get(5),
        api_key_header: r.get(6),
        api_key_prefix: r.get(7),
        version: r.get(8),
    }))
}

pub async fn load(pool: &Pool, job: &Job) -> Result<Option<Connection>, Outcome> {
    let client = pool
        .get()
        .await
        .map_err(|e| Outcome::failed(format!("connection: database unavailable: {e}"), true))?;
    load_with(&**client, job, false).await
}
