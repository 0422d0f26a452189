//! The `http_request` job (ACTION_HTTP_REQUEST).
//!
//! Payload (the node's config, its `{{ path }}` placeholders already filled
//! from the execution context by the engine when it queued the job):
//! `{"url", "method"?: "POST", "headers"?: {name: value}, "body"?, "timeout_ms"?: 10000,
//!   "connection_id"?}`. A string body is sent as it is (text/plain unless a
//! Content-Type header says otherwise); any other JSON body is sent as JSON.
//! With `connection_id`, the workspace's connection authenticates the request
//! ([`super::auth`]; OAuth2 tokens refreshed first, [`super::oauth`]).
//!
//! Every call goes through the egress guard ([`super::egress`]) and carries
//! `Idempotency-Key: <job id>`, the same on every attempt. A 2xx answer
//! completes the step with `{status, headers, body, duration_ms, url,
//! redirects, truncated}`; 408, 429 and 5xx answers and network errors are
//! retried; other answers, refusals by the guard and bad payloads are final.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::connection;
use super::oauth;
use crate::db::Pool;
use crate::job::{Job, Outcome};

pub use super::egress::{send, Egress, HttpRequest, HttpResponse, SendError};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;

fn failed(error: String, retry: bool, result: Value) -> Outcome {
    Outcome::Failed {
        error,
        retry,
        result,
    }
}

/// The request a payload describes (without the connection's credentials).
pub fn request(payload: &Value, idempotency_key: String) -> Result<HttpRequest, String> {
    let url = payload
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.trim().is_empty())
        .ok_or("payload.url: missing, empty or not a string")?;
    let method = match payload.get("method") {
        None | Some(Value::Null) => "POST".to_string(),
        Some(Value::String(m)) => m.trim().to_ascii_uppercase(),
        Some(other) => return Err(format!("payload.method: {other} is not a string")),
    };
    let mut headers = Vec::new();
    match payload.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (name, value) in h {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    _ => return Err(format!("payload.headers.{name}: not a string")),
                };
                headers.push((name.clone(), value));
            }
        }
        Some(_) => return Err("payload.headers: not an object".into()),
    }
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let body = match payload.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            if !has("content-type") {
                headers.push(("Content-Type".into(), "text/plain; charset=utf-8".into()));
            }
            Some(s.clone().into_bytes())
        }
        Some(v) => {
            if !has("content-type") {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            Some(v.to_string().into_bytes())
        }
    };
    let timeout_ms = payload
        .get("timeout_ms")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_TIMEOUT_MS)
        .clamp(100, 60_000);
    Ok(HttpRequest {
        method,
        url: url.trim().to_string(),
        headers,
        credentials: vec![],
        body,
        timeout: Duration::from_millis(timeout_ms),
        idempotency_key,
    })
}

/// What a step records of an answer.
pub fn summary(resp: &HttpResponse) -> Value {
    let headers: Map<String, Value> = resp
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    let is_json = resp
        .header("content-type")
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    let body = match (is_json && !resp.truncated)
        .then(|| serde_json::from_slice::<Value>(&resp.body).ok())
        .flatten()
    {
        Some(v) => v,
        None => Value::String(String::from_utf8_lossy(&resp.body).into_owned()),
    };
    json!({
        "status": resp.status,
        "headers": headers,
        "body": body,
        "duration_ms": resp.duration.as_millis() as u64,
        "url": resp.url,
        "redirects": resp.redirects,
        "truncated": resp.truncated,
    })
}

/// Send through the guard and judge the answer, timing the attempt.
pub fn send_and_judge(req: &HttpRequest, egress: &Egress) -> Outcome {
    let started = std::time::Instant::now();
    let result = send(req, egress);
    outcome(result, started.elapsed())
}

/// The outcome of an exchange: what to record and whether to try again.
/// `elapsed` is recorded when no answer came (a timeout's duration).
pub fn outcome(result: Result<HttpResponse, SendError>, elapsed: Duration) -> Outcome {
    match result {
        Ok(resp) if (200..300).contains(&resp.status) => Outcome::Done(summary(&resp)),
        Ok(resp) => {
            let code = resp.status;
            let retry = code == 408 || code == 429 || code >= 500;
            failed(
                format!("HTTP {code} from {}", resp.url),
                retry,
                summary(&resp),
            )
        }
        Err(e) => failed(
            e.message().to_string(),
            e.retryable(),
            json!({"duration_ms": elapsed.as_millis() as u64}),
        ),
    }
}

