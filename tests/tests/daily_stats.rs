//! workspace_daily_stats is incremental (internal.roll_up_daily_stats): a
//! watermark, no rescans, idempotent, split at UTC midnight by each row's own
//! time, unmoved by retention, and never ahead of a transaction still open.
//! In a private database: the watermark is global, and set back here.

use flowtrack_tests::fixtures;
use flowtrack_tests::private_db::PrivateDb;
use tokio_postgres::Client;
use uuid::Uuid;

async fn day_stats(db: &Client, ws: Uuid, day: &str) -> Option<(i32, i32, i32, i32, i32)> {
    db.query_opt(
        "SELECT leads_created, executions_started, executions_completed, executions_failed, emails_sent
           FROM api.workspace_daily_stats WHERE workspace_id = $1 AND day = $2::text::date",
        &[&ws, &day],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
}

async fn roll_up(db: &Client) -> i32 {
    db.query_one("SELECT internal.roll_up_daily_stats()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn rows_count_once_on_their_own_utc_day_and_survive_retention() {
    let private = PrivateDb::create("daily_stats").await;
    let db = &private.db;
    let t = fixtures::tenant(db, "pro").await;
    let wf = fixtures::published_workflow(db, &t, "stats").await;
    roll_up(db).await; // what the fixtures made is behind us now
                       // Yesterday's midnight (UTC): far enough back to be past every horizon.
    let midnight: String = db
        .query_one(
            "SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') - interval '1 day')::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (before, after): (String, String) = {
        let r = db
            .query_one(
                "SELECT ($1::text::timestamp - interval '1 day')::date::text, $1::text::timestamp::date::text",
                &[&midnight],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    db.batch_execute(&format!(
        "SET timezone = 'UTC';
         UPDATE internal.daily_stats_watermark SET upto = '{m}'::timestamptz - interval '5 minutes';
         INSERT INTO api.leads (workspace_id, email, created_at) VALUES
             ('{ws}', 'late@example.test', '{m}'::timestamptz - interval '30 seconds'),
             ('{ws}', 'early@example.test', '{m}'::timestamptz + interval '30 seconds');
         -- Started before midnight, finished after it.
         INSERT INTO api.workflow_executions (workspace_id, workflow_id, version, status, trigger_type, idempotency_key,
                                              created_at, started_at, completed_at)
         VALUES ('{ws}', '{wf}', 1, 'completed', 'manual', 'across', '{m}'::timestamptz - interval '20 seconds',
                 '{m}'::timestamptz - interval '20 seconds', '{m}'::timestamptz + interval '20 seconds'),
                ('{ws}', '{wf}', 1, 'failed', 'manual', 'after', '{m}'::timestamptz + interval '40 seconds',
                 '{m}'::timestamptz + interval '40 seconds', '{m}'::timestamptz + interval '50 seconds');
         INSERT INTO api.usage_events (workspace_id, quota_key, amount, period_start, occurred_at) VALUES
             ('{ws}', 'email_sends_per_month', 3, now(), '{m}'::timestamptz - interval '10 seconds'),
             ('{ws}', 'email_sends_per_month', 2, now(), '{m}'::timestamptz + interval '10 seconds');",
        m = midnight,
        ws = t.workspace_id,
    ))
    .await
    .unwrap();
    assert!(roll_up(db).await >= 2);
    let expect_before = Some((1, 1, 0, 0, 3));
    let expect_after = Some((1, 1, 1, 1, 2));
    assert_eq!(
        day_stats(db, t.workspace_id, &before).await,
        expect_before,
        "{before}"
    );
    assert_eq!(
        day_stats(db, t.workspace_id, &after).await,
        expect_after,
        "{after}"
    );

    // A second run adds nothing: the watermark moved with the counts.
    roll_up(db).await;
    assert_eq!(day_stats(db, t.workspace_id, &before).await, expect_before);
    assert_eq!(day_stats(db, t.workspace_id, &after).await, expect_after);

    // Retention deleting the source rows leaves the counts alone.
    db.batch_execute(&format!(
        "DELETE FROM api.workflow_executions WHERE workspace_id = '{ws}';
         DELETE FROM api.leads WHERE workspace_id = '{ws}';",
        ws = t.workspace_id
    ))
    .await
    .unwrap();
    roll_up(db).await;
    assert_eq!(day_stats(db, t.workspace_id, &before).await, expect_before);
    assert_eq!(day_stats(db, t.workspace_id, &after).await, expect_after);
    private.drop_now().await;
}

#[tokio::test]
async fn an_open_transaction_holds_the_watermark_back_until_it_commits() {
    let private = PrivateDb::create("daily_stats_open").await;
    let db = &private.db;
    let t = fixtures::tenant(db, "pro").await;
    roll_up(db).await;
    let today: String = db
        .query_one("SELECT (now() AT TIME ZONE 'UTC')::date::text", &[])
        .await
        .unwrap()
        .get(0);
    let leads = |s: Option<(i32, i32, i32, i32, i32)>| s.map_or(0, |s| s.0);
    let base = leads(day_stats(db, t.workspace_id, &today).await);

    let (mut other, _) = flowtrack_tests::notices::connect_collecting(&private.url).await;
    let tx = other.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO api.leads (workspace_id, email) VALUES ($1, 'slow@example.test')",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    // Its row is stamped with its start; time passes before it commits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    roll_up(db).await;
    let held: bool = db
        .query_one(
            "SELECT upto <= (SELECT min(xact_start) FROM pg_stat_activity
                              WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL)
               FROM internal.daily_stats_watermark",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        held,
        "the watermark must not pass an open transaction's start"
    );
    tx.commit().await.unwrap();
    // Mine is the only other transaction, and it is over.
    for _ in 0..3 {
        roll_up(db).await;
    }
    assert_eq!(
        leads(day_stats(db, t.workspace_id, &today).await),
        base + 1,
        "counted once, after its commit"
    );
    drop(other);
    private.drop_now().await;
}
