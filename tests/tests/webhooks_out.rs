//! Outgoing webhooks (issue 10, part 4): signed per the Standard Webhooks
//! spec and checked by the `standardwebhooks` package from PyPI, secrets
//! shown once and rotated with an overlap, retries with the kind's backoff,
//! dead deliveries, auto-disable after consecutive failures, and the
//! execution events.
//!
//! The worker's own code performs every delivery (`deliver::perform` over a
//! pool logged in as `flowtrack_worker`, reports through `claim::report`)
//! against a real HTTP sink on 127.0.0.1. Jobs are leased per workspace
//! (`fixtures::lease_jobs`), so tests running in parallel never take each
//! other's jobs, and a retry's wait is skipped by moving run_at after its
//! value was checked.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use flowtrack_tests::fixtures::{self, Tenant};
use flowtrack_tests::graphs::{active, edge, node};
use flowtrack_tests::http_sink::{Captured, Reply, Sink};
use flowtrack_tests::{column, connect, connect_authenticator, pgrst, ApiError, Request};
use flowtrack_worker::db::Pool;
use flowtrack_worker::job::{Job, Outcome};
use flowtrack_worker::{claim, deliver};
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

/// A pool logged in as the worker role (over the superuser's socket, where
/// the test cluster trusts local logins). The sinks live on 127.0.0.1, which
/// the worker's egress guard refuses unless the development allowlist names
/// it: set before any delivery reads it.
fn worker_pool() -> Pool {
    static ALLOW_LOOPBACK: std::sync::Once = std::sync::Once::new();
    ALLOW_LOOPBACK.call_once(|| std::env::set_var("FLOWTRACK_EGRESS_ALLOW", "127.0.0.1"));
    let su = std::env::var("FLOWTRACK_TEST_DATABASE_URL").unwrap();
    let url = su.replace("user=postgres", "user=flowtrack_worker");
    assert_ne!(url, su, "superuser URL has no user=postgres: {su}");
    flowtrack_worker::db::pool(&url, 2).unwrap()
}

fn as_role(t: &Tenant, role: &str) -> Request {
    Request::with_claims(t.claims(role)).method("POST")
}

/// POST /rpc/create_webhook_endpoint as `role`: (id, secret).
async fn create_endpoint(
    api: &mut Client,
    t: &Tenant,
    role: &str,
    url: &str,
    events: &[&str],
) -> Result<(Uuid, String), ApiError> {
    let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    let rows = pgrst(
        api,
        &as_role(t, role),
        "SELECT * FROM api.create_webhook_endpoint($1, $2, 'test sink')",
        &[&url, &events],
    )
    .await?;
    Ok((
        rows[0]["id"].as_str().unwrap().parse().unwrap(),
        rows[0]["secret"].as_str().unwrap().to_string(),
    ))
}

async fn rotate(api: &mut Client, t: &Tenant, endpoint: Uuid, overlap: &str) -> String {
    let rows = pgrst(
        api,
        &as_role(t, "owner"),
        "SELECT * FROM api.rotate_webhook_secret($1, $2::text::interval)",
        &[&endpoint, &overlap],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["id"], endpoint.to_string());
    rows[0]["secret"].as_str().unwrap().to_string()
}

/// A member adds a lead: lead.created for every subscribed endpoint.
async fn add_lead(api: &mut Client, t: &Tenant) -> Uuid {
    let rows = pgrst(
        api,
        &as_role(t, "member"),
        "INSERT INTO api.leads (email) VALUES ($1) RETURNING id",
        &[&format!("{}@lead.example", Uuid::new_v4().simple())],
    )
    .await
    .unwrap();
    rows[0]["id"].as_str().unwrap().parse().unwrap()
}

/// One performed job: what the worker saw and what the queue answered.
struct Done {
    job: Job,
    outcome: Outcome,
    verdict: String,
}

