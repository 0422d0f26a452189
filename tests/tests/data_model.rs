//! The data model's behaviour through the API: bad input gets a specific
//! SQLSTATE naming the field and writes nothing; public entry points,
//! API keys, audit, webhooks, templates and daily stats do their job.

use flowtrack_tests::{column, connect, connect_authenticator, fixtures, pgrst, ApiError, Request};
use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

fn assert_error(err: &ApiError, status: u16, code: &str, field: &str) {
    assert_eq!((err.status, err.code.as_str()), (status, code), "{err:?}");
    assert!(
        err.message.starts_with(field) || err.message.contains(&format!("\"{field}")),
        "message must name {field}: {err:?}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_precisely_and_writes_nothing() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "starter").await;
    let other = fixtures::tenant(&db, "starter").await;
    let other_wf = fixtures::published_workflow(&db, &other, "theirs").await;

    // Malformed email: at registration and on a lead.
    let newcomer = Uuid::new_v4();
    let req =
        Request::with_claims(json!({"role": "authenticated", "sub": newcomer})).method("POST");
    let err = pgrst(
        &mut api,
        &req,
        "SELECT id FROM api.register_user('not-an-email')",
        &[],
    )
    .await
    .unwrap_err();
    assert_error(&err, 400, "23514", "email");
    assert!(err.hint.is_some());
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM api.users WHERE id = '{newcomer}'")
        )
        .await,
        0
    );
    let member = Request::with_claims(t.claims("member")).method("POST");
    let err = pgrst(
        &mut api,
        &member,
        "INSERT INTO api.leads (email) VALUES ('bob@') RETURNING id",
        &[],
    )
    .await
    .unwrap_err();
    assert_error(&err, 400, "23514", "email");

    // Unknown plan, then a duplicate slug.
    let owner = Request::with_claims(json!({"role": "authenticated", "sub": t.users["owner"]}))
        .method("POST");
    // Counted per owner: other tests create workspaces in parallel.
    let owned = format!(
        "SELECT count(*) FROM api.workspaces WHERE owner_user_id = '{}'",
        t.users["owner"]
    );
    let before = count(&db, &owned).await;
    let err = pgrst(
        &mut api,
        &owner,
        "SELECT id FROM api.create_workspace('New', 'brand-new-ws', 'platinum')",
        &[],
    )
    .await
    .unwrap_err();
    assert_error(&err, 400, "22023", "plan");
    assert!(err.hint.as_deref().unwrap().contains("free"), "{err:?}");
    let err = pgrst(
        &mut api,
        &owner,
        "SELECT id FROM api.create_workspace('Copy', $1)",
        &[&other.slug],
    )
    .await
    .unwrap_err();
    assert_error(&err, 409, "23505", "slug");
    assert_eq!(count(&db, &owned).await, before, "nothing was created");
    // And the happy path, for contrast.
    let slug = format!("fresh-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let rows = pgrst(
        &mut api,
        &owner,
        "SELECT id, slug FROM api.create_workspace('Fresh', $1, 'starter')",
        &[&slug],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["slug"], slug.as_str());

    // JSON over the size limit (64 KiB by default): 413.
    let huge = json!({"email": "big@payload.example", "notes": "x".repeat(70_000)}).to_string();
    let err = pgrst(&mut api, &member, "INSERT INTO api.leads (email, custom_fields) VALUES ('big@payload.example', $1::text::jsonb) RETURNING id", &[&huge])
        .await
        .unwrap_err();
    assert_error(&err, 413, "54000", "custom_fields");
    let anon = Request::anon().method("POST");
    let err = pgrst(
        &mut api,
        &anon,
        "SELECT * FROM api.submit_form($1, 'contact', $2::text::jsonb)",
        &[&t.slug, &huge],
    )
    .await
    .unwrap_err();
    assert_error(&err, 413, "54000", "fields");
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM api.leads WHERE workspace_id = '{}'",
                t.workspace_id
            )
        )
        .await,
        0
    );

    // A foreign key into another tenant is indistinguishable from a missing row.
    let err = pgrst(
        &mut api,
        &member,
        "INSERT INTO api.workflow_nodes (workflow_id, node_key, node_type) VALUES ($1, 'x', 'TRIGGER_MANUAL') RETURNING id",
        &[&other_wf],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (409, "23503"), "{err:?}");
    assert!(
        err.message.contains("workflow_nodes_workflow_fk"),
        "{err:?}"
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM api.workflow_nodes WHERE workflow_id = '{other_wf}'")
        )
        .await,
        0
    );
}

