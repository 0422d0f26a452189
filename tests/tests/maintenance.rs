//! The one list of scheduled maintenance (sql/0090_cron_jobs.sql): pg_cron
//! holds exactly its jobs, once each, re-syncing changes nothing, the jobs
//! really run under pg_cron, and a database without pg_cron still migrates
//! and works, with a clear NOTICE.

use std::time::{Duration, Instant};

use flowtrack_tests::private_db::PrivateDb;
use flowtrack_tests::{column, connect, fixtures};

/// The jobs issue 11 names; the list may hold more, never fewer.
const REQUIRED: &[&str] = &[
    "flowtrack-partitions",
    "flowtrack-retention",
    "flowtrack-daily-stats",
    "flowtrack-quota-rollover",
    "flowtrack-due-work",
    "flowtrack-cron-history",
];

#[tokio::test]
async fn pg_cron_holds_exactly_the_listed_jobs_once_each() {
    let db = connect().await;
    let listed: Vec<String> =
        column(&db, "SELECT name FROM maintenance.jobs ORDER BY name", &[]).await;
    for name in REQUIRED {
        assert!(
            listed.iter().any(|l| l == name),
            "{name} is missing from maintenance.jobs"
        );
    }
    let unregistered: Vec<String> = column(
        &db,
        "SELECT m.name FROM maintenance.jobs m
          WHERE NOT EXISTS (SELECT 1 FROM cron.job c
                             WHERE c.jobname = m.name AND c.schedule = m.schedule AND c.command = m.command
                               AND c.active AND c.database = current_database())",
        &[],
    )
    .await;
    assert!(
        unregistered.is_empty(),
        "not registered as listed: {unregistered:?}"
    );
    let unlisted: Vec<String> = column(
        &db,
        "SELECT c.jobname FROM cron.job c WHERE c.jobname LIKE 'flowtrack-%'
            AND NOT EXISTS (SELECT 1 FROM maintenance.jobs m WHERE m.name = c.jobname)",
        &[],
    )
    .await;
    assert!(
        unlisted.is_empty(),
        "scheduled but not in the list: {unlisted:?}"
    );
    let twice: Vec<String> = column(
        &db,
        "SELECT jobname FROM cron.job WHERE jobname LIKE 'flowtrack-%' GROUP BY jobname HAVING count(*) > 1",
        &[],
    )
    .await;
    assert!(twice.is_empty(), "scheduled twice: {twice:?}");

    let before: Vec<i64> = column(
        &db,
        "SELECT jobid FROM cron.job WHERE jobname LIKE 'flowtrack-%' ORDER BY jobid",
        &[],
    )
    .await;
    let changed: Vec<String> = column(
        &db,
        "SELECT name || ' ' || action FROM maintenance.sync_cron_jobs()",
        &[],
    )
    .await;
    assert!(changed.is_empty(), "a second sync changed {changed:?}");
    let after: Vec<i64> = column(
        &db,
        "SELECT jobid FROM cron.job WHERE jobname LIKE 'flowtrack-%' ORDER BY jobid",
        &[],
    )
    .await;
    assert_eq!(before, after, "re-syncing must keep the same jobs");
    assert_eq!(after.len(), listed.len());
}

#[tokio::test]
async fn a_sync_updates_changed_jobs_and_unschedules_dropped_ones() {
    let mut db = connect().await;
    let tx = db.transaction().await.unwrap();
    tx.batch_execute(
        "UPDATE maintenance.jobs SET schedule = '*/2 * * * *' WHERE name = 'flowtrack-daily-stats';
         DELETE FROM maintenance.jobs WHERE name = 'flowtrack-cron-history';",
    )
    .await
    .unwrap();
    let changed: Vec<String> = tx
        .query(
            "SELECT name || ' ' || action FROM maintenance.sync_cron_jobs() ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        changed,
        [
            "flowtrack-cron-history unscheduled",
            "flowtrack-daily-stats updated"
        ]
    );
    let row = tx
        .query_one(
            "SELECT count(*) FILTER (WHERE jobname = 'flowtrack-cron-history'),
                    max(schedule) FILTER (WHERE jobname = 'flowtrack-daily-stats'),
                    count(*) FILTER (WHERE jobname = 'flowtrack-daily-stats')
               FROM cron.job",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, String>(1),
            row.get::<_, i64>(2)
        ),
        (0, "*/2 * * * *".to_string(), 1)
    );
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn every_listed_command_runs() {
    let db = connect().await;
    let jobs: Vec<(String, String)> = db
        .query(
            "SELECT name, command FROM maintenance.jobs ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, command) in jobs {
        db.batch_execute(&command)
            .await
            .unwrap_or_else(|e| panic!("{name}: {command}: {e:?}"));
    }
}