/// Play the worker for this workspace: lease its due jobs, perform each
/// with the worker's code, report each through the worker's own call, in
/// the order they were queued.
async fn work(db: &Client, pool: &Pool, ws: Uuid) -> Vec<Done> {
    let leases = fixtures::lease_jobs(db, ws).await;
    let ids: Vec<Uuid> = leases.iter().map(|l| l.id).collect();
    let rows = db
        .query(
            "SELECT id, workspace_id, kind, payload, attempts, claims FROM internal.jobs
              WHERE id = ANY($1) ORDER BY created_at, id",
            &[&ids],
        )
        .await
        .unwrap();
    let reporter = pool.get().await.unwrap();
    let mut done = Vec::new();
    for r in rows {
        let job = Job {
            id: r.get(0),
            workspace_id: r.get(1),
            kind: r.get(2),
            payload: r.get(3),
            attempt: r.get(4),
            fence: r.get(5),
        };
        let outcome = deliver::perform(pool, &job).await;
        let verdict = report(&reporter, &job, &outcome).await;
        done.push(Done {
            job,
            outcome,
            verdict,
        });
    }
    done
}

/// Report one outcome through the worker's own batched calls.
async fn report(client: &flowtrack_worker::db::Client, job: &Job, outcome: &Outcome) -> String {
    let verdicts = match outcome {
        Outcome::Done(result) => {
            claim::complete(
                client,
                "test-worker",
                &[claim::Completion {
                    id: job.id,
                    fence: job.fence,
                    result: result.clone(),
                }],
            )
            .await
        }
        Outcome::Failed {
            error,
            retry,
            result,
        } => {
            claim::fail(
                client,
                "test-worker",
                &[claim::Failure {
                    id: job.id,
                    fence: job.fence,
                    error: error.clone(),
                    retry: *retry,
                    result: result.clone(),
                }],
            )
            .await
        }
    };
    verdicts.expect("report").remove(0).1
}

/// Make the workspace's queued jobs due now: the wait was checked already.
async fn skip_backoff(db: &Client, ws: Uuid) {
    db.execute(
        "UPDATE internal.jobs SET run_at = now() WHERE workspace_id = $1 AND status = 'queued'",
        &[&ws],
    )
    .await
    .unwrap();
}

/// Verify each (secret, request) with the `standardwebhooks` package.
fn verify(cases: &[(&str, &Captured)]) -> Vec<Result<(), String>> {
    let python =
        std::env::var("FLOWTRACK_TEST_PYTHON").expect("FLOWTRACK_TEST_PYTHON: run with ./dev test");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/verify_webhooks.py");
    let input: Vec<Value> = cases
        .iter()
        .map(|(secret, c)| {
            let headers: serde_json::Map<String, Value> = c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect();
            json!({"secret": secret, "headers": headers, "body": c.body_text()})
        })
        .collect();
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(input).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "verify_webhooks.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["version"], "1.1.0", "the pinned standardwebhooks");
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match r["ok"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(r["error"].as_str().unwrap_or("?").to_string()),
        })
        .collect()
}

fn random_secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(Uuid::new_v4().as_bytes())
    )
}

async fn delivery(db: &Client, job: Uuid) -> Value {
    let row = db
        .query_one(
            "SELECT to_jsonb(d) FROM api.webhook_deliveries d WHERE job_id = $1",
            &[&job],
        )
        .await
        .unwrap();
    row.get(0)
}