#[tokio::test]
async fn public_form_creates_a_lead_and_starts_its_workflows() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "starter").await;
    let p = fixtures::populate(&db, &t).await;
    let anon = Request::anon().method("POST").path("/rpc/submit_form");
    let sql = "SELECT * FROM api.submit_form($1, $2, $3::text::jsonb, $4)";
    let fields =
        json!({"email": "ann@prospect.example", "first_name": "Ann", "budget": 2500}).to_string();
    let rows = pgrst(
        &mut api,
        &anon,
        sql,
        &[&t.slug, &p.form_slug, &fields, &"sub-1"],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["accepted"], true);
    assert_eq!(rows[0]["executions_started"], 1);
    assert!(
        rows[0].get("lead_id").is_none(),
        "anon learns nothing about the lead"
    );
    let lead: (String, serde_json::Value) = {
        let r = db
            .query_one("SELECT source, custom_fields FROM api.leads WHERE workspace_id = $1 AND email = 'ann@prospect.example'", &[&t.workspace_id])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(lead.0, "form");
    assert_eq!(lead.1["budget"], 2500);
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM api.lead_events WHERE workspace_id = '{}' AND event_type = 'FORM_SUBMITTED'", t.workspace_id)).await,
        1
    );
    // The same submission again: no second execution.
    let again = pgrst(
        &mut api,
        &anon,
        sql,
        &[&t.slug, &p.form_slug, &fields, &"sub-1"],
    )
    .await
    .unwrap();
    assert_eq!(again[0]["executions_started"], 1);
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM api.workflow_executions WHERE workspace_id = '{}' AND trigger_type = 'form'", t.workspace_id)).await,
        1
    );
    // Unknown workspace and unknown form get the same answer.
    let e1 = pgrst(
        &mut api,
        &anon,
        sql,
        &[&"no-such-workspace", &"contact", &fields, &"x"],
    )
    .await
    .unwrap_err();
    let e2 = pgrst(
        &mut api,
        &anon,
        sql,
        &[&t.slug, &"no-such-form", &fields, &"x"],
    )
    .await
    .unwrap_err();
    assert_eq!((e1.status, e2.status), (404, 404));
    assert_eq!(
        e1.message
            .replace("no-such-workspace", "W")
            .replace("contact", "F"),
        e2.message
            .replace(&t.slug, "W")
            .replace("no-such-form", "F")
    );
    // Field validation names the field.
    let bad = json!({"email": "nope"}).to_string();
    let err = pgrst(&mut api, &anon, sql, &[&t.slug, &p.form_slug, &bad, &"y"])
        .await
        .unwrap_err();
    assert_error(&err, 400, "23514", "email");
    let missing = json!({"first_name": "No email"}).to_string();
    let err = pgrst(
        &mut api,
        &anon,
        sql,
        &[&t.slug, &p.form_slug, &missing, &"z"],
    )
    .await
    .unwrap_err();
    assert_error(&err, 400, "23502", "email");
    // Anon can read nothing.
    let get = Request::anon().method("GET").path("/leads");
    match pgrst(&mut api, &get, "SELECT id FROM api.leads", &[]).await {
        Err(e) => assert_eq!(e.status, 401),
        Ok(rows) => panic!("anon read leads: {rows:?}"),
    }
}

#[tokio::test]
async fn api_keys_are_hashed_scoped_and_revocable() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "starter").await;
    fixtures::populate(&db, &t).await;
    let owner = Request::with_claims(t.claims("owner")).method("POST");
    let rows = pgrst(
        &mut api,
        &owner,
        "SELECT id, key, prefix FROM api.create_api_key('ci', '{leads:read,executions:write}')",
        &[],
    )
    .await
    .unwrap();
    let key = rows[0]["key"].as_str().unwrap().to_string();
    let key_id: Uuid = rows[0]["id"].as_str().unwrap().parse().unwrap();
    assert!(key.starts_with("ft_") && key.len() > 60);
    let stored: i64 = db
        .query_one("SELECT count(*) FROM api.api_keys WHERE id = $1 AND key_hash = sha256(convert_to($2, 'UTF8'))", &[&key_id, &key])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "only the hash is kept");
    let dump_like: i64 = db
        .query_one(
            "SELECT count(*) FROM api.api_keys k WHERE to_jsonb(k)::text LIKE '%' || $1 || '%'",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dump_like, 0, "the key itself is stored nowhere");

    let with_key = |method: &str, path: &str, k: &str| {
        let mut r = Request::anon().method(method).path(path);
        r.headers = json!({"x-api-key": k});
        r
    };
    let rows = pgrst(
        &mut api,
        &with_key("GET", "/leads", &key),
        "SELECT email FROM api.leads",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "the key reads its workspace's leads");
    let err = pgrst(
        &mut api,
        &with_key("POST", "/leads", &key),
        "INSERT INTO api.leads (email) VALUES ('k@k.io') RETURNING id",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "PT403"), "{err:?}");
    let err = pgrst(
        &mut api,
        &with_key("GET", "/workflows", &key),
        "SELECT id FROM api.workflows",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 403, "no workflows scope");
    let err = pgrst(
        &mut api,
        &with_key("GET", "/api_keys", &key),
        "SELECT id FROM api.api_keys",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 403, "keys never reach keys");
    let err = pgrst(
        &mut api,
        &with_key("GET", "/leads", "ft_forged"),
        "SELECT id FROM api.leads",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (401, "PT401"));
    // Revoked: refused at once.
    pgrst(
        &mut api,
        &owner.clone().method("PATCH"),
        "UPDATE api.api_keys SET revoked_at = now() WHERE id = $1 RETURNING id",
        &[&key_id],
    )
    .await
    .unwrap();
    let err = pgrst(
        &mut api,
        &with_key("GET", "/leads", &key),
        "SELECT id FROM api.leads",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 401);
    // Creating and revoking the key were audited, without the hash.
    let audit: Vec<String> = column(
        &db,
        "SELECT action FROM api.audit_logs WHERE entity_id = $1 ORDER BY created_at",
        &[&key_id],
    )
    .await;
    assert_eq!(audit, vec!["api_key.created", "api_key.updated"]);
    let hashed: i64 = db
        .query_one("SELECT count(*) FROM api.audit_logs WHERE entity_id = $1 AND (after ? 'key_hash' OR before ? 'key_hash')", &[&key_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hashed, 0);
}

