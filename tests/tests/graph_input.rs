//! Bad input that stalls or breaks the graph engine, found with real n8n
//! workflows and variants of them: imports stay linear and capped, names
//! and ids fit the columns in characters, n8n's semantics survive import,
//! due delays of one tenant cannot hold up another's, the registry only
//! admits executors the queue runs, validation writes nothing, step budgets
//! follow the plan, and any JSON at all gets an answer or a specific
//! SQLSTATE in bounded time.

use std::time::{Duration, Instant};

use flowtrack_tests::graphs::{active, draft, edge, node, publish};
use flowtrack_tests::{connect, connect_authenticator, fixtures, pgrst, ApiError, Request};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

fn n8n_node(name: &str, t: &str) -> Value {
    json!({"name": name, "id": format!("id-{name}"), "type": format!("n8n-nodes-base.{t}"),
           "parameters": {}, "position": [0, 0]})
}

fn to(name: &str) -> Value {
    json!({"node": name, "type": "main", "index": 0})
}

async fn import_n8n(
    api: &mut Client,
    t: &fixtures::Tenant,
    wf: &Value,
) -> Result<(Uuid, Vec<Value>), ApiError> {
    let req = Request::with_claims(t.claims("member")).method("POST");
    let rows = pgrst(
        api,
        &req,
        "SELECT workflow_id, problems FROM api.import_n8n($1::text::jsonb)",
        &[&wf.to_string()],
    )
    .await?;
    let id = rows[0]["workflow_id"].as_str().unwrap().parse().unwrap();
    Ok((
        id,
        rows[0]["problems"].as_array().cloned().unwrap_or_default(),
    ))
}

async fn import_react_flow(
    api: &mut Client,
    t: &fixtures::Tenant,
    wf: Uuid,
    flow: &Value,
) -> Result<Vec<Value>, ApiError> {
    let req = Request::with_claims(t.claims("member")).method("POST");
    pgrst(
        api,
        &req,
        "SELECT * FROM api.import_react_flow($1, $2::text::jsonb)",
        &[&wf, &flow.to_string()],
    )
    .await
}

/// (edge_key, source_key, target_key, source_handle) of a workflow's edges.
async fn edges(db: &Client, wf: Uuid) -> Vec<(String, String, String, Option<String>)> {
    db.query(
        "SELECT edge_key, source_key, target_key, source_handle FROM api.workflow_edges WHERE workflow_id = $1",
        &[&wf],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

async fn node_keys(db: &Client, wf: Uuid) -> Vec<String> {
    db.query(
        "SELECT node_key FROM api.workflow_nodes WHERE workflow_id = $1 ORDER BY (ui #>> '{$rf,i}')::integer",
        &[&wf],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn has_problem(problems: &[Value], code: &str) -> bool {
    problems.iter().any(|p| p["code"] == code)
}

#[tokio::test]
async fn repeated_identical_connections_import_within_the_statement_timeout() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    api.batch_execute("SET statement_timeout = '5s'")
        .await
        .unwrap();
    let t = fixtures::tenant(&db, "enterprise").await;
    // The edge-id dedup loop was cubic in copies of one connection: 6,000
    // took 12-15 s and ignored statement_timeout until it finished.
    let copies = 6000;
    let wf = json!({"nodes": [n8n_node("A", "manualTrigger"), n8n_node("B", "noOp")],
                    "connections": {"A": {"main": [vec![to("B"); copies]]}}});
    let started = Instant::now();
    let (id, _) = import_n8n(&mut api, &t, &wf).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(edges(&db, id).await.len(), copies);
}

#[tokio::test]
async fn an_oversized_n8n_export_is_refused_with_54000() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    let n8n = json!({"nodes": [{"name": "A", "type": "n8n-nodes-base.code", "parameters": {"jsCode": "x".repeat(3 << 20)}}]});
    let err = import_n8n(&mut api, &t, &n8n).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (413, "54000"), "{err:?}");
    assert!(err.message.starts_with("workflow:"), "{err:?}");
}

#[tokio::test]
async fn react_flow_imports_have_the_n8n_cap() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    let wf = draft(&db, &t, &json!({"nodes": [], "edges": []})).await;
    let canvas = |note: &str| json!({"nodes": [{"id": "a", "type": "TRIGGER_MANUAL", "data": {"note": note}}], "edges": []});
    // Larger than a form payload (64 KiB), as an imported n8n template is.
    import_react_flow(&mut api, &t, wf, &canvas(&"y".repeat(200_000)))
        .await
        .unwrap();
    let err = import_react_flow(&mut api, &t, wf, &canvas(&"x".repeat(3 << 20)))
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (413, "54000"), "{err:?}");
    assert!(err.message.starts_with("flow:"), "{err:?}");
}