async fn endpoint(db: &Client, id: Uuid) -> Value {
    db.query_one(
        "SELECT to_jsonb(e) FROM api.webhook_endpoints e WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

async fn endpoint_events(db: &Client, id: Uuid) -> Vec<(String, Option<String>, Option<Uuid>)> {
    db.query(
        "SELECT event, reason, actor_user_id FROM api.webhook_endpoint_events
          WHERE endpoint_id = $1 ORDER BY created_at, event",
        &[&id],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn a_delivery_is_signed_verified_by_standardwebhooks_and_recorded() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let sink = Sink::start(Reply::status(200));
    let (id, secret) = create_endpoint(&mut api, &t, "admin", &sink.url, &["lead.created"])
        .await
        .unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    assert_eq!(key.len(), 32);
    let lead = add_lead(&mut api, &t).await;

    let done = work(&db, &pool, t.workspace_id).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].verdict, "completed", "{:?}", done[0].outcome);
    let seen = sink.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    let row = delivery(&db, done[0].job.id).await;
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("webhook-id"), row["id"].as_str());
    assert_eq!(
        req.header("idempotency-key"),
        Some(done[0].job.idempotency_key().as_str())
    );
    let ts: i64 = req.header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((ts - unix_now()).abs() < 60, "timestamp {ts}");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["type"], "lead.created");
    assert_eq!(body["id"], row["id"]);
    assert_eq!(body["data"]["id"], lead.to_string());
    assert_eq!(body, row["payload"], "the body sent is the body logged");

    // The independent verifier accepts it under the secret, and only that.
    let results = verify(&[(&secret, req), (&random_secret(), req)]);
    assert_eq!(results[0], Ok(()));
    assert!(results[1].is_err(), "another secret must not verify");
    // A body changed by one byte no longer verifies.
    let mut tampered = req.clone();
    tampered.body = req
        .body_text()
        .replace("lead.created", "lead.creatdd")
        .into_bytes();
    assert!(verify(&[(&secret, &tampered)])[0].is_err());

    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["response_status"], 200);
    assert_eq!(row["response_body"], "sink says 200");
    assert!(row["duration_ms"].as_i64().unwrap() >= 0);
    assert!(!row["delivered_at"].is_null());
    assert_eq!(endpoint(&db, id).await["consecutive_failures"], 0);
    let left: Vec<Uuid> = column(
        &db,
        "SELECT id FROM internal.jobs WHERE id = $1",
        &[&done[0].job.id],
    )
    .await;
    assert!(left.is_empty(), "a delivered job leaves the queue");
    assert_eq!(
        endpoint_events(&db, id).await,
        vec![("created".into(), None, Some(t.users["admin"]))]
    );
}

