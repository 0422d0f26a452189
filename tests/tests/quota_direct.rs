//! consume_quota's executor-free path (extension/src/quota/direct.rs) must
//! leave exactly what the SQL statement it replaces would: the same row, the
//! same event in the same partition, complete indexes, and the same
//! behaviour under concurrency at each isolation level.

use flowtrack_tests::{connect, fixtures};
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
async fn the_event_is_the_row_the_sql_insert_would_write() {
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
async fn indexes_stay_complete_when_updates_leave_the_page() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    // In one transaction no old version can be pruned, so the page fills and
    // later versions go to other pages: updates that are not HOT, which need
    // new entries in every index of usage_quotas.
    db.batch_execute("BEGIN").await.unwrap();
    for _ in 0..400 {
        consume(&db, t.workspace_id).await.unwrap();
    }
    let not_hot: i64 = db
        .query_one(
            "SELECT n_tup_upd - n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = 'api.usage_quotas'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.batch_execute("COMMIT").await.unwrap();
    assert!(not_hot > 0, "the test must exercise non-HOT updates");
    assert_eq!(used(&db, t.workspace_id).await, 400);
    assert_eq!(events(&db, t.workspace_id).await, 400);

    // Every index agrees with its heap (amcheck, with heapallindexed).
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .await
        .ok();
    let indexes: Vec<String> = flowtrack_tests::column(
        &db,
        "SELECT i.indexrelid::regclass::text
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
          WHERE am.amname = 'btree'
            AND (i.indrelid = 'api.usage_quotas'::regclass
                 OR i.indrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'api.usage_events'::regclass))",
        &[],
    )
    .await;
    assert!(indexes.len() >= 3, "{indexes:?}");
    for index in &indexes {
        db.execute("SELECT bt_index_check($1::text::regclass, true)", &[index])
            .await
            .unwrap_or_else(|e| panic!("{index}: {e}"));
    }
    // And the index finds the row the heap has.
    db.batch_execute("SET enable_seqscan = off").await.unwrap();
    assert_eq!(used(&db, t.workspace_id).await, 400);
    db.batch_execute("RESET enable_seqscan").await.unwrap();
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
async fn a_trigger_on_the_quota_table_sends_calls_through_sql() {
    let db = connect().await;
    let t = fixtures::tenant(&db, "pro").await;
    // The direct path would skip a user trigger, so with one present the
    // call must take the SQL statement, which fires it. All rolled back.
    db.batch_execute(
        "BEGIN;
         CREATE TEMP TABLE fired (workspace_id uuid);
         CREATE FUNCTION public.flowtrack_test_quota_fired() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO fired VALUES (NEW.workspace_id); RETURN NULL; END $$;
         CREATE TRIGGER flowtrack_test_quota_fired AFTER UPDATE ON api.usage_quotas
             FOR EACH ROW EXECUTE FUNCTION public.flowtrack_test_quota_fired();",
    )
    .await
    .unwrap();
    assert_eq!(consume(&db, t.workspace_id).await.unwrap(), 1);
    let fired: i64 = db
        .query_one(
            "SELECT count(*) FROM fired WHERE workspace_id = $1",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events(&db, t.workspace_id).await, 1);
    db.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(fired, 1, "the trigger fired: the SQL path ran");
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
