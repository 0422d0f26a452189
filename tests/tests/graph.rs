//! The graph engine: every validation code, publish and version pinning,
//! React Flow round trips, executions advanced inside the database (fan-out,
//! fan-in, delays, bounded loops, max_steps, idempotent start, job-backed
//! steps), pathological graphs, and the n8n corpus.

use std::collections::BTreeMap;

use flowtrack_tests::{column, connect, connect_authenticator, fixtures, pgrst, Request};
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

async fn problems(
    db: &Client,
    graph: &Value,
) -> Vec<(String, Option<String>, Option<String>, String)> {
    db.query(
        "SELECT code, node, edge, message FROM flowtrack.validate_graph($1)",
        &[&graph.to_string()],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

fn node(id: &str, t: &str, config: Value) -> Value {
    json!({"id": id, "type": t, "position": {"x": 0, "y": 0}, "data": {"label": id, "config": config}})
}

fn edge(id: &str, s: &str, t: &str) -> Value {
    json!({"id": id, "source": s, "target": t})
}

#[tokio::test]
async fn validation_reports_every_code_with_the_node_or_edge() {
    let db = connect().await;
    let ok = json!({"nodes": [node("f", "TRIGGER_FORM", json!({"form_id": "c"})),
                              node("m", "ACTION_UPDATE_LEAD", json!({"status": "QUALIFIED"}))],
                    "edges": [json!({"id": "e1", "source": "f", "target": "m",
                                     "condition": {"op": "gt", "path": "lead.fields.budget", "value": 1000}})]});
    assert!(problems(&db, &ok).await.is_empty());
    let bad = json!({"nodes": [
        node("f", "TRIGGER_FORM", json!({})),                                   // invalid_config (form_id)
        node("x", "ACTION_TELEPORT", json!({})),                                // unknown_node_type
        node("lonely", "ACTION_UPDATE_LEAD", json!({"status": "NOPE"})),        // unreachable + invalid_config
        node("a", "LOGIC_CONDITION", json!({"condition": {"op": "between", "path": "a", "value": 1}})),
        node("b", "LOGIC_CONDITION", json!({})),
        node("f", "TRIGGER_MANUAL", json!({})),                                 // duplicate_node
        json!({"type": "TRIGGER_MANUAL"}),                                       // invalid_node
    ], "edges": [
        edge("e1", "f", "a"), edge("e2", "a", "b"), edge("e3", "b", "a"),       // unbounded_cycle
        edge("e4", "f", "ghost"),                                               // dangling_edge
        json!({"id": "e5", "source": "f", "target": "x", "condition": {"or": []}}), // invalid_condition
        edge("e5", "f", "x"),                                                   // duplicate_edge
    ]});
    let got = problems(&db, &bad).await;
    let codes: BTreeMap<&str, usize> = got.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p.0.as_str()).or_default() += 1;
        m
    });
    for code in [
        "invalid_config",
        "unknown_node_type",
        "unreachable_node",
        "unbounded_cycle",
        "dangling_edge",
        "invalid_condition",
        "duplicate_node",
        "duplicate_edge",
        "invalid_node",
    ] {
        assert!(codes.contains_key(code), "{code} missing from {got:#?}");
    }
    let find = |code: &str, n: Option<&str>, e: Option<&str>| {
        got.iter()
            .any(|p| p.0 == code && p.1.as_deref() == n && (e.is_none() || p.2.as_deref() == e))
    };
    assert!(find("unknown_node_type", Some("x"), None));
    assert!(find("unreachable_node", Some("lonely"), None));
    assert!(find("dangling_edge", Some("f"), Some("e4")));
    assert!(find("invalid_condition", Some("f"), Some("e5")));
    assert!(
        find("invalid_condition", Some("a"), None),
        "node condition that does not parse"
    );
    assert!(find("unbounded_cycle", Some("a"), None));
    assert!(
        got.iter()
            .any(|p| p.0 == "invalid_config" && p.3.contains("config/form_id is required")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|p| p.0 == "invalid_config" && p.3.contains("config/status must be one of")),
        "{got:#?}"
    );
    // No trigger at all.
    let none =
        json!({"nodes": [node("m", "ACTION_UPDATE_LEAD", json!({"status": "WON"}))], "edges": []});
    assert_eq!(problems(&db, &none).await[0].0, "missing_trigger");
    // A cycle bounded by max_visits is fine; a self-loop without one is not.
    let bounded = json!({"nodes": [node("s", "TRIGGER_MANUAL", json!({})), node("w", "LOGIC_DELAY", json!({"days": 3, "max_visits": 3}))],
                         "edges": [edge("e1", "s", "w"), edge("e2", "w", "w")]});
    assert!(problems(&db, &bounded).await.is_empty());
    let selfloop = json!({"nodes": [node("s", "TRIGGER_MANUAL", json!({})), node("w", "LOGIC_DELAY", json!({"days": 3}))],
                          "edges": [edge("e1", "s", "w"), edge("e2", "w", "w")]});
    assert_eq!(problems(&db, &selfloop).await[0].0, "unbounded_cycle");
    // Bad input: precise SQLSTATEs, never XX000.
    for (input, code) in [
        ("not json", "22P02"),
        (
            &*format!("{}1{}", "[".repeat(300), "]".repeat(300)),
            "54001",
        ),
    ] {
        let err = db
            .query("SELECT * FROM flowtrack.validate_graph($1)", &[&input])
            .await
            .unwrap_err();
        assert_eq!(err.code().unwrap().code(), code, "{err}");
    }
}