#[tokio::test]
async fn pg_cron_really_runs_the_every_minute_jobs() {
    let db = connect().await;
    let since: chrono::DateTime<chrono::Utc> =
        db.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let every_minute: Vec<String> = column(
        &db,
        "SELECT name FROM maintenance.jobs WHERE schedule = '* * * * *' ORDER BY name",
        &[],
    )
    .await;
    assert!(every_minute.len() >= 3);
    // pg_cron 1.4 fires at minute boundaries: at most two of them.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let waiting: Vec<String> = column(
            &db,
            "SELECT m.name FROM maintenance.jobs m
              WHERE m.schedule = '* * * * *'
                AND NOT EXISTS (SELECT 1 FROM cron.job c JOIN cron.job_run_details d ON d.jobid = c.jobid
                                 WHERE c.jobname = m.name AND d.start_time >= $1 AND d.status = 'succeeded')
              ORDER BY 1",
            &[&since],
        )
        .await;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let runs: Vec<String> = column(
                &db,
                "SELECT c.jobname || ': ' || d.status || ' ' || coalesce(d.return_message, '')
                   FROM cron.job c JOIN cron.job_run_details d ON d.jobid = c.jobid
                  WHERE d.start_time >= $1 ORDER BY d.start_time",
                &[&since],
            )
            .await;
            panic!("no successful pg_cron run of {waiting:?} within 150 s; runs: {runs:?}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
async fn without_pg_cron_migrations_notice_and_everything_else_works() {
    let private = PrivateDb::create("nocron").await;
    let notices = private.notices();
    assert!(
        notices
            .iter()
            .any(|n| n.message.contains("pg_cron is not available")
                && n.hint.as_deref().unwrap_or("").contains("maintenance.jobs")),
        "expected a NOTICE about pg_cron, got {notices:?}"
    );
    let db = &private.db;
    let cron: Option<String> = db
        .query_one("SELECT to_regnamespace('cron')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(cron, None);
    let listed: i64 = db
        .query_one("SELECT count(*) FROM maintenance.jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert!(listed >= REQUIRED.len() as i64);
    // Syncing is a NOTICE, not an error.
    let changed: i64 = db
        .query_one("SELECT count(*) FROM maintenance.sync_cron_jobs()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(changed, 0);
    // The product works: a tenant, a published workflow, an execution; and
    // every maintenance command runs when another scheduler calls it.
    let t = fixtures::tenant(db, "starter").await;
    let wf = fixtures::published_workflow(db, &t, "no cron").await;
    db.execute(
        "UPDATE api.workflows SET status = 'active' WHERE id = $1",
        &[&wf],
    )
    .await
    .unwrap();
    let started: bool = db
        .query_one(
            "SELECT created FROM internal.start_execution($1, $2, 'manual', '{}', 'nocron', NULL)",
            &[&t.workspace_id, &wf],
        )
        .await
        .unwrap()
        .get(0);
    assert!(started);
    let jobs: Vec<(String, String)> = db
        .query("SELECT name, command FROM maintenance.jobs WHERE command NOT LIKE '%cron.%' ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, command) in jobs {
        db.batch_execute(&command)
            .await
            .unwrap_or_else(|e| panic!("{name} without pg_cron: {e:?}"));
    }
    private.drop_now().await;
}

/// Review finding: pg_cron runs its jobs as the superuser, so nothing a job
/// runs may be replaceable by a FlowTrack role. Each command calls one entry
/// point in schema maintenance (owned by a superuser), SECURITY DEFINER as
/// flowtrack_maintenance, which is neither a superuser nor able to log in.
#[tokio::test]
async fn what_pg_cron_runs_cannot_be_replaced_by_flowtrack_roles() {
    let db = connect().await;
    let schema_owner_is_super: bool = db
        .query_one(
            "SELECT r.rolsuper FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'maintenance'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(schema_owner_is_super);
    let list_owner_is_super: bool = db
        .query_one(
            "SELECT r.rolsuper FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = 'maintenance.jobs'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(list_owner_is_super);
    let commands: Vec<String> = column(
        &db,
        "SELECT command FROM maintenance.jobs WHERE command NOT LIKE 'DELETE FROM cron.%'",
        &[],
    )
    .await;
    for command in commands {
        let f = command
            .strip_prefix("SELECT ")
            .unwrap_or_else(|| panic!("{command}: one SELECT of one entry point"));
        let (owner, definer, login, sup, schema): (String, bool, bool, bool, String) = {
            let r = db
                .query_one(
                    "SELECT r.rolname, p.prosecdef, r.rolcanlogin, r.rolsuper, p.pronamespace::regnamespace::text
                       FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
                      WHERE p.oid = to_regprocedure($1)",
                    &[&f],
                )
                .await
                .unwrap_or_else(|e| panic!("{command}: {e}"));
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
        };
        assert_eq!(
            (owner.as_str(), definer, login, sup, schema.as_str()),
            ("flowtrack_maintenance", true, false, false, "maintenance"),
            "{command}"
        );
    }
    // flowtrack_owner can neither create in nor change schema maintenance.
    let can: bool = db
        .query_one(
            "SELECT has_schema_privilege('flowtrack_owner', 'maintenance', 'CREATE')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!can);
}