#[tokio::test]
async fn names_are_counted_in_characters_not_bytes() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    // 67 CJK characters are 201 bytes: a valid name, and a valid canvas id.
    let cjk = "語".repeat(67);
    let wf = json!({"nodes": [n8n_node(&cjk, "manualTrigger"), n8n_node("B", "noOp")],
                    "connections": {cjk.clone(): {"main": [[to("B")]]}}});
    let (id, _) = import_n8n(&mut api, &t, &wf).await.unwrap();
    assert_eq!(node_keys(&db, id).await, [cjk.clone(), "B".into()]);
    assert_eq!(edges(&db, id).await[0].1, cjk);
    let canvas = draft(&db, &t, &json!({"nodes": [], "edges": []})).await;
    let flow = json!({"nodes": [node(&cjk, "TRIGGER_MANUAL", json!({}))], "edges": []});
    import_react_flow(&mut api, &t, canvas, &flow)
        .await
        .unwrap();
}

#[tokio::test]
async fn duplicate_names_are_renamed_to_unused_names() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    let wf = json!({"nodes": [n8n_node("Step", "noOp"), n8n_node("Step #3", "noOp"), n8n_node("Step", "noOp")]});
    let (id, problems) = import_n8n(&mut api, &t, &wf).await.unwrap();
    let keys = node_keys(&db, id).await;
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[..2], ["Step", "Step #3"]);
    assert!(has_problem(&problems, "duplicate_node"), "{problems:?}");
}

#[tokio::test]
async fn a_renamed_199_character_name_stays_within_200() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    let long = "n".repeat(199);
    let wf = json!({"nodes": [n8n_node(&long, "noOp"), n8n_node(&long, "noOp")]});
    let (id, _) = import_n8n(&mut api, &t, &wf).await.unwrap();
    let keys = node_keys(&db, id).await;
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.chars().count() <= 200), "{keys:?}");
}

#[tokio::test]
async fn a_repeated_react_flow_id_is_22023_naming_it() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    let wf = draft(&db, &t, &json!({"nodes": [], "edges": []})).await;
    // Not the unique index's 23505, whose message names a constraint.
    let dup = json!({"nodes": [node("a", "TRIGGER_MANUAL", json!({})), node("a", "LOGIC_CONDITION", json!({}))], "edges": []});
    let err = import_react_flow(&mut api, &t, wf, &dup).await.unwrap_err();
    assert_eq!(err.code, "22023", "{err:?}");
    assert!(
        err.message.contains("node \"a\"") && !err.message.contains("_key"),
        "{err:?}"
    );
    let dup = json!({"nodes": [node("a", "TRIGGER_MANUAL", json!({}))], "edges": [edge("e", "a", "a"), edge("e", "a", "a")]});
    let err = import_react_flow(&mut api, &t, wf, &dup).await.unwrap_err();
    assert_eq!(err.code, "22023", "{err:?}");
    assert!(err.message.contains("edge \"e\""), "{err:?}");
}

