//! Retention of what is not time-partitioned (internal.prune_history):
//! executions per plan and outcome, dead jobs after 30 days, idempotency
//! keys after 45, in bounded batches. Time travels through `at`, in a
//! private database so no other test's rows are in reach.

use flowtrack_tests::fixtures::{self, Tenant};
use flowtrack_tests::private_db::PrivateDb;
use tokio_postgres::Client;
use uuid::Uuid;

/// An execution that started `age_days` ago and, unless unfinished, ended a
/// minute later; with one step, to see the cascade.
async fn execution(db: &Client, t: &Tenant, wf: Uuid, status: &str, age_days: i32) -> Uuid {
    let id: Uuid = db
        .query_one(
            "INSERT INTO api.workflow_executions (workspace_id, workflow_id, version, status, trigger_type,
                                                  idempotency_key, created_at, started_at, completed_at)
             SELECT $1, $2, 1, $3, 'manual', gen_random_uuid()::text, t, t,
                    CASE WHEN $3 IN ('completed', 'failed', 'cancelled', 'timed_out') THEN t + interval '1 minute' END
               FROM (SELECT now() - make_interval(days => $4) AS t) x
             RETURNING id",
            &[&t.workspace_id, &wf, &status, &age_days],
        )
        .await
        .unwrap()
        .get(0);
    db.execute(
        "INSERT INTO api.execution_steps (workspace_id, execution_id, node_key, node_type) VALUES ($1, $2, 'start', 'TRIGGER_MANUAL')",
        &[&t.workspace_id, &id],
    )
    .await
    .unwrap();
    id
}

async fn exists(db: &Client, id: Uuid) -> bool {
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM api.workflow_executions WHERE id = $1)",
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn executions_go_after_their_plans_retention_and_nothing_else_does() {
    let private = PrivateDb::create("retention").await;
    let db = &private.db;
    let free = fixtures::tenant(db, "free").await; // 90 days succeeded, 180 failed
    let big = fixtures::tenant(db, "enterprise").await; // 365 and 730
    let free_wf = fixtures::published_workflow(db, &free, "retained").await;
    let big_wf = fixtures::published_workflow(db, &big, "retained").await;

    let cases = [
        (&free, free_wf, "completed", 91, false),
        (&free, free_wf, "completed", 89, true),
        (&free, free_wf, "failed", 179, true),
        (&free, free_wf, "failed", 181, false),
        (&free, free_wf, "timed_out", 200, false),
        (&free, free_wf, "cancelled", 100, true),
        (&free, free_wf, "waiting", 400, true),
        (&free, free_wf, "running", 400, true),
        (&free, free_wf, "queued", 1, true),
        (&big, big_wf, "completed", 300, true),
        (&big, big_wf, "completed", 366, false),
        (&big, big_wf, "failed", 700, true),
        (&big, big_wf, "failed", 731, false),
    ];
    let mut made = Vec::new();
    for (t, wf, status, age, kept) in cases {
        made.push((execution(db, t, wf, status, age).await, status, age, kept));
    }
    let deleted: i32 = db
        .query_one("SELECT internal.prune_executions()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deleted, made.iter().filter(|m| !m.3).count() as i32);
    for (id, status, age, kept) in &made {
        assert_eq!(exists(db, *id).await, *kept, "{status} run of {age} days");
    }
    let orphans: i64 = db
        .query_one(
            "SELECT count(*) FROM api.execution_steps s
              WHERE NOT EXISTS (SELECT 1 FROM api.workflow_executions e WHERE e.id = s.execution_id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0, "steps go with their execution");
    let again: i32 = db
        .query_one("SELECT internal.prune_executions()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, 0, "idempotent");

    // Time travel: a year on, every finished run is due, never an unfinished one.
    let later: i32 = db
        .query_one(
            "SELECT internal.prune_executions(now() + interval '1 year')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        later, 5,
        "free's 89-day, 179-day and cancelled runs; enterprise's 300-day and 700-day ones"
    );
    for (id, status, _, _) in &made {
        if ["waiting", "running", "queued"].contains(status) {
            assert!(
                exists(db, *id).await,
                "an unfinished {status} run is never deleted"
            );
        }
    }
    private.drop_now().await;
}

#[tokio::test]
async fn retention_works_in_bounded_batches_and_covers_dead_jobs_and_keys() {
    let private = PrivateDb::create("retention_batches").await;
    let db = &private.db;
    let t = fixtures::tenant(db, "starter").await;
    let wf = fixtures::published_workflow(db, &t, "batches").await;
    for _ in 0..7 {
        execution(db, &t, wf, "completed", 100).await;
    }
    let mut passes = Vec::new();
    loop {
        let n: i32 = db
            .query_one("SELECT internal.prune_executions(now(), 3)", &[])
            .await
            .unwrap()
            .get(0);
        passes.push(n);
        if n == 0 {
            break;
        }
    }
    assert_eq!(passes, [3, 3, 1, 0]);

    db.batch_execute(&format!(
        "INSERT INTO internal.dead_jobs (id, workspace_id, kind, payload, attempts, claims, reason, created_at, died_at)
         VALUES (gen_random_uuid(), '{ws}', 'noop', '{{}}', 1, 1, 'failed', now() - interval '40 days', now() - interval '31 days'),
                (gen_random_uuid(), '{ws}', 'noop', '{{}}', 1, 1, 'failed', now() - interval '40 days', now() - interval '29 days');
         INSERT INTO internal.usage_idempotency (workspace_id, quota_key, idempotency_key, amount, created_at)
         VALUES ('{ws}', 'ai_tokens', 'old', 1, now() - interval '46 days'),
                ('{ws}', 'ai_tokens', 'recent', 1, now() - interval '44 days');",
        ws = t.workspace_id
    ))
    .await
    .unwrap();
    let rows: Vec<(String, i32)> = db
        .query(
            "SELECT what, deleted FROM internal.prune_history() ORDER BY what",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [
            ("dead_jobs".to_string(), 1),
            ("usage_idempotency".to_string(), 1),
            ("workflow_executions".to_string(), 0)
        ]
    );
    let left: Vec<String> = db
        .query(
            "SELECT idempotency_key FROM internal.usage_idempotency WHERE workspace_id = $1",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["recent"]);
    private.drop_now().await;
}