#[tokio::test]
async fn the_secret_is_shown_once_and_only_a_live_lease_reads_it() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let other = fixtures::tenant(&db, "pro").await;
    let sink = Sink::start(Reply::status(200));
    let (id, secret) = create_endpoint(&mut api, &t, "owner", &sink.url, &["lead.created"])
        .await
        .unwrap();
    let b64 = secret.strip_prefix("whsec_").unwrap().to_string();
    add_lead(&mut api, &t).await;

    // Nothing an owner can read shows it again.
    let owner_get = Request::with_claims(t.claims("owner"));
    for sql in [
        "SELECT * FROM api.webhook_endpoints",
        "SELECT * FROM api.webhook_endpoint_events",
        "SELECT * FROM api.webhook_deliveries",
    ] {
        let rows = pgrst(&mut api, &owner_get, sql, &[]).await.unwrap();
        assert!(!rows.is_empty(), "{sql}");
        let text = Value::Array(rows).to_string();
        assert!(!text.contains(&b64), "{sql} shows the secret");
    }
    for sql in [
        "SELECT * FROM internal.webhook_secrets",
        "SELECT internal.webhook_signing_secrets(gen_random_uuid(), 1)",
        "INSERT INTO api.webhook_endpoints (url, events) VALUES ('https://x.example', '{lead.created}') RETURNING id",
    ] {
        let err = pgrst(&mut api, &as_role(&t, "owner"), sql, &[])
            .await
            .expect_err(sql);
        assert_eq!((err.status, err.code.as_str()), (403, "42501"), "{sql}: {err}");
    }
    // Members neither make nor rotate endpoints; another tenant finds none.
    let err = create_endpoint(&mut api, &t, "member", &sink.url, &["lead.created"])
        .await
        .unwrap_err();
    assert_eq!(err.code, "42501", "{err}");
    for (who, role, code) in [(&t, "member", "42501"), (&other, "owner", "PT404")] {
        let err = pgrst(
            &mut api,
            &as_role(who, role),
            "SELECT * FROM api.rotate_webhook_secret($1)",
            &[&id],
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, code, "{role}: {err}");
    }
    // Bad input names the field.
    for (url, events, field) in [
        ("ftp://x.example", vec!["lead.created"], "url:"),
        ("https://x.example", vec![], "events:"),
        (
            "https://x.example",
            vec!["lead.deleted"],
            "events: unknown event",
        ),
    ] {
        let err = create_endpoint(&mut api, &t, "owner", url, &events)
            .await
            .unwrap_err();
        assert_eq!(err.code, "22023", "{err}");
        assert!(err.message.starts_with(field), "{err}");
        assert!(err.hint.is_some(), "{err}");
    }
    let err = pgrst(
        &mut api,
        &as_role(&t, "owner"),
        "SELECT * FROM api.rotate_webhook_secret($1, '-1 hour')",
        &[&id],
    )
    .await
    .unwrap_err();
    assert!(err.message.starts_with("overlap:"), "{err}");

    // At rest: ciphertext only.
    let stored: Vec<Vec<u8>> = column(
        &db,
        "SELECT ciphertext FROM internal.webhook_secrets WHERE endpoint_id = $1",
        &[&id],
    )
    .await;
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].windows(b64.len()).any(|w| w == b64.as_bytes()));
    let in_queue: Vec<String> = column(
        &db,
        "SELECT payload::text FROM internal.jobs WHERE workspace_id = $1",
        &[&t.workspace_id],
    )
    .await;
    assert_eq!(in_queue.len(), 1);
    assert!(
        !in_queue[0].contains(&b64),
        "the job payload holds no secret"
    );

    // The worker reads it only for a job it holds a live lease on.
    let worker = worker_pool().get().await.unwrap();
    let job: Uuid = in_queue_id(&db, t.workspace_id).await;
    let ask = |fence: i32| {
        let worker = &worker;
        async move {
            worker
                .query_one(
                    "SELECT internal.webhook_signing_secrets($1, $2)",
                    &[&job, &fence],
                )
                .await
        }
    };
    let err = ask(1).await.unwrap_err();
    assert_eq!(
        err.code().unwrap().code(),
        "PT409",
        "queued, not leased: {err}"
    );
    let lease = fixtures::lease_jobs(&db, t.workspace_id).await[0];
    let err = ask(lease.fence + 1).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "PT409", "another fence: {err}");
    let secrets: Vec<String> = ask(lease.fence).await.unwrap().get(0);
    assert_eq!(secrets, vec![secret.clone()]);
    db.execute(
        "UPDATE internal.jobs SET locked_until = now() - interval '1 second' WHERE id = $1",
        &[&job],
    )
    .await
    .unwrap();
    let err = ask(lease.fence).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "PT409", "expired lease: {err}");
    let err = worker
        .query("SELECT * FROM internal.webhook_secrets", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");

    // Soft delete destroys the secrets.
    pgrst(
        &mut api,
        &as_role(&t, "owner").method("PATCH"),
        "UPDATE api.webhook_endpoints SET deleted_at = now() WHERE id = $1 RETURNING id",
        &[&id],
    )
    .await
    .unwrap();
    let left: Vec<i64> = column(
        &db,
        "SELECT count(*) FROM internal.webhook_secrets WHERE endpoint_id = $1",
        &[&id],
    )
    .await;
    assert_eq!(left, vec![0]);
}