#[tokio::test]
async fn an_n8n_error_output_becomes_the_error_handle() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    // onError: continueErrorOutput puts the error output at main[1]; the
    // engine follows an edge from the error handle on failure only.
    let mut fetch = n8n_node("Fetch", "httpRequest");
    fetch["onError"] = json!("continueErrorOutput");
    let wf = json!({"nodes": [fetch, n8n_node("Ok", "noOp"), n8n_node("Oops", "noOp")],
                    "connections": {"Fetch": {"main": [[to("Ok")], [to("Oops")]]}}});
    let (id, _) = import_n8n(&mut api, &t, &wf).await.unwrap();
    let got = edges(&db, id).await;
    let handle = |target: &str| got.iter().find(|e| e.2 == target).unwrap().3.clone();
    assert_eq!(handle("Ok"), None);
    assert_eq!(handle("Oops").as_deref(), Some("error"));
}

#[tokio::test]
async fn connections_keyed_by_node_id_are_reported_not_resolved() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    // n8n keys connections by name: a key that is a node's id connects nothing.
    let wf = json!({"nodes": [n8n_node("A", "manualTrigger"), n8n_node("B", "noOp")],
                    "connections": {"id-A": {"main": [[to("B")]]}}});
    let (id, problems) = import_n8n(&mut api, &t, &wf).await.unwrap();
    assert_ne!(edges(&db, id).await[0].1, "A");
    assert!(
        problems.iter().any(|p| p["code"] == "dangling_connection"
            && p["message"]
                .as_str()
                .unwrap()
                .contains("is the id of node \"A\"")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn malformed_connections_are_reported() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    for connections in [json!([1, 2]), json!({"A": 5}), json!({"A": {"main": [7]}})] {
        let wf = json!({"nodes": [n8n_node("A", "manualTrigger")], "connections": connections});
        let (_, problems) = import_n8n(&mut api, &t, &wf).await.unwrap();
        assert!(
            has_problem(&problems, "invalid_graph") || has_problem(&problems, "invalid_connection"),
            "{connections}: {problems:?}"
        );
    }
}

#[tokio::test]
async fn a_long_dangling_target_is_a_problem_not_a_refusal() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    let far = "z".repeat(300);
    let wf = json!({"nodes": [n8n_node("A", "manualTrigger")], "connections": {"A": {"main": [[to(&far)]]}}});
    let (id, problems) = import_n8n(&mut api, &t, &wf).await.unwrap();
    assert!(
        has_problem(&problems, "dangling_connection"),
        "{problems:?}"
    );
    assert_eq!(edges(&db, id).await.len(), 1);
}

#[tokio::test]
async fn every_real_n8n_template_imports_with_its_error_outputs() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    let root = std::path::Path::new("/work/shared/corpus/n8n-templates");
    let mut files: Vec<_> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("corpus missing at {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 999);
    let (mut error_edges, mut n8n_error_outputs) = (0, 0);
    for f in &files {
        let wf: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let (id, _) = import_n8n(&mut api, &t, &wf)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", f.display()));
        // n8n's error outputs: a connection from main[k] of a node whose
        // onError is continueErrorOutput, k past its regular outputs.
        for n in wf["nodes"].as_array().unwrap() {
            if n["onError"] == "continueErrorOutput" && n["type"] == "n8n-nodes-base.httpRequest" {
                let outs = &wf["connections"][n["name"].as_str().unwrap()]["main"];
                n8n_error_outputs += outs.get(1).and_then(Value::as_array).map_or(0, Vec::len);
            }
        }
        error_edges += edges(&db, id)
            .await
            .iter()
            .filter(|e| e.3.as_deref() == Some("error"))
            .count();
    }
    assert!(n8n_error_outputs > 0);
    assert!(
        error_edges >= n8n_error_outputs,
        "{error_edges} error edges, {n8n_error_outputs} HTTP error outputs"
    );
}

async fn lead(db: &Client, t: &fixtures::Tenant) -> Uuid {
    db.query_one(
        "INSERT INTO api.leads (workspace_id, email) VALUES ($1, $2) RETURNING id",
        &[
            &t.workspace_id,
            &format!("{}@lead.example", Uuid::new_v4().simple()),
        ],
    )
    .await
    .unwrap()
    .get(0)
}

