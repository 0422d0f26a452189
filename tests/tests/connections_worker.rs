//! The worker's actions through a workspace's connections, against real
//! servers on 127.0.0.1 that these tests start: an HTTP sink, an OAuth token
//! endpoint (both small Rust servers) and an SMTP sink (aiosmtpd from PyPI,
//! tests/python/smtp_sink.py). Jobs are queued and leased through the queue's
//! own functions and performed by the worker's `deliver::perform`, over a
//! pool connected as `flowtrack_worker`.
//!
//! The allowlist is `FLOWTRACK_EGRESS_ALLOW=127.0.0.1`: the sinks live there,
//! and every other loopback address (127.0.0.2, ::1) stays refused, which is
//! how these tests prove loopback is refused without connecting anywhere else.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Once};
use std::time::Duration;

use flowtrack_tests::fixtures::{self, Tenant};
use flowtrack_tests::graphs::{active, edge, node};
use flowtrack_tests::{connect, pgrst, Request};
use flowtrack_worker::db::{self, Pool};
use flowtrack_worker::deliver::{self, egress};
use flowtrack_worker::job::{Job, Outcome};
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

static ENV: Once = Once::new();

/// The worker's settings for this process, before its first request reads them.
fn worker_env() {
    ENV.call_once(|| {
        std::env::set_var("FLOWTRACK_EGRESS_ALLOW", "127.0.0.1");
        std::env::set_var(
            "FLOWTRACK_EMAIL_FROM",
            "FlowTrack <no-reply@flowtrack.test>",
        );
        std::env::remove_var("FLOWTRACK_SMTP_URL");
        let outbox = std::env::temp_dir().join(format!("ft-outbox-{}", std::process::id()));
        std::env::set_var("FLOWTRACK_EMAIL_OUTBOX", outbox);
    });
}

/// A pool connected as the worker role (the role the worker logs in as).
fn worker_pool() -> Pool {
    worker_env();
    let url = std::env::var("FLOWTRACK_TEST_WORKER_DATABASE_URL").unwrap_or_else(|_| {
        format!(
            "{}&options=-c%20role%3Dflowtrack_worker",
            std::env::var("FLOWTRACK_TEST_DATABASE_URL").expect("run with ./dev test")
        )
    });
    db::pool(&url, 4).unwrap()
}

// ------------------------------------------------------------- servers ----

/// One request a sink received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// An HTTP server on `ip`, answering every request with `answer(seen)` (a
/// whole HTTP response) and reporting what it received.
fn http_server(
    ip: &str,
    answer: impl Fn(&Seen) -> String + Send + Sync + 'static,
) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let tx = tx.clone();
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).unwrap_or(0) == 0 {
                    return;
                }
                let mut parts = first.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let mut headers = HashMap::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let seen = Seen {
                    method,
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let response = answer(&seen);
                let _ = tx.send(seen);
                let _ = stream.write_all(response.as_bytes());
            });
        }
    });
    (base, rx)
}

