//! Integration-test support for FlowTrack.
//!
//! [`pgrst`] runs SQL exactly the way PostgREST drives the database for one
//! request, so API behaviour (roles, claims, RLS, the pre-request hook, error
//! codes and their HTTP statuses) is tested without an HTTP server in the way.
//! `./dev test` points these tests at a fresh throwaway cluster through
//! `FLOWTRACK_TEST_DATABASE_URL`.

pub mod fixtures;
pub mod graphs;
pub mod http_sink;
pub mod jwt;
pub mod notices;
pub mod private_db;

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

/// The pre-request function postgrest.conf names (checked by a test).
pub const PRE_REQUEST: &str = "auth.check_request";
/// The schema PostgREST exposes.
pub const API_SCHEMA: &str = "api";

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run these tests with ./dev test"))
}

/// A superuser connection to the test database.
pub async fn connect() -> Client {
    connect_to(&env("FLOWTRACK_TEST_DATABASE_URL")).await
}

pub async fn connect_to(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The first column of every row `sql` returns.
pub async fn column<T: tokio_postgres::types::FromSqlOwned>(
    db: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Vec<T> {
    let rows = db
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter().map(|r| r.get(0)).collect()
}

/// A connection as PostgREST's `authenticator` role, so role switching is
/// limited exactly as it is behind the API (use this for attack tests).
pub async fn connect_authenticator() -> Client {
    connect_to(&env("FLOWTRACK_TEST_API_DB_URL")).await
}

/// The API server's base URL (`./dev test` starts one in front of the test database).
pub fn api_url() -> String {
    env("FLOWTRACK_TEST_API_URL")
}

/// One HTTP request as PostgREST would see it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The database role the JWT's `role` claim names (or `anon`).
    pub role: String,
    /// The verified JWT claims; `None` for anonymous requests.
    pub claims: Option<Value>,
    pub method: String,
    pub path: String,
    pub headers: Value,
}

impl Request {
    pub fn anon() -> Self {
        Self {
            role: "anon".into(),
            claims: None,
            method: "GET".into(),
            path: "/".into(),
            headers: serde_json::json!({}),
        }
    }

    /// An authenticated request carrying `claims` (whose `role` it uses).
    pub fn with_claims(claims: Value) -> Self {
        let role = claims
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("anon")
            .to_string();
        Self {
            role,
            claims: Some(claims),
            ..Self::anon()
        }
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }
}

/// A failed request: the HTTP status PostgREST would answer with, and the
/// database error behind it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}: {}", self.status, self.code, self.message)
    }
}

/// PostgREST's mapping from SQLSTATE to HTTP status (PostgREST v12 docs,
/// "Errors"). `authenticated` decides 42501: 403 with a JWT, 401 without.
pub fn http_status(sqlstate: &str, authenticated: bool) -> u16 {
    if let Some(custom) = sqlstate.strip_prefix("PT") {
        return custom.parse().unwrap_or(500);
    }
    match sqlstate {
        "23503" | "23505" => 409,
        "25006" => 405,
        "42883" | "42P01" => 404,
        "42P17" => 500,
        "42501" => {
            if authenticated {
                403
            } else {
                401
            }
        }
        "P0001" => 400,
        _ => match &sqlstate[..2] {
            "08" => 503,
            "09" => 500,
            "0L" | "0P" => 403,
            "25" => 500,
            "28" => 403,
            "2D" | "38" | "39" | "3B" | "40" | "55" | "57" | "58" | "F0" | "HV" | "P0" | "XX" => {
                500
            }
            "53" => 503,
            "54" => 413,
            _ => 400,
        },
    }
}

fn api_error(e: tokio_postgres::Error, authenticated: bool) -> ApiError {
    match e.as_db_error() {
        Some(db) => ApiError {
            status: http_status(db.code().code(), authenticated),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        },
        None => ApiError {
            status: 503,
            code: "PGRST000".into(),
            message: e.to_string(),
            detail: None,
            hint: None,
        },
    }
}

/// Run `sql` as PostgREST runs one request: a transaction (READ ONLY for GET
/// and HEAD), the request settings applied with `set_config(..., true)`, the
/// pre-request function, the query, then COMMIT. Rows come back as JSON
/// objects; on error the transaction is rolled back and the error carries
/// PostgREST's HTTP status.
pub async fn pgrst(
    client: &mut Client,
    req: &Request,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Value>, ApiError> {
    let authenticated = req.claims.is_some();
    let read_only = matches!(req.method.as_str(), "GET" | "HEAD");
    let tx = client
        .build_transaction()
        .read_only(read_only)
        .start()
        .await
        .map_err(|e| api_error(e, authenticated))?;
    let claims = req
        .claims
        .clone()
        .unwrap_or_else(|| serde_json::json!({"role": req.role}))
        .to_string();
    let headers = req.headers.to_string();
    let search_path = format!("{API_SCHEMA}, public");
    tx.execute(
        "SELECT set_config('search_path', $1, true), set_config('role', $2, true), \
                set_config('request.jwt.claims', $3, true), set_config('request.method', $4, true), \
                set_config('request.path', $5, true), set_config('request.headers', $6, true), \
                set_config('request.cookies', '{}', true)",
        &[&search_path, &req.role, &claims, &req.method, &req.path, &headers],
    )
    .await
    .map_err(|e| api_error(e, authenticated))?;
    tx.execute(&format!("SELECT {PRE_REQUEST}()"), &[])
        .await
        .map_err(|e| api_error(e, authenticated))?;
    let wrapped = format!(
        "WITH pgrst_source AS ({sql}) SELECT coalesce(json_agg(_), '[]')::text FROM pgrst_source _"
    );
    let row = tx
        .query_one(&wrapped, params)
        .await
        .map_err(|e| api_error(e, authenticated))?;
    tx.commit().await.map_err(|e| api_error(e, authenticated))?;
    let text: String = row.get(0);
    match serde_json::from_str(&text) {
        Ok(Value::Array(rows)) => Ok(rows),
        other => panic!("json_agg returned {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::http_status;

    #[test]
    fn status_mapping_follows_postgrest() {
        assert_eq!(http_status("PT429", true), 429);
        assert_eq!(http_status("PT403", true), 403);
        assert_eq!(http_status("42501", true), 403);
        assert_eq!(http_status("42501", false), 401);
        assert_eq!(http_status("23505", true), 409);
        assert_eq!(http_status("23503", true), 409);
        assert_eq!(http_status("P0001", true), 400);
        assert_eq!(http_status("22023", true), 400);
        assert_eq!(http_status("22P02", true), 400);
        assert_eq!(http_status("23514", true), 400);
        assert_eq!(http_status("42P01", true), 404);
        assert_eq!(http_status("XX000", true), 500);
        assert_eq!(http_status("54000", true), 413);
    }
}