async fn start(db: &Client, t: &fixtures::Tenant, wf: Uuid, lead: Uuid) -> Uuid {
    db.query_one(
        "SELECT execution_id FROM internal.start_execution($1, $2, 'manual', '{}', $3, $4)",
        &[&t.workspace_id, &wf, &Uuid::new_v4().to_string(), &lead],
    )
    .await
    .unwrap()
    .get(0)
}

/// Make the scheduled steps of `executions` due, started `days` ago.
async fn make_due(db: &Client, executions: &[Uuid], days: i32) {
    db.execute(
        "UPDATE api.execution_steps SET run_at = now() - interval '1 second',
                started_at = now() - make_interval(days => $2)
          WHERE execution_id = ANY($1) AND status = 'scheduled'",
        &[&executions, &days],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE api.workflow_executions SET started_at = now() - make_interval(days => $2) WHERE id = ANY($1)",
        &[&executions, &days],
    )
    .await
    .unwrap();
}

fn delayed(delay: Value, then: Value) -> Value {
    json!({"nodes": [node("s", "TRIGGER_MANUAL", json!({})), node("wait", "LOGIC_DELAY", delay), then],
           "edges": [edge("e1", "s", "wait"), edge("e2", "wait", "then")]})
}

#[tokio::test]
async fn a_thirty_day_delay_completes() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    let wf = active(
        &db,
        &t,
        &delayed(
            json!({"days": 30}),
            node(
                "then",
                "ACTION_ADD_LEAD_EVENT",
                json!({"note": "a month later"}),
            ),
        ),
    )
    .await;
    let e = start(&db, &t, wf, lead(&db, &t).await).await;
    // 30 days in milliseconds is more than an integer holds.
    make_due(&db, &[e], 30).await;
    db.execute("SELECT internal.run_due_steps()", &[])
        .await
        .unwrap();
    let row = db
        .query_one(
            "SELECT e.status, e.duration_ms, s.duration_ms FROM api.workflow_executions e
               JOIN api.execution_steps s ON s.execution_id = e.id AND s.node_key = 'wait' WHERE e.id = $1",
            &[&e],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "completed");
    assert!(
        row.get::<_, i64>(1) > i64::from(i32::MAX) && row.get::<_, i64>(2) > i64::from(i32::MAX)
    );
}

#[tokio::test]
async fn a_failing_due_step_fails_alone() {
    let db = connect().await;
    let (a, b) = (
        fixtures::tenant(&db, "pro").await,
        fixtures::tenant(&db, "pro").await,
    );
    // Tenant a: after the delay, a lead update over the payload limit
    // (54000) fails the advance; tenant b's delay is due in the same batch.
    let fat = node(
        "then",
        "ACTION_UPDATE_LEAD",
        json!({"fields": {"blob": "x".repeat(70_000)}}),
    );
    let wf_a = active(&db, &a, &delayed(json!({"minutes": 1}), fat)).await;
    let fine = node("then", "ACTION_ADD_LEAD_EVENT", json!({"note": "on time"}));
    let wf_b = active(&db, &b, &delayed(json!({"minutes": 1}), fine)).await;
    let ea = start(&db, &a, wf_a, lead(&db, &a).await).await;
    let eb = start(&db, &b, wf_b, lead(&db, &b).await).await;
    make_due(&db, &[ea, eb], 0).await;
    db.execute("SELECT internal.run_due_steps()", &[])
        .await
        .unwrap();
    let status = |e: Uuid| {
        let db = &db;
        async move {
            let r = db
                .query_one(
                    "SELECT e.status, e.error, s.status FROM api.workflow_executions e
                       JOIN api.execution_steps s ON s.execution_id = e.id AND s.node_key = 'wait' WHERE e.id = $1",
                    &[&e],
                )
                .await
                .unwrap();
            (
                r.get::<_, String>(0),
                r.get::<_, Option<Value>>(1),
                r.get::<_, String>(2),
            )
        }
    };
    let (st, _, step) = status(eb).await;
    assert_eq!((st.as_str(), step.as_str()), ("completed", "completed"));
    let (st, error, step) = status(ea).await;
    assert_eq!((st.as_str(), step.as_str()), ("failed", "failed"));
    let error = error.unwrap();
    assert_eq!(
        (
            error["code"].as_str(),
            error["sqlstate"].as_str(),
            error["node"].as_str()
        ),
        (Some("step_error"), Some("54000"), Some("wait")),
        "{error}"
    );
}