#[tokio::test]
async fn audit_records_actor_and_before_after() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let wf = fixtures::published_workflow(&db, &t, "audited").await;
    let mut admin = Request::with_claims(t.claims("admin"))
        .method("POST")
        .path("/rpc/activate_workflow");
    admin.headers = json!({"x-forwarded-for": "203.0.113.7, 10.0.0.1", "user-agent": "curl/8"});
    pgrst(
        &mut api,
        &admin,
        "SELECT status FROM api.activate_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    let row = db
        .query_one(
            "SELECT actor_user_id, actor_type, before ->> 'status', after ->> 'status', host(ip_address), user_agent
               FROM api.audit_logs WHERE entity_id = $1 AND action = 'workflow.updated'",
            &[&wf],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), t.users["admin"]);
    assert_eq!(row.get::<_, String>(1), "user");
    assert_eq!(
        (row.get::<_, String>(2), row.get::<_, String>(3)),
        ("paused".into(), "active".into())
    );
    // No trusted proxy is configured, so the client-written header is not
    // believed (tests/tests/ingress.rs covers configured proxies).
    assert_eq!(row.get::<_, Option<String>>(4), None);
    assert_eq!(row.get::<_, String>(5), "curl/8");
    // Members cannot read the audit log; admins can.
    let member = Request::with_claims(t.claims("member"));
    assert!(
        pgrst(&mut api, &member, "SELECT id FROM api.audit_logs", &[])
            .await
            .unwrap()
            .is_empty()
    );
    let admin_get = Request::with_claims(t.claims("admin"));
    assert!(
        !pgrst(&mut api, &admin_get, "SELECT id FROM api.audit_logs", &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn lead_events_fan_out_to_webhook_deliveries_tracked_through_the_worker() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let member = Request::with_claims(t.claims("member")).method("POST");
    let admin = Request::with_claims(t.claims("admin")).method("POST");
    pgrst(&mut api, &admin, "SELECT id FROM api.create_webhook_endpoint('http://127.0.0.1:9/hook', '{lead.created,lead.status_changed}')", &[])
        .await
        .unwrap();
    let lead = pgrst(
        &mut api,
        &member,
        "INSERT INTO api.leads (email) VALUES ('hook@lead.example') RETURNING id",
        &[],
    )
    .await
    .unwrap();
    let lead_id: Uuid = lead[0]["id"].as_str().unwrap().parse().unwrap();
    pgrst(
        &mut api,
        &member.clone().method("PATCH"),
        "UPDATE api.leads SET status = 'QUALIFIED' WHERE id = $1 RETURNING id",
        &[&lead_id],
    )
    .await
    .unwrap();
    let events: Vec<String> = column(
        &db,
        "SELECT event_type FROM api.webhook_deliveries WHERE workspace_id = $1 ORDER BY created_at, event_type",
        &[&t.workspace_id],
    )
    .await;
    assert_eq!(events, vec!["lead.created", "lead.status_changed"]);
    let status_event =
        count(&db, &format!("SELECT count(*) FROM api.lead_events WHERE lead_id = '{lead_id}' AND event_type = 'STATUS_CHANGED'")).await;
    assert_eq!(status_event, 1);
    let activity: bool = db
        .query_one(
            "SELECT last_activity_at IS NOT NULL FROM api.leads WHERE id = $1",
            &[&lead_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(activity, "lead events move last_activity_at");

    // The worker claims the jobs and reports; the deliveries follow.
    let job_ids: Vec<Uuid> = column(
        &db,
        "SELECT job_id FROM api.webhook_deliveries WHERE workspace_id = $1",
        &[&t.workspace_id],
    )
    .await;
    let worker = connect().await;
    worker
        .batch_execute("SET ROLE flowtrack_worker")
        .await
        .unwrap();
    worker
        .execute(
            "UPDATE internal.jobs SET run_at = now() WHERE id = ANY($1)",
            &[&job_ids],
        )
        .await
        .expect_err("the worker role cannot touch the queue table directly");
    // Claims through the worker's own function would take other tests' jobs
    // too: lease this tenant's as the claim does, report as the worker.
    let leases = fixtures::lease_jobs(&db, t.workspace_id).await;
    assert!(leases.len() >= 2, "leased {}", leases.len());
    let first = leases.iter().find(|l| l.id == job_ids[0]).copied().unwrap();
    let second = leases.iter().find(|l| l.id == job_ids[1]).copied().unwrap();
    let done: String = worker
        .query_one(
            "SELECT outcome FROM internal.complete_jobs('test-worker', ARRAY[$1::uuid], ARRAY[$2::integer],
                    ARRAY['{\"status\": 200, \"body\": \"ok\", \"duration_ms\": 12}'::jsonb])",
            &[&first.id, &first.fence],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(done, "completed");
    let failed: String = worker
        .query_one(
            "SELECT outcome FROM internal.fail_jobs('test-worker', ARRAY[$1::uuid], ARRAY[$2::integer],
                    ARRAY['HTTP 503'], ARRAY[true], ARRAY['{\"status\": 503}'::jsonb])",
            &[&second.id, &second.fence],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, "retrying");
    let states: Vec<(String, Option<i32>)> = db
        .query("SELECT status, response_status FROM api.webhook_deliveries WHERE workspace_id = $1 ORDER BY status", &[&t.workspace_id])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        states,
        vec![
            ("retrying".into(), Some(503)),
            ("succeeded".into(), Some(200))
        ]
    );
}

#[tokio::test]
async fn templates_search_and_instantiate() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "starter").await;
    let anon = Request::anon().method("POST");
    let rows = pgrst(
        &mut api,
        &anon,
        "SELECT slug FROM api.search_templates('demo follow up')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["slug"], "demo-follow-up");
    let rows = pgrst(
        &mut api,
        &anon,
        "SELECT slug FROM api.search_templates('budget -slack')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r["slug"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["qualify-by-budget"]
    );
    let member = Request::with_claims(t.claims("member")).method("POST");
    let rows = pgrst(
        &mut api,
        &member,
        "SELECT x AS id FROM api.create_workflow_from_template('demo-follow-up', 'My follow-up') x",
        &[],
    )
    .await
    .unwrap();
    let wf: Uuid = rows[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM api.workflow_nodes WHERE workflow_id = '{wf}'")
        )
        .await,
        5
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM api.workflow_edges WHERE workflow_id = '{wf}'")
        )
        .await,
        4
    );
    let err = pgrst(
        &mut api,
        &member,
        "SELECT * FROM api.create_workflow_from_template('nope')",
        &[],
    )
    .await
    .unwrap_err();
    assert_error(&err, 404, "PT404", "template_slug");
}

