//! The foundation works end to end: extension, migrations, error mapping,
//! pg_cron, and a real HTTP round trip through the API server.

use flowtrack_tests::{connect, fixtures, jwt, pgrst, Request};
use serde_json::Value;

#[tokio::test]
async fn flowtrack_function_is_callable_from_sql() {
    let db = connect().await;
    let v: String = db
        .query_one("SELECT flowtrack.version()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "0.1.0");
}

#[tokio::test]
async fn postgrest_conf_names_the_harness_pre_request_hook() {
    let conf =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../postgrest.conf")).unwrap();
    let line = format!("db-pre-request = \"{}\"", flowtrack_tests::PRE_REQUEST);
    assert!(conf.contains(&line), "postgrest.conf must contain {line}");
    assert!(conf.contains(&format!("db-schemas = \"{}\"", flowtrack_tests::API_SCHEMA)));
}

#[tokio::test]
async fn pt429_comes_out_of_the_harness_as_429_with_json_detail() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "free").await; // free: 3 active workflows, 20% buffer -> hard cap 3
    let req = Request::with_claims(t.claims("admin"))
        .method("POST")
        .path("/rpc/activate_workflow");
    let mut activated = 0;
    let mut refused = None;
    for i in 0..5 {
        let wf = fixtures::published_workflow(&db, &t, &format!("wf {i}")).await;
        match pgrst(
            &mut db,
            &req,
            "SELECT id, status FROM api.activate_workflow($1)",
            &[&wf],
        )
        .await
        {
            Ok(rows) => {
                assert_eq!(rows[0]["status"], "active");
                activated += 1;
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        activated, 3,
        "floor(3 * 1.2) = 3 active workflows fit on the free plan"
    );
    let err = refused.expect("the fourth activation is refused");
    assert_eq!(err.status, 429, "{err}");
    assert_eq!(err.code, "PT429");
    let detail: Value = serde_json::from_str(err.detail.as_deref().unwrap()).unwrap();
    assert_eq!(detail["key"], "workflows");
    assert_eq!(detail["limit"], 3);
    assert_eq!(detail["used"], 3);
    assert!(
        detail["resets_at"].is_null(),
        "gauges do not reset: {detail}"
    );
    assert!(err.hint.unwrap().contains("Upgrade"));
    // The refusal wrote nothing: the workflow is still paused.
    let paused: i64 = db
        .query_one(
            "SELECT count(*) FROM api.workflows WHERE workspace_id = $1 AND status = 'paused'",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(paused, 1);
}

#[tokio::test]
async fn viewer_cannot_activate_and_gets_403() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let wf = fixtures::published_workflow(&db, &t, "view only").await;
    let req = Request::with_claims(t.claims("viewer")).method("POST");
    let err = pgrst(
        &mut db,
        &req,
        "SELECT * FROM api.activate_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "42501"), "{err}");
}

#[tokio::test]
async fn cron_schedule_works_in_the_test_cluster() {
    let db = connect().await;
    let id: i64 = db
        .query_one(
            "SELECT cron.schedule('smoke-test', '* * * * *', 'SELECT 1')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let n: i64 = db
        .query_one("SELECT count(*) FROM cron.job WHERE jobid = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    db.execute("SELECT cron.unschedule('smoke-test')", &[])
        .await
        .unwrap();
    let launcher: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(launcher, 1, "pg_cron must be preloaded and running");
    let maintenance: i64 = db
        .query_one(
            "SELECT count(*) FROM cron.job WHERE jobname LIKE 'flowtrack-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        maintenance >= 3,
        "the migrations schedule FlowTrack's maintenance jobs"
    );
}

#[tokio::test]
async fn http_round_trip_through_the_api_server() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "free").await;
    let other = fixtures::tenant(&db, "free").await;
    for i in 0..3 {
        let wf = fixtures::published_workflow(&db, &t, &format!("http {i}")).await;
        db.execute(
            "UPDATE api.workflows SET status = 'active' WHERE id = $1",
            &[&wf],
        )
        .await
        .unwrap();
    }
    db.execute(
        "UPDATE api.usage_quotas SET used = 3 WHERE workspace_id = $1 AND quota_key = 'workflows'",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    fixtures::published_workflow(&db, &other, "not yours").await;
    let extra = fixtures::published_workflow(&db, &t, "one too many").await;
    let token = jwt::sign(&t.claims("owner"), &jwt::secret());
    let base = flowtrack_tests::api_url();

    // A JWT-authenticated GET of a tenant table sees exactly its own rows.
    let rows: Vec<Value> = ureq::get(&format!(
        "{base}/workflows?select=name,workspace_id&order=name"
    ))
    .set("Authorization", &format!("Bearer {token}"))
    .call()
    .expect("GET /workflows")
    .into_json()
    .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["workspace_id"] == t.workspace_id.to_string()));

    // An RPC over the quota answers 429 with the JSON detail.
    let resp = ureq::post(&format!("{base}/rpc/activate_workflow"))
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(serde_json::json!({"workflow_id": extra}));
    match resp {
        Err(ureq::Error::Status(429, r)) => {
            let body: Value = r.into_json().unwrap();
            assert_eq!(body["code"], "PT429");
            let detail: Value = serde_json::from_str(body["details"].as_str().unwrap()).unwrap();
            assert_eq!(detail["key"], "workflows");
        }
        other => panic!("expected HTTP 429, got {other:?}"),
    }

    // Without a token the table is closed: 401.
    match ureq::get(&format!("{base}/workflows")).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("expected HTTP 401 for anon, got {other:?}"),
    }
}