#[tokio::test]
async fn a_job_whose_advance_fails_is_still_reported() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    // The HTTP call succeeds; carrying the graph on (a lead update over the
    // payload limit, 54000) does not. The report must still commit, or the
    // lease lapses and the request is made again, forever.
    let flow = json!({"nodes": [node("s", "TRIGGER_MANUAL", json!({})),
                                node("call", "ACTION_HTTP_REQUEST", json!({"url": "https://example.com/hook"})),
                                node("fat", "ACTION_UPDATE_LEAD", json!({"fields": {"blob": "x".repeat(70_000)}}))],
                      "edges": [edge("e1", "s", "call"), edge("e2", "call", "fat")]});
    let wf = active(&db, &t, &flow).await;
    let e = start(&db, &t, wf, lead(&db, &t).await).await;
    let leases = fixtures::lease_jobs(&db, t.workspace_id).await;
    assert_eq!(leases.len(), 1);
    let job = leases[0].id;
    let reported = fixtures::complete_jobs(&db, &leases, json!({"status": 200})).await;
    assert_eq!(reported, ["completed"]);
    let r = db
        .query_one(
            "SELECT e.status, e.error, s.status,
                    CASE WHEN EXISTS (SELECT 1 FROM internal.jobs j WHERE j.id = $2) THEN 'queued' ELSE 'gone' END
               FROM api.workflow_executions e
               JOIN api.execution_steps s ON s.execution_id = e.id AND s.node_key = 'call' WHERE e.id = $1",
            &[&e, &job],
        )
        .await
        .unwrap();
    let error: Value = r.get(1);
    assert_eq!(
        (
            r.get::<_, String>(0).as_str(),
            r.get::<_, String>(2).as_str(),
            r.get::<_, String>(3).as_str()
        ),
        ("failed", "failed", "gone")
    );
    assert_eq!(
        (error["code"].as_str(), error["sqlstate"].as_str()),
        (Some("step_error"), Some("54000")),
        "{error}"
    );
}

