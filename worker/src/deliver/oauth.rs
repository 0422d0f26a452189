//! OAuth2 access tokens, refreshed before they expire.
//!
//! A connection's access token is refreshed when it expires within
//! [`MARGIN`] (or has expired). The refresh runs in one transaction that
//! first locks the connection (`internal.job_connection(job, fence, true)`):
//! a second worker refreshing the same connection waits, then finds the
//! fresh token and uses it, so a rotating refresh token is never spent twice.
//! The new tokens are stored encrypted by `internal.store_connection_tokens`,
//! which also compares the credentials' version (compare-and-set).
//!
//! The token endpoint is the catalog's (`api.integrations.oauth_token_url`),
//! called through the egress guard. The client id and secret are the
//! connection's (`client_id`, `client_secret` in its encrypted credentials),
//! else the worker's `FLOWTRACK_OAUTH_<INTEGRATION>_CLIENT_ID` / `_SECRET`.
//!
//! A refusal by the provider (4xx, or an answer without an access token)
//! sets the connection's status to `error` (`internal.fail_connection`) and
//! fails the job for good; an outage (5xx, 429, network) is retried.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::connection::{self, db_failure, Connection};
use super::egress::{self, Egress, HttpRequest, SendError};
use crate::db::Pool;
use crate::job::{Job, Outcome};

/// Refresh this long before the access token expires.
pub const MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(120);

/// The token endpoint's whole exchange.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `c`'s access token must be refreshed at `now`: it expires within
/// the margin, or there is none.
pub fn needs_refresh(c: &Connection, now: DateTime<Utc>) -> bool {
    let has_token = c
        .credentials
        .get("access_token")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    !has_token || c.expires_at.is_some_and(|at| at - MARGIN <= now)
}

fn text<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The refresh request's form body, or why it cannot be made (final).
pub fn refresh_form(
    c: &Connection,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let refresh = text(&c.credentials, "refresh_token").ok_or_else(|| {
        format!(
            "connection {}: the access token expired and there is no refresh token; reconnect the account",
            c.id
        )
    })?;
    let var = |suffix: &str| {
        env(&format!(
            "FLOWTRACK_OAUTH_{}_{suffix}",
            c.integration_id.to_ascii_uppercase()
        ))
    };
    let client_id = text(&c.credentials, "client_id")
        .map(str::to_string)
        .or_else(|| var("CLIENT_ID"));
    let client_secret = text(&c.credentials, "client_secret")
        .map(str::to_string)
        .or_else(|| var("CLIENT_SECRET"));
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "refresh_token");
    form.append_pair("refresh_token", refresh);
    if let Some(id) = &client_id {
        form.append_pair("client_id", id);
    }
    if let Some(secret) = &client_secret {
        form.append_pair("client_secret", secret);
    }
    Ok(form.finish())
}

