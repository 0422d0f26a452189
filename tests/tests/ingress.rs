//! The public entry points under attack (issue 9, section 3): what an
//! anonymous visitor, a webhook caller or a low-privileged member can do to
//! a workspace through its form, its catch-hooks and its request headers.
//! Requests run through the PostgREST harness on an `authenticator`
//! connection, as PostgREST would run them.

use flowtrack_tests::fixtures::{self, Tenant};
use flowtrack_tests::{connect, connect_authenticator, pgrst, ApiError, Request};
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

const SUBMIT: &str = "SELECT * FROM api.submit_form($1, $2, $3::text::jsonb, $4)";

fn anon(path: &str) -> Request {
    Request::anon().method("POST").path(path)
}

fn as_role(t: &Tenant, role: &str, method: &str, path: &str) -> Request {
    Request::with_claims(t.claims(role))
        .method(method)
        .path(path)
}

fn assert_refused(err: &ApiError, status: u16, code: &str, field: &str) {
    assert_eq!((err.status, err.code.as_str()), (status, code), "{err:?}");
    assert!(
        err.message.starts_with(field),
        "message must name {field}: {err:?}"
    );
    assert!(err.hint.is_some(), "a refusal carries a hint: {err:?}");
}

/// `[[[...]]]`, `depth` levels deep, as JSON text (deeper than serde_json
/// itself would parse).
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Form answers: an email and one `answer`, given as JSON text.
fn answers(email: &str, answer: &str) -> String {
    format!(r#"{{"email": "{email}", "answer": {answer}}}"#)
}

/// A form `slug` asking only for an email, in `t`'s workspace.
async fn form(db: &Client, t: &Tenant, slug: &str) {
    db.batch_execute(&format!(
        "INSERT INTO api.forms (workspace_id, slug, name) VALUES ('{ws}', '{slug}', '{slug}');
         INSERT INTO api.form_fields (workspace_id, form_id, field_key, label, field_type, required)
         SELECT '{ws}', id, 'email', 'Email', 'email', true FROM api.forms WHERE workspace_id = '{ws}' AND slug = '{slug}';",
        ws = t.workspace_id
    ))
    .await
    .unwrap();
}

/// An active workflow of `t` run by form `slug` whose nodes put the lead as
/// deep into what the engine and the worker read as FlowTrack ever does: a
/// webhook with its default body (the context's trigger and lead), a status
/// change (lead.status_changed to an endpoint), and lead.created.
async fn deepest_workflow(db: &Client, t: &Tenant, slug: &str) -> Uuid {
    let graph = json!({"nodes": [
        {"id": "form", "type": "TRIGGER_FORM", "data": {"config": {"form_id": slug}}},
        {"id": "hook", "type": "ACTION_WEBHOOK", "data": {"config": {"url": "https://hooks.example/deep"}}},
        {"id": "mark", "type": "ACTION_UPDATE_LEAD", "data": {"config": {"status": "QUALIFIED"}}}],
        "edges": [{"id": "e1", "source": "form", "target": "hook"}, {"id": "e2", "source": "form", "target": "mark"}]});
    let wf: Uuid = db
        .query_one(
            "INSERT INTO api.workflows (workspace_id, name, status, published_version, published_at)
             VALUES ($1, 'deepest', 'active', 1, now()) RETURNING id",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    db.execute(
        "INSERT INTO api.workflow_versions (workspace_id, workflow_id, version, graph) VALUES ($1, $2, 1, $3::text::jsonb)",
        &[&t.workspace_id, &wf, &graph.to_string()],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO api.workflow_nodes (workspace_id, workflow_id, node_key, node_type, config)
         VALUES ($1, $2, 'form', 'TRIGGER_FORM', jsonb_build_object('form_id', $3::text))",
        &[&t.workspace_id, &wf, &slug],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO api.webhook_endpoints (workspace_id, url, events)
         VALUES ($1, 'https://hooks.example/events', '{lead.created,lead.status_changed}')",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    wf
}

/// Every queued job payload of the workspace, parsed as the worker parses
/// it (serde_json, default recursion limit): a payload it cannot read
/// fails its job, and every later one that carries the same lead.
async fn worker_reads_every_job(db: &Client, ws: Uuid) -> usize {
    let rows = db
        .query(
            "SELECT kind, payload::text FROM internal.jobs WHERE workspace_id = $1",
            &[&ws],
        )
        .await
        .unwrap();
    for r in &rows {
        let (kind, text): (String, String) = (r.get(0), r.get(1));
        if let Err(e) = serde_json::from_str::<Value>(&text) {
            panic!("the worker cannot read a {kind} job: {e}");
        }
    }
    rows.len()
}

#[tokio::test]
async fn anonymous_submissions_never_overwrite_an_existing_lead() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let p = fixtures::populate(&db, &t).await;
    db.execute(
        "UPDATE api.leads SET phone = '+1 555 0100', company = 'Acme', last_name = NULL
          WHERE workspace_id = $1 AND email = $2",
        &[&t.workspace_id, &p.lead_email],
    )
    .await
    .unwrap();
    let fields = json!({"email": p.lead_email, "first_name": "Mallory", "last_name": "Filled",
                        "phone": "+1 555 6666", "company": "Evil Corp", "budget": 1, "referrer": "ad"});
    let rows = pgrst(
        &mut api,
        &anon("/rpc/submit_form"),
        SUBMIT,
        &[&t.slug, &p.form_slug, &fields.to_string(), &"overwrite"],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["accepted"], true);
    let lead = db
        .query_one(
            "SELECT first_name, last_name, phone, company, custom_fields FROM api.leads WHERE workspace_id = $1 AND email = $2",
            &[&t.workspace_id, &p.lead_email],
        )
        .await
        .unwrap();
    // What the lead held stays; only what it lacked is filled in.
    assert_eq!(lead.get::<_, String>(0), "Secret");
    assert_eq!(lead.get::<_, String>(2), "+1 555 0100");
    assert_eq!(lead.get::<_, String>(3), "Acme");
    let custom: Value = lead.get(4);
    assert_eq!(custom["budget"], 5000, "{custom}");
    assert_eq!(lead.get::<_, String>(1), "Filled");
    assert_eq!(custom["referrer"], "ad");
    // Every answer is on record, as submitted.
    let logged: Value = db
        .query_one(
            "SELECT payload -> 'fields' FROM api.lead_events
              WHERE workspace_id = $1 AND event_type = 'FORM_SUBMITTED' AND payload ->> 'submission_id' = 'overwrite'",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, fields);
}

/// Issue 9: one answer 124 levels deep made every later execution for its
/// lead fail with 54001. The ingress limit is what the engine and the worker
/// read, less FlowTrack's own wrapping: the deepest answer accepted runs and
/// every job it makes can be read; one level more is refused up front,
/// naming the answer, wherever it comes from.
#[tokio::test]
async fn json_nesting_is_bounded_at_ingress_by_what_the_engine_reads() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    form(&db, &t, "deep").await;
    form(&db, &t, "quiet").await; // no workflow: a stored answer waits for later executions
    let wf = deepest_workflow(&db, &t, "deep").await;
    // What the engine and the worker parse: serde_json's own limit.
    let parsed = (1..200)
        .take_while(|&d| serde_json::from_str::<Value>(&nested(d)).is_ok())
        .last()
        .unwrap();
    assert_eq!(parsed, 127);
    // FlowTrack wraps a document in up to 4 levels (steps.form.lead.custom_fields).
    let max_depth = parsed - 4;
    let answer_depth = max_depth - 1; // fields -> answer

    // At the limit: accepted, run, and readable downstream.
    let email = "deep@lead.example";
    let fields = answers(email, &nested(answer_depth));
    let rows = pgrst(
        &mut api,
        &anon("/rpc/submit_form"),
        SUBMIT,
        &[&t.slug, &"deep", &fields, &"at-limit"],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["executions_started"], 1);
    let lead: Uuid = db
        .query_one(
            "SELECT id FROM api.leads WHERE workspace_id = $1 AND email = $2",
            &[&t.workspace_id, &email],
        )
        .await
        .unwrap()
        .get(0);
    // A later execution for the same lead runs too.
    db.execute(
        "SELECT internal.start_execution($1, $2, 'manual', '{}', 'later', $3)",
        &[&t.workspace_id, &wf, &lead],
    )
    .await
    .unwrap();
    assert!(
        worker_reads_every_job(&db, t.workspace_id).await >= 4,
        "two webhook jobs, lead.created and lead.status_changed"
    );
    // The worker reports the webhooks done: the engine reads the stored
    // context back (its deepest member is steps.form.lead.custom_fields) and
    // finishes both executions.
    let waiting = db
        .query(
            "SELECT s.id FROM api.execution_steps s JOIN api.workflow_executions e ON e.id = s.execution_id
              WHERE e.workflow_id = $1 AND s.status = 'running'",
            &[&wf],
        )
        .await
        .unwrap();
    assert_eq!(waiting.len(), 2, "one webhook step per execution");
    for step in waiting {
        let id: Uuid = step.get(0);
        db.execute("SELECT internal.complete_step($1, '{}')", &[&id])
            .await
            .unwrap();
    }
    let done: Vec<String> = db
        .query(
            "SELECT status FROM api.workflow_executions WHERE workflow_id = $1",
            &[&wf],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(done, ["completed", "completed"]);

    // One level more: refused before anything is written, naming the answer.
    let leads_before: i64 = db
        .query_one(
            "SELECT count(*) FROM api.leads WHERE workspace_id = $1",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    for (form_slug, depth) in [("deep", answer_depth + 1), ("quiet", 124), ("quiet", 400)] {
        let fields = answers(&format!("poison-{depth}@lead.example"), &nested(depth));
        let err = pgrst(
            &mut api,
            &anon("/rpc/submit_form"),
            SUBMIT,
            &[&t.slug, &form_slug, &fields, &format!("too-deep-{depth}")],
        )
        .await
        .unwrap_err();
        assert_refused(&err, 413, "54001", "fields.answer");
    }
    let leads_after: i64 = db
        .query_one(
            "SELECT count(*) FROM api.leads WHERE workspace_id = $1",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leads_after, leads_before, "no poisoned lead was stored");

    // A member's own write and a webhook payload meet the same bound.
    let too_deep = format!(r#"{{"answer": {}}}"#, nested(answer_depth + 1));
    let err = pgrst(
        &mut api,
        &as_role(&t, "member", "PATCH", "/leads"),
        "UPDATE api.leads SET custom_fields = $1::text::jsonb WHERE id = $2 RETURNING id",
        &[&too_deep, &lead],
    )
    .await
    .unwrap_err();
    assert_refused(&err, 413, "54001", "custom_fields.answer");
    let token = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    db.execute(
        "INSERT INTO api.inbound_webhooks (workspace_id, workflow_id, token_hash, token_prefix)
         VALUES ($1, $2, internal.inbound_token_hash($3), left($3, 8))",
        &[&t.workspace_id, &wf, &token],
    )
    .await
    .unwrap();
    let payload = format!(r#"{{"event_id": "deep", "data": {}}}"#, nested(max_depth));
    let err = pgrst(
        &mut api,
        &anon("/rpc/receive_webhook"),
        "SELECT * FROM api.receive_webhook($1, $2::text::jsonb)",
        &[&token, &payload],
    )
    .await
    .unwrap_err();
    assert_refused(&err, 413, "54001", "payload.data");
    let declared: i32 = db
        .query_one("SELECT internal.max_json_depth()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(declared as usize, max_depth, "the limit the SQL states");
}

/// Issue 9: the 429 of a public form told anyone the workspace's plan and
/// usage (limit, hard_limit, used). Only a token for that workspace sees them.
#[tokio::test]
async fn quota_refusals_tell_strangers_nothing_about_the_plan() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "free").await;
    let stranger = fixtures::tenant(&db, "free").await;
    let p = fixtures::populate(&db, &t).await;
    db.execute(
        "UPDATE api.usage_quotas SET used = hard_limit
          WHERE workspace_id = $1 AND quota_key IN ('leads', 'executions_per_month')",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    let fields = |n: &str| json!({"email": format!("{n}@new.example")}).to_string();
    let numbers = ["100", "120", "limit", "used", "leads", "executions"];
    let generic = |err: &ApiError, who: &str| {
        assert_eq!(
            (err.status, err.code.as_str()),
            (429, "PT429"),
            "{who}: {err:?}"
        );
        assert!(err.detail.is_none(), "{who} sees no detail: {err:?}");
        for n in numbers {
            assert!(
                !err.message.contains(n),
                "{who} must not learn {n}: {err:?}"
            );
        }
    };
    // An anonymous visitor: the new lead does not fit.
    let err = pgrst(
        &mut api,
        &anon("/rpc/submit_form"),
        SUBMIT,
        &[&t.slug, &p.form_slug, &fields("visitor"), &"v"],
    )
    .await
    .unwrap_err();
    generic(&err, "anon");
    // A member of another workspace is a stranger here too.
    let err = pgrst(
        &mut api,
        &as_role(&stranger, "owner", "POST", "/rpc/submit_form"),
        SUBMIT,
        &[&t.slug, &p.form_slug, &fields("stranger"), &"s"],
    )
    .await
    .unwrap_err();
    generic(&err, "another workspace's owner");
    // A webhook caller: the execution does not fit.
    let err = pgrst(
        &mut api,
        &anon("/rpc/receive_webhook"),
        "SELECT * FROM api.receive_webhook($1, '{\"id\": \"over\"}')",
        &[&p.inbound_token],
    )
    .await
    .unwrap_err();
    generic(&err, "webhook caller");
    // The workspace's own members keep the numbers.
    let err = pgrst(
        &mut api,
        &as_role(&t, "member", "POST", "/rpc/submit_form"),
        SUBMIT,
        &[&t.slug, &p.form_slug, &fields("member"), &"m"],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "PT429");
    let detail: Value = serde_json::from_str(err.detail.as_deref().unwrap()).unwrap();
    assert_eq!(detail["key"], "leads");
    assert_eq!(detail["limit"], 100);
}

/// Issue 9: a viewer read the catch-hook tokens and started workflows
/// through receive_webhook, which start_execution refuses them. Tokens are
/// stored hashed and shown once, to the owner or admin who makes or rotates
/// one.
#[tokio::test]
async fn inbound_webhook_tokens_are_shown_once_and_only_to_owners_and_admins() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let p = fixtures::populate(&db, &t).await;
    // Nobody reads a token back, a viewer least of all.
    for role in fixtures::ROLES {
        let rows = pgrst(
            &mut api,
            &as_role(&t, role, "GET", "/inbound_webhooks"),
            "SELECT to_jsonb(h)::text AS r FROM api.inbound_webhooks h",
            &[],
        )
        .await
        .unwrap();
        let seen = Value::Array(rows).to_string();
        assert!(
            !seen.contains(&p.inbound_token),
            "{role} read the token: {seen}"
        );
    }
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM api.inbound_webhooks h WHERE to_jsonb(h)::text LIKE '%' || $1 || '%'",
            &[&p.inbound_token],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "the token itself is not stored");

    // Viewers and members cannot mint or rotate one.
    let hook_id: Uuid = db
        .query_one(
            "SELECT id FROM api.inbound_webhooks WHERE workspace_id = $1",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    for role in ["viewer", "member"] {
        for (sql, arg) in [
            (
                "SELECT * FROM api.create_inbound_webhook($1)",
                p.workflow_id,
            ),
            ("SELECT * FROM api.rotate_inbound_webhook($1)", hook_id),
        ] {
            let err = pgrst(&mut api, &as_role(&t, role, "POST", "/rpc/x"), sql, &[&arg])
                .await
                .unwrap_err();
            assert_eq!(
                (err.status, err.code.as_str()),
                (403, "42501"),
                "{role}: {err:?}"
            );
        }
    }

    // An admin makes one and sees its token once; it works.
    let made = pgrst(
        &mut api,
        &as_role(&t, "admin", "POST", "/rpc/create_inbound_webhook"),
        "SELECT * FROM api.create_inbound_webhook($1, 'calendly')",
        &[&p.workflow_id],
    )
    .await
    .unwrap();
    let token = made[0]["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64);
    assert_eq!(made[0]["token_prefix"], &token[..8]);
    let receive = "SELECT duplicate FROM api.receive_webhook($1, $2::text::jsonb)";
    pgrst(
        &mut api,
        &anon("/rpc/receive_webhook"),
        receive,
        &[&token, &json!({"id": "first"}).to_string()],
    )
    .await
    .unwrap();
    // The owner rotates it: the old URL stops working at once.
    let id: Uuid = made[0]["id"].as_str().unwrap().parse().unwrap();
    let rotated = pgrst(
        &mut api,
        &as_role(&t, "owner", "POST", "/rpc/rotate_inbound_webhook"),
        "SELECT * FROM api.rotate_inbound_webhook($1)",
        &[&id],
    )
    .await
    .unwrap();
    let fresh = rotated[0]["token"].as_str().unwrap().to_string();
    assert_ne!(fresh, token);
    let err = pgrst(
        &mut api,
        &anon("/rpc/receive_webhook"),
        receive,
        &[&token, &json!({"id": "second"}).to_string()],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (404, "PT404"), "{err:?}");
    pgrst(
        &mut api,
        &anon("/rpc/receive_webhook"),
        receive,
        &[&fresh, &json!({"id": "second"}).to_string()],
    )
    .await
    .unwrap();
    // Another workspace's admin cannot rotate this one.
    let other = fixtures::tenant(&db, "pro").await;
    let err = pgrst(
        &mut api,
        &as_role(&other, "admin", "POST", "/rpc/rotate_inbound_webhook"),
        "SELECT * FROM api.rotate_inbound_webhook($1)",
        &[&id],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (404, "PT404"), "{err:?}");
}

/// Renames workflow `wf` as `t`'s admin, behind an X-Forwarded-For of `xff`.
async fn rename(api: &mut Client, t: &Tenant, wf: Uuid, name: &str, xff: &str) {
    let mut req = as_role(t, "admin", "PATCH", "/workflows");
    req.headers = json!({"x-forwarded-for": xff});
    pgrst(
        api,
        &req,
        "UPDATE api.workflows SET name = $1 WHERE id = $2 RETURNING id",
        &[&name, &wf],
    )
    .await
    .unwrap();
}

/// The client address the audit log recorded for the rename to `name`.
async fn audited_ip(db: &Client, wf: Uuid, name: &str) -> Option<String> {
    db.query_one(
        "SELECT host(ip_address) FROM api.audit_logs WHERE entity_id = $1 AND after ->> 'name' = $2",
        &[&wf, &name],
    )
    .await
    .unwrap()
    .get(0)
}

/// The host an audit entry records. Issue 9: it was the first
/// X-Forwarded-For entry, which the client writes; now only entries our own
/// proxies (internal.trusted_proxies) appended are believed.
#[tokio::test]
async fn audit_ip_believes_only_configured_proxies() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let wf = fixtures::published_workflow(&db, &t, "audited").await;
    rename(&mut api, &t, wf, "spoofed", "6.6.6.6").await;
    rename(&mut api, &t, wf, "garbage", "999.1.1.1").await; // an unreadable header must not fail the write
                                                            // TEST-NET-2 stands for the deployment's proxies; other test binaries
                                                            // run before or after this one, never beside it.
    db.execute(
        "INSERT INTO internal.trusted_proxies (network, description) VALUES ('198.51.100.0/24', 'ingress test')",
        &[],
    )
    .await
    .unwrap();
    rename(
        &mut api,
        &t,
        wf,
        "proxied",
        "6.6.6.6, 203.0.113.9, 198.51.100.7",
    )
    .await;
    rename(
        &mut api,
        &t,
        wf,
        "forged",
        "198.51.100.7, 999.1.1.1, 198.51.100.8",
    )
    .await;
    db.execute(
        "DELETE FROM internal.trusted_proxies WHERE network = '198.51.100.0/24'",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        audited_ip(&db, wf, "spoofed").await,
        None,
        "no proxy configured: ignored"
    );
    assert_eq!(audited_ip(&db, wf, "garbage").await, None);
    assert_eq!(
        audited_ip(&db, wf, "proxied").await.as_deref(),
        Some("203.0.113.9")
    );
    assert_eq!(
        audited_ip(&db, wf, "forged").await,
        None,
        "nothing left of garbage is placed"
    );
}