#[tokio::test]
async fn node_types_admit_only_executors_the_job_queue_runs() {
    let mut db = connect().await;
    let err = db
        .execute(
            "INSERT INTO api.node_types (node_type, category, executor, description, config_schema)
             VALUES ('ACTION_SMS', 'action', 'job:sms', 'Sends an SMS.', '{}')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23514", "{err}");
    // Every job executor the registry holds is a kind internal.jobs takes.
    let t = fixtures::tenant(&db, "enterprise").await;
    let tx = db.transaction().await.unwrap();
    let queued = tx
        .execute(
            "INSERT INTO internal.jobs (workspace_id, kind, payload)
             SELECT $1, substr(executor, 5), '{}' FROM api.node_types WHERE executor LIKE 'job:%'",
            &[&t.workspace_id],
        )
        .await
        .unwrap();
    assert_eq!(queued, 3);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn validation_is_read_only_as_its_volatility_says() {
    let mut db = connect().await;
    let volatility: String = db
        .query_one("SELECT provolatile::text FROM pg_proc WHERE oid = 'flowtrack.validate_graph(text)'::regprocedure", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(volatility, "s");
    let tx = db.transaction().await.unwrap();
    let graph = json!({"nodes": [node("s", "TRIGGER_MANUAL", json!({}))], "edges": []}).to_string();
    tx.query("SELECT * FROM flowtrack.validate_graph($1)", &[&graph])
        .await
        .unwrap();
    let xid: Option<String> = tx
        .query_one("SELECT pg_current_xact_id_if_assigned()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        xid, None,
        "validate_graph made its transaction a writing one"
    );
    tx.rollback().await.unwrap();
}

async fn form(db: &Client, t: &fixtures::Tenant) {
    db.batch_execute(&format!(
        "INSERT INTO api.forms (workspace_id, slug, name) VALUES ('{ws}', 'contact', 'Contact');
         INSERT INTO api.form_fields (workspace_id, form_id, field_key, label, field_type)
         SELECT '{ws}', id, 'budget', 'Budget', 'number' FROM api.forms WHERE workspace_id = '{ws}';",
        ws = t.workspace_id
    ))
    .await
    .unwrap();
}

async fn submit(
    api: &mut Client,
    t: &fixtures::Tenant,
    fields: &Value,
) -> Result<Vec<Value>, ApiError> {
    let anon = Request::anon().method("POST").path("/rpc/submit_form");
    pgrst(
        api,
        &anon,
        "SELECT * FROM api.submit_form($1, 'contact', $2::text::jsonb)",
        &[&t.slug, &fields.to_string()],
    )
    .await
}

#[tokio::test]
async fn step_budgets_follow_the_plan_and_apply_per_ingress() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "free").await;
    form(&db, &t).await;
    // A member-built loop of 20 conditions, entered up to 1,000 times.
    let mut nodes = vec![
        node("form", "TRIGGER_FORM", json!({"form_id": "contact"})),
        node("c0", "LOGIC_CONDITION", json!({"max_visits": 1000})),
    ];
    let mut edges = vec![edge("in", "form", "c0")];
    for i in 1..20 {
        nodes.push(node(&format!("c{i}"), "LOGIC_CONDITION", json!({})));
        edges.push(edge(
            &format!("e{i}"),
            &format!("c{}", i - 1),
            &format!("c{i}"),
        ));
    }
    edges.push(edge("back", "c19", "c0"));
    let wf = draft(&db, &t, &json!({"nodes": nodes, "edges": edges})).await;
    let settings = |s: Value| {
        let db = &db;
        async move {
            db.execute(
                "UPDATE api.workflows SET settings = $2::text::jsonb WHERE id = $1",
                &[&wf, &s.to_string()],
            )
            .await
            .unwrap();
        }
    };
    settings(json!({"max_steps": 20000})).await;
    let err = publish(&t, wf).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "23514"), "{err:?}");
    assert!(
        err.detail
            .as_deref()
            .unwrap_or("")
            .contains("max_steps_over_plan"),
        "{err:?}"
    );
    let owner = Request::with_claims(t.claims("owner")).method("POST");
    let listed = pgrst(
        &mut api,
        &owner,
        "SELECT code, message FROM api.validate_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["code"], "max_steps_over_plan");
    assert!(
        listed[0]["message"].as_str().unwrap().contains("200"),
        "{listed:?}"
    );
    settings(json!({})).await;
    publish(&t, wf).await.unwrap();
    db.execute(
        "UPDATE api.workflows SET status = 'active' WHERE id = $1",
        &[&wf],
    )
    .await
    .unwrap();
    // Settings change without a publish: the plan's budget still bounds
    // what one anonymous submission makes the loop write.
    settings(json!({"max_steps": 20000})).await;
    submit(
        &mut api,
        &t,
        &json!({"email": "loop@x.example", "budget": 1}),
    )
    .await
    .unwrap();
    let (error, steps): (Value, i64) = {
        let r = db
            .query_one(
                "SELECT e.error, (SELECT count(*) FROM api.execution_steps s WHERE s.execution_id = e.id)
                   FROM api.workflow_executions e WHERE e.workflow_id = $1",
                &[&wf],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(error["code"], "step_budget_exceeded", "{error}");
    assert_eq!(steps, 200);
}

#[tokio::test]
async fn a_bad_max_steps_setting_is_a_validation_problem_not_a_failed_submission() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "free").await;
    form(&db, &t).await;
    let wf = active(&db, &t, &json!({"nodes": [node("form", "TRIGGER_FORM", json!({"form_id": "contact"}))], "edges": []})).await;
    // Settings change without a publish, and every submission reads them.
    for bad in [json!("lots"), json!(0), json!(1.5)] {
        db.execute(
            "UPDATE api.workflows SET settings = jsonb_build_object('max_steps', $2::text::jsonb) WHERE id = $1",
            &[&wf, &bad.to_string()],
        )
        .await
        .unwrap();
        let owner = Request::with_claims(t.claims("owner")).method("POST");
        let listed = pgrst(
            &mut api,
            &owner,
            "SELECT code FROM api.validate_workflow($1)",
            &[&wf],
        )
        .await
        .unwrap();
        assert_eq!(listed.len(), 1, "{bad}: {listed:?}");
        assert_eq!(listed[0]["code"], "invalid_setting", "{bad}");
        submit(
            &mut api,
            &t,
            &json!({"email": format!("{}@x.example", Uuid::new_v4().simple())}),
        )
        .await
        .unwrap_or_else(|e| panic!("max_steps {bad}: {e:?}"));
    }
}

