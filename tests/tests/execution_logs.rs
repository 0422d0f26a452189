//! Execution logs (issue 11, deliverable 3): every step start, finish,
//! failure and retry leaves a line with level, message, data and duration,
//! written in the event's transaction with one INSERT per transaction;
//! `api.explain_execution` shows them, to the execution's workspace only.

use flowtrack_tests::{connect, connect_authenticator, fixtures, pgrst, Request};
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

fn node(id: &str, t: &str, config: Value) -> Value {
    json!({"id": id, "type": t, "position": {"x": 0, "y": 0}, "data": {"label": id, "config": config}})
}

fn edge(id: &str, s: &str, t: &str) -> Value {
    json!({"id": id, "source": s, "target": t})
}

/// trigger -> HTTP request (a job) -> one-minute delay.
fn flow() -> Value {
    json!({"nodes": [node("s", "TRIGGER_MANUAL", json!({})),
                     node("h", "ACTION_HTTP_REQUEST", json!({"url": "https://example.com/hook"})),
                     node("w", "LOGIC_DELAY", json!({"minutes": 1}))],
           "edges": [edge("e1", "s", "h"), edge("e2", "h", "w")]})
}

/// A workflow of `flow`, published through the API and active, in `t`.
async fn active(db: &Client, t: &fixtures::Tenant, flow: Value) -> Uuid {
    fixtures::active_workflow(db, t, flow).await
}

async fn start(db: &Client, t: &fixtures::Tenant, wf: Uuid, key: &str) -> Uuid {
    db.query_one(
        "SELECT execution_id FROM internal.start_execution($1, $2, 'manual', '{}', $3)",
        &[&t.workspace_id, &wf, &key],
    )
    .await
    .unwrap()
    .get(0)
}

/// One log line as stored, with its step's node.
#[derive(Debug)]
struct Line {
    node: Option<String>,
    level: String,
    message: String,
    duration_ms: Option<i64>,
    data: Option<Value>,
}

async fn lines(db: &Client, e: Uuid) -> Vec<Line> {
    db.query(
        "SELECT s.node_key, l.level, l.message, l.duration_ms, l.data
           FROM api.execution_logs l LEFT JOIN api.execution_steps s ON s.id = l.step_id
          WHERE l.execution_id = $1 ORDER BY l.created_at, l.seq",
        &[&e],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| Line {
        node: r.get(0),
        level: r.get(1),
        message: r.get(2),
        duration_ms: r.get(3),
        data: r.get(4),
    })
    .collect()
}

fn summary(lines: &[Line]) -> Vec<(String, String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l.node.clone().unwrap_or_default(),
                l.level.clone(),
                l.message.clone(),
            )
        })
        .collect()
}

fn s3(node: &str, level: &str, message: &str) -> (String, String, String) {
    (node.into(), level.into(), message.into())
}

