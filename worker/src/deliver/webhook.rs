//! Webhook jobs: outgoing event deliveries, signed per Standard Webhooks, and
//! workflow steps that POST to a URL.
//!
//! A delivery's payload is what `internal.emit_event` queued:
//! `{"endpoint_id", "delivery_id", "url", "timeout_ms", "body"}`. This module
//! only adds what makes it a Standard Webhooks message: it fetches the
//! endpoint's signing secrets under the job's lease, serialises the body
//! once, signs exactly those bytes and hands the request to [`http`], which
//! owns sending (address checks, timeouts, size caps). Headers:
//! `webhook-id` (the delivery id, the same on every attempt),
//! `webhook-timestamp` (this attempt, unix seconds), `webhook-signature`
//! (one `v1,` entry per valid secret), `Idempotency-Key` (the job's) and
//! `content-type: application/json`.
//!
//! A payload without `endpoint_id` is an `ACTION_WEBHOOK` step: the URL the
//! workflow names, unsigned (there is no endpoint, so no secret), with the
//! job's `Idempotency-Key`.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::http;
use super::signature::{signature_header, Secret};
use crate::db::Pool;
use crate::job::{Job, Outcome};

/// Bounds on a delivery's timeout, whatever the payload says (the endpoint's
/// column is checked to 1-30 s as well).
const TIMEOUT_MS: (u64, u64) = (1_000, 30_000);

/// One signed delivery, read from the job payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub endpoint_id: Uuid,
    pub delivery_id: Uuid,
    pub url: String,
    pub timeout_ms: u64,
    /// The body exactly as it is signed and sent.
    pub body: String,
}

fn uuid_field(payload: &Value, name: &str) -> Result<Uuid, String> {
    payload
        .get(name)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("payload.{name}: missing or not a uuid"))
}

impl Delivery {
    /// `Ok(None)` for a workflow step's webhook (no `endpoint_id`).
    pub fn from_payload(payload: &Value) -> Result<Option<Delivery>, String> {
        if payload.get("endpoint_id").is_none() {
            return Ok(None);
        }
        let url = payload
            .get("url")
            .and_then(Value::as_str)
            .ok_or("payload.url: missing or not a string")?;
        let body = payload
            .get("body")
            .filter(|b| b.is_object())
            .ok_or("payload.body: missing or not an object")?;
        Ok(Some(Delivery {
            endpoint_id: uuid_field(payload, "endpoint_id")?,
            delivery_id: uuid_field(payload, "delivery_id")?,
            url: url.to_string(),
            timeout_ms: payload
                .get("timeout_ms")
                .and_then(Value::as_u64)
                .unwrap_or(10_000)
                .clamp(TIMEOUT_MS.0, TIMEOUT_MS.1),
            body: serde_json::to_string(body).map_err(|e| format!("payload.body: {e}"))?,
        }))
    }

    /// The request [`http::perform`] sends: the signed headers and, as a
    /// string, the very bytes that were signed.
    pub fn request(&self, secrets: &[Secret], timestamp: i64, idempotency_key: &str) -> Value {
        let id = self.delivery_id.to_string();
        json!({
            "url": self.url,
            "method": "POST",
            "timeout_ms": self.timeout_ms,
            "headers": {
                "content-type": "application/json",
                "webhook-id": id,
                "webhook-timestamp": timestamp.to_string(),
                "webhook-signature": signature_header(secrets, &id, timestamp, self.body.as_bytes()),
                "Idempotency-Key": idempotency_key,
            },
            "body": self.body,
        })
    }
}

/// A workflow step's webhook: the payload as the step queued it, plus the
/// job's `Idempotency-Key`.
pub fn step_request(payload: &Value, idempotency_key: &str) -> Value {
    let mut request = payload.clone();
    if let Some(object) = request.as_object_mut() {
        let headers = object
            .entry("headers")
            .or_insert_with(|| Value::Object(Map::new()));
        if !headers.is_object() {
            *headers = Value::Object(Map::new());
        }
        if let Some(h) = headers.as_object_mut() {
            h.insert("Idempotency-Key".into(), idempotency_key.into());
        }
        object.entry("method").or_insert_with(|| "POST".into());
    }
    request
}

pub async fn perform(pool: &Pool, job: &Job) -> Outcome {
    let delivery = match Delivery::from_payload(&job.payload) {
        Ok(Some(d)) => d,
        Ok(None) => return send(step_request(&job.payload, &job.idempotency_key())).await,
        Err(e) => return Outcome::failed(e, false),
    };
    let secrets = match signing_secrets(pool, job).await {
        Ok(s) => s,
        Err(outcome) => return outcome,
    };
    let request = delivery.request(&secrets, unix_now(), &job.idempotency_key());
    send(request).await
}