// ------------------------------------------------------------ any JSON ----

/// Keys the importers, validation and forms look up, so random documents
/// get past the first lookup.
const KEYS: &[&str] = &[
    "nodes",
    "edges",
    "connections",
    "viewport",
    "id",
    "name",
    "type",
    "data",
    "label",
    "config",
    "position",
    "source",
    "target",
    "sourceHandle",
    "condition",
    "parameters",
    "onError",
    "main",
    "node",
    "index",
    "email",
    "budget",
    "first_name",
    "max_visits",
    "form_id",
    "op",
    "path",
    "value",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "A", "B", "Step", "Step #2", "Step #3", "node-2", "", "main", "error", "a@b.example", "contact", "true",
            "n8n-nodes-base.if", "n8n-nodes-base.httpRequest", "n8n-nodes-base.manualTrigger",
            "continueErrorOutput", "TRIGGER_MANUAL", "TRIGGER_FORM", "LOGIC_CONDITION", "LOGIC_DELAY",
            "ACTION_UPDATE_LEAD", "lead.fields.budget", "gt", "1e400", "-0",
        ])
        .prop_map(str::to_string),
        2 => "[a-zA-Z0-9 #:.@>-]{0,12}",
        1 => "\\PC{0,12}",
        1 => (195usize..206, any::<bool>()).prop_map(|(n, wide)| if wide { "語".repeat(n / 3 + 60) } else { "x".repeat(n) }),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..1001).prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (prop_oneof![3 => prop::sample::select(KEYS).prop_map(str::to_string), 1 => text()], inner),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Mostly-right n8n exports: colliding names and ids, error outputs, and
/// connections by name, by id, to nowhere and malformed.
fn n8n_value() -> impl Strategy<Value = Value> {
    let n = (text(), text(), text(), any::<bool>(), json_value()).prop_map(
        |(name, id, t, on_error, params)| {
            let mut n = json!({"name": name, "id": id, "type": t, "parameters": params});
            if on_error {
                n["onError"] = json!("continueErrorOutput");
            }
            n
        },
    );
    let target = prop_oneof![4 => (text(), 0u64..3).prop_map(|(n, i)| json!({"node": n, "type": "main", "index": i})), 1 => json_value()];
    let outputs = prop::collection::vec(
        prop_oneof![4 => prop::collection::vec(target, 0..4).prop_map(Value::Array), 1 => json_value()],
        0..4,
    );
    let by_type = prop::collection::vec(
        (
            prop_oneof![3 => Just("main".to_string()), 1 => text()],
            outputs.prop_map(Value::Array),
        ),
        0..3,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().collect()));
    let connections = prop::collection::vec((text(), by_type), 0..6)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()));
    (
        prop::collection::vec(n, 0..8),
        prop_oneof![4 => connections, 1 => json_value()],
    )
        .prop_map(|(nodes, connections)| json!({"nodes": nodes, "connections": connections}))
}

