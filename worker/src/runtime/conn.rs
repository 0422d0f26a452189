//! One database call through the pool, bounded in time. Every failure is
//! returned (never a panic, never an exit): the caller logs it, counts it and
//! retries after a backoff. A connection that failed below SQL (closed by a
//! restart, timed out, broken pipe) is taken out of the pool instead of being
//! returned to it, so the next call gets a fresh one.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Object;

use crate::db::Pool;

/// Longest wait for a pooled or new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest any call but a parked claim may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum CallError {
    /// No connection: the pool could not make one (database down, refused).
    Connect(String),
    Timeout(Duration),
    Sql(tokio_postgres::Error),
}

impl CallError {
    /// Whether the connection should be dropped rather than reused: no
    /// answer came, or the server is ending the session (class 08 connection
    /// exception, 57 operator intervention such as a shutdown).
    fn breaks_connection(&self) -> bool {
        match self {
            CallError::Connect(_) | CallError::Timeout(_) => true,
            CallError::Sql(e) => match e.as_db_error() {
                None => true,
                Some(db) => matches!(&db.code().code()[..2], "08" | "57"),
            },
        }
    }

    /// Whether the database refused the call's content, so sending the same
    /// thing again would fail again (bad data, a bug), as opposed to a
    /// transient failure (connection, shutdown, deadlock, serialization,
    /// resources, lock timeout) that a retry can get past.
    pub fn is_refusal(&self) -> bool {
        match self {
            CallError::Sql(e) => match e.as_db_error() {
                None => false,
                Some(db) => {
                    let code = db.code().code();
                    !matches!(&code[..2], "08" | "40" | "53" | "57" | "58") && code != "55P03"
                }
            },
            _ => false,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "no database connection: {e}"),
            CallError::Timeout(d) => write!(f, "database call timed out after {d:?}"),
            CallError::Sql(e) => match e.as_db_error() {
                Some(db) => write!(f, "{} ({})", db.message(), db.code().code()),
                None => write!(f, "{e}"),
            },
        }
    }
}

/// A connection from the pool.
pub async fn client(pool: &Pool) -> Result<Object, CallError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, pool.get()).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(CallError::Connect(e.to_string())),
        Err(_) => Err(CallError::Timeout(CONNECT_TIMEOUT)),
    }
}

/// `call` (a query on `client`) within `limit`.
pub async fn timed<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError::Sql(e)),
        Err(_) => Err(CallError::Timeout(limit)),
    }
}

/// Gives `client` back to the pool, or drops its connection after `error`
/// when the error means the connection is unusable.
pub fn settle<T>(client: Object, result: &Result<T, CallError>) {
    if let Err(e) = result {
        if e.breaks_connection() {
            drop(Object::take(client));
        }
    }
}
