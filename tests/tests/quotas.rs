//! Quotas: atomic under concurrency, idempotent, rolled over on the
//! anniversary, reconciled from the event log, enforced at the entry points.

use flowtrack_tests::{column, connect, fixtures, pgrst, Request};
use tokio_postgres::Client;
use uuid::Uuid;

use fixtures::quota_used as used;

async fn set_limit(db: &Client, ws: Uuid, key: &str, limit: i64) {
    db.execute(
        "UPDATE api.usage_quotas SET limit_value = $3::bigint, hard_limit = floor($3::bigint * 1.2)::bigint
          WHERE workspace_id = $1 AND quota_key = $2",
        &[&ws, &key, &limit],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_never_pass_the_hard_cap() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    set_limit(&db, t.workspace_id, "executions_per_month", 2_000).await; // hard cap 2,400
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let ws = t.workspace_id;
        tasks.push(tokio::spawn(async move {
            let c = connect().await;
            let (mut ok, mut refused) = (0u32, 0u32);
            for _ in 0..1_000 {
                match c
                    .execute(
                        "SELECT internal.consume_quota($1, 'executions_per_month', 1)",
                        &[&ws],
                    )
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(e) if e.code().map(|c| c.code()) == Some("PT429") => refused += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (o, r) = task.await.unwrap();
        ok += o;
        refused += r;
    }
    assert_eq!(ok, 2_400, "exactly the hard cap succeeds");
    assert_eq!(refused, 32_000 - 2_400);
    assert_eq!(
        used(&db, t.workspace_id, "executions_per_month").await,
        2_400
    );
    let events: i64 = db
        .query_one(
            "SELECT count(*) FROM api.usage_events WHERE workspace_id = $1 AND event_type = 'consumed'",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        events, 2_400,
        "one usage event per successful consumption, none for refusals"
    );
    let soft: i64 = db
        .query_one(
            "SELECT count(*) FROM api.usage_events WHERE workspace_id = $1 AND event_type = 'soft_limit_reached'",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(soft, 1, "crossing 100% is recorded exactly once");
}

#[tokio::test]
async fn idempotent_replay_counts_once_even_concurrently() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    let sql = "SELECT used, replayed FROM internal.consume_quota($1, 'executions_per_month', 5, 'run-42')";
    let first = db.query_one(sql, &[&t.workspace_id]).await.unwrap();
    assert_eq!(
        (first.get::<_, i64>(0), first.get::<_, bool>(1)),
        (5, false)
    );
    let again = db.query_one(sql, &[&t.workspace_id]).await.unwrap();
    assert_eq!((again.get::<_, i64>(0), again.get::<_, bool>(1)), (5, true));
    // Eight connections racing on one new key: exactly one counts.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let ws = t.workspace_id;
        tasks.push(tokio::spawn(async move {
            let c = connect().await;
            c.query_one("SELECT replayed FROM internal.consume_quota($1, 'executions_per_month', 1, 'race')", &[&ws])
                .await
                .unwrap()
                .get::<_, bool>(0)
        }));
    }
    let mut fresh = 0;
    for task in tasks {
        if !task.await.unwrap() {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1);
    assert_eq!(used(&db, t.workspace_id, "executions_per_month").await, 6);
}

#[tokio::test]
async fn period_rolls_over_on_first_use_after_the_anniversary() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    db.execute(
        "SELECT internal.consume_quota($1, 'executions_per_month', 7)",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    db.execute(
        "SELECT internal.consume_quota($1, 'leads', 1)",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    // The workspace's anniversary moves 40 days back: its period has ended.
    db.execute(
        "UPDATE api.workspaces SET created_at = now() - interval '40 days' WHERE id = $1;",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE api.usage_quotas SET period_start = now() - interval '40 days', period_end = now() - interval '10 days'
          WHERE workspace_id = $1",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    let row = db
        .query_one(
            "SELECT used, resets_at > now() FROM internal.consume_quota($1, 'executions_per_month', 1)",
            &[&t.workspace_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "the new period starts from zero");
    assert!(row.get::<_, bool>(1));
    assert_eq!(
        used(&db, t.workspace_id, "leads").await,
        1,
        "gauges carry over"
    );
    let closed: i64 = db
        .query_one(
            "SELECT used FROM internal.usage_quota_history WHERE workspace_id = $1 AND quota_key = 'executions_per_month'",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(closed, 7, "the closed period is kept in history");
    // The new period is the anniversary one: it started 40 days after creation minus one month.
    let aligned: bool = db
        .query_one(
            "SELECT q.period_start = w.created_at + interval '1 month'
               FROM api.usage_quotas q JOIN api.workspaces w ON w.id = q.workspace_id
              WHERE q.workspace_id = $1 AND q.quota_key = 'executions_per_month'",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(aligned);
}

#[tokio::test]
async fn reconciliation_reports_and_repairs_drift() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "starter").await;
    for _ in 0..3 {
        db.execute(
            "SELECT internal.consume_quota($1, 'executions_per_month', 2)",
            &[&t.workspace_id],
        )
        .await
        .unwrap();
    }
    db.execute(
        "UPDATE api.usage_quotas SET used = 50 WHERE workspace_id = $1 AND quota_key = 'executions_per_month'",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    let rows = db
        .query("SELECT quota_key, recorded, recomputed, drift, repaired FROM internal.reconcile_quotas($1)", &[&t.workspace_id])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "executions_per_month");
    assert_eq!(
        (
            rows[0].get::<_, i64>(1),
            rows[0].get::<_, i64>(2),
            rows[0].get::<_, i64>(3)
        ),
        (50, 6, 44)
    );
    assert!(rows[0].get::<_, bool>(4));
    assert_eq!(used(&db, t.workspace_id, "executions_per_month").await, 6);
    let again = db
        .query(
            "SELECT * FROM internal.reconcile_quotas($1)",
            &[&t.workspace_id],
        )
        .await
        .unwrap();
    assert!(again.is_empty(), "no drift after repair");
}

#[tokio::test]
async fn check_quota_is_read_only_and_reports_state() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "free").await;
    db.execute(
        "SELECT internal.consume_quota($1, 'executions_per_month', 30)",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    let req = Request::with_claims(t.claims("viewer"));
    let rows = pgrst(
        &mut db,
        &req,
        "SELECT * FROM api.check_quota('executions_per_month', 100)",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["used"], 30);
    assert_eq!(rows[0]["limit_value"], 100);
    assert_eq!(rows[0]["remaining"], 70);
    assert_eq!(rows[0]["allowed"], false, "30 + 100 > 120");
    assert!(rows[0]["resets_at"].is_string());
    let err = pgrst(
        &mut db,
        &req,
        "SELECT * FROM api.check_quota('bananas')",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "22023"));
    assert!(err.message.contains("quota_key"), "{err}");
}

#[tokio::test]
async fn leads_are_a_gauge_enforced_on_insert_and_freed_on_delete() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "free").await; // 100 leads, hard cap 120
    let member = Request::with_claims(t.claims("member"))
        .method("POST")
        .path("/leads");
    let bulk = "INSERT INTO api.leads (email) SELECT 'l' || g || '@example.test' FROM generate_series(1, $1::int) g RETURNING id";
    pgrst(&mut db, &member, bulk, &[&118i32]).await.unwrap();
    assert_eq!(used(&db, t.workspace_id, "leads").await, 118);
    let err = pgrst(
        &mut db,
        &member,
        "INSERT INTO api.leads (email) VALUES ('a@x.io'), ('b@x.io'), ('c@x.io') RETURNING id",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status, 429, "{err}");
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM api.leads WHERE workspace_id = $1",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 118, "the refused statement wrote nothing");
    // Soft delete frees slots; then the same insert fits.
    let patch = Request::with_claims(t.claims("member"))
        .method("PATCH")
        .path("/leads");
    pgrst(&mut db, &patch, "UPDATE api.leads SET deleted_at = now() WHERE email IN ('l1@example.test', 'l2@example.test') RETURNING id", &[])
        .await
        .unwrap();
    assert_eq!(used(&db, t.workspace_id, "leads").await, 116);
    pgrst(
        &mut db,
        &member,
        "INSERT INTO api.leads (email) VALUES ('a@x.io'), ('b@x.io'), ('c@x.io') RETURNING id",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(used(&db, t.workspace_id, "leads").await, 119);
    let del = Request::with_claims(t.claims("admin"))
        .method("DELETE")
        .path("/leads");
    pgrst(
        &mut db,
        &del,
        "DELETE FROM api.leads WHERE email = 'a@x.io' RETURNING id",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(used(&db, t.workspace_id, "leads").await, 118);
}

#[tokio::test]
async fn email_jobs_are_metered_when_queued() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "free").await; // 50 emails, hard cap 60
    let enqueue = "SELECT internal.enqueue_job('email', '{\"to\":\"a@b.io\"}', $1)";
    for _ in 0..60 {
        db.execute(enqueue, &[&t.workspace_id]).await.unwrap();
    }
    let err = db.execute(enqueue, &[&t.workspace_id]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "PT429");
    let jobs: i64 = db
        .query_one(
            "SELECT count(*) FROM internal.jobs WHERE workspace_id = $1",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 60, "the refused job was not queued");
}

#[tokio::test]
async fn activation_under_the_limit_increments_and_deactivation_frees() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "free").await;
    let wf = fixtures::published_workflow(&db, &t, "toggle").await;
    let req = Request::with_claims(t.claims("member")).method("POST");
    pgrst(
        &mut db,
        &req,
        "SELECT status FROM api.activate_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    pgrst(
        &mut db,
        &req,
        "SELECT status FROM api.activate_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    assert_eq!(
        used(&db, t.workspace_id, "workflows").await,
        1,
        "activation is idempotent"
    );
    let rows = pgrst(
        &mut db,
        &req,
        "SELECT status FROM api.deactivate_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    assert_eq!(rows[0]["status"], "paused");
    assert_eq!(used(&db, t.workspace_id, "workflows").await, 0);
    // Another tenant's workflow id is indistinguishable from a missing one.
    let other = fixtures::tenant(&db, "free").await;
    let foreign = fixtures::published_workflow(&db, &other, "foreign").await;
    let err = pgrst(
        &mut db,
        &req,
        "SELECT status FROM api.activate_workflow($1)",
        &[&foreign],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (404, "PT404"), "{err}");
}

#[tokio::test]
async fn starting_an_execution_is_metered_once_per_idempotency_key() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "free").await; // 100 executions, hard cap 120
    let wf = fixtures::published_workflow(&db, &t, "runs").await;
    db.execute(
        "UPDATE api.workflows SET status = 'active' WHERE id = $1",
        &[&wf],
    )
    .await
    .unwrap();
    let req = Request::with_claims(t.claims("member"))
        .method("POST")
        .path("/rpc/start_execution");
    let sql = "SELECT execution_id, created FROM api.start_execution($1, '{}', $2)";
    let first = pgrst(&mut db, &req, sql, &[&wf, &"form-1"]).await.unwrap();
    let again = pgrst(&mut db, &req, sql, &[&wf, &"form-1"]).await.unwrap();
    assert_eq!(first[0]["execution_id"], again[0]["execution_id"]);
    assert_eq!(
        (first[0]["created"].as_bool(), again[0]["created"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(used(&db, t.workspace_id, "executions_per_month").await, 1);
    let version: i32 = db
        .query_one(
            "SELECT version FROM api.workflow_executions WHERE workflow_id = $1",
            &[&wf],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        version, 1,
        "the execution is pinned to the published version"
    );
    db.execute(
        "UPDATE api.usage_quotas SET used = 120 WHERE workspace_id = $1 AND quota_key = 'executions_per_month'",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    let err = pgrst(&mut db, &req, sql, &[&wf, &"form-2"])
        .await
        .unwrap_err();
    assert_eq!(err.status, 429, "{err}");
    let runs: i64 = db
        .query_one(
            "SELECT count(*) FROM api.workflow_executions WHERE workflow_id = $1",
            &[&wf],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1, "a refused start leaves no execution behind");
    // A replay of an existing key is still answered over the limit: nothing new is counted.
    let replay = pgrst(&mut db, &req, sql, &[&wf, &"form-1"]).await.unwrap();
    assert_eq!(replay[0]["created"], false);
}

#[tokio::test]
async fn unlimited_keys_stay_unlimited_across_rollover_and_upgrades() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "enterprise").await;
    db.execute(
        "SELECT internal.consume_quota($1, 'executions_per_month', 5)",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE api.usage_quotas SET period_start = now() - interval '40 days', period_end = now() - interval '10 days'
          WHERE workspace_id = $1",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE api.workspaces SET created_at = now() - interval '40 days' WHERE id = $1",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    for key in ["executions_per_month", "ai_tokens", "leads"] {
        db.execute(
            "SELECT internal.consume_quota($1, $2, 1000000)",
            &[&t.workspace_id, &key],
        )
        .await
        .unwrap_or_else(|e| panic!("{key} must stay unlimited after rollover: {e}"));
    }
    // Upgrading mid-period from a capped plan to an unlimited one lifts the cap.
    let p = fixtures::tenant(&db, "pro").await;
    db.execute(
        "SELECT internal.consume_quota($1, 'executions_per_month', 700)",
        &[&p.workspace_id],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE api.workspaces SET plan_id = (SELECT id FROM api.subscription_plans WHERE code = 'enterprise') WHERE id = $1;",
        &[&p.workspace_id],
    )
    .await
    .unwrap();
    db.execute("SELECT internal.sync_quotas($1)", &[&p.workspace_id])
        .await
        .unwrap();
    let hard: Option<i64> = db
        .query_one("SELECT hard_limit FROM api.usage_quotas WHERE workspace_id = $1 AND quota_key = 'executions_per_month'", &[&p.workspace_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hard, None);
    db.execute(
        "SELECT internal.consume_quota($1, 'executions_per_month', 100000)",
        &[&p.workspace_id],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_refused_call_does_not_burn_its_idempotency_key() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "free").await;
    db.execute(
        "UPDATE api.usage_quotas SET used = 120 WHERE workspace_id = $1 AND quota_key = 'executions_per_month'",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    let sql =
        "SELECT replayed FROM internal.consume_quota($1, 'executions_per_month', 1, 'retry-me')";
    let err = db.query_one(sql, &[&t.workspace_id]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "PT429");
    // Even a caller that swallows the refusal and commits keeps the key free.
    let outcome: String = db
        .query_one("SELECT outcome FROM flowtrack.consume_quota($1, 'executions_per_month', 1, 'retry-me')", &[&t.workspace_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome, "refused");
    db.execute(
        "UPDATE api.usage_quotas SET used = 10 WHERE workspace_id = $1 AND quota_key = 'executions_per_month'",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    let replayed: bool = db.query_one(sql, &[&t.workspace_id]).await.unwrap().get(0);
    assert!(!replayed, "the key counts now that there is room");
    assert_eq!(used(&db, t.workspace_id, "executions_per_month").await, 11);
}

#[tokio::test]
async fn gauges_never_reset_and_the_copied_kind_follows_the_catalog() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    let sql = "SELECT resets_at IS NULL FROM internal.consume_quota($1, $2, 1)";
    let gauge: bool = db
        .query_one(sql, &[&t.workspace_id, &"leads"])
        .await
        .unwrap()
        .get(0);
    assert!(gauge, "a gauge has no reset");
    let period: bool = db
        .query_one(sql, &[&t.workspace_id, &"executions_per_month"])
        .await
        .unwrap()
        .get(0);
    assert!(!period, "a period key resets at period_end");
    // usage_quotas keeps a copy of the key's kind (so the hot UPDATE needs no
    // join); a cascading foreign key keeps it equal to the catalog.
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "UPDATE api.quota_keys SET kind = 'period' WHERE key = 'leads'",
        &[],
    )
    .await
    .unwrap();
    let kind: String = tx
        .query_one(
            "SELECT quota_kind FROM api.usage_quotas WHERE workspace_id = $1 AND quota_key = 'leads'",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "period");
    let err = tx
        .execute(
            "UPDATE api.usage_quotas SET quota_kind = 'metered' WHERE workspace_id = $1 AND quota_key = 'leads'",
            &[&t.workspace_id],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23503", "{err}");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn usage_events_get_increasing_ids() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    for _ in 0..3 {
        db.execute(
            "SELECT internal.consume_quota($1, 'executions_per_month', 1)",
            &[&t.workspace_id],
        )
        .await
        .unwrap();
    }
    let ids: Vec<i64> = column(
        &db,
        "SELECT id FROM api.usage_events WHERE workspace_id = $1 AND event_type = 'consumed' ORDER BY occurred_at, id",
        &[&t.workspace_id],
    )
    .await;
    assert_eq!(ids.len(), 3, "one event per call");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

/// Issue 12: every way out of "active and not deleted" frees the workflows
/// slot (pause, archive, soft delete, delete), every way in takes one, and
/// reconciliation repairs a gauge from the rows that exist.
#[tokio::test]
async fn workflow_slots_follow_every_way_in_and_out_and_reconcile_repairs_gauges() {
    let db = connect().await;
    let mut api = flowtrack_tests::connect_authenticator().await;
    let t = fixtures::tenant(&db, "free").await; // 3 active workflows
    let owner = flowtrack_tests::Request::with_claims(t.claims("owner")).method("POST");
    let mut wfs = Vec::new();
    for i in 0..4 {
        wfs.push(fixtures::published_workflow(&db, &t, &format!("slot {i}")).await);
    }
    let activate = "SELECT id FROM api.activate_workflow($1)";
    for wf in &wfs[..3] {
        flowtrack_tests::pgrst(&mut api, &owner, activate, &[wf])
            .await
            .unwrap();
    }
    assert_eq!(used(&db, t.workspace_id, "workflows").await, 3);
    let full = flowtrack_tests::pgrst(&mut api, &owner, activate, &[&wfs[3]])
        .await
        .unwrap_err();
    assert_eq!(full.status, 429, "{full}");

    // Archive, soft delete (a client PATCH of deleted_at), hard delete.
    flowtrack_tests::pgrst(
        &mut api,
        &owner,
        "SELECT id FROM api.archive_workflow($1)",
        &[&wfs[0]],
    )
    .await
    .unwrap();
    assert_eq!(used(&db, t.workspace_id, "workflows").await, 2, "archived");
    flowtrack_tests::pgrst(
        &mut api,
        &owner.clone().method("PATCH"),
        "UPDATE api.workflows SET deleted_at = now() WHERE id = $1 RETURNING id",
        &[&wfs[1]],
    )
    .await
    .unwrap();
    assert_eq!(
        used(&db, t.workspace_id, "workflows").await,
        1,
        "soft-deleted"
    );
    flowtrack_tests::pgrst(
        &mut api,
        &owner.clone().method("DELETE"),
        "DELETE FROM api.workflows WHERE id = $1 RETURNING id",
        &[&wfs[2]],
    )
    .await
    .unwrap();
    assert_eq!(used(&db, t.workspace_id, "workflows").await, 0, "deleted");
    // Every slot is back: three activations fit again, and restoring the
    // soft-deleted active workflow takes a slot, refused when none is left.
    flowtrack_tests::pgrst(&mut api, &owner, activate, &[&wfs[3]])
        .await
        .unwrap();
    flowtrack_tests::pgrst(&mut api, &owner, activate, &[&wfs[0]])
        .await
        .unwrap();
    assert_eq!(used(&db, t.workspace_id, "workflows").await, 2);
    flowtrack_tests::pgrst(
        &mut api,
        &owner.clone().method("PATCH"),
        "UPDATE api.workflows SET deleted_at = NULL WHERE id = $1 RETURNING id",
        &[&wfs[1]],
    )
    .await
    .unwrap();
    assert_eq!(used(&db, t.workspace_id, "workflows").await, 3, "restored");

    // Drift (as an older release left it) is repaired from the rows.
    db.execute(
        "UPDATE api.usage_quotas SET used = 1 WHERE workspace_id = $1 AND quota_key = 'workflows'",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    let rows = db
        .query(
            "SELECT quota_key, recorded, recomputed FROM internal.reconcile_quotas($1)",
            &[&t.workspace_id],
        )
        .await
        .unwrap();
    let got: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, [("workflows".to_string(), 1, 3)]);
    assert_eq!(used(&db, t.workspace_id, "workflows").await, 3);
    let again = db
        .query(
            "SELECT * FROM internal.reconcile_quotas($1)",
            &[&t.workspace_id],
        )
        .await
        .unwrap();
    assert!(again.is_empty(), "no drift after repair");
}