#[tokio::test]
async fn pathological_graphs_neither_hang_nor_crash() {
    let db = connect().await;
    let n = 20_000;
    let mut nodes = vec![node("n0", "TRIGGER_MANUAL", json!({}))];
    let mut edges = Vec::new();
    for i in 1..n {
        nodes.push(node(&format!("n{i}"), "LOGIC_CONDITION", json!({})));
        edges.push(edge(
            &format!("e{i}"),
            &format!("n{}", i - 1),
            &format!("n{i}"),
        ));
    }
    let chain = json!({"nodes": nodes, "edges": edges});
    let started = std::time::Instant::now();
    assert!(problems(&db, &chain).await.is_empty());
    let order: i64 = db
        .query_one(
            "SELECT count(*) FROM flowtrack.topological_order($1)",
            &[&chain.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(order, n as i64);
    // Huge fan-out into a single fan-in, and a ring of 20,000 nodes.
    let mut nodes = vec![
        node("s", "TRIGGER_MANUAL", json!({})),
        node("j", "LOGIC_CONDITION", json!({})),
    ];
    let mut edges = Vec::new();
    for i in 0..n {
        nodes.push(node(&format!("b{i}"), "LOGIC_CONDITION", json!({})));
        edges.push(edge(&format!("o{i}"), "s", &format!("b{i}")));
        edges.push(edge(&format!("i{i}"), &format!("b{i}"), "j"));
    }
    edges.push(edge("ring", "j", "s"));
    let got = problems(&db, &json!({"nodes": nodes, "edges": edges})).await;
    assert_eq!(got.len(), 1, "{:?}", &got[..got.len().min(3)]);
    assert_eq!(got[0].0, "unbounded_cycle");
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
    let too_big = json!({"nodes": vec![json!({}); 100_001]});
    let err = db
        .query(
            "SELECT * FROM flowtrack.validate_graph($1)",
            &[&too_big.to_string()],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "54000");
}

#[tokio::test]
async fn conditions_route_successors_and_explain_why() {
    let db = connect().await;
    let g = json!({"nodes": [node("f", "TRIGGER_FORM", json!({"form_id": "c"})), node("q", "LOGIC_CONDITION", json!({})),
                             node("m", "ACTION_UPDATE_LEAD", json!({"status": "QUALIFIED"})),
                             node("n", "ACTION_SEND_EMAIL", json!({"to": "{{lead.email}}", "subject": "Hi"}))],
                   "edges": [edge("e1", "f", "q"),
                             json!({"id": "e2", "source": "q", "target": "m", "condition": {"op": "gt", "path": "lead.fields.budget", "value": 1000}}),
                             json!({"id": "e3", "source": "q", "target": "n", "condition": {"not": {"op": "gt", "path": "lead.fields.budget", "value": 1000}}})]})
        .to_string();
    let ctx = json!({"lead": {"fields": {"budget": "2500"}}}).to_string();
    let rows = db
        .query(
            "SELECT edge, taken, reason FROM flowtrack.successors($1, 'q', $2) ORDER BY edge",
            &[&g, &ctx],
        )
        .await
        .unwrap();
    let taken: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(taken, [("e2".into(), true), ("e3".into(), false)]);
    let reason: String = rows[0].get(2);
    assert!(
        reason.contains("lead.fields.budget (\"2500\") gt 1000: true"),
        "{reason}"
    );
    let reach: Vec<String> = column(
        &db,
        "SELECT node FROM flowtrack.reachable($1, $2) ORDER BY node",
        &[&g, &ctx],
    )
    .await;
    assert_eq!(reach, ["f", "m", "q"]);
    let explained = db
        .query(
            "SELECT node, runs, reason FROM flowtrack.explain($1, $2)",
            &[&g, &ctx],
        )
        .await
        .unwrap();
    let n = explained
        .iter()
        .find(|r| r.get::<_, String>(0) == "n")
        .unwrap();
    assert!(!n.get::<_, bool>(1));
    assert!(
        n.get::<_, String>(2).contains("not ["),
        "{}",
        n.get::<_, String>(2)
    );
    let err = db
        .query(
            "SELECT * FROM flowtrack.successors($1, 'nope', '{}')",
            &[&g],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22023");
    assert!(err.as_db_error().unwrap().message().contains("\"nope\""));
}

#[tokio::test]
async fn react_flow_round_trips_without_loss_and_publish_requires_validity() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let member = Request::with_claims(t.claims("member")).method("POST");
    let wf: Uuid = db
        .query_one(
            "INSERT INTO api.workflows (workspace_id, name) VALUES ($1, 'rf') RETURNING id",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    let flow = json!({
        "nodes": [
            {"id": "f", "type": "TRIGGER_FORM", "position": {"x": 10.5, "y": -3}, "width": 180, "height": 40, "selected": true,
             "positionAbsolute": {"x": 10.5, "y": -3}, "data": {"label": "Form", "config": {"form_id": "contact"}, "color": "teal"}},
            {"id": "q", "type": "LOGIC_CONDITION", "position": {"x": 200, "y": 0}, "data": {"label": {"rich": true}}, "dragging": false},
            {"id": "m", "type": "ACTION_UPDATE_LEAD", "position": {"x": 400, "y": 0}, "data": {"config": {"status": "QUALIFIED"}}, "zIndex": 3},
        ],
        "edges": [
            {"id": "e1", "source": "f", "target": "q", "sourceHandle": null, "targetHandle": "in", "animated": true, "type": "smoothstep"},
            {"id": "e2", "source": "q", "target": "m", "label": "rich", "condition": {"op": "exists", "path": "lead.email"},
             "markerEnd": {"type": "arrowclosed"}, "style": {"stroke": "#f00"}},
        ],
        "viewport": {"x": 12, "y": 34, "zoom": 0.75},
    });
    pgrst(
        &mut api,
        &member,
        "SELECT * FROM api.import_react_flow($1, $2::text::jsonb)",
        &[&wf, &flow.to_string()],
    )
    .await
    .unwrap();
    let back = pgrst(
        &mut api,
        &member,
        "SELECT api.export_react_flow($1) AS flow",
        &[&wf],
    )
    .await
    .unwrap();
    assert_eq!(back[0]["flow"], flow, "round trip");
    // Publishing: valid -> version 1; broken -> 400 naming the node, nothing written.
    let v = pgrst(
        &mut api,
        &member,
        "SELECT * FROM api.publish_workflow($1, 'first')",
        &[&wf],
    )
    .await
    .unwrap();
    assert_eq!(v[0]["version"], 1);
    db.execute("UPDATE api.workflow_nodes SET config = '{\"status\": \"MAYBE\"}' WHERE workflow_id = $1 AND node_key = 'm'", &[&wf])
        .await
        .unwrap();
    let err = pgrst(
        &mut api,
        &member,
        "SELECT * FROM api.publish_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "23514"), "{err:?}");
    assert!(err.message.contains("node \"m\""), "{err:?}");
    let listed = pgrst(
        &mut api,
        &member,
        "SELECT * FROM api.validate_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    assert_eq!(listed[0]["code"], "invalid_config");
    let versions: i64 = db
        .query_one(
            "SELECT count(*) FROM api.workflow_versions WHERE workflow_id = $1",
            &[&wf],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 1);
    // A node type the table cannot hold is refused with the node named.
    let bad = json!({"nodes": [{"id": "z", "type": "default", "position": {"x": 0, "y": 0}, "data": {}}], "edges": []});
    let err = pgrst(
        &mut api,
        &member,
        "SELECT * FROM api.import_react_flow($1, $2::text::jsonb)",
        &[&wf, &bad.to_string()],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "22023");
    assert!(err.message.contains("node \"z\""), "{err:?}");
}

/// A workflow of `flow`, published and active, in `t`.
async fn active(db: &Client, t: &fixtures::Tenant, flow: Value) -> Uuid {
    fixtures::active_workflow(db, t, flow).await
}

async fn lead(db: &Client, t: &fixtures::Tenant) -> Uuid {
    db.query_one(
        "INSERT INTO api.leads (workspace_id, email, custom_fields) VALUES ($1, $2, '{\"budget\": 5000}') RETURNING id",
        &[&t.workspace_id, &format!("{}@lead.example", Uuid::new_v4().simple())],
    )
    .await
    .unwrap()
    .get(0)
}

async fn start(db: &Client, t: &fixtures::Tenant, wf: Uuid, key: &str, lead: Option<Uuid>) -> Uuid {
    db.query_one(
        "SELECT execution_id FROM internal.start_execution($1, $2, 'manual', '{}', $3, $4)",
        &[&t.workspace_id, &wf, &key, &lead],
    )
    .await
    .unwrap()
    .get(0)
}

async fn status(db: &Client, e: Uuid) -> (String, Option<Value>) {
    let r = db
        .query_one(
            "SELECT status, error FROM api.workflow_executions WHERE id = $1",
            &[&e],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

async fn steps(db: &Client, e: Uuid) -> Vec<(String, String)> {
    db.query("SELECT node_key, status FROM api.execution_steps WHERE execution_id = $1 ORDER BY created_at, node_key", &[&e])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Play the worker for `ws` (only this tenant's jobs: tests run in
/// parallel) and report them done (or dead, as a final failure).
async fn work_jobs(db: &Client, ws: Uuid, ok: bool) -> usize {
    let leases = fixtures::lease_jobs(db, ws).await;
    let outcomes = if ok {
        fixtures::complete_jobs(db, &leases, json!({"status": 200})).await
    } else {
        fixtures::fail_jobs(db, &leases, "HTTP 500", false, Value::Null).await
    };
    let want = if ok { "completed" } else { "dead" };
    assert!(outcomes.iter().all(|o| o == want), "{outcomes:?}");
    leases.len()
}

#[tokio::test]
async fn form_condition_update_lead_completes_in_the_submitting_transaction() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    db.batch_execute(&format!(
        "INSERT INTO api.forms (workspace_id, slug, name) VALUES ('{ws}', 'contact', 'Contact');
         INSERT INTO api.form_fields (workspace_id, form_id, field_key, label, field_type)
         SELECT '{ws}', id, 'budget', 'Budget', 'number' FROM api.forms WHERE workspace_id = '{ws}';",
        ws = t.workspace_id
    ))
    .await
    .unwrap();
    let wf = active(&db, &t, json!({"nodes": [node("form", "TRIGGER_FORM", json!({"form_id": "contact"})),
                                              node("qualify", "LOGIC_CONDITION", json!({})),
                                              node("mark", "ACTION_UPDATE_LEAD", json!({"status": "QUALIFIED"}))],
                                    "edges": [edge("e1", "form", "qualify"),
                                              json!({"id": "e2", "source": "qualify", "target": "mark",
                                                     "condition": {"op": "gt", "path": "lead.fields.budget", "value": 1000}})]}))
        .await;
    let anon = Request::anon().method("POST").path("/rpc/submit_form");
    let sql = "SELECT * FROM api.submit_form($1, 'contact', $2::text::jsonb, $3)";
    for (email, budget, want) in [
        ("rich@x.example", 2500, "QUALIFIED"),
        ("poor@x.example", 10, "NEW"),
    ] {
        let fields = json!({"email": email, "budget": budget}).to_string();
        let sub = format!("sub-{email}");
        pgrst(&mut api, &anon, sql, &[&t.slug, &fields, &sub])
            .await
            .unwrap();
        let r = db
            .query_one(
                "SELECT e.status, l.status, e.id, (SELECT count(*) FROM internal.jobs j WHERE j.workspace_id = e.workspace_id)
                   FROM api.workflow_executions e JOIN api.leads l ON l.id = e.lead_id
                  WHERE e.workflow_id = $1 AND l.email = $2",
                &[&wf, &email],
            )
            .await
            .unwrap();
        assert_eq!(
            (
                r.get::<_, String>(0).as_str(),
                r.get::<_, String>(1).as_str()
            ),
            ("completed", want)
        );
        assert_eq!(
            r.get::<_, i64>(3),
            0,
            "no job: the workflow stays inside the database"
        );
        let e: Uuid = r.get(2);
        // One commit per ingress: the lead, the execution and every step were
        // written by the same transaction.
        let xids: i64 = db
            .query_one(
                "SELECT count(DISTINCT x) FROM (
                    SELECT xmin::text AS x FROM api.workflow_executions WHERE id = $1
                    UNION ALL SELECT xmin::text FROM api.execution_steps WHERE execution_id = $1
                    UNION ALL SELECT l.xmin::text FROM api.leads l JOIN api.workflow_executions e
                                                    ON e.lead_id = l.id WHERE e.id = $1) t",
                &[&e],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(xids, 1, "the submission was a single transaction");
        let expected = if want == "QUALIFIED" { 3 } else { 2 };
        assert_eq!(steps(&db, e).await.len(), expected);
        let explained = db.query("SELECT node, runs FROM api.workflow_executions x, LATERAL (SELECT * FROM flowtrack.explain((SELECT graph::text FROM api.workflow_versions v WHERE v.workflow_id = x.workflow_id AND v.version = x.version), x.context::text)) y WHERE x.id = $1 AND node = 'mark'", &[&e]).await.unwrap();
        assert_eq!(explained[0].get::<_, bool>(1), want == "QUALIFIED");
    }
}

#[tokio::test]
async fn fan_out_runs_every_branch_and_fan_in_waits_for_active_ones() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    let wf = active(&db, &t, json!({"nodes": [
            node("s", "TRIGGER_MANUAL", json!({})),
            node("a", "ACTION_UPDATE_LEAD", json!({"status": "CONTACTED"})),
            node("b", "ACTION_HTTP_REQUEST", json!({"url": "https://example.com/{{lead.email}}"})),
            node("c", "ACTION_UPDATE_LEAD", json!({"status": "LOST"})),
            node("j", "ACTION_ADD_LEAD_EVENT", json!({"note": "joined"}))],
        "edges": [edge("e1", "s", "a"), edge("e2", "s", "b"),
                  json!({"id": "e3", "source": "s", "target": "c", "condition": {"op": "lt", "path": "lead.fields.budget", "value": 10}}),
                  edge("e4", "a", "j"), edge("e5", "b", "j"), edge("e6", "c", "j")]}))
        .await;
    let l = lead(&db, &t).await;
    let e = start(&db, &t, wf, "fan", Some(l)).await;
    assert_eq!(status(&db, e).await.0, "waiting");
    let st = steps(&db, e).await;
    assert!(
        st.contains(&("a".into(), "completed".into()))
            && st.contains(&("b".into(), "running".into())),
        "{st:?}"
    );
    assert!(
        !st.iter().any(|s| s.0 == "j" || s.0 == "c"),
        "join waits for b; c's branch is dead: {st:?}"
    );
    let url: String = db
        .query_one(
            "SELECT payload ->> 'url' FROM internal.jobs WHERE payload ->> 'execution_id' = $1",
            &[&e.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        url.ends_with("@lead.example"),
        "templates render from the context: {url}"
    );
    assert_eq!(work_jobs(&db, t.workspace_id, true).await, 1);
    assert_eq!(status(&db, e).await.0, "completed");
    let joins = steps(&db, e).await.iter().filter(|s| s.0 == "j").count();
    assert_eq!(joins, 1, "the join ran once");
    let events: i64 = db
        .query_one("SELECT count(*) FROM api.lead_events WHERE lead_id = $1 AND event_type = 'WORKFLOW_ACTION'", &[&l])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
    // Idempotent start: same key, same execution, nothing new.
    assert_eq!(start(&db, &t, wf, "fan", Some(l)).await, e);
    assert_eq!(
        steps(&db, e).await.len(),
        4,
        "s, a, b, j; c's branch is dead"
    );
    // A dead job fails its step and (no error handle) the execution.
    let e2 = start(&db, &t, wf, "fan-2", Some(l)).await;
    work_jobs(&db, t.workspace_id, false).await;
    let (st2, err) = status(&db, e2).await;
    assert_eq!(st2, "failed");
    assert_eq!(err.unwrap()["node"], "b");
}

#[tokio::test]
async fn delays_bounded_loops_max_steps_and_version_pinning() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    // Wait 3 days, check for a reply, follow up; at most 3 rounds.
    let flow = json!({"nodes": [
            node("s", "TRIGGER_MANUAL", json!({})),
            node("wait", "LOGIC_DELAY", json!({"days": 3, "max_visits": 3})),
            node("replied", "LOGIC_CONDITION", json!({"condition": {"op": "exists", "path": "lead.replied_at"}})),
            node("follow", "ACTION_ADD_LEAD_EVENT", json!({"note": "follow-up"}))],
        "edges": [edge("e1", "s", "wait"), edge("e2", "wait", "replied"),
                  json!({"id": "e3", "source": "replied", "sourceHandle": "false", "target": "follow"}),
                  edge("e4", "follow", "wait")]});
    let wf = active(&db, &t, flow.clone()).await;
    let l = lead(&db, &t).await;
    let e = start(&db, &t, wf, "loop", Some(l)).await;
    let run_at_days: f64 = db
        .query_one("SELECT extract(epoch FROM run_at - now())::float8 / 86400 FROM api.execution_steps WHERE execution_id = $1 AND status = 'scheduled'", &[&e])
        .await
        .unwrap()
        .get(0);
    assert!((run_at_days - 3.0).abs() < 0.01, "{run_at_days}");
    // Version 2 drops the loop; the running execution keeps version 1.
    db.execute(
        "DELETE FROM api.workflow_edges WHERE workflow_id = $1 AND edge_key = 'e4'",
        &[&wf],
    )
    .await
    .unwrap();
    let mut c = connect().await;
    pgrst(
        &mut c,
        &Request::with_claims(t.claims("owner")).method("POST"),
        "SELECT * FROM api.publish_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    for _ in 0..5 {
        db.execute("UPDATE api.execution_steps SET run_at = now() - interval '1 second' WHERE execution_id = $1 AND status = 'scheduled'", &[&e])
            .await
            .unwrap();
        db.execute("SELECT internal.run_due_steps()", &[])
            .await
            .unwrap();
    }
    assert_eq!(status(&db, e).await.0, "completed");
    let st = steps(&db, e).await;
    assert_eq!(st.iter().filter(|s| s.0 == "wait").count(), 3, "{st:?}");
    assert_eq!(st.iter().filter(|s| s.0 == "follow").count(), 3, "{st:?}");
    let version: i32 = db
        .query_one(
            "SELECT version FROM api.workflow_executions WHERE id = $1",
            &[&e],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 1);
    // A new execution runs version 2: one round only.
    let e2 = start(&db, &t, wf, "loop-2", Some(l)).await;
    db.execute("UPDATE api.execution_steps SET run_at = now() - interval '1 second' WHERE execution_id = $1", &[&e2]).await.unwrap();
    db.execute("SELECT internal.run_due_steps()", &[])
        .await
        .unwrap();
    assert_eq!(status(&db, e2).await.0, "completed");
    assert_eq!(
        steps(&db, e2)
            .await
            .iter()
            .filter(|s| s.0 == "follow")
            .count(),
        1
    );
    // max_steps: a tight loop inside the database stops at the guard.
    let wf3 = active(&db, &t, json!({"nodes": [node("s", "TRIGGER_MANUAL", json!({})),
                                               node("x", "LOGIC_CONDITION", json!({"max_visits": 1000})),
                                               node("y", "LOGIC_CONDITION", json!({}))],
                                     "edges": [edge("e1", "s", "x"), edge("e2", "x", "y"), edge("e3", "y", "x")]}))
        .await;
    db.execute(
        "UPDATE api.workflows SET settings = '{\"max_steps\": 50}' WHERE id = $1",
        &[&wf3],
    )
    .await
    .unwrap();
    let e3 = start(&db, &t, wf3, "spin", None).await;
    let (st3, err) = status(&db, e3).await;
    assert_eq!(st3, "failed");
    assert_eq!(
        err.as_ref().unwrap()["code"],
        "max_steps_exceeded",
        "{err:?}"
    );
    assert_eq!(steps(&db, e3).await.len(), 50);
    // complete_step on a closed step: 55000, naming the node.
    let done: Uuid = db
        .query_one(
            "SELECT id FROM api.execution_steps WHERE execution_id = $1 AND node_key = 's'",
            &[&e],
        )
        .await
        .unwrap()
        .get(0);
    let err = db
        .query("SELECT internal.complete_step($1)", &[&done])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "55000");
    let msg = err.as_db_error().unwrap().message();
    assert!(msg.contains("node \"s\""), "{msg}");
}

#[tokio::test]
async fn every_n8n_corpus_workflow_imports_and_validates_or_reports() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    let member = Request::with_claims(t.claims("member")).method("POST");
    let root = std::path::Path::new("/work/shared/corpus/n8n");
    if !root.exists() {
        panic!("corpus missing at {}", root.display());
    }
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let started = std::time::Instant::now();
        let imported = pgrst(
            &mut api,
            &member,
            "SELECT workflow_id, problems FROM api.import_n8n($1::text::jsonb)",
            &[&text],
        )
        .await;
        let outcome = match imported {
            Err(e) => {
                assert_ne!(e.status, 500, "{}: {e:?}", f.display());
                println!("  rejected {}: {} {}", f.display(), e.code, e.message);
                format!("rejected {}", e.code)
            }
            Ok(rows) => {
                let wf: Uuid = rows[0]["workflow_id"].as_str().unwrap().parse().unwrap();
                for p in rows[0]["problems"].as_array().unwrap() {
                    *codes
                        .entry(format!("import:{}", p["code"].as_str().unwrap()))
                        .or_default() += 1;
                    assert!(
                        p["node"].is_string()
                            || p["edge"].is_string()
                            || p["code"] == "invalid_graph",
                        "{p}"
                    );
                }
                let found = pgrst(
                    &mut api,
                    &member,
                    "SELECT code, node, edge FROM api.validate_workflow($1)",
                    &[&wf],
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", f.display()));
                for p in &found {
                    *codes
                        .entry(format!("validate:{}", p["code"].as_str().unwrap()))
                        .or_default() += 1;
                    assert!(
                        p["node"].is_string()
                            || p["edge"].is_string()
                            || p["code"] == "missing_trigger",
                        "{p}"
                    );
                }
                if found.is_empty() {
                    "valid".into()
                } else {
                    "problems".into()
                }
            }
        };
        assert!(
            started.elapsed().as_secs() < 10,
            "{} took {:?}",
            f.display(),
            started.elapsed()
        );
        *tally.entry(outcome).or_default() += 1;
    }
    println!("n8n corpus: {} files", files.len());
    for (k, v) in &tally {
        println!("  {k}: {v}");
    }
    for (k, v) in &codes {
        println!("    {k}: {v}");
    }
    assert_eq!(files.len(), 1031);
    assert_eq!(tally.values().sum::<usize>(), files.len());
}