/// React Flow canvases with colliding ids, types and endpoints.
fn canvas_value() -> impl Strategy<Value = Value> {
    let n = (text(), text(), json_value()).prop_map(
        |(id, t, config)| json!({"id": id, "type": t, "data": {"label": id, "config": config}}),
    );
    let e = (text(), text(), text(), json_value())
        .prop_map(|(id, s, t, c)| json!({"id": id, "source": s, "target": t, "condition": c}));
    (
        prop::collection::vec(n, 0..6),
        prop::collection::vec(e, 0..6),
    )
        .prop_map(|(nodes, edges)| json!({"nodes": nodes, "edges": edges}))
}

/// A failure is fine when it is a specific client error: not XX000 (or any
/// other 5xx), and not a unique-index error naming a constraint.
fn specific(e: &ApiError) -> bool {
    e.status < 500 && e.code != "23505"
}

#[test]
fn any_json_gets_an_answer_or_a_specific_sqlstate_in_time() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (db, api, t, canvas) = rt.block_on(async {
        let db = connect().await;
        let api = connect_authenticator().await;
        // The bound is on cancellation and linearity, not speed: inputs
        // here take milliseconds.
        api.batch_execute("SET statement_timeout = '5s'").await.unwrap();
        db.batch_execute("SET statement_timeout = '5s'").await.unwrap();
        let t = fixtures::tenant(&db, "enterprise").await;
        form(&db, &t).await;
        active(&db, &t, &json!({"nodes": [node("form", "TRIGGER_FORM", json!({"form_id": "contact"})),
                                          node("q", "LOGIC_CONDITION", json!({"condition": {"op": "gt", "path": "lead.fields.budget", "value": 1000}})),
                                          node("m", "ACTION_UPDATE_LEAD", json!({"status": "QUALIFIED", "fields": {"seen": "{{trigger.fields}}"}}))],
                                "edges": [edge("e1", "form", "q"), json!({"id": "e2", "source": "q", "target": "m", "sourceHandle": "true"})]}))
            .await;
        let canvas = draft(&db, &t, &json!({"nodes": [], "edges": []})).await;
        (db, api, t, canvas)
    });
    let api = tokio::sync::Mutex::new(api);
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    let inputs = (0..6usize, json_value(), n8n_value(), canvas_value());
    runner
        .run(&inputs, |(entry, v, n8n, canvas_v)| {
            rt.block_on(async {
                let mut api = api.lock().await;
                let started = Instant::now();
                let (input, outcome): (&Value, Result<(), ApiError>) = match entry {
                    0 => (&v, import_n8n(&mut api, &t, &v).await.map(drop)),
                    1 => (&n8n, import_n8n(&mut api, &t, &n8n).await.map(drop)),
                    2 => (
                        &v,
                        import_react_flow(&mut api, &t, canvas, &v).await.map(drop),
                    ),
                    3 => (
                        &canvas_v,
                        import_react_flow(&mut api, &t, canvas, &canvas_v)
                            .await
                            .map(drop),
                    ),
                    4 => (
                        &v,
                        db.query(
                            "SELECT * FROM flowtrack.validate_graph($1)",
                            &[&v.to_string()],
                        )
                        .await
                        .map(drop)
                        .map_err(|e| {
                            let code = e.code().map_or("", |c| c.code()).to_string();
                            ApiError {
                                status: flowtrack_tests::http_status(&code, true),
                                code,
                                message: e.to_string(),
                                detail: None,
                                hint: None,
                            }
                        }),
                    ),
                    _ => (&v, submit(&mut api, &t, &v).await.map(drop)),
                };
                let took = started.elapsed();
                prop_assert!(took < Duration::from_secs(5), "entry {entry} took {took:?}");
                if let Err(e) = &outcome {
                    prop_assert!(specific(e), "entry {entry}: {e:?}\ninput: {input}");
                    // Any JSON object is an n8n export FlowTrack can import,
                    // with what it could not map listed as problems.
                    prop_assert!(
                        !(entry <= 1 && input.is_object()),
                        "entry {entry}: {e:?}\ninput: {input}"
                    );
                }
                Ok(())
            })
        })
        .unwrap();
}