fn response(status: &str, extra: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{extra}content-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn ok_json(body: &str) -> String {
    response("200 OK", "", "application/json", body)
}

/// Everything a sink received within a short grace period.
fn drain(rx: &mpsc::Receiver<Seen>) -> Vec<Seen> {
    let mut all = Vec::new();
    while let Ok(s) = rx.recv_timeout(Duration::from_millis(300)) {
        all.push(s);
    }
    all
}

/// aiosmtpd on 127.0.0.1, requiring AUTH as `user`/`password`.
struct SmtpSink {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<Value>,
}

impl SmtpSink {
    fn start(user: &str, password: &str) -> SmtpSink {
        let python = std::env::var("FLOWTRACK_TEST_PYTHON")
            .expect("FLOWTRACK_TEST_PYTHON: run with ./dev test (./dev setup installs aiosmtpd)");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/smtp_sink.py");
        let mut child = Command::new(python)
            .args([script, user, password])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP sink");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let hello = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the SMTP sink announces its port");
        SmtpSink {
            child,
            port: hello["port"].as_u64().unwrap() as u16,
            lines: rx,
        }
    }

    fn message(&self) -> Option<Value> {
        self.lines.recv_timeout(Duration::from_secs(10)).ok()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------- tenants and jobs ----

async fn create_connection(
    db: &mut Client,
    t: &Tenant,
    integration: &str,
    secret: Option<Value>,
) -> Uuid {
    let name = format!(
        "{integration} {}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let owner = Request::with_claims(t.claims("owner")).method("POST");
    let rows = pgrst(
        db,
        &owner.clone().path("/connections"),
        "INSERT INTO api.connections (integration_id, name) VALUES ($1, $2) RETURNING id",
        &[&integration, &name],
    )
    .await
    .expect("the owner creates a connection");
    let id: Uuid = rows[0]["id"].as_str().unwrap().parse().unwrap();
    if let Some(secret) = secret {
        pgrst(
            db,
            &owner.path("/rpc/save_connection_secret"),
            "SELECT * FROM api.save_connection_secret($1, $2)",
            &[&id, &secret],
        )
        .await
        .expect("the owner saves the credentials");
    }
    id
}

async fn enqueue(db: &Client, t: &Tenant, kind: &str, payload: Value) -> Uuid {
    db.query_one(
        "SELECT internal.enqueue_job($1, $2, $3)",
        &[&kind, &payload, &t.workspace_id],
    )
    .await
    .unwrap_or_else(|e| panic!("enqueue {kind}: {e:?}"))
    .get(0)
}

/// Lease the tenant's due jobs as the worker would hold them.
async fn lease(db: &Client, t: &Tenant) -> Vec<Job> {
    let leases = fixtures::lease_jobs(db, t.workspace_id).await;
    let mut jobs = Vec::new();
    for l in leases {
        let r = db
            .query_one(
                "SELECT workspace_id, kind, payload, attempts FROM internal.jobs WHERE id = $1",
                &[&l.id],
            )
            .await
            .unwrap();
        jobs.push(Job {
            id: l.id,
            workspace_id: r.get(0),
            kind: r.get(1),
            payload: r.get(2),
            attempt: r.get(3),
            fence: l.fence,
        });
    }
    jobs
}

/// Queue one job, lease it, perform it: the outcome and the job.
async fn run_one(
    db: &Client,
    pool: &Pool,
    t: &Tenant,
    kind: &str,
    payload: Value,
) -> (Outcome, Job) {
    enqueue(db, t, kind, payload).await;
    let mut jobs = lease(db, t).await;
    assert_eq!(jobs.len(), 1);
    let job = jobs.remove(0);
    (deliver::perform(pool, &job).await, job)
}

/// Drop the tenant's leftover jobs: the queue's own tests claim every
/// workspace's due jobs, and a lease left here would expire into theirs.
async fn forget_jobs(db: &Client, t: &Tenant) {
    db.execute(
        "DELETE FROM internal.jobs WHERE workspace_id = $1",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
}

fn final_error(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failed {
            error,
            retry: false,
            ..
        } => error,
        other => panic!("expected a final failure, got {other:?}"),
    }
}

/// What the worker decrypts for `job` (as the worker role).
async fn credentials_of(pool: &Pool, job: &Job) -> Value {
    let c = pool.get().await.unwrap();
    c.query_one(
        "SELECT credentials FROM internal.job_connection($1, $2)",
        &[&job.id, &job.fence],
    )
    .await
    .unwrap()
    .get(0)
}

// ----------------------------------------------------------------- HTTP ----

#[tokio::test]
async fn a_templated_request_carries_its_idempotency_key_across_retries_and_completes_the_step() {
    let mut db = connect().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let (base, seen) = http_server("127.0.0.1", move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            response("503 Busy", "", "text/plain", "later")
        } else {
            ok_json(r#"{"accepted":true}"#)
        }
    });
    let token = format!("tok-{}", Uuid::new_v4().simple());
    let conn = create_connection(&mut db, &t, "http_bearer", Some(json!({"token": token}))).await;
    let wf = active(
        &db,
        &t,
        &json!({"nodes": [node("start", "TRIGGER_MANUAL", json!({})),
                          node("call", "ACTION_HTTP_REQUEST", json!({
                              "url": format!("{base}/leads/{{{{trigger.id}}}}"),
                              "method": "{{trigger.verb}}",
                              "headers": {"X-Lead-Name": "{{trigger.name}}"},
                              "body": {"name": "{{trigger.name}}", "score": "{{trigger.score}}"},
                              "connection_id": conn.to_string()}))],
                "edges": [edge("e1", "start", "call")]}),
    )
    .await;
    let execution: Uuid = db
        .query_one(
            "SELECT execution_id FROM internal.start_execution($1, $2, 'manual', $3, 'templated', NULL)",
            &[&t.workspace_id, &wf, &json!({"id": "42", "verb": "PUT", "name": "Ann", "score": 7})],
        )
        .await
        .unwrap()
        .get(0);

    // First attempt: the server is busy, the job is retried.
    let jobs = lease(&db, &t).await;
    assert_eq!(jobs.len(), 1);
    let first = deliver::perform(&pool, &jobs[0]).await;
    assert!(
        matches!(first, Outcome::Failed { retry: true, .. }),
        "{first:?}"
    );
    let lease1 = [fixtures::Lease {
        id: jobs[0].id,
        fence: jobs[0].fence,
    }];
    let out = fixtures::fail_jobs(&db, &lease1, "HTTP 503", true, Value::Null).await;
    assert_eq!(out, ["retrying"]);
    db.execute(
        "UPDATE internal.jobs SET run_at = now() WHERE id = $1",
        &[&jobs[0].id],
    )
    .await
    .unwrap();

    // Second attempt, a new lease: answered, the step completes with the answer.
    let again = lease(&db, &t).await;
    assert_eq!((again.len(), again[0].id), (1, jobs[0].id));
    assert!(again[0].fence > jobs[0].fence);
    let second = deliver::perform(&pool, &again[0]).await;
    let Outcome::Done(result) = &second else {
        panic!("{second:?}")
    };
    assert_eq!(result["status"], 200);
    assert_eq!(result["body"], json!({"accepted": true}));
    let lease2 = [fixtures::Lease {
        id: again[0].id,
        fence: again[0].fence,
    }];
    assert_eq!(
        fixtures::complete_jobs(&db, &lease2, result.clone()).await,
        ["completed"]
    );

    let got = drain(&seen);
    assert_eq!(got.len(), 2);
    for s in &got {
        assert_eq!((s.method.as_str(), s.path.as_str()), ("PUT", "/leads/42"));
        assert_eq!(
            s.headers["idempotency-key"],
            jobs[0].id.to_string(),
            "the same key on every attempt"
        );
        assert_eq!(s.headers["authorization"], format!("Bearer {token}"));
        assert_eq!(s.headers["x-lead-name"], "Ann");
        assert_eq!(s.headers["content-type"], "application/json");
        let body: Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(body, json!({"name": "Ann", "score": "7"}));
    }
    let r = db
        .query_one(
            "SELECT s.status, s.output, e.status FROM api.execution_steps s JOIN api.workflow_executions e ON e.id = s.execution_id
              WHERE s.execution_id = $1 AND s.node_key = 'call'",
            &[&execution],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "completed");
    assert_eq!(r.get::<_, Value>(1)["status"], 200);
    assert_eq!(r.get::<_, String>(2), "completed");
}

#[tokio::test]
async fn each_auth_type_authenticates_the_request() {
    let mut db = connect().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let (base, seen) = http_server("127.0.0.1", |_| ok_json("{}"));
    let cases = [
        (
            "http_bearer",
            json!({"token": "b-1"}),
            "authorization",
            "Bearer b-1",
        ),
        (
            "http_basic",
            json!({"username": "ann", "password": "pw"}),
            "authorization",
            "Basic YW5uOnB3",
        ),
        (
            "http_api_key",
            json!({"api_key": "k-1", "header": "X-Api-Key"}),
            "x-api-key",
            "k-1",
        ),
        // The catalog names Resend's header and prefix.
        (
            "resend",
            json!({"api_key": "re_1"}),
            "authorization",
            "Bearer re_1",
        ),
    ];
    for (integration, secret, header, want) in cases {
        let conn = create_connection(&mut db, &t, integration, Some(secret)).await;
        let (out, job) = run_one(
            &db,
            &pool,
            &t,
            "http_request",
            json!({"url": format!("{base}/{integration}"), "connection_id": conn}),
        )
        .await;
        assert!(matches!(out, Outcome::Done(_)), "{integration}: {out:?}");
        let s = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(s.path, format!("/{integration}"));
        assert_eq!(
            s.headers.get(header).map(String::as_str),
            Some(want),
            "{integration}"
        );
        assert_eq!(s.headers["idempotency-key"], job.id.to_string());
        fixtures::complete_jobs(
            &db,
            &[fixtures::Lease {
                id: job.id,
                fence: job.fence,
            }],
            json!({}),
        )
        .await;
    }
}

#[tokio::test]
async fn another_tenants_connection_is_refused_like_a_missing_one() {
    let mut db = connect().await;
    let pool = worker_pool();
    let a = fixtures::tenant(&db, "pro").await;
    let b = fixtures::tenant(&db, "pro").await;
    let (base, seen) = http_server("127.0.0.1", |_| ok_json("{}"));
    let theirs = create_connection(
        &mut db,
        &b,
        "http_bearer",
        Some(json!({"token": "b-secret"})),
    )
    .await;
    let missing = Uuid::new_v4();
    let mut errors = Vec::new();
    for id in [theirs, missing] {
        let (out, _) = run_one(
            &db,
            &pool,
            &a,
            "http_request",
            json!({"url": base, "connection_id": id}),
        )
        .await;
        let e = final_error(&out).replace(&id.to_string(), "<id>");
        assert!(
            e.starts_with("connection_id: no connection <id> in this workspace"),
            "{e}"
        );
        errors.push(e);
        db.execute(
            "DELETE FROM internal.jobs WHERE workspace_id = $1",
            &[&a.workspace_id],
        )
        .await
        .unwrap();
    }
    assert_eq!(
        errors[0], errors[1],
        "another tenant's connection reads exactly like a missing one"
    );
    assert!(drain(&seen).is_empty(), "nothing was sent");

    // Without the job's live lease the worker decrypts nothing, even its own.
    let own = create_connection(
        &mut db,
        &a,
        "http_bearer",
        Some(json!({"token": "a-secret"})),
    )
    .await;
    enqueue(
        &db,
        &a,
        "http_request",
        json!({"url": base, "connection_id": own}),
    )
    .await;
    let job = lease(&db, &a).await.remove(0);
    let c = pool.get().await.unwrap();
    let err = c
        .query_one(
            "SELECT credentials FROM internal.job_connection($1, $2)",
            &[&job.id, &(job.fence + 1)],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "PT409", "{err:?}");
    assert_eq!(credentials_of(&pool, &job).await["token"], "a-secret");
    forget_jobs(&db, &a).await;
}

// ---------------------------------------------------------------- OAuth ----

/// An oauth2 integration whose token endpoint is `token_url` (catalog rows
/// are the migrations'; the test adds its own as superuser).
async fn oauth_integration(db: &Client, token_url: &str) -> String {
    let id = format!("oauth_{}", &Uuid::new_v4().simple().to_string()[..12]);
    db.execute(
        "INSERT INTO api.integrations (id, name, category, auth_type, oauth_token_url)
         VALUES ($1, 'Test OAuth app', 'developer', 'oauth2', $2)",
        &[&id, &token_url],
    )
    .await
    .unwrap();
    // The catalog's rule: every app does something.
    db.execute(
        "INSERT INTO api.integration_actions (id, integration_id, name) VALUES ($1 || '.call', $1, 'Call')",
        &[&id],
    )
    .await
    .unwrap();
    id
}

/// A form-urlencoded body's fields.
fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn an_expiring_oauth_token_is_refreshed_once_stored_encrypted_and_used() {
    let mut db = connect().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let new_token = format!("at-new-{}", Uuid::new_v4().simple());
    let issued = new_token.clone();
    let token_calls = Arc::new(AtomicUsize::new(0));
    let counted = token_calls.clone();
    let (token_base, token_seen) = http_server("127.0.0.1", move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        // Slow enough that a second refresh would overlap this one.
        std::thread::sleep(Duration::from_millis(300));
        ok_json(
            &json!({"access_token": issued, "expires_in": 3600, "refresh_token": "rt-2",
                        "token_type": "Bearer"})
            .to_string(),
        )
    });
    let (api, api_seen) = http_server("127.0.0.1", |_| ok_json("{}"));
    let integration = oauth_integration(&db, &format!("{token_base}/token")).await;
    let conn = create_connection(&mut db, &t, &integration, Some(json!({
        "access_token": "at-old", "refresh_token": "rt-1", "client_id": "cid", "client_secret": "csecret"}))).await;
    // It expires within the refresh margin.
    db.execute(
        "UPDATE api.connections SET expires_at = now() + interval '30 seconds' WHERE id = $1",
        &[&conn],
    )
    .await
    .unwrap();

    // Two jobs of the same connection at once: one refresh, both use its token.
    for i in 0..2 {
        enqueue(
            &db,
            &t,
            "http_request",
            json!({"url": format!("{api}/call/{i}"), "connection_id": conn}),
        )
        .await;
    }
    let jobs = lease(&db, &t).await;
    assert_eq!(jobs.len(), 2);
    let (o1, o2) = tokio::join!(
        deliver::perform(&pool, &jobs[0]),
        deliver::perform(&pool, &jobs[1])
    );
    assert!(matches!(o1, Outcome::Done(_)), "{o1:?}");
    assert!(matches!(o2, Outcome::Done(_)), "{o2:?}");
    assert_eq!(
        token_calls.load(Ordering::SeqCst),
        1,
        "concurrent refreshes of one connection take turns"
    );
    let refresh = token_seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (refresh.method.as_str(), refresh.path.as_str()),
        ("POST", "/token")
    );
    let f = form(&refresh.body);
    assert_eq!(f["grant_type"], "refresh_token");
    assert_eq!(f["refresh_token"], "rt-1");
    assert_eq!(
        (f["client_id"].as_str(), f["client_secret"].as_str()),
        ("cid", "csecret")
    );
    let calls = drain(&api_seen);
    assert_eq!(calls.len(), 2);
    for s in calls {
        assert_eq!(s.headers["authorization"], format!("Bearer {new_token}"));
    }

    // Stored encrypted: the new token is in the decrypted credentials, not in the row.
    let creds = credentials_of(&pool, &jobs[0]).await;
    assert_eq!(creds["access_token"], new_token.as_str());
    assert_eq!(creds["refresh_token"], "rt-2");
    assert_eq!(
        creds["client_secret"], "csecret",
        "only token fields change"
    );
    let (cipher, left): (Vec<u8>, f64) = {
        let r = db
            .query_one(
                "SELECT s.ciphertext, extract(epoch FROM c.expires_at - now())::float8
                   FROM internal.connection_secrets s JOIN api.connections c ON c.id = s.connection_id
                  WHERE c.id = $1",
                &[&conn],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(!cipher
        .windows(new_token.len())
        .any(|w| w == new_token.as_bytes()));
    assert!(
        (3000.0..3700.0).contains(&left),
        "expires_at moved an hour ahead: {left}"
    );
    let status: String = db
        .query_one("SELECT status FROM api.connections WHERE id = $1", &[&conn])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "active");
    forget_jobs(&db, &t).await;
}

#[tokio::test]
async fn a_refused_refresh_sets_the_connection_to_error_and_fails_the_job() {
    let mut db = connect().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let (token_base, _token_seen) = http_server("127.0.0.1", |_| {
        response(
            "400 Bad Request",
            "",
            "application/json",
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        )
    });
    let (api, api_seen) = http_server("127.0.0.1", |_| ok_json("{}"));
    let integration = oauth_integration(&db, &format!("{token_base}/token")).await;
    let conn = create_connection(&mut db, &t, &integration, Some(json!({
        "access_token": "at-old", "refresh_token": "rt-revoked", "client_id": "cid", "client_secret": "cs"}))).await;
    db.execute(
        "UPDATE api.connections SET expires_at = now() - interval '1 minute' WHERE id = $1",
        &[&conn],
    )
    .await
    .unwrap();
    let (out, job) = run_one(
        &db,
        &pool,
        &t,
        "http_request",
        json!({"url": api, "connection_id": conn}),
    )
    .await;
    let e = final_error(&out);
    assert!(e.contains("OAuth token refresh failed"), "{e}");
    assert!(
        e.contains("invalid_grant: Token has been expired or revoked."),
        "{e}"
    );
    assert!(e.contains("status error"), "{e}");
    assert!(drain(&api_seen).is_empty(), "no request with a stale token");
    let r = db
        .query_one(
            "SELECT status, last_error FROM api.connections WHERE id = $1",
            &[&conn],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "error");
    assert!(r.get::<_, String>(1).contains("invalid_grant"));
    assert_eq!(
        fixtures::fail_jobs(
            &db,
            &[fixtures::Lease {
                id: job.id,
                fence: job.fence
            }],
            e,
            false,
            Value::Null
        )
        .await,
        ["dead"]
    );
}

// ----------------------------------------------------------------- SSRF ----

#[tokio::test]
async fn every_denied_address_class_is_refused_with_a_clear_step_error() {
    let db = connect().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    // Refused before any connection is attempted: nothing is sent anywhere.
    let cases = [
        (
            "http://127.0.0.2:9/",
            "127.0.0.2 is a loopback address (127.0.0.0/8)",
        ),
        ("http://2130706434/", "127.0.0.2 is a loopback address"),
        ("http://[::1]:9/", "::1 is a loopback address (::1/128)"),
        (
            "http://[::ffff:127.0.0.2]/",
            "a loopback address (127.0.0.0/8, in IPv4-mapped ::ffff:0:0/96)",
        ),
        (
            "http://10.1.2.3/",
            "a private (RFC 1918) address (10.0.0.0/8)",
        ),
        (
            "http://172.16.5.4/",
            "a private (RFC 1918) address (172.16.0.0/12)",
        ),
        (
            "http://192.168.1.1/",
            "a private (RFC 1918) address (192.168.0.0/16)",
        ),
        (
            "http://[fd12::1]/",
            "a private (unique local) address (fc00::/7)",
        ),
        (
            "http://169.254.169.254/latest/meta-data/",
            "a cloud metadata service address (169.254.169.254/32)",
        ),
        (
            "http://[::ffff:169.254.169.254]/",
            "a cloud metadata service address (169.254.169.254/32, in IPv4-mapped",
        ),
        (
            "http://[64:ff9b::a9fe:a9fe]/",
            "a cloud metadata service address (169.254.169.254/32, in NAT64",
        ),
        (
            "http://169.254.10.10/",
            "a link-local address (169.254.0.0/16)",
        ),
        ("http://[fe80::1]/", "a link-local address (fe80::/10)"),
        (
            "http://100.64.1.1/",
            "a shared address space (CGNAT, RFC 6598) address (100.64.0.0/10)",
        ),
        (
            "http://0.0.0.0/",
            "an unspecified (this network) address (0.0.0.0/8)",
        ),
        ("http://[::]/", "an unspecified address (::/128)"),
        ("http://224.0.0.251/", "a multicast address (224.0.0.0/4)"),
        ("http://[ff02::1]/", "a multicast address (ff00::/8)"),
        ("http://255.255.255.255/", "a broadcast address"),
        ("http://192.0.2.7/", "a documentation (TEST-NET-1) address"),
        (
            "http://198.18.0.9/",
            "a benchmarking address (198.18.0.0/15)",
        ),
    ];
    let wf = active(
        &db,
        &t,
        &json!({"nodes": [node("start", "TRIGGER_MANUAL", json!({})),
                          node("call", "ACTION_HTTP_REQUEST", json!({"url": "{{trigger.url}}"}))],
                "edges": [edge("e1", "start", "call")]}),
    )
    .await;
    for (url, class) in cases {
        let execution: Uuid = db
            .query_one(
                "SELECT execution_id FROM internal.start_execution($1, $2, 'manual', $3, $4, NULL)",
                &[
                    &t.workspace_id,
                    &wf,
                    &json!({"url": url}),
                    &format!("ssrf {url}"),
                ],
            )
            .await
            .unwrap()
            .get(0);
        let jobs = lease(&db, &t).await;
        assert_eq!(jobs.len(), 1, "{url}");
        let out = deliver::perform(&pool, &jobs[0]).await;
        let e = final_error(&out).to_string();
        assert!(e.starts_with("egress refused: "), "{url}: {e}");
        assert!(e.contains(class), "{url}: {e}");
        let l = [fixtures::Lease {
            id: jobs[0].id,
            fence: jobs[0].fence,
        }];
        assert_eq!(
            fixtures::fail_jobs(&db, &l, &e, false, Value::Null).await,
            ["dead"]
        );
        let r = db
            .query_one(
                "SELECT s.status, s.error::text, e.status FROM api.execution_steps s
                   JOIN api.workflow_executions e ON e.id = s.execution_id
                  WHERE s.execution_id = $1 AND s.node_key = 'call'",
                &[&execution],
            )
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(0), "failed", "{url}");
        assert!(
            r.get::<_, String>(1).contains("egress refused"),
            "{url}: the step's error names the refusal"
        );
        assert_eq!(r.get::<_, String>(2), "failed", "{url}");
    }
}