async fn in_queue_id(db: &Client, ws: Uuid) -> Uuid {
    column(
        db,
        "SELECT id FROM internal.jobs WHERE workspace_id = $1",
        &[&ws],
    )
    .await[0]
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_during_the_overlap_then_only_the_new() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let sink = Sink::start(Reply::status(204));
    let (id, first) = create_endpoint(&mut api, &t, "owner", &sink.url, &["lead.created"])
        .await
        .unwrap();
    let second = rotate(&mut api, &t, id, "1 hour").await;
    assert_ne!(first, second);
    add_lead(&mut api, &t).await;
    assert_eq!(
        work(&db, &pool, t.workspace_id).await[0].verdict,
        "completed"
    );
    let during = sink.seen()[0].clone();
    assert_eq!(
        during
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    assert_eq!(
        verify(&[(&first, &during), (&second, &during)]),
        vec![Ok(()), Ok(())],
        "both secrets verify during the overlap"
    );

    // A second rotation with a one-second overlap: once it is over, only the
    // newest secret signs.
    let third = rotate(&mut api, &t, id, "1 second").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    add_lead(&mut api, &t).await;
    assert_eq!(
        work(&db, &pool, t.workspace_id).await[0].verdict,
        "completed"
    );
    let after = sink.seen()[1].clone();
    assert_eq!(
        after
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    let results = verify(&[(&third, &after), (&second, &after), (&first, &after)]);
    assert_eq!(results[0], Ok(()));
    assert!(results[1].is_err() && results[2].is_err(), "{results:?}");
    let events: Vec<String> = endpoint_events(&db, id)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(events, ["created", "secret_rotated", "secret_rotated"]);
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_with_the_kinds_backoff_then_dead() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let sink = Sink::start(Reply::status(500));
    let (id, secret) = create_endpoint(&mut api, &t, "owner", &sink.url, &["lead.created"])
        .await
        .unwrap();
    add_lead(&mut api, &t).await;
    let kind = db
        .query_one(
            "SELECT max_attempts, backoff_base_seconds, backoff_max_seconds
               FROM internal.job_kinds WHERE kind = 'webhook'",
            &[],
        )
        .await
        .unwrap();
    let (max_attempts, base, cap): (i32, f64, f64) = (kind.get(0), kind.get(1), kind.get(2));
    assert!(max_attempts >= 2);

    let mut job = None;
    for attempt in 1..=max_attempts {
        let done = work(&db, &pool, t.workspace_id).await;
        assert_eq!(done.len(), 1, "attempt {attempt}");
        let d = &done[0];
        assert_eq!(d.job.attempt, attempt);
        assert!(
            matches!(&d.outcome, Outcome::Failed { retry: true, error, .. } if error.contains("500")),
            "{:?}",
            d.outcome
        );
        job = Some(d.job.id);
        let row = delivery(&db, d.job.id).await;
        assert_eq!(row["attempts"], attempt);
        assert_eq!(row["response_status"], 500);
        if attempt < max_attempts {
            assert_eq!(d.verdict, "retrying");
            assert_eq!(row["status"], "retrying");
            // Backed off by the kind's policy: half to all of
            // base * 2^(attempt-1), capped.
            let wait: f64 = db
                .query_one(
                    "SELECT extract(epoch FROM run_at - now())::float8 FROM internal.jobs WHERE id = $1",
                    &[&d.job.id],
                )
                .await
                .unwrap()
                .get(0);
            let full = cap.min(base * 2f64.powi(attempt - 1));
            assert!(
                wait > full * 0.5 - 2.0 && wait <= full + 0.01,
                "attempt {attempt}: retry in {wait:.2} s, expected {:.1}..{full:.1}",
                full * 0.5
            );
            assert!(
                work(&db, &pool, t.workspace_id).await.is_empty(),
                "not due before its backoff"
            );
            skip_backoff(&db, t.workspace_id).await;
        } else {
            assert_eq!(d.verdict, "dead");
            assert_eq!(row["status"], "failed");
            assert!(row["last_error"].as_str().unwrap().contains("500"));
        }
    }
    let job = job.unwrap();
    let reason: Vec<String> = column(
        &db,
        "SELECT reason FROM internal.dead_jobs WHERE id = $1",
        &[&job],
    )
    .await;
    assert_eq!(reason, ["max_attempts"]);

    // Every attempt: the same webhook-id and Idempotency-Key, a fresh
    // timestamp, a valid signature.
    let seen = sink.seen();
    assert_eq!(seen.len(), max_attempts as usize);
    let webhook_id = delivery(&db, job).await["id"].as_str().unwrap().to_string();
    for s in &seen {
        assert_eq!(s.header("webhook-id"), Some(webhook_id.as_str()));
        assert_eq!(s.header("idempotency-key"), Some(job.to_string().as_str()));
        assert_eq!(s.body, seen[0].body);
    }
    let cases: Vec<(&str, &Captured)> = seen.iter().map(|s| (secret.as_str(), s)).collect();
    assert!(verify(&cases).iter().all(Result::is_ok));
    let e = endpoint(&db, id).await;
    assert_eq!(e["consecutive_failures"], 1);
    assert_eq!(
        e["is_active"], true,
        "one failed delivery is below the threshold"
    );
}

#[tokio::test]
async fn an_endpoint_is_disabled_after_n_consecutive_failed_deliveries_and_re_enabled() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    // 410 is final: each failing delivery is dead after one attempt.
    let sink = Sink::start(Reply::status(200));
    sink.then(Reply::status(410))
        .then(Reply::status(200))
        .then(Reply::status(410))
        .then(Reply::status(410));
    let (id, _) = create_endpoint(&mut api, &t, "owner", &sink.url, &["lead.created"])
        .await
        .unwrap();
    pgrst(
        &mut api,
        &as_role(&t, "admin").method("PATCH"),
        "UPDATE api.webhook_endpoints SET failure_threshold = 2 WHERE id = $1 RETURNING id",
        &[&id],
    )
    .await
    .unwrap();
    let mut verdicts = Vec::new();
    for _ in 0..3 {
        add_lead(&mut api, &t).await;
        verdicts.extend(
            work(&db, &pool, t.workspace_id)
                .await
                .into_iter()
                .map(|d| d.verdict),
        );
    }
    assert_eq!(verdicts, ["dead", "completed", "dead"]);
    let e = endpoint(&db, id).await;
    assert_eq!(e["consecutive_failures"], 1, "a success reset the count");
    assert_eq!(e["is_active"], true);

    // The fourth fails: disabled. A delivery queued before that is not sent.
    add_lead(&mut api, &t).await;
    add_lead(&mut api, &t).await;
    let done = work(&db, &pool, t.workspace_id).await;
    let verdicts: Vec<&str> = done.iter().map(|d| d.verdict.as_str()).collect();
    assert_eq!(verdicts, ["dead", "dead"]);
    assert!(
        matches!(&done[1].outcome, Outcome::Failed { retry: false, error, .. } if error.contains("disabled")),
        "{:?}",
        done[1].outcome
    );
    assert_eq!(sink.seen().len(), 4, "nothing sent to a disabled endpoint");
    let e = endpoint(&db, id).await;
    assert_eq!(e["is_active"], false);
    assert!(!e["disabled_at"].is_null());
    let reason = e["disabled_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("2 consecutive failed deliveries") && reason.contains("410"),
        "{reason}"
    );
    let events = endpoint_events(&db, id).await;
    assert_eq!(
        events.last().unwrap(),
        &("disabled".into(), Some(reason.into()), None)
    );
    // Disabled: new events are not queued at all.
    add_lead(&mut api, &t).await;
    assert!(work(&db, &pool, t.workspace_id).await.is_empty());

    // Re-enabled by an admin: the count starts afresh and deliveries resume.
    let rows = pgrst(
        &mut api,
        &as_role(&t, "admin"),
        "SELECT * FROM api.enable_webhook_endpoint($1)",
        &[&id],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["is_active"], true);
    assert_eq!(rows[0]["consecutive_failures"], 0);
    assert!(rows[0]["disabled_reason"].is_null());
    assert_eq!(
        endpoint_events(&db, id).await.last().unwrap(),
        &("enabled".into(), None, Some(t.users["admin"]))
    );
    add_lead(&mut api, &t).await;
    let done = work(&db, &pool, t.workspace_id).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].verdict, "completed");
    let err = pgrst(
        &mut api,
        &as_role(&t, "member"),
        "SELECT * FROM api.enable_webhook_endpoint($1)",
        &[&id],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "42501", "{err}");
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_the_attempt_is_recorded() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let sink = Sink::start(Reply::status(200).after(Duration::from_secs(4)));
    let (id, _) = create_endpoint(&mut api, &t, "owner", &sink.url, &["lead.created"])
        .await
        .unwrap();
    pgrst(
        &mut api,
        &as_role(&t, "owner").method("PATCH"),
        "UPDATE api.webhook_endpoints SET timeout_ms = 1000 WHERE id = $1 RETURNING id",
        &[&id],
    )
    .await
    .unwrap();
    add_lead(&mut api, &t).await;
    let done = work(&db, &pool, t.workspace_id).await;
    assert_eq!(done[0].verdict, "retrying");
    assert!(
        matches!(&done[0].outcome, Outcome::Failed { retry: true, .. }),
        "{:?}",
        done[0].outcome
    );
    let row = delivery(&db, done[0].job.id).await;
    assert_eq!(row["status"], "retrying");
    assert!(row["response_status"].is_null());
    let ms = row["duration_ms"].as_i64().unwrap();
    assert!((900..3900).contains(&ms), "gave up after {ms} ms");
    assert!(!row["last_error"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn finished_executions_emit_execution_completed_and_failed() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let pool = worker_pool();
    let t = fixtures::tenant(&db, "pro").await;
    let hooks = Sink::start(Reply::status(200));
    let target = Sink::start(Reply::status(200));
    target.then(Reply::status(200)).then(Reply::status(400));
    let (_, secret) = create_endpoint(
        &mut api,
        &t,
        "owner",
        &hooks.url,
        &["execution.completed", "execution.failed"],
    )
    .await
    .unwrap();
    let flow = json!({
        "nodes": [node("start", "TRIGGER_MANUAL", json!({})),
                  node("call", "ACTION_WEBHOOK", json!({"url": target.url}))],
        "edges": [edge("e1", "start", "call")],
    });
    let wf = active(&db, &t, &flow).await;
    let mut runs = Vec::new();
    for key in ["ok", "fails"] {
        let exec: Uuid = db
            .query_one(
                "SELECT execution_id FROM internal.start_execution($1, $2, 'manual', '{}', $3, NULL)",
                &[&t.workspace_id, &wf, &key],
            )
            .await
            .unwrap()
            .get(0);
        // The step's own webhook: the workflow's URL, unsigned, with the
        // job's Idempotency-Key.
        let step = work(&db, &pool, t.workspace_id).await;
        assert_eq!(step.len(), 1);
        assert!(step[0].job.payload.get("step_id").is_some());
        let call = target.seen().last().unwrap().clone();
        assert_eq!(
            call.header("idempotency-key"),
            Some(step[0].job.idempotency_key().as_str())
        );
        assert!(call.header("webhook-signature").is_none());
        // The execution finished: its event is delivered, signed.
        let event = work(&db, &pool, t.workspace_id).await;
        assert_eq!(event.len(), 1, "{key}: one event");
        assert_eq!(event[0].verdict, "completed");
        runs.push(exec);
    }
    let seen = hooks.seen();
    let bodies: Vec<Value> = seen
        .iter()
        .map(|s| serde_json::from_slice(&s.body).unwrap())
        .collect();
    assert_eq!(bodies[0]["type"], "execution.completed");
    assert_eq!(bodies[0]["data"]["execution_id"], runs[0].to_string());
    assert_eq!(bodies[0]["data"]["status"], "completed");
    assert_eq!(bodies[1]["type"], "execution.failed");
    assert_eq!(bodies[1]["data"]["execution_id"], runs[1].to_string());
    assert!(!bodies[1]["data"]["error"].is_null());
    let cases: Vec<(&str, &Captured)> = seen.iter().map(|s| (secret.as_str(), s)).collect();
    assert_eq!(verify(&cases), vec![Ok(()), Ok(())]);
}