#[tokio::test]
async fn daily_stats_roll_up_per_workspace() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    let wf = fixtures::published_workflow(&db, &t, "stats").await;
    db.execute(
        "UPDATE api.workflows SET status = 'active' WHERE id = $1",
        &[&wf],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO api.leads (workspace_id, email) VALUES ($1, 'counted@example.test')",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT internal.start_execution($1, $2, 'manual', '{}', 'stats')",
        &[&t.workspace_id, &wf],
    )
    .await
    .unwrap();
    let read = "SELECT leads_created, executions_started FROM api.workspace_daily_stats
                 WHERE workspace_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date";
    // Other tests' open transactions hold the watermark back a little.
    let mut seen = None;
    for _ in 0..300 {
        db.execute("SELECT internal.roll_up_daily_stats()", &[])
            .await
            .unwrap();
        seen = db
            .query_opt(read, &[&t.workspace_id])
            .await
            .unwrap()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, i32>(1)));
        if seen == Some((1, 1)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some((1, 1)), "the lead and the execution, once each");
    for _ in 0..2 {
        db.execute("SELECT internal.roll_up_daily_stats()", &[])
            .await
            .unwrap();
    }
    let row = db.query_one(read, &[&t.workspace_id]).await.unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, i32>(1)),
        (1, 1),
        "incremental, not double-counted"
    );
}