#[tokio::test]
async fn without_the_allowlist_loopback_is_refused() {
    worker_env();
    let (base, seen) = http_server("127.0.0.1", |_| ok_json("{}"));
    let request = egress::HttpRequest {
        method: "GET".into(),
        url: base,
        headers: vec![],
        credentials: vec![],
        body: None,
        timeout: Duration::from_secs(5),
        idempotency_key: "k".into(),
    };
    match egress::send(&request, &egress::Egress::default()) {
        Err(egress::SendError::Refused(m)) => {
            assert!(
                m.contains("127.0.0.1 is a loopback address (127.0.0.0/8)"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(drain(&seen).is_empty());
    // With it, the same sink answers.
    let allow = egress::Egress::from_env().unwrap();
    assert_eq!(egress::send(&request, &allow).unwrap().status, 200);
}

#[tokio::test]
async fn a_redirect_to_a_refused_address_is_refused() {
    let db = connect().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    // A live server on 127.0.0.2, which the allowlist does not name: it must
    // never be reached.
    let (hidden, hidden_seen) = http_server("127.0.0.2", |_| ok_json(r#"{"secret":true}"#));
    for target in [
        format!("{hidden}/internal"),
        "http://[::1]:9/".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let location = target.clone();
        let (base, seen) = http_server("127.0.0.1", move |_| {
            response(
                "302 Found",
                &format!("location: {location}\r\n"),
                "text/plain",
                "",
            )
        });
        let (out, job) = run_one(
            &db,
            &pool,
            &t,
            "http_request",
            json!({"url": format!("{base}/start"), "method": "GET"}),
        )
        .await;
        let e = final_error(&out);
        assert!(e.starts_with("egress refused: "), "{target}: {e}");
        assert_eq!(drain(&seen).len(), 1, "the first hop was asked");
        fixtures::fail_jobs(
            &db,
            &[fixtures::Lease {
                id: job.id,
                fence: job.fence,
            }],
            e,
            false,
            Value::Null,
        )
        .await;
    }
    assert!(
        drain(&hidden_seen).is_empty(),
        "the redirect never reached 127.0.0.2"
    );
}

// ---------------------------------------------------------------- email ----

#[tokio::test]
async fn email_goes_through_the_workspace_smtp_connection_from_an_owned_address_metered_per_recipient(
) {
    let mut db = connect().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let sink = SmtpSink::start("mailer", "s3cret");
    let conn = create_connection(&mut db, &t, "smtp", Some(json!({
        "host": "127.0.0.1", "port": sink.port, "tls": "none", "username": "mailer", "password": "s3cret",
        "from": ["sales@acme.example", "@news.acme.example"]}))).await;
    let used = fixtures::quota_used(&db, t.workspace_id, "email_sends_per_month").await;
    let (out, job) = run_one(
        &db,
        &pool,
        &t,
        "email",
        json!({
        "to": "ann@lead.example, bob@lead.example,carl@lead.example", "subject": "Hello",
        "body": "Thanks for reaching out.", "from": "Acme Sales <sales@acme.example>"}),
    )
    .await;
    assert_eq!(
        fixtures::quota_used(&db, t.workspace_id, "email_sends_per_month").await - used,
        3,
        "one unit per recipient"
    );
    let Outcome::Done(result) = &out else {
        panic!("{out:?}")
    };
    assert_eq!(result["transport"], "smtp_connection");
    assert_eq!(result["connection_id"], conn.to_string());
    assert_eq!(result["recipients"], 3);
    let m = sink.message().expect("the SMTP sink got the message");
    assert_eq!(m["login"], "mailer");
    assert_eq!(m["mail_from"], "sales@acme.example");
    assert_eq!(
        m["rcpt_tos"],
        json!(["ann@lead.example", "bob@lead.example", "carl@lead.example"])
    );
    assert!(m["data"].as_str().unwrap().contains("Subject: Hello"));
    // Metering is per job: counting the same job again changes nothing.
    db.execute(
        "SELECT internal.consume_quota($1, 'email_sends_per_month', 3, 'job:' || $2::uuid::text)",
        &[&t.workspace_id, &job.id],
    )
    .await
    .unwrap();
    assert_eq!(
        fixtures::quota_used(&db, t.workspace_id, "email_sends_per_month").await - used,
        3
    );
    fixtures::complete_jobs(
        &db,
        &[fixtures::Lease {
            id: job.id,
            fence: job.fence,
        }],
        result.clone(),
    )
    .await;

    // A sender at a listed domain is owned; any other is refused, final.
    let (out, job) = run_one(
        &db,
        &pool,
        &t,
        "email",
        json!({
        "to": "ann@lead.example", "subject": "News", "from": "letters@news.acme.example"}),
    )
    .await;
    assert!(matches!(out, Outcome::Done(_)), "{out:?}");
    assert_eq!(
        sink.message().unwrap()["mail_from"],
        "letters@news.acme.example"
    );
    fixtures::complete_jobs(
        &db,
        &[fixtures::Lease {
            id: job.id,
            fence: job.fence,
        }],
        json!({}),
    )
    .await;
    let (out, job) = run_one(
        &db,
        &pool,
        &t,
        "email",
        json!({
        "to": "ann@lead.example", "subject": "Spoof", "from": "ceo@bank.example"}),
    )
    .await;
    let e = final_error(&out);
    assert!(
        e.starts_with("payload.from: ceo@bank.example is not an address this workspace owns"),
        "{e}"
    );
    fixtures::fail_jobs(
        &db,
        &[fixtures::Lease {
            id: job.id,
            fence: job.fence,
        }],
        e,
        false,
        Value::Null,
    )
    .await;

    // Wrong credentials: the server's 535 is final.
    db.execute(
        "UPDATE api.connections SET deleted_at = now() WHERE id = $1",
        &[&conn],
    )
    .await
    .unwrap();
    create_connection(&mut db, &t, "smtp", Some(json!({
        "host": "127.0.0.1", "port": sink.port, "tls": "none", "username": "mailer", "password": "wrong",
        "from": ["sales@acme.example"]}))).await;
    let (out, _) = run_one(
        &db,
        &pool,
        &t,
        "email",
        json!({"to": "ann@lead.example", "subject": "S"}),
    )
    .await;
    let e = final_error(&out);
    assert!(e.contains("535"), "{e}");
    forget_jobs(&db, &t).await;
}

#[tokio::test]
async fn a_private_smtp_host_is_refused() {
    let mut db = connect().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    create_connection(
        &mut db,
        &t,
        "smtp",
        Some(json!({
        "host": "169.254.169.254", "port": 25, "tls": "none", "from": ["a@acme.example"]})),
    )
    .await;
    let (out, _) = run_one(
        &db,
        &pool,
        &t,
        "email",
        json!({"to": "x@lead.example", "subject": "S"}),
    )
    .await;
    let e = final_error(&out);
    assert!(
        e.contains("egress refused: 169.254.169.254 is a cloud metadata service address"),
        "{e}"
    );
    forget_jobs(&db, &t).await;
}

#[tokio::test]
async fn without_a_connection_email_goes_out_as_flowtrack_with_the_workspace_as_reply_to() {
    let db = connect().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let (out, _) = run_one(
        &db,
        &pool,
        &t,
        "email",
        json!({
        "to": "ann@lead.example", "subject": "Outbox", "body": "hi", "from": "sales@acme.example"}),
    )
    .await;
    let Outcome::Done(result) = &out else {
        panic!("{out:?}")
    };
    assert_eq!(result["transport"], "outbox");
    let raw = std::fs::read_to_string(result["file"].as_str().unwrap()).unwrap();
    assert!(
        raw.contains("From: FlowTrack <no-reply@flowtrack.test>"),
        "{raw}"
    );
    assert!(raw.contains("Reply-To: sales@acme.example"), "{raw}");
    let _ = std::fs::remove_file(result["file"].as_str().unwrap());
    forget_jobs(&db, &t).await;
}