/// The endpoint's valid secrets, newest first, fetched under this job's
/// lease. Refusals from the database (`PTxxx`: the endpoint was disabled or
/// deleted, or the lease is gone) are final; a lost connection is retried.
async fn signing_secrets(pool: &Pool, job: &Job) -> Result<Vec<Secret>, Outcome> {
    let client = pool
        .get()
        .await
        .map_err(|e| Outcome::failed(format!("database: {e}"), true))?;
    let row = client
        .query_one(
            "SELECT internal.webhook_signing_secrets($1, $2)",
            &[&job.id, &job.fence],
        )
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => Outcome::failed(
                db.message().to_string(),
                !db.code().code().starts_with("PT"),
            ),
            None => Outcome::failed(format!("database: {e}"), true),
        })?;
    let texts: Vec<String> = row.get(0);
    texts
        .iter()
        .map(|t| Secret::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Outcome::failed(e, false))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Hand the request to the HTTP module on the blocking pool.
async fn send(request: Value) -> Outcome {
    tokio::task::spawn_blocking(move || http::perform(&request))
        .await
        .unwrap_or_else(|e| Outcome::failed(format!("handler crashed: {e}"), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Value {
        json!({
            "endpoint_id": "8b0d6c1e-0f5e-4a43-9a56-0d4f1f8c2b11",
            "delivery_id": "5f2b9d3a-1c4e-4b7a-8e6f-2a3b4c5d6e7f",
            "url": "https://hooks.example/x",
            "timeout_ms": 2500,
            "body": {"type": "lead.created", "data": {"email": "ü@example.com", "n": 1}},
        })
    }

    #[test]
    fn reads_a_delivery_and_tells_steps_apart() {
        let d = Delivery::from_payload(&payload()).unwrap().unwrap();
        assert_eq!(d.url, "https://hooks.example/x");
        assert_eq!(d.timeout_ms, 2500);
        assert_eq!(
            serde_json::from_str::<Value>(&d.body).unwrap(),
            payload()["body"]
        );
        assert_eq!(
            Delivery::from_payload(&json!({"url": "https://x.example", "step_id": "s"})).unwrap(),
            None
        );
        let mut bad = payload();
        bad["delivery_id"] = json!("nope");
        assert!(Delivery::from_payload(&bad)
            .unwrap_err()
            .contains("delivery_id"));
        bad = payload();
        bad["body"] = json!("text");
        assert!(Delivery::from_payload(&bad).unwrap_err().contains("body"));
        bad = payload();
        bad["timeout_ms"] = json!(3_600_000);
        assert_eq!(
            Delivery::from_payload(&bad).unwrap().unwrap().timeout_ms,
            30_000
        );
    }

    #[test]
    fn the_request_signs_the_bytes_it_sends() {
        let d = Delivery::from_payload(&payload()).unwrap().unwrap();
        let new = Secret::from_bytes(vec![7; 32]);
        let old = Secret::from_bytes(vec![9; 24]);
        let r = d.request(&[new.clone(), old.clone()], 1_700_000_000, "job-1");
        let h = &r["headers"];
        let id = d.delivery_id.to_string();
        assert_eq!(h["webhook-id"], id.as_str());
        assert_eq!(h["webhook-timestamp"], "1700000000");
        assert_eq!(h["Idempotency-Key"], "job-1");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(r["timeout_ms"], 2500);
        assert_eq!(r["method"], "POST");
        let body = r["body"].as_str().unwrap();
        assert_eq!(body, d.body);
        let sig = h["webhook-signature"].as_str().unwrap();
        assert_eq!(sig.split(' ').count(), 2);
        for s in [&new, &old] {
            assert!(s.verifies(&id, 1_700_000_000, body.as_bytes(), sig));
        }
        assert!(!new.verifies(&id, 1_700_000_001, body.as_bytes(), sig));
    }

    #[test]
    fn step_webhooks_carry_the_idempotency_key() {
        let r = step_request(
            &json!({"url": "https://x.example", "headers": {"X-A": "1"}, "body": {}}),
            "k",
        );
        assert_eq!(r["headers"], json!({"X-A": "1", "Idempotency-Key": "k"}));
        assert_eq!(r["method"], "POST");
        let r = step_request(&json!({"url": "https://x.example", "method": "PUT"}), "k");
        assert_eq!(r["headers"], json!({"Idempotency-Key": "k"}));
        assert_eq!(r["method"], "PUT");
    }
}
