//! consume_quota's writes are ordinary SQL through the executor: the event
//! lands where tuple routing puts it, one statement can count twice, a
//! concurrent caller waits and counts on the latest row version (READ
//! COMMITTED) or gets a serialization failure (REPEATABLE READ), triggers
//! fire, a read-only transaction refuses the write, and nothing runs as the
//! superuser who created the extension.

use flowtrack_tests::{connect, fixtures, pgrst, Request};
use tokio_postgres::Client;
use uuid::Uuid;

const KEY: &str = "executions_per_month";

async fn consume(db: &Client, ws: Uuid) -> Result<i64, tokio_postgres::Error> {
    db.query_one(
        "SELECT used FROM internal.consume_quota($1, 'executions_per_month', 1)",
        &[&ws],
    )
    .await
    .map(|r| r.get(0))
}

async fn used(db: &Client, ws: Uuid) -> i64 {
    fixtures::quota_used(db, ws, KEY).await
}

/// The `consumed` events of the key, which must match `used` one for one.
async fn events(db: &Client, ws: Uuid) -> i64 {
    let n: Vec<i64> = flowtrack_tests::column(
        db,
        "SELECT count(*) FROM api.usage_events WHERE workspace_id = $1 AND quota_key = $2 AND event_type = 'consumed'",
        &[&ws, &KEY],
    )
    .await;
    n[0]
}

#[tokio::test]
async fn the_event_lands_where_tuple_routing_puts_it() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    db.batch_execute("BEGIN").await.unwrap();
    consume(&db, t.workspace_id).await.unwrap();
    // The executor's own routing, for the same instant (now() is fixed for
    // the transaction): a probe row inserted through the parent.
    let probe = db
        .query_one(
            "INSERT INTO api.usage_events (workspace_id, quota_key, event_type, amount, period_start)
             VALUES ($1, $2, 'reconciled', 0, now()) RETURNING tableoid::regclass::text",
            &[&t.workspace_id, &KEY],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    let row = db
        .query_one(
            "SELECT e.tableoid::regclass::text, e.amount, e.idempotency_key, e.metadata = '{}'::jsonb,
                    e.occurred_at = now(), e.period_start = q.period_start, e.id IS NOT NULL
               FROM api.usage_events e
               JOIN api.usage_quotas q ON q.workspace_id = e.workspace_id AND q.quota_key = e.quota_key
              WHERE e.workspace_id = $1 AND e.quota_key = $2 AND e.event_type = 'consumed'",
            &[&t.workspace_id, &KEY],
        )
        .await
        .unwrap();
    db.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        probe,
        "same partition as tuple routing"
    );
    assert_eq!(row.get::<_, i64>(1), 1);
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert!(row.get::<_, bool>(3), "metadata defaults to {{}}");
    assert!(row.get::<_, bool>(4), "occurred_at is now()");
    assert!(row.get::<_, bool>(5), "period_start is the quota row's");
    assert!(row.get::<_, bool>(6));
    // Rolled back: nothing counted, nothing logged.
    assert_eq!(used(&db, t.workspace_id).await, 0);
    assert_eq!(events(&db, t.workspace_id).await, 0);
}

#[tokio::test]
async fn one_statement_can_count_twice() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    db.execute(
        "SELECT internal.consume_quota($1, 'executions_per_month'), internal.consume_quota($1, 'executions_per_month')",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    assert_eq!(used(&db, t.workspace_id).await, 2);
    assert_eq!(events(&db, t.workspace_id).await, 2);
}

#[tokio::test]
async fn read_committed_waits_and_counts_on_the_latest_version() {
    let a = connect().await;
    let b = connect().await;
    let t = fixtures::tenant(&a, "pro").await;
    let ws = t.workspace_id;
    a.batch_execute("BEGIN").await.unwrap();
    consume(&a, ws).await.unwrap();
    // b blocks on a's row lock, then counts on the version a commits.
    let waiter = tokio::spawn(async move { consume(&b, ws).await.unwrap() });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "b must wait for a's lock");
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(waiter.await.unwrap(), 2);
    assert_eq!(used(&a, ws).await, 2);
    assert_eq!(events(&a, ws).await, 2);
}