/// New tokens from a token endpoint's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub json: Value,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Read a token endpoint's answer. `Err((message, final))`.
pub fn parse_answer(
    status: u16,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Tokens, (String, bool)> {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let reason = || {
        let code = text(&json, "error").unwrap_or("");
        let desc = text(&json, "error_description").unwrap_or("");
        match (code, desc) {
            ("", "") => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            (c, "") => c.to_string(),
            ("", d) => d.to_string(),
            (c, d) => format!("{c}: {d}"),
        }
    };
    if status == 429 || status >= 500 {
        return Err((
            format!("token endpoint answered HTTP {status}: {}", reason()),
            false,
        ));
    }
    if !(200..300).contains(&status) {
        return Err((
            format!(
                "token endpoint refused the refresh (HTTP {status}: {})",
                reason()
            ),
            true,
        ));
    }
    let Some(access) = text(&json, "access_token") else {
        return Err((
            format!(
                "token endpoint answered without an access token ({})",
                reason()
            ),
            true,
        ));
    };
    let expires_in = match json.get("expires_in") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let mut tokens = serde_json::Map::new();
    tokens.insert("access_token".into(), Value::String(access.to_string()));
    for k in ["refresh_token", "token_type", "scope"] {
        if let Some(v) = text(&json, k) {
            tokens.insert(k.into(), Value::String(v.to_string()));
        }
    }
    Ok(Tokens {
        json: Value::Object(tokens),
        expires_at: expires_in
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
            .map(|s| now + chrono::TimeDelta::milliseconds((s * 1000.0) as i64)),
    })
}

fn refresh_failed(c: &Connection, why: &str) -> String {
    format!(
        "connection {} ({}): OAuth token refresh failed: {why}; the connection is now in status error until an owner or admin reconnects it",
        c.id, c.integration_id
    )
}

/// `c` with an access token good for at least the margin, refreshing it
/// (under the connection's lock) when needed.
pub async fn fresh(pool: &Pool, job: &Job, c: Connection) -> Result<Connection, Outcome> {
    if c.auth_type != "oauth2" || !needs_refresh(&c, Utc::now()) {
        return Ok(c);
    }
    let mut client = pool
        .get()
        .await
        .map_err(|e| Outcome::failed(format!("oauth: database unavailable: {e}"), true))?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| db_failure("oauth", &e))?;
    // Whoever held the lock before us may have refreshed already.
    let Some(locked) = connection::load_with(&*tx, job, true).await? else {
        return Err(Outcome::failed(
            "connection_id: the connection is gone",
            false,
        ));
    };
    if !needs_refresh(&locked, Utc::now()) {
        tx.commit().await.map_err(|e| db_failure("oauth", &e))?;
        return Ok(locked);
    }
    let form = match refresh_form(&locked, |k| std::env::var(k).ok()) {
        Ok(f) => f,
        Err(why) => {
            return Err(give_up(tx, job, &locked, &why).await);
        }
    };
    let Some(token_url) = locked.oauth_token_url.clone() else {
        return Err(Outcome::failed(
            format!(
                "connection {}: the catalog has no token URL for {}",
                locked.id, locked.integration_id
            ),
            false,
        ));
    };
    let egress = Egress::global().map_err(|e| Outcome::failed(e, false))?;
    let request = HttpRequest {
        method: "POST".into(),
        url: token_url,
        headers: vec![
            (
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("Accept".into(), "application/json".into()),
        ],
        credentials: vec![],
        body: Some(form.into_bytes()),
        timeout: TOKEN_TIMEOUT,
        idempotency_key: job.idempotency_key(),
    };
    let answer = tokio::task::spawn_blocking(move || egress::send(&request, egress))
        .await
        .unwrap_or_else(|e| Err(SendError::Transport(format!("token request crashed: {e}"))));
    let parsed = match answer {
        Ok(resp) => parse_answer(resp.status, &resp.body, Utc::now()),
        Err(SendError::Transport(m)) => Err((format!("token endpoint unreachable: {m}"), false)),
        Err(e) => Err((e.message().to_string(), true)),
    };
    match parsed {
        Ok(tokens) => {
            let stored: bool = tx
                .query_one(
                    "SELECT internal.store_connection_tokens($1, $2, $3, $4, $5)",
                    &[
                        &job.id,
                        &job.fence,
                        &tokens.json,
                        &tokens.expires_at,
                        &locked.version,
                    ],
                )
                .await
                .map_err(|e| db_failure("oauth", &e))?
                .get(0);
            tx.commit().await.map_err(|e| db_failure("oauth", &e))?;
            if !stored {
                // Cannot happen under the lock; if it does, use what is stored.
                return connection::load(pool, job).await?.ok_or_else(|| {
                    Outcome::failed("connection_id: the connection is gone", false)
                });
            }
            let mut credentials = locked.credentials.clone();
            if let (Value::Object(c), Value::Object(t)) = (&mut credentials, &tokens.json) {
                c.extend(t.clone());
            }
            Ok(Connection {
                credentials,
                expires_at: tokens.expires_at,
                ..locked
            })
        }
        Err((why, false)) => {
            let _ = tx.rollback().await;
            Err(Outcome::failed(
                format!(
                    "connection {}: OAuth token refresh did not complete: {why}",
                    locked.id
                ),
                true,
            ))
        }
        Err((why, true)) => Err(give_up(tx, job, &locked, &why).await),
    }
}

/// Mark the connection as failed and fail the job for good.
async fn give_up(
    tx: deadpool_postgres::Transaction<'_>,
    job: &Job,
    c: &Connection,
    why: &str,
) -> Outcome {
    let message = refresh_failed(c, why);
    let marked = tx
        .execute(
            "SELECT internal.fail_connection($1, $2, $3)",
            &[&job.id, &job.fence, &why],
        )
        .await;
    match marked {
        Ok(_) => match tx.commit().await {
            Ok(()) => Outcome::failed(message, false),
            Err(e) => db_failure("oauth", &e),
        },
        Err(e) => db_failure("oauth", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn conn(credentials: Value, expires_at: Option<DateTime<Utc>>) -> Connection {
        Connection {
            id: Uuid::nil(),
            integration_id: "gmail".into(),
            auth_type: "oauth2".into(),
            credentials,
            expires_at,
            oauth_token_url: Some("https://oauth2.example/token".into()),
            api_key_header: None,
            api_key_prefix: String::new(),
            version: None,
        }
    }

    #[test]
    fn refreshes_within_the_margin_and_not_before() {
        let now = Utc::now();
        let t = json!({"access_token": "a", "refresh_token": "r"});
        assert!(!needs_refresh(
            &conn(t.clone(), Some(now + chrono::TimeDelta::minutes(10))),
            now
        ));
        assert!(
            !needs_refresh(&conn(t.clone(), None), now),
            "unknown expiry: use it"
        );
        assert!(needs_refresh(
            &conn(t.clone(), Some(now + chrono::TimeDelta::seconds(60))),
            now
        ));
        assert!(needs_refresh(
            &conn(t, Some(now - chrono::TimeDelta::seconds(1))),
            now
        ));
        assert!(
            needs_refresh(&conn(json!({"refresh_token": "r"}), None), now),
            "no token yet"
        );
    }

    #[test]
    fn the_form_carries_the_refresh_token_and_client() {
        let c = conn(
            json!({"refresh_token": "r/1+", "client_id": "cid", "client_secret": "cs"}),
            None,
        );
        assert_eq!(
            refresh_form(&c, |_| None).unwrap(),
            "grant_type=refresh_token&refresh_token=r%2F1%2B&client_id=cid&client_secret=cs"
        );
        let c = conn(json!({"refresh_token": "r"}), None);
        let env = |k: &str| match k {
            "FLOWTRACK_OAUTH_GMAIL_CLIENT_ID" => Some("env-id".to_string()),
            "FLOWTRACK_OAUTH_GMAIL_CLIENT_SECRET" => Some("env-secret".to_string()),
            _ => None,
        };
        assert_eq!(
            refresh_form(&c, env).unwrap(),
            "grant_type=refresh_token&refresh_token=r&client_id=env-id&client_secret=env-secret"
        );
        let e = refresh_form(&conn(json!({"access_token": "a"}), None), |_| None).unwrap_err();
        assert!(e.contains("no refresh token"), "{e}");
    }

    #[test]
    fn answers_are_read_and_classified() {
        let now = Utc::now();
        let ok = parse_answer(
            200,
            br#"{"access_token":"new","expires_in":3600,"token_type":"Bearer","id_token":"x"}"#,
            now,
        )
        .unwrap();
        assert_eq!(
            ok.json,
            json!({"access_token": "new", "token_type": "Bearer"})
        );
        assert_eq!(ok.expires_at, Some(now + chrono::TimeDelta::seconds(3600)));
        let e = parse_answer(
            400,
            br#"{"error":"invalid_grant","error_description":"Token has been revoked."}"#,
            now,
        )
        .unwrap_err();
        assert_eq!(e, ("token endpoint refused the refresh (HTTP 400: invalid_grant: Token has been revoked.)".into(), true));
        assert!(
            parse_answer(200, br#"{"ok":false,"error":"invalid_refresh_token"}"#, now)
                .unwrap_err()
                .1
        );
        assert!(
            !parse_answer(503, b"down", now).unwrap_err().1,
            "outages are retried"
        );
        assert!(!parse_answer(429, b"", now).unwrap_err().1);
    }
}