/// Send a request described like a payload, without a connection (the
/// webhook module's signed deliveries and `ACTION_WEBHOOK` steps), through
/// the same guard. Its `Idempotency-Key` header, when it has one, is the key.
/// Blocking: call it on the blocking pool.
pub fn perform(request: &Value) -> Outcome {
    let key = request
        .get("headers")
        .and_then(Value::as_object)
        .and_then(|h| {
            h.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("idempotency-key"))
                .and_then(|(_, v)| v.as_str())
        })
        .unwrap_or_default()
        .to_string();
    let req = match self::request(request, key) {
        Ok(r) => r,
        Err(e) => return failed(e, false, Value::Null),
    };
    match Egress::global() {
        Ok(egress) => send_and_judge(&req, egress),
        Err(e) => failed(e, false, Value::Null),
    }
}

/// Perform an `http_request` job.
pub async fn perform_job(pool: &Pool, job: &Job) -> Outcome {
    let mut req = match request(&job.payload, job.idempotency_key()) {
        Ok(r) => r,
        Err(e) => return failed(e, false, Value::Null),
    };
    if job
        .payload
        .get("connection_id")
        .is_some_and(|v| !v.is_null())
    {
        let conn = match connection::load(pool, job).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return failed(
                    "connection_id: the job names no connection".into(),
                    false,
                    Value::Null,
                )
            }
            Err(outcome) => return outcome,
        };
        let conn = match oauth::fresh(pool, job, conn).await {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        match super::auth::headers(&conn) {
            Ok(h) => req.credentials = h,
            Err(e) => return failed(e, false, Value::Null),
        }
    }
    let egress = match Egress::global() {
        Ok(e) => e,
        Err(e) => return failed(e, false, Value::Null),
    };
    tokio::task::spawn_blocking(move || send_and_judge(&req, egress))
        .await
        .unwrap_or_else(|e| Outcome::failed(format!("handler crashed: {e}"), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::super::ssrf::Allowlist;

    fn loopback() -> Egress {
        Egress {
            allow: Allowlist::parse("127.0.0.1").unwrap(),
            ..Egress::default()
        }
    }

    /// An HTTP server on 127.0.0.1 answering each request with the next of
    /// `answers` (status line and headers, then body) and reporting what it
    /// received (request head, then body).
    fn sink(answers: Vec<String>) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; len];
                std::io::Read::read_exact(&mut reader, &mut body).unwrap();
                let _ = tx.send(format!("{head}\n{}", String::from_utf8_lossy(&body)));
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        (base, rx)
    }

    fn answer(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn req(payload: Value) -> HttpRequest {
        request(&payload, "job-key-1".into()).unwrap()
    }

    #[test]
    fn posts_json_with_the_idempotency_key_and_completes_on_2xx() {
        let (base, seen) = sink(vec![answer(
            "200 OK",
            "content-type: application/json\r\n",
            r#"{"ok":true}"#,
        )]);
        let mut r = req(
            json!({"url": format!("{base}/hook"), "body": {"lead": 1}, "headers": {"X-Sig": "abc"}}),
        );
        r.credentials = vec![("Authorization".into(), "Bearer t".into())];
        let out = send_and_judge(&r, &loopback());
        let got = seen.recv().unwrap().to_ascii_lowercase();
        assert!(got.starts_with("post /hook"), "{got}");
        assert!(got.contains("idempotency-key: job-key-1"), "{got}");
        assert!(got.contains("authorization: bearer t"), "{got}");
        assert!(got.contains("x-sig: abc"), "{got}");
        assert!(got.contains("content-type: application/json"), "{got}");
        assert!(got.ends_with(r#"{"lead":1}"#), "{got}");
        match out {
            Outcome::Done(v) => {
                assert_eq!(v["status"], 200);
                assert_eq!(v["body"], json!({"ok": true}));
                assert_eq!(v["truncated"], false);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_errors_retry_client_errors_do_not() {
        let (base, _seen) = sink(vec![answer("503 X", "", ""), answer("404 X", "", "")]);
        let r = req(json!({"url": base}));
        assert!(matches!(
            send_and_judge(&r, &loopback()),
            Outcome::Failed { retry: true, .. }
        ));
        assert!(matches!(
            send_and_judge(&r, &loopback()),
            Outcome::Failed { retry: false, .. }
        ));
    }

    #[test]
    fn the_answer_is_capped() {
        let big = "x".repeat(5000);
        let (base, _seen) = sink(vec![answer("200 OK", "", &big)]);
        let egress = Egress {
            max_response_bytes: 1000,
            ..loopback()
        };
        match send_and_judge(&req(json!({"url": base, "method": "GET"})), &egress) {
            Outcome::Done(v) => {
                assert_eq!(v["truncated"], true);
                assert_eq!(v["body"].as_str().unwrap().len(), 1000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_redirect_is_followed_and_checked_again() {
        // Same origin: followed, credentials kept, POST turned into GET by 303.
        let (base, seen) = sink(vec![
            answer("303 See Other", "location: /next\r\n", ""),
            answer("200 OK", "", "done"),
        ]);
        let mut r = req(json!({"url": format!("{base}/start"), "body": "x"}));
        r.credentials = vec![("Authorization".into(), "Bearer t".into())];
        let out = send_and_judge(&r, &loopback());
        assert!(seen.recv().unwrap().starts_with("POST /start"));
        let second = seen.recv().unwrap().to_ascii_lowercase();
        assert!(second.starts_with("get /next"), "{second}");
        assert!(second.contains("authorization: bearer t"), "{second}");
        assert!(second.contains("idempotency-key: job-key-1"), "{second}");
        assert!(
            matches!(out, Outcome::Done(ref v) if v["redirects"] == 1),
            "{out:?}"
        );

        // To a loopback address the allowlist does not name: refused, final.
        let (base, seen) = sink(vec![answer(
            "302 Found",
            "location: http://127.0.0.2:9/internal\r\n",
            "",
        )]);
        match send_and_judge(&req(json!({"url": base})), &loopback()) {
            Outcome::Failed {
                error,
                retry: false,
                ..
            } => {
                assert!(
                    error.contains("127.0.0.2 is a loopback address (127.0.0.0/8)"),
                    "{error}"
                )
            }
            other => panic!("{other:?}"),
        }
        seen.recv().unwrap();
    }

    #[test]
    fn credentials_stay_with_their_origin() {
        let (other, seen_other) = sink(vec![answer("200 OK", "", "")]);
        let (base, _seen) = sink(vec![answer(
            "307 Temporary Redirect",
            &format!("location: {other}/elsewhere\r\n"),
            "",
        )]);
        let mut r = req(json!({"url": base, "headers": {"Cookie": "c=1", "X-Keep": "k"}}));
        r.credentials = vec![("X-Api-Key".into(), "secret".into())];
        assert!(matches!(send_and_judge(&r, &loopback()), Outcome::Done(_)));
        let got = seen_other.recv().unwrap().to_ascii_lowercase();
        assert!(got.starts_with("post /elsewhere"), "{got}");
        assert!(!got.contains("secret") && !got.contains("cookie"), "{got}");
        assert!(
            got.contains("x-keep: k") && got.contains("idempotency-key"),
            "{got}"
        );
    }

    #[test]
    fn redirect_loops_end() {
        let answers = (0..7)
            .map(|_| answer("302 Found", "location: /again\r\n", ""))
            .collect();
        let (base, _seen) = sink(answers);
        match send_and_judge(&req(json!({"url": base, "method": "GET"})), &loopback()) {
            Outcome::Failed {
                error,
                retry: false,
                ..
            } => {
                assert!(error.starts_with("more than 5 redirects"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_payloads_name_the_field_and_are_final() {
        for (payload, field) in [
            (json!({}), "payload.url"),
            (json!({"url": 5}), "payload.url"),
            (json!({"url": "http://x", "method": 1}), "payload.method"),
            (json!({"url": "http://x", "headers": []}), "payload.headers"),
            (
                json!({"url": "http://x", "headers": {"a": {}}}),
                "payload.headers.a",
            ),
        ] {
            let e = request(&payload, "k".into()).unwrap_err();
            assert!(e.starts_with(field), "{payload}: {e}");
        }
        let r = req(json!({"url": "ftp://x/"}));
        assert!(matches!(
            send_and_judge(&r, &loopback()),
            Outcome::Failed { retry: false, .. }
        ));
    }
}