#[tokio::test]
async fn repeatable_read_reports_a_serialization_failure() {
    let a = connect().await;
    let b = connect().await;
    let t = fixtures::tenant(&a, "pro").await;
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .await
        .unwrap();
    // b counts after a's snapshot was taken; a must not count on a stale row.
    consume(&b, t.workspace_id).await.unwrap();
    let err = consume(&a, t.workspace_id).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("40001"), "{err}");
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(used(&b, t.workspace_id).await, 1);
    assert_eq!(events(&b, t.workspace_id).await, 1);
}

#[tokio::test]
async fn triggers_on_the_quota_table_fire_and_see_the_owner_not_the_superuser() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    // A user trigger on usage_quotas fires for every count, and records the
    // role the UPDATE ran as: flowtrack_owner, through the SECURITY DEFINER
    // wrapper, not the superuser who ran CREATE EXTENSION (as it was while
    // flowtrack.consume_quota was SECURITY DEFINER). All rolled back.
    db.batch_execute(
        "BEGIN;
         CREATE TEMP TABLE fired (workspace_id uuid, role name);
         GRANT INSERT ON fired TO flowtrack_owner;
         CREATE FUNCTION public.flowtrack_test_quota_fired() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO pg_temp.fired VALUES (NEW.workspace_id, current_user); RETURN NULL; END $$;
         CREATE TRIGGER flowtrack_test_quota_fired AFTER UPDATE ON api.usage_quotas
             FOR EACH ROW EXECUTE FUNCTION public.flowtrack_test_quota_fired();",
    )
    .await
    .unwrap();
    assert_eq!(consume(&db, t.workspace_id).await.unwrap(), 1);
    let roles: Vec<String> = flowtrack_tests::column(
        &db,
        "SELECT role::text FROM fired WHERE workspace_id = $1",
        &[&t.workspace_id],
    )
    .await;
    assert_eq!(events(&db, t.workspace_id).await, 1);
    db.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        roles,
        ["flowtrack_owner"],
        "the trigger fired once, for the owner"
    );
}

#[tokio::test]
async fn a_read_only_transaction_counts_nothing() {
    let mut db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    // The executor refuses writes in a READ ONLY transaction. (The hand-made
    // heap writes this replaced rewrote the quota row without asking; only
    // nextval()'s own check, for the event's id, then stopped the call.)
    db.batch_execute("BEGIN READ ONLY").await.unwrap();
    let err = consume(&db, t.workspace_id).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{err}");
    db.batch_execute("ROLLBACK").await.unwrap();
    // The same through the API: a GET runs read-only, so recording usage by
    // GET is refused (HTTP 405) and nothing is counted.
    let get = Request::with_claims(t.claims("member")).path("/rpc/record_usage");
    let err = pgrst(
        &mut db,
        &get,
        "SELECT * FROM api.record_usage('ai_tokens', 5)",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (405, "25006"), "{err}");
    assert_eq!(used(&db, t.workspace_id).await, 0);
    assert_eq!(
        fixtures::quota_used(&db, t.workspace_id, "ai_tokens").await,
        0
    );
    assert_eq!(events(&db, t.workspace_id).await, 0);
}

#[tokio::test]
async fn an_amount_past_bigint_is_an_error_not_a_wrap() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "enterprise").await; // unlimited: no limit to stop it first
    consume(&db, t.workspace_id).await.unwrap();
    let err = db
        .query_one(
            "SELECT used FROM internal.consume_quota($1, 'executions_per_month', 9223372036854775807)",
            &[&t.workspace_id],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22003"), "{err}");
    assert_eq!(used(&db, t.workspace_id).await, 1);
}