/// Make the workspace's queued jobs due now (a retry waits out its backoff).
async fn due_now(db: &Client, ws: Uuid) {
    db.execute(
        "UPDATE internal.jobs SET run_at = now() WHERE workspace_id = $1 AND status = 'queued'",
        &[&ws],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn action_retry_delay_and_failure_leave_their_lines() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    let wf = active(&db, &t, flow()).await;

    // The ingress, through the API: the trigger ran inline (one line, 0 ms),
    // the HTTP step started (a job).
    let mut api = connect_authenticator().await;
    let member = Request::with_claims(t.claims("member")).method("POST");
    let rows = pgrst(
        &mut api,
        &member,
        "SELECT * FROM api.start_execution($1, '{}', 'logs-1')",
        &[&wf],
    )
    .await
    .unwrap();
    let e: Uuid = rows[0]["execution_id"].as_str().unwrap().parse().unwrap();
    let got = lines(&db, e).await;
    assert_eq!(
        summary(&got),
        vec![
            s3("s", "info", "completed"),
            s3("h", "info", "started (http_request)")
        ]
    );
    assert_eq!(got[0].duration_ms, Some(0));
    assert_eq!(got[1].duration_ms, None, "a start has no duration yet");

    // Attempt 1 fails and will be retried: a warn line with the attempt.
    let leases = fixtures::lease_jobs(&db, t.workspace_id).await;
    assert_eq!(leases.len(), 1);
    let out = fixtures::fail_jobs(&db, &leases, "HTTP 503", true, json!({"status": 503})).await;
    assert_eq!(out, vec!["retrying"]);
    let got = lines(&db, e).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        (got[2].node.as_deref(), got[2].level.as_str()),
        (Some("h"), "warn")
    );
    assert_eq!(got[2].message, "attempt 1 failed, retrying: HTTP 503");
    let data = got[2].data.clone().expect("a retry carries its attempt");
    assert_eq!(data["attempt"], 1);
    assert!(data["run_at"].is_string(), "{data}");
    assert!(got[2].duration_ms.unwrap() >= 0);

    // Attempt 2 succeeds: the step completes and the delay starts waiting.
    due_now(&db, t.workspace_id).await;
    let leases = fixtures::lease_jobs(&db, t.workspace_id).await;
    let out = fixtures::complete_jobs(
        &db,
        &leases,
        json!({"status": 200, "body": "secret output"}),
    )
    .await;
    assert_eq!(out, vec!["completed"]);
    let got = lines(&db, e).await;
    assert_eq!(
        summary(&got)[3..],
        [s3("h", "info", "completed"), s3("w", "info", "waiting 60s")]
    );
    let h_took = got[3].duration_ms.expect("a finish has a duration");
    assert!(h_took >= 0);
    // A line references its step; it never copies the step's output.
    let all: String = got
        .iter()
        .map(|l| format!("{} {:?}", l.message, l.data))
        .collect();
    assert!(!all.contains("secret output"), "{all}");

    // The delay comes due (pg_cron's or the worker's run_due_steps).
    db.execute(
        "UPDATE api.execution_steps SET started_at = now() - interval '61 seconds',
                run_at = now() - interval '1 second'
          WHERE execution_id = $1 AND status = 'scheduled'",
        &[&e],
    )
    .await
    .unwrap();
    db.execute("SELECT internal.run_due_steps()", &[])
        .await
        .unwrap();
    let got = lines(&db, e).await;
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(summary(&got)[5], s3("w", "info", "completed"));
    let waited = got[5].duration_ms.unwrap();
    assert!((61_000..3_600_000).contains(&waited), "waited {waited} ms");

    // explain_execution shows them per node, in order.
    let explained = pgrst(
        &mut api,
        &Request::with_claims(t.claims("viewer")),
        "SELECT * FROM api.explain_execution($1)",
        &[&e],
    )
    .await
    .unwrap();
    let nodes: Vec<&str> = explained
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, vec!["s", "h", "w"]);
    let messages = |i: usize| -> Vec<String> {
        explained[i]["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(messages(0), vec!["completed"]);
    assert_eq!(
        messages(1),
        vec![
            "started (http_request)",
            "attempt 1 failed, retrying: HTTP 503",
            "completed"
        ]
    );
    assert_eq!(messages(2), vec!["waiting 60s", "completed"]);
    assert_eq!(explained[1]["log"][2]["duration_ms"], json!(h_took));
    assert_eq!(explained[1]["log"][1]["level"], "warn");
    assert!(explained.iter().all(|r| r["runs"] == true), "{explained:?}");

    // A job that fails for good: the step's error line, then the
    // execution's (no error edge), which names the node.
    let e2 = start(&db, &t, wf, "logs-2").await;
    let leases = fixtures::lease_jobs(&db, t.workspace_id).await;
    let out = fixtures::fail_jobs(&db, &leases, "HTTP 410 gone", false, Value::Null).await;
    assert_eq!(out, vec!["dead"]);
    let got = lines(&db, e2).await;
    assert_eq!(
        summary(&got),
        vec![
            s3("s", "info", "completed"),
            s3("h", "info", "started (http_request)"),
            s3("h", "error", "failed: HTTP 410 gone"),
            s3(
                "",
                "error",
                "node \"h\": the step failed: {\"error\":\"HTTP 410 gone\"}"
            ),
        ]
    );
    assert!(got[2].duration_ms.is_some());
    assert_eq!(
        got[3].data.clone().unwrap(),
        json!({"code": "step_failed", "node": "h"})
    );
    // explain_execution files the execution's line under its node.
    let explained = pgrst(
        &mut api,
        &Request::with_claims(t.claims("viewer")),
        "SELECT * FROM api.explain_execution($1)",
        &[&e2],
    )
    .await
    .unwrap();
    assert_eq!(explained[1]["node"], "h");
    assert_eq!(explained[1]["log"].as_array().unwrap().len(), 3);
    assert_eq!(explained[2]["node"], "w");
    assert_eq!(explained[2]["log"], json!([]));
}

#[tokio::test]
async fn lines_share_their_transaction_and_die_with_it() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    let wf = active(&db, &t, flow()).await;

    // Rolled back: the execution and its lines are gone together.
    let tx = db.transaction().await.unwrap();
    let gone: Uuid = tx
        .query_one(
            "SELECT execution_id FROM internal.start_execution($1, $2, 'manual', '{}', 'rolled-back')",
            &[&t.workspace_id, &wf],
        )
        .await
        .unwrap()
        .get(0);
    tx.rollback().await.unwrap();
    assert!(lines(&db, gone).await.is_empty());

    // A savepoint rolled back takes its advance's lines, and only those.
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("SAVEPOINT a").await.unwrap();
    let undone: Uuid = tx
        .query_one(
            "SELECT execution_id FROM internal.start_execution($1, $2, 'manual', '{}', 'undone')",
            &[&t.workspace_id, &wf],
        )
        .await
        .unwrap()
        .get(0);
    tx.batch_execute("ROLLBACK TO SAVEPOINT a").await.unwrap();
    let kept: Uuid = tx
        .query_one(
            "SELECT execution_id FROM internal.start_execution($1, $2, 'manual', '{}', 'kept')",
            &[&t.workspace_id, &wf],
        )
        .await
        .unwrap()
        .get(0);
    // Before commit the lines are not written yet: they go at commit, in
    // this transaction.
    let before: i64 = tx
        .query_one(
            "SELECT count(*) FROM api.execution_logs WHERE execution_id = $1",
            &[&kept],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, 0);
    let xid: String = tx
        .query_one("SELECT pg_current_xact_id()::xid::text", &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert!(lines(&db, undone).await.is_empty());
    assert_eq!(lines(&db, kept).await.len(), 2);
    let same_tx: i64 = db
        .query_one(
            "SELECT count(*) FROM api.execution_logs WHERE execution_id = $1 AND xmin::text = $2",
            &[&kept, &xid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        same_tx, 2,
        "the lines are rows of the advancing transaction"
    );

    // A step whose advance raises inside the job report (its node is not
    // in the version): the lines of the failed advance roll back with its
    // subtransaction, and the failure is logged instead.
    let broken = start(&db, &t, wf, "broken").await;
    db.execute(
        "UPDATE api.execution_steps SET node_key = 'ghost' WHERE execution_id = $1 AND node_key = 'h'",
        &[&broken],
    )
    .await
    .unwrap();
    let leases = fixtures::lease_jobs(&db, t.workspace_id).await;
    assert_eq!(leases.len(), 2, "the kept and the broken execution's jobs");
    let out = fixtures::complete_jobs(&db, &leases, json!({"status": 200})).await;
    assert_eq!(out, vec!["completed", "completed"]);
    assert_eq!(
        summary(&lines(&db, broken).await),
        vec![
            s3("s", "info", "completed"),
            s3("ghost", "info", "started (http_request)"),
            s3(
                "ghost",
                "error",
                "failed: step_id: node \"ghost\" is not in the execution's version"
            ),
        ]
    );
    assert_eq!(
        summary(&lines(&db, kept).await)[2..],
        [s3("h", "info", "completed"), s3("w", "info", "waiting 60s")]
    );
}

/// The lines one transaction wrote, by its xid: (lines, distinct created_at,
/// distinct seq, max seq). One INSERT numbers its rows 1..n and stamps them
/// with one clock reading; a second INSERT would restart seq at 1 and read
/// the clock again.
async fn written_by(db: &Client, xid: &str) -> (i64, i64, i64, i32) {
    let r = db
        .query_one(
            "SELECT count(*), count(DISTINCT created_at), count(DISTINCT seq), coalesce(max(seq), 0)
               FROM api.execution_logs WHERE xmin::text = $1",
            &[&xid],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test]
async fn one_insert_per_transaction_however_much_it_advances() {
    let mut db = connect().await;
    let a = fixtures::tenant(&db, "pro").await;
    let b = fixtures::tenant(&db, "pro").await;
    let wa = active(&db, &a, flow()).await;
    let wb = active(&db, &b, flow()).await;

    // Three ingresses in one transaction: 3 x 2 lines, one INSERT.
    let tx = db.transaction().await.unwrap();
    let xid: String = tx
        .query_one("SELECT pg_current_xact_id()::xid::text", &[])
        .await
        .unwrap()
        .get(0);
    for (k, (t, wf)) in [(&a, wa), (&a, wa), (&b, wb)].into_iter().enumerate() {
        tx.execute(
            "SELECT internal.start_execution($1, $2, 'manual', '{}', $3)",
            &[&t.workspace_id, &wf, &format!("batch-{k}")],
        )
        .await
        .unwrap();
    }
    let ins_before: i64 = tx
        .query_one(
            "SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_xact_user_tables
              WHERE relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'api.execution_logs'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ins_before, 0, "nothing is written before commit");
    tx.commit().await.unwrap();
    assert_eq!(written_by(&db, &xid).await, (6, 1, 6, 6));

    // The worker's batch: one complete_jobs for both workspaces' jobs, three
    // executions advanced (HTTP step completed, delay waiting), one INSERT
    // of lines of two workspaces.
    let mut leases = fixtures::lease_jobs(&db, a.workspace_id).await;
    leases.extend(fixtures::lease_jobs(&db, b.workspace_id).await);
    assert_eq!(leases.len(), 3);
    let ids: Vec<Uuid> = leases.iter().map(|l| l.id).collect();
    let fences: Vec<i32> = leases.iter().map(|l| l.fence).collect();
    let results = vec![json!({"status": 200}); 3];
    let tx = db.transaction().await.unwrap();
    let xid: String = tx
        .query_one("SELECT pg_current_xact_id()::xid::text", &[])
        .await
        .unwrap()
        .get(0);
    tx.execute(
        "SELECT internal.complete_jobs('test-worker', $1, $2, $3)",
        &[&ids, &fences, &results],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written_by(&db, &xid).await, (6, 1, 6, 6));
    let workspaces: i64 = db
        .query_one(
            "SELECT count(DISTINCT workspace_id) FROM api.execution_logs WHERE xmin::text = $1",
            &[&xid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(workspaces, 2);
}

#[tokio::test]
async fn another_workspace_sees_no_line_and_no_execution() {
    let db = connect().await;
    let a = fixtures::tenant(&db, "pro").await;
    let b = fixtures::tenant(&db, "pro").await;
    let wa = active(&db, &a, flow()).await;
    let e = start(&db, &a, wa, "private").await;
    let mut api = connect_authenticator().await;

    let own = pgrst(
        &mut api,
        &Request::with_claims(a.claims("viewer")),
        "SELECT * FROM api.execution_logs WHERE execution_id = $1",
        &[&e],
    )
    .await
    .unwrap();
    assert_eq!(own.len(), 2);

    let theirs = pgrst(
        &mut api,
        &Request::with_claims(b.claims("owner")),
        "SELECT * FROM api.execution_logs WHERE execution_id = $1",
        &[&e],
    )
    .await
    .unwrap();
    assert!(theirs.is_empty());
    // The same answer as for an execution that does not exist.
    let foreign = pgrst(
        &mut api,
        &Request::with_claims(b.claims("owner")),
        "SELECT * FROM api.explain_execution($1)",
        &[&e],
    )
    .await
    .unwrap_err();
    let missing = pgrst(
        &mut api,
        &Request::with_claims(b.claims("owner")),
        "SELECT * FROM api.explain_execution($1)",
        &[&Uuid::new_v4()],
    )
    .await
    .unwrap_err();
    assert_eq!((foreign.status, foreign.code.as_str()), (404, "PT404"));
    assert_eq!(
        (missing.status, missing.code.as_str()),
        (foreign.status, foreign.code.as_str())
    );
    assert_eq!(
        foreign.message,
        format!("execution_id: no execution {e} in this workspace")
    );

    // Lines cannot be written through the API, even for one's own workspace.
    let err = pgrst(
        &mut api,
        &Request::with_claims(a.claims("owner")).method("POST"),
        "INSERT INTO api.execution_logs (workspace_id, execution_id, message) VALUES ($1, $2, 'forged') RETURNING 1",
        &[&a.workspace_id, &e],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "42501");
}

#[tokio::test]
async fn logging_is_a_superuser_switch() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    let wf = active(&db, &t, flow()).await;
    db.batch_execute("SET flowtrack.execution_logs = off")
        .await
        .unwrap();
    let quiet = start(&db, &t, wf, "quiet").await;
    db.batch_execute("RESET flowtrack.execution_logs")
        .await
        .unwrap();
    let loud = start(&db, &t, wf, "loud").await;
    assert!(lines(&db, quiet).await.is_empty());
    assert_eq!(lines(&db, loud).await.len(), 2);
    // Steps are written either way.
    let steps: i64 = db
        .query_one(
            "SELECT count(*) FROM api.execution_steps WHERE execution_id = $1",
            &[&quiet],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(steps, 2);

    // Neither a tenant nor the worker turns its own logging off.
    let mut api = connect_authenticator().await;
    let err = pgrst(
        &mut api,
        &Request::with_claims(t.claims("owner")).method("POST"),
        "SELECT set_config('flowtrack.execution_logs', 'off', true)",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "42501", "{err:?}");
}
