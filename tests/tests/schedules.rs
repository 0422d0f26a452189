//! Schedules: TRIGGER_SCHEDULE workflows fire on their cron expression in
//! their timezone, once per fire time, with a stated policy after downtime,
//! across DST changes; next_run_at is readable through the API, per tenant;
//! a bad expression or timezone is refused at publish; the seeded
//! weekly-report template runs; and a running worker releases a due delay
//! and a due schedule within 5 seconds.
//!
//! Time travel: `internal.fire_due_schedules(now)` fires what is due at
//! `now`, for every workspace. So the tests take turns (`TURN`), look only at
//! their own workflows' executions, and pause their workflows at the end.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flowtrack_tests::{connect, connect_authenticator, fixtures, pgrst, Request};
use serde_json::{json, Value};
use tokio::sync::Mutex as AsyncMutex;
use tokio_postgres::Client;
use uuid::Uuid;

static TURN: AsyncMutex<()> = AsyncMutex::const_new(());

fn node(id: &str, t: &str, config: Value) -> Value {
    json!({"id": id, "type": t, "position": {"x": 0, "y": 0}, "data": {"label": id, "config": config}})
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A workflow made, published and activated by `t`'s owner through the API
/// (the path a user takes), from React Flow nodes and edges.
async fn workflow(
    api: &mut Client,
    t: &fixtures::Tenant,
    nodes: Vec<Value>,
    edges: Vec<Value>,
) -> Uuid {
    let owner = Request::with_claims(t.claims("owner")).method("POST");
    let rows = pgrst(
        api,
        &owner,
        "INSERT INTO api.workflows (name) VALUES ('scheduled') RETURNING id",
        &[],
    )
    .await
    .unwrap();
    let wf: Uuid = rows[0]["id"].as_str().unwrap().parse().unwrap();
    let flow = json!({"nodes": nodes, "edges": edges});
    pgrst(
        api,
        &owner,
        "SELECT * FROM api.import_react_flow($1, $2::text::jsonb)",
        &[&wf, &flow.to_string()],
    )
    .await
    .unwrap();
    pgrst(
        api,
        &owner,
        "SELECT * FROM api.publish_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    pgrst(
        api,
        &owner,
        "SELECT status FROM api.activate_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    wf
}

/// A workflow whose only node is a schedule trigger with `config`.
async fn scheduled(api: &mut Client, t: &fixtures::Tenant, config: Value) -> Uuid {
    workflow(
        api,
        t,
        vec![node("tick", "TRIGGER_SCHEDULE", config)],
        vec![],
    )
    .await
}

async fn next_run_at(db: &Client, wf: Uuid) -> DateTime<Utc> {
    db.query_one(
        "SELECT next_run_at FROM api.workflow_schedules WHERE workflow_id = $1",
        &[&wf],
    )
    .await
    .unwrap()
    .get(0)
}

async fn fire(db: &Client, now: DateTime<Utc>) {
    db.execute("SELECT internal.fire_due_schedules($1)", &[&now])
        .await
        .unwrap();
}

/// The fire times of a workflow's executions (trigger_type schedule), in order.
async fn fired(db: &Client, wf: Uuid) -> Vec<DateTime<Utc>> {
    db.query(
        "SELECT (trigger_payload #>> '{schedule,fire_at}')::timestamptz FROM api.workflow_executions
          WHERE workflow_id = $1 AND trigger_type = 'schedule' ORDER BY 1",
        &[&wf],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn pause(db: &Client, wfs: &[Uuid]) {
    db.execute(
        "UPDATE api.workflows SET status = 'paused' WHERE id = ANY ($1)",
        &[&wfs],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_schedule_fires_at_its_time_once() {
    let _turn = TURN.lock().await;
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let wf = scheduled(
        &mut api,
        &t,
        json!({"cron": "0 8 * * *", "timezone": "Europe/Berlin"}),
    )
    .await;
    let due = next_run_at(&db, wf).await;
    let expected: DateTime<Utc> = db
        .query_one(
            "SELECT flowtrack.cron_next('0 8 * * *', 'Europe/Berlin', now())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(due, expected);
    assert!(due > Utc::now());

    fire(&db, due - chrono::Duration::seconds(1)).await;
    assert!(fired(&db, wf).await.is_empty(), "nothing before its time");
    fire(&db, due).await;
    assert_eq!(fired(&db, wf).await, vec![due]);
    // The same tick again, and a later one: still one execution.
    fire(&db, due).await;
    fire(&db, due + chrono::Duration::seconds(30)).await;
    assert_eq!(fired(&db, wf).await, vec![due]);
    let row = db
        .query_one(
            "SELECT next_run_at, last_fired_at, last_error FROM api.workflow_schedules WHERE workflow_id = $1",
            &[&wf],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, DateTime<Utc>>(0),
        due + chrono::Duration::days(1)
    );
    assert_eq!(row.get::<_, DateTime<Utc>>(1), due);
    assert_eq!(row.get::<_, Option<String>>(2), None);
    // A tick that found the row as it was before (another ticker, a reset):
    // the fire's idempotency key finds the execution it started.
    db.execute(
        "UPDATE api.workflow_schedules SET next_run_at = $2 WHERE workflow_id = $1",
        &[&wf, &due],
    )
    .await
    .unwrap();
    fire(&db, due + chrono::Duration::seconds(5)).await;
    assert_eq!(fired(&db, wf).await, vec![due]);
    let e = db
        .query_one(
            "SELECT status, idempotency_key, trigger_payload #>> '{schedule,node}' FROM api.workflow_executions WHERE workflow_id = $1",
            &[&wf],
        )
        .await
        .unwrap();
    assert_eq!(e.get::<_, String>(0), "completed");
    assert!(e.get::<_, String>(1).starts_with("schedule:tick@"));
    assert_eq!(e.get::<_, String>(2), "tick");
    pause(&db, &[wf]).await;
}

#[tokio::test]
async fn a_late_tick_follows_the_missed_policy() {
    let _turn = TURN.lock().await;
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let once = scheduled(
        &mut api,
        &t,
        json!({"cron": "0 * * * *", "timezone": "UTC"}),
    )
    .await;
    let skip = scheduled(
        &mut api,
        &t,
        json!({"cron": "0 * * * *", "timezone": "UTC", "missed": "skip"}),
    )
    .await;
    let due = next_run_at(&db, once).await;
    assert_eq!(next_run_at(&db, skip).await, due);
    let hour = chrono::Duration::hours(1);
    // Down for five and a half hours: six fires were due.
    fire(&db, due + hour * 5 + chrono::Duration::minutes(30)).await;
    // run_once: the latest missed fire, once, telling how many it stands for.
    assert_eq!(fired(&db, once).await, vec![due + hour * 5]);
    let missed: i64 = db
        .query_one(
            "SELECT (trigger_payload #>> '{schedule,missed}')::bigint FROM api.workflow_executions WHERE workflow_id = $1",
            &[&once],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(missed, 5);
    // skip: nothing for the missed ones.
    assert!(fired(&db, skip).await.is_empty());
    for wf in [once, skip] {
        assert_eq!(next_run_at(&db, wf).await, due + hour * 6);
    }
    // Back on time (within the 2 minutes pg_cron's tick may lag): both run.
    fire(&db, due + hour * 6 + chrono::Duration::seconds(50)).await;
    assert_eq!(fired(&db, once).await, vec![due + hour * 5, due + hour * 6]);
    assert_eq!(fired(&db, skip).await, vec![due + hour * 6]);
    pause(&db, &[once, skip]).await;
}

/// One schedule that cannot start (its workspace is out of executions) does
/// not stop another tenant's in the same batch: it records why and moves on.
#[tokio::test]
async fn a_schedule_that_cannot_start_does_not_stop_the_others() {
    let _turn = TURN.lock().await;
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let broke = fixtures::tenant(&db, "free").await;
    let fine = fixtures::tenant(&db, "pro").await;
    let refused = scheduled(&mut api, &broke, json!({"cron": "0 * * * *"})).await;
    let runs = scheduled(&mut api, &fine, json!({"cron": "0 * * * *"})).await;
    db.execute(
        "UPDATE api.usage_quotas SET used = coalesce(hard_limit, limit_value)
          WHERE workspace_id = $1 AND quota_key = 'executions_per_month'",
        &[&broke.workspace_id],
    )
    .await
    .unwrap();
    let due = next_run_at(&db, refused).await;
    assert_eq!(next_run_at(&db, runs).await, due);
    fire(&db, due).await;
    assert!(fired(&db, refused).await.is_empty());
    assert_eq!(fired(&db, runs).await, vec![due]);
    let row = db
        .query_one(
            "SELECT next_run_at, last_fired_at, last_error FROM api.workflow_schedules WHERE workflow_id = $1",
            &[&refused],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, DateTime<Utc>>(0),
        due + chrono::Duration::hours(1)
    );
    assert_eq!(row.get::<_, Option<DateTime<Utc>>>(1), None);
    let error: String = row.get(2);
    assert!(error.starts_with("PT429: "), "{error}");
    pause(&db, &[refused, runs]).await;
}

#[tokio::test]
async fn schedules_cross_dst_changes_in_berlin() {
    let _turn = TURN.lock().await;
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let wf = scheduled(
        &mut api,
        &t,
        json!({"cron": "30 2 * * *", "timezone": "Europe/Berlin"}),
    )
    .await;
    // The day before the spring-forward (2027-03-28): 02:30 CET is 01:30 UTC.
    fire(&db, utc("2027-03-27T12:00:00Z")).await;
    assert_eq!(fired(&db, wf).await, vec![utc("2027-03-27T01:30:00Z")]);
    // 02:30 does not exist on the 28th: it fires when the clocks reach 03:00 CEST.
    assert_eq!(next_run_at(&db, wf).await, utc("2027-03-28T01:00:00Z"));
    fire(&db, utc("2027-03-28T01:00:00Z")).await;
    assert_eq!(next_run_at(&db, wf).await, utc("2027-03-29T00:30:00Z"));
    // The fall-back (2027-10-31): 02:30 happens twice and fires at the first.
    fire(&db, utc("2027-10-30T12:00:00Z")).await;
    assert_eq!(next_run_at(&db, wf).await, utc("2027-10-31T00:30:00Z"));
    fire(&db, utc("2027-10-31T00:30:00Z")).await;
    assert_eq!(next_run_at(&db, wf).await, utc("2027-11-01T01:30:00Z"));
    // A tick at the second 02:30 starts nothing.
    fire(&db, utc("2027-10-31T01:30:00Z")).await;
    assert_eq!(
        fired(&db, wf).await,
        vec![
            utc("2027-03-27T01:30:00Z"),
            utc("2027-03-28T01:00:00Z"),
            utc("2027-10-30T00:30:00Z"),
            utc("2027-10-31T00:30:00Z"),
        ]
    );
    pause(&db, &[wf]).await;
}

#[tokio::test]
async fn next_run_at_is_read_through_the_api_per_tenant() {
    let _turn = TURN.lock().await;
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let a = fixtures::tenant(&db, "pro").await;
    let b = fixtures::tenant(&db, "pro").await;
    let wa = scheduled(&mut api, &a, json!({"cron": "15 6 * * MON-FRI"})).await;
    let wb = scheduled(
        &mut api,
        &b,
        json!({"cron": "0 0 1 JAN *", "timezone": "Asia/Tokyo"}),
    )
    .await;
    let read =
        "SELECT workflow_id, node_key, cron, timezone, next_run_at FROM api.workflow_schedules";
    for (t, wf, tz) in [(&a, wa, "UTC"), (&b, wb, "Asia/Tokyo")] {
        let viewer = Request::with_claims(t.claims("viewer")).path("/workflow_schedules");
        let rows = pgrst(&mut api, &viewer, read, &[]).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["workflow_id"], wf.to_string());
        assert_eq!(rows[0]["timezone"], tz);
        let shown: DateTime<Utc> = rows[0]["next_run_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(shown, next_run_at(&db, wf).await);
    }
    // Members read, nobody writes through the API.
    let owner = Request::with_claims(a.claims("owner")).method("PATCH");
    let err = pgrst(
        &mut api,
        &owner,
        "UPDATE api.workflow_schedules SET next_run_at = now() RETURNING 1 AS one",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, "42501", "{err:?}");
    // The workspace's timezone moves schedules that use it.
    let patch = Request::with_claims(a.claims("owner")).method("PATCH");
    pgrst(
        &mut api,
        &patch,
        "UPDATE api.workspaces SET timezone = 'America/New_York' WHERE id = $1 RETURNING id",
        &[&a.workspace_id],
    )
    .await
    .unwrap();
    let moved = next_run_at(&db, wa).await;
    let want: DateTime<Utc> = db
        .query_one(
            "SELECT flowtrack.cron_next('15 6 * * MON-FRI', 'America/New_York', now())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, want);
    let err = pgrst(
        &mut api,
        &patch,
        "UPDATE api.workspaces SET timezone = 'Mars/Olympus' WHERE id = $1 RETURNING id",
        &[&a.workspace_id],
    )
    .await
    .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "22023"), "{err:?}");
    assert!(
        err.message.contains("timezone") && err.message.contains("Mars/Olympus"),
        "{err:?}"
    );
    assert!(err.hint.unwrap_or_default().contains("\"tick\""));
    // Paused: no schedule; active again: back; deleted: gone.
    let owner = Request::with_claims(a.claims("owner")).method("POST");
    let count = |wf: Uuid| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT count(*) FROM api.workflow_schedules WHERE workflow_id = $1",
                &[&wf],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    pgrst(
        &mut api,
        &owner,
        "SELECT status FROM api.deactivate_workflow($1)",
        &[&wa],
    )
    .await
    .unwrap();
    assert_eq!(count(wa).await, 0);
    pgrst(
        &mut api,
        &owner,
        "SELECT status FROM api.activate_workflow($1)",
        &[&wa],
    )
    .await
    .unwrap();
    assert_eq!(count(wa).await, 1);
    pgrst(
        &mut api,
        &owner.clone().method("PATCH"),
        "UPDATE api.workflows SET deleted_at = now() WHERE id = $1 RETURNING id",
        &[&wa],
    )
    .await
    .unwrap();
    assert_eq!(count(wa).await, 0);
    pause(&db, &[wb]).await;
}

#[tokio::test]
async fn a_bad_expression_or_timezone_is_refused_at_publish() {
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let owner = Request::with_claims(t.claims("owner")).method("POST");
    for (config, field, says) in [
        (
            json!({"cron": "61 8 * * *"}),
            "config.cron",
            "minute field: 61 is out of range 0-59",
        ),
        (
            json!({"cron": "0 8 * * 1 *"}),
            "config.cron",
            "has 6 fields, not 5",
        ),
        (json!({"cron": "0 0 30 2 *"}), "config.cron", "never occurs"),
        (
            json!({"cron": "0 8 * * FUNDAY"}),
            "config.cron",
            "day-of-week field",
        ),
        (
            json!({"cron": "0 8 * * *", "timezone": "Mars/Olympus"}),
            "config.timezone",
            "not an IANA timezone",
        ),
    ] {
        let rows = pgrst(
            &mut api,
            &owner,
            "INSERT INTO api.workflows (name) VALUES ('bad') RETURNING id",
            &[],
        )
        .await
        .unwrap();
        let wf: Uuid = rows[0]["id"].as_str().unwrap().parse().unwrap();
        let flow =
            json!({"nodes": [node("tick", "TRIGGER_SCHEDULE", config.clone())], "edges": []});
        pgrst(
            &mut api,
            &owner,
            "SELECT * FROM api.import_react_flow($1, $2::text::jsonb)",
            &[&wf, &flow.to_string()],
        )
        .await
        .unwrap();
        let problems = pgrst(
            &mut api,
            &owner,
            "SELECT * FROM api.validate_workflow($1)",
            &[&wf],
        )
        .await
        .unwrap();
        assert_eq!(problems.len(), 1, "{config}: {problems:?}");
        assert_eq!(problems[0]["code"], "invalid_config");
        assert_eq!(problems[0]["node"], "tick");
        let message = problems[0]["message"].as_str().unwrap();
        assert!(
            message.contains(field) && message.contains(says),
            "{config}: {message}"
        );
        assert!(!problems[0]["hint"].as_str().unwrap().is_empty());
        let err = pgrst(
            &mut api,
            &owner,
            "SELECT * FROM api.publish_workflow($1)",
            &[&wf],
        )
        .await
        .unwrap_err();
        assert_eq!((err.status, err.code.as_str()), (400, "23514"), "{err:?}");
        assert!(err.message.contains(says), "{err:?}");
    }
    // The SQL functions name the argument.
    for (sql, says) in [
        (
            "SELECT flowtrack.cron_next('* * * 13 *', 'UTC', now())",
            "cron: month field: 13 is out of range 1-12",
        ),
        (
            "SELECT flowtrack.cron_next('* * * * *', 'Nowhere', now())",
            "timezone: \"Nowhere\" is not an IANA timezone name",
        ),
    ] {
        let err = db.execute(sql, &[]).await.unwrap_err();
        let e = err.as_db_error().unwrap();
        assert_eq!(e.code().code(), "22023");
        assert_eq!(e.message(), says);
        assert!(e.hint().is_some());
    }
}

#[tokio::test]
async fn the_weekly_report_template_runs() {
    let _turn = TURN.lock().await;
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let owner = Request::with_claims(t.claims("owner")).method("POST");
    let rows = pgrst(
        &mut api,
        &owner,
        "SELECT x AS id FROM api.create_workflow_from_template('weekly-report') x",
        &[],
    )
    .await
    .unwrap();
    let wf: Uuid = rows[0]["id"].as_str().unwrap().parse().unwrap();
    pgrst(
        &mut api,
        &owner,
        "SELECT * FROM api.publish_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    pgrst(
        &mut api,
        &owner,
        "SELECT status FROM api.activate_workflow($1)",
        &[&wf],
    )
    .await
    .unwrap();
    let row = db
        .query_one(
            "SELECT cron, timezone, next_run_at FROM api.workflow_schedules WHERE workflow_id = $1",
            &[&wf],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "0 8 * * 1");
    assert_eq!(row.get::<_, String>(1), "UTC");
    let due: DateTime<Utc> = row.get(2);
    // Mondays at 08:00.
    assert_eq!(due.format("%a %H:%M").to_string(), "Mon 08:00");
    fire(&db, due).await;
    assert_eq!(fired(&db, wf).await, vec![due]);
    // The report is posted: the HTTP step is waiting on its job.
    let step = db
        .query_one(
            "SELECT s.status, e.status FROM api.execution_steps s JOIN api.workflow_executions e ON e.id = s.execution_id
              WHERE e.workflow_id = $1 AND s.node_key = 'post'",
            &[&wf],
        )
        .await
        .unwrap();
    assert!(
        !["failed", "completed"].contains(&step.get::<_, String>(1).as_str()),
        "execution {}",
        step.get::<_, String>(1)
    );
    let jobs: i64 = db
        .query_one(
            "SELECT count(*) FROM internal.jobs WHERE workspace_id = $1 AND kind = 'http_request'",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 1, "step {}", step.get::<_, String>(0));
    // Nobody performs it in this test (example.com is not reachable).
    db.execute(
        "DELETE FROM internal.jobs WHERE workspace_id = $1",
        &[&t.workspace_id],
    )
    .await
    .unwrap();
    pause(&db, &[wf]).await;
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run these tests with ./dev test"))
}

/// The real worker binary, ticking at its default (1 s), as flowtrack_worker.
struct Worker {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Worker {
    fn start() -> Worker {
        let log = std::env::temp_dir().join(format!("flowtrack-ticker-{}.log", Uuid::new_v4()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("sh")
            // The test lock (fd 9 of ./dev) must not outlive the test in a worker.
            .args([
                "-c",
                "exec 9>&-; exec \"$0\" \"$@\"",
                &env("FLOWTRACK_TEST_WORKER_BIN"),
                "run",
            ])
            .env("DATABASE_URL", env("FLOWTRACK_TEST_WORKER_DATABASE_URL"))
            .env("RUST_LOG", "info")
            .env_remove("FLOWTRACK_TICK_MS")
            .env_remove("FLOWTRACK_METRICS_ADDR")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start flowtrack-worker");
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- worker log ----\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test]
async fn a_running_worker_releases_a_delay_and_a_schedule_within_5_s() {
    let _turn = TURN.lock().await;
    let db = connect().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let delayed = workflow(
        &mut api,
        &t,
        vec![
            node("go", "TRIGGER_MANUAL", json!({})),
            node("wait", "LOGIC_DELAY", json!({"seconds": 3})),
        ],
        vec![json!({"id": "e1", "source": "go", "target": "wait"})],
    )
    .await;
    let every_minute = scheduled(&mut api, &t, json!({"cron": "* * * * *"})).await;
    let worker = Worker::start();
    let member = Request::with_claims(t.claims("member")).method("POST");
    pgrst(
        &mut api,
        &member,
        "SELECT * FROM api.start_execution($1)",
        &[&delayed],
    )
    .await
    .unwrap();
    // Due in 3 s, between two of pg_cron's minute ticks or not: the worker's
    // tick is what releases it within 5 s.
    db.execute(
        "UPDATE api.workflow_schedules SET next_run_at = now() + interval '3 seconds' WHERE workflow_id = $1",
        &[&every_minute],
    )
    .await
    .unwrap();
    let due: DateTime<Utc> = next_run_at(&db, every_minute).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (step_late, fire_late) = loop {
        let step = db
            .query_opt(
                "SELECT extract(epoch FROM s.completed_at - s.run_at)::float8 FROM api.execution_steps s
                   JOIN api.workflow_executions e ON e.id = s.execution_id
                  WHERE e.workflow_id = $1 AND s.node_key = 'wait' AND s.status = 'completed'",
                &[&delayed],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, f64>(0));
        let fire = db
            .query_opt(
                "SELECT extract(epoch FROM created_at - $2)::float8 FROM api.workflow_executions
                  WHERE workflow_id = $1 AND trigger_type = 'schedule' ORDER BY created_at LIMIT 1",
                &[&every_minute, &due],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, f64>(0));
        if let (Some(s), Some(f)) = (step, fire) {
            break (s, f);
        }
        assert!(Instant::now() < deadline, "nothing released in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        (0.0..5.0).contains(&step_late),
        "the delay ran {step_late} s late"
    );
    assert!(
        (0.0..5.0).contains(&fire_late),
        "the schedule fired {fire_late} s late"
    );
    // The worker's tick did it (pg_cron's minute tick may have taken one).
    assert!(
        worker.log().contains("released due work"),
        "{}",
        worker.log()
    );
    pause(&db, &[delayed, every_minute]).await;
}
