//! The job queue's contract, through the worker's own functions
//! (`internal.claim_jobs`, `complete_jobs`, `fail_jobs`, `heartbeat_jobs`,
//! `release_jobs`) as the worker role, and the owners' cancel and requeue
//! through the API harness.
//!
//! `claim_jobs` takes due jobs of every workspace, so the tests of this file
//! take turns (`TURN`), and each pushes the due jobs of other workspaces
//! (left by earlier test binaries) into the future before it claims, and
//! looks only at its own.

use flowtrack_tests::{column, connect, connect_authenticator, fixtures, pgrst, Request};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_postgres::Client;
use uuid::Uuid;

static TURN: Mutex<()> = Mutex::const_new(());

/// A superuser connection and one acting as the worker role.
async fn connections() -> (Client, Client) {
    let db = connect().await;
    let worker = connect().await;
    worker
        .batch_execute("SET ROLE flowtrack_worker")
        .await
        .unwrap();
    (db, worker)
}

/// A job kind of this test's own, with a short lease and fast backoff.
async fn test_kind(db: &Client, max_attempts: i32) -> String {
    let kind = format!("q_{}", &Uuid::new_v4().simple().to_string()[..10]);
    db.execute(
        "INSERT INTO internal.job_kinds (kind, lease_seconds, max_attempts, backoff_base_seconds, backoff_max_seconds)
         VALUES ($1, 2, $2, 10, 40)",
        &[&kind, &max_attempts],
    )
    .await
    .unwrap();
    kind
}

async fn enqueue(db: &Client, ws: Uuid, kind: &str, n: i64) -> Vec<Uuid> {
    column(
        db,
        "SELECT internal.enqueue_job($2, jsonb_build_object('i', i), $1) FROM generate_series(1::bigint, $3::bigint) i",
        &[&ws, &kind, &n],
    )
    .await
}

#[derive(Debug, Clone)]
struct Claimed {
    id: Uuid,
    ws: Option<Uuid>,
    attempt: i32,
    fence: i32,
}

async fn claim(worker: &Client, n: i32) -> Vec<Claimed> {
    worker
        .query(
            "SELECT id, workspace_id, attempt, fence FROM internal.claim_jobs('queue-test', $1)",
            &[&n],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Claimed {
            id: r.get(0),
            ws: r.get(1),
            attempt: r.get(2),
            fence: r.get(3),
        })
        .collect()
}

async fn complete(worker: &Client, id: Uuid, fence: i32) -> String {
    worker
        .query_one(
            "SELECT outcome FROM internal.complete_jobs('queue-test', ARRAY[$1::uuid], ARRAY[$2::integer], ARRAY['{}'::jsonb])",
            &[&id, &fence],
        )
        .await
        .unwrap()
        .get(0)
}

async fn fail(worker: &Client, id: Uuid, fence: i32, retry: bool) -> (String, Option<f64>) {
    let r = worker
        .query_one(
            "SELECT outcome, extract(epoch FROM run_at - now())::float8 FROM internal.fail_jobs('queue-test',
                    ARRAY[$1::uuid], ARRAY[$2::integer], ARRAY['boom'], ARRAY[$3::boolean], ARRAY['{\"status\": 503}'::jsonb])",
            &[&id, &fence, &retry],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// Expire a job's lease as if its worker had died.
async fn expire(db: &Client, id: Uuid) {
    db.execute(
        "UPDATE internal.jobs SET locked_until = now() - interval '1 second' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stale_fence_changes_nothing() {
    let _turn = TURN.lock().await;
    let (db, worker) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    let kind = test_kind(&db, 5).await;
    let [job] = enqueue(&db, t.workspace_id, &kind, 1).await[..] else {
        panic!()
    };
    fixtures::quiet_others(&db, &[t.workspace_id]).await;

    let first = claim(&worker, 10).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0].id, first[0].attempt, first[0].fence), (job, 1, 1));
    assert_eq!(
        complete(&worker, job, 7).await,
        "stale",
        "a fence never handed out"
    );

    // The worker dies; the next claim itself reclaims the job.
    expire(&db, job).await;
    let second = claim(&worker, 10).await;
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].id, second[0].attempt, second[0].fence),
        (job, 2, 2)
    );

    // The dead lease's late reports change nothing and say so.
    let beat: Vec<Uuid> = column(
        &worker,
        "SELECT id FROM internal.heartbeat_jobs('queue-test', ARRAY[$1::uuid], ARRAY[1])",
        &[&job],
    )
    .await;
    assert!(beat.is_empty(), "the old lease is not extended");
    assert_eq!(complete(&worker, job, 1).await, "stale");
    assert_eq!(fail(&worker, job, 1, true).await.0, "stale");
    let released: String = worker
        .query_one(
            "SELECT outcome FROM internal.release_jobs('queue-test', ARRAY[$1::uuid], ARRAY[1])",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(released, "stale");
    let (status, attempts, claims): (String, i32, i32) = {
        let r = db
            .query_one(
                "SELECT status, attempts, claims FROM internal.jobs WHERE id = $1",
                &[&job],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((status.as_str(), attempts, claims), ("running", 2, 2));

    // The live lease heartbeats and completes; the job leaves the queue.
    let extended: Vec<Uuid> = column(
        &worker,
        "SELECT id FROM internal.heartbeat_jobs('queue-test', ARRAY[$1::uuid], ARRAY[2])",
        &[&job],
    )
    .await;
    assert_eq!(extended, [job]);
    assert_eq!(complete(&worker, job, 2).await, "completed");
    assert_eq!(complete(&worker, job, 2).await, "stale", "completed once");
    let left: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM internal.jobs WHERE id = $1) + (SELECT count(*) FROM internal.dead_jobs WHERE id = $1)",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "a finished job leaves the queue");
}

#[tokio::test]
async fn failures_back_off_then_die_with_their_reason() {
    let _turn = TURN.lock().await;
    let (db, worker) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    let kind = test_kind(&db, 3).await;
    let jobs = enqueue(&db, t.workspace_id, &kind, 2).await;
    let (retried, final_fail) = (jobs[0], jobs[1]);
    fixtures::quiet_others(&db, &[t.workspace_id]).await;

    let claimed = claim(&worker, 10).await;
    assert_eq!(claimed.len(), 2);
    let fence = |id: Uuid, c: &[Claimed]| c.iter().find(|x| x.id == id).unwrap().fence;
    // retry = false: dead at once, reason failed.
    assert_eq!(
        fail(&worker, final_fail, fence(final_fail, &claimed), false)
            .await
            .0,
        "dead"
    );

    // Exponential backoff with jitter: base 10 s doubling, capped at 40 s,
    // each wait between half and all of it.
    let mut c = claimed;
    for (attempt, bound) in [(1, 10.0), (2, 20.0)] {
        let (outcome, wait) = fail(&worker, retried, fence(retried, &c), true).await;
        assert_eq!(outcome, "retrying", "attempt {attempt}");
        let wait = wait.unwrap();
        assert!(
            wait >= bound / 2.0 - 1.0 && wait <= bound + 0.5,
            "attempt {attempt}: waits {wait} s"
        );
        assert!(
            claim(&worker, 10).await.is_empty(),
            "not due before its backoff"
        );
        db.execute(
            "UPDATE internal.jobs SET run_at = now() WHERE id = $1",
            &[&retried],
        )
        .await
        .unwrap();
        c = claim(&worker, 10).await;
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].attempt, attempt + 1);
    }
    // The third attempt was the last.
    assert_eq!(
        fail(&worker, retried, fence(retried, &c), true).await,
        ("dead".into(), None)
    );
    let dead: Vec<(Uuid, String, String, i32)> = db
        .query(
            "SELECT id, reason, last_error, attempts FROM internal.dead_jobs WHERE workspace_id = $1 ORDER BY reason",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        dead,
        vec![
            (final_fail, "failed".into(), "boom".into(), 1),
            (retried, "max_attempts".into(), "boom".into(), 3),
        ]
    );
    let live: i64 = db
        .query_one(
            "SELECT count(*) FROM internal.jobs WHERE workspace_id = $1",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0);
}

#[tokio::test]
async fn a_lease_lost_on_the_last_attempt_is_buried_and_its_step_fails() {
    let _turn = TURN.lock().await;
    let (db, worker) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    let kind = test_kind(&db, 1).await;
    let [job] = enqueue(&db, t.workspace_id, &kind, 1).await[..] else {
        panic!()
    };
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let c = claim(&worker, 10).await;
    assert_eq!(c.len(), 1);
    expire(&db, job).await;
    assert!(claim(&worker, 10).await.is_empty());
    let reason: String = db
        .query_one(
            "SELECT reason FROM internal.dead_jobs WHERE id = $1",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "lease_expired");
    assert_eq!(complete(&worker, job, c[0].fence).await, "stale");
}

#[tokio::test]
async fn a_release_gives_the_attempt_back_but_not_the_fence() {
    let _turn = TURN.lock().await;
    let (db, worker) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    let kind = test_kind(&db, 1).await;
    let [job] = enqueue(&db, t.workspace_id, &kind, 1).await[..] else {
        panic!()
    };
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let c = claim(&worker, 10).await;
    let released: String = worker
        .query_one(
            "SELECT outcome FROM internal.release_jobs('queue-test', ARRAY[$1::uuid], ARRAY[$2::integer])",
            &[&job, &c[0].fence],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(released, "released");
    // Due again at once; still its first attempt (max_attempts 1 would
    // otherwise bury it); a new fence.
    let again = claim(&worker, 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].attempt, again[0].fence), (1, 2));
    assert_eq!(complete(&worker, job, 1).await, "stale");
    assert_eq!(complete(&worker, job, 2).await, "completed");
}

#[tokio::test]
async fn a_flood_from_one_workspace_does_not_stand_in_front_of_the_others() {
    let _turn = TURN.lock().await;
    let (db, worker) = connections().await;
    let kind = test_kind(&db, 5).await;
    let flood = fixtures::tenant(&db, "pro").await;
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(fixtures::tenant(&db, "pro").await);
    }
    // The flood is older than everyone else's jobs: oldest-first would
    // serve only the flood.
    enqueue(&db, flood.workspace_id, &kind, 1000).await;
    db.execute(
        "UPDATE internal.jobs SET run_at = now() - interval '1 minute' WHERE workspace_id = $1",
        &[&flood.workspace_id],
    )
    .await
    .unwrap();
    for o in &others {
        enqueue(&db, o.workspace_id, &kind, 10).await;
    }
    let mut mine = vec![flood.workspace_id];
    mine.extend(others.iter().map(|o| o.workspace_id));
    fixtures::quiet_others(&db, &mine).await;

    let c = claim(&worker, 50).await;
    assert_eq!(c.len(), 50);
    for o in &others {
        let got = c.iter().filter(|x| x.ws == Some(o.workspace_id)).count();
        assert_eq!(
            got, 10,
            "every job of a small workspace is in the first batch"
        );
    }
    assert_eq!(
        c.iter()
            .filter(|x| x.ws == Some(flood.workspace_id))
            .count(),
        10
    );
    // Leave nothing running behind.
    db.execute(
        "DELETE FROM internal.jobs WHERE workspace_id = ANY ($1)",
        &[&mine],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn owners_cancel_and_requeue_their_jobs_only() {
    let _turn = TURN.lock().await;
    let (db, worker) = connections().await;
    let mut api = connect_authenticator().await;
    let t = fixtures::tenant(&db, "pro").await;
    let other = fixtures::tenant(&db, "pro").await;
    let kind = test_kind(&db, 5).await;
    let jobs = enqueue(&db, t.workspace_id, &kind, 2).await;
    let [foreign] = enqueue(&db, other.workspace_id, &kind, 1).await[..] else {
        panic!()
    };

    let call = |role: &'static str, f: &'static str, id: Uuid| {
        let req = Request::with_claims(t.claims(role))
            .method("POST")
            .path(&format!("/rpc/{f}"));
        (req, format!("SELECT api.{f}($1) AS r"), id)
    };
    // A viewer may not; nobody reaches another workspace's job, and its
    // existence is not revealed (the same 404 as a random id).
    let (req, sql, id) = call("viewer", "cancel_job", jobs[0]);
    let e = pgrst(&mut api, &req, &sql, &[&id]).await.unwrap_err();
    assert_eq!(e.code, "42501", "{e}");
    for id in [foreign, Uuid::new_v4()] {
        let (req, sql, id) = call("admin", "cancel_job", id);
        let e = pgrst(&mut api, &req, &sql, &[&id]).await.unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (404, "PT404"), "{e}");
        assert!(!e.message.contains(&other.workspace_id.to_string()));
    }

    // Cancel a queued job and one running under a lease: the running
    // worker's report comes back stale.
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let running = claim(&worker, 1).await;
    assert_eq!(running.len(), 1);
    for id in &jobs {
        let (req, sql, id) = call("admin", "cancel_job", *id);
        let r = pgrst(&mut api, &req, &sql, &[&id]).await.unwrap();
        assert_eq!(r[0]["r"], json!("cancelled"));
    }
    assert_eq!(
        complete(&worker, running[0].id, running[0].fence).await,
        "stale"
    );
    let req = Request::with_claims(t.claims("owner"))
        .method("POST")
        .path("/rpc/workspace_jobs");
    let listed = pgrst(
        &mut api,
        &req,
        "SELECT * FROM api.workspace_jobs('dead')",
        &[],
    )
    .await
    .unwrap();
    let reasons: Vec<&Value> = listed.iter().map(|r| &r["reason"]).collect();
    assert_eq!(
        reasons,
        [&json!("cancelled"), &json!("cancelled")],
        "{listed:?}"
    );
    assert!(
        listed.iter().all(|r| r.get("payload").is_none()),
        "no payloads in the list"
    );

    // Requeue: queued again, attempts reset, the claim count carried on.
    let (req, sql, id) = call("owner", "requeue_job", running[0].id);
    let r = pgrst(&mut api, &req, &sql, &[&id]).await.unwrap();
    assert_eq!(r[0]["r"], json!("queued"));
    let again = claim(&worker, 10).await;
    let mine: Vec<&Claimed> = again
        .iter()
        .filter(|c| c.ws == Some(t.workspace_id))
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0].id, mine[0].attempt, mine[0].fence),
        (running[0].id, 1, 2)
    );
    assert_eq!(complete(&worker, running[0].id, 2).await, "completed");
    let (req, sql, id) = call("owner", "requeue_job", running[0].id);
    let e = pgrst(&mut api, &req, &sql, &[&id]).await.unwrap_err();
    assert_eq!(e.code, "PT404", "only dead jobs are requeued: {e}");
    db.execute("DELETE FROM internal.jobs WHERE id = $1", &[&foreign])
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_claims_and_reports_are_refused_by_field() {
    let _turn = TURN.lock().await;
    let (_db, worker) = connections().await;
    for (sql, field) in [
        ("SELECT * FROM internal.claim_jobs('w', 0)", "n:"),
        ("SELECT * FROM internal.claim_jobs('w', 10, -1)", "wait_ms:"),
        (
            "SELECT * FROM internal.complete_jobs('w', ARRAY[gen_random_uuid()], '{}', '{}')",
            "ids, fences, results:",
        ),
    ] {
        let e = worker.query(sql, &[]).await.unwrap_err();
        let e = e.as_db_error().unwrap();
        assert_eq!(e.code().code(), "22023", "{sql}");
        assert!(e.message().starts_with(field), "{}", e.message());
        assert!(e.hint().is_some());
    }
}

#[tokio::test]
async fn a_parked_claim_wakes_at_the_enqueues_commit_not_at_its_rollback() {
    let _turn = TURN.lock().await;
    let (db, worker) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    let kind = test_kind(&db, 5).await;
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let parked = async {
        let started = std::time::Instant::now();
        let rows = worker
            .query(
                "SELECT id FROM internal.claim_jobs('queue-test', 10, 30000)",
                &[],
            )
            .await
            .unwrap();
        (rows.len(), started.elapsed())
    };
    let enqueue_later = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // A rolled-back enqueue wakes nobody ...
        let mut other = connect().await;
        let tx = other.transaction().await.unwrap();
        tx.execute(
            "SELECT internal.enqueue_job($1, '{}', $2)",
            &[&kind, &t.workspace_id],
        )
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // ... a committed one does, long before the 30 s fallback.
        enqueue(&db, t.workspace_id, &kind, 1).await
    };
    let ((claimed, waited), job) = tokio::join!(parked, enqueue_later);
    assert_eq!(claimed, 1, "the parked claim returns the new job");
    assert!(
        waited >= std::time::Duration::from_millis(550)
            && waited < std::time::Duration::from_secs(10),
        "woken by the commit (after the rollback), not by the fallback: {waited:?}"
    );
    assert_eq!(complete(&worker, job[0], 1).await, "completed");
}

/// Reports join the worker's arrays to the jobs they name, and the planner
/// knows neither size (an array parameter is "10 rows"; the queue's
/// statistics are those of its last ANALYZE, often of an empty table). A
/// nested loop then rescanned the array once per running job: heartbeating
/// 20,000 leases took 123 s. Not a speed test: the bound is 100 times what
/// the hash join needs, and the nested loop blew through it.
#[tokio::test]
async fn reports_of_many_leases_do_not_go_quadratic() {
    let _turn = TURN.lock().await;
    let (db, worker) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    // Statistics of an empty queue, then 20,000 running jobs.
    db.batch_execute("ANALYZE internal.jobs").await.unwrap();
    let ids: Vec<Uuid> = column(
        &db,
        "INSERT INTO internal.jobs (workspace_id, kind, payload, status, attempts, claims, locked_until)
         SELECT $1, 'noop', '{}', 'running', 1, 1, now() + interval '1 hour' FROM generate_series(1, 20000)
         RETURNING id",
        &[&t.workspace_id],
    )
    .await;
    let fences = vec![1i32; ids.len()];
    worker
        .batch_execute("SET statement_timeout = '20s'")
        .await
        .unwrap();
    let beat: i64 = worker
        .query_one(
            "SELECT count(*) FROM internal.heartbeat_jobs('queue-test', $1, $2)",
            &[&ids, &fences],
        )
        .await
        .expect("a heartbeat of 20,000 leases within the timeout")
        .get(0);
    assert_eq!(beat, 20_000);
    let results = vec![json!({}); ids.len()];
    let done: i64 = worker
        .query_one(
            "SELECT count(*) FROM internal.complete_jobs('queue-test', $1, $2, $3) WHERE outcome = 'completed'",
            &[&ids, &fences, &results],
        )
        .await
        .expect("completing 20,000 leases within the timeout")
        .get(0);
    assert_eq!(done, 20_000);
}

/// A parked claimer computed its sleep before a retry existed; the retry's
/// report wakes it, and it sleeps only until the retry is due, not until
/// its 30 s fallback.
#[tokio::test]
async fn a_retry_wakes_a_parked_claim_for_its_run_at() {
    let _turn = TURN.lock().await;
    let (db, worker) = connections().await;
    let reporter = connect().await;
    reporter
        .batch_execute("SET ROLE flowtrack_worker")
        .await
        .unwrap();
    let t = fixtures::tenant(&db, "pro").await;
    let kind = format!("q_{}", &Uuid::new_v4().simple().to_string()[..10]);
    db.execute(
        "INSERT INTO internal.job_kinds (kind, lease_seconds, max_attempts, backoff_base_seconds, backoff_max_seconds)
         VALUES ($1, 30, 5, 0.5, 0.5)",
        &[&kind],
    )
    .await
    .unwrap();
    let [job] = enqueue(&db, t.workspace_id, &kind, 1).await[..] else {
        panic!()
    };
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let first = claim(&worker, 10).await;
    assert_eq!(first.len(), 1);
    // Claim as the worker does: again after an empty answer.
    let parked = async {
        let started = std::time::Instant::now();
        loop {
            let rows = worker
                .query(
                    "SELECT id FROM internal.claim_jobs('queue-test', 10, 30000)",
                    &[],
                )
                .await
                .unwrap();
            if !rows.is_empty() || started.elapsed() > std::time::Duration::from_secs(40) {
                return (rows.len(), started.elapsed());
            }
        }
    };
    let retry_later = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        fail(&reporter, job, first[0].fence, true).await
    };
    let ((claimed, waited), (outcome, _)) = tokio::join!(parked, retry_later);
    assert_eq!(outcome, "retrying");
    assert_eq!(claimed, 1, "the parked claim returns the retried job");
    assert!(
        waited < std::time::Duration::from_secs(10),
        "woken by the retry and asleep only until its run_at, not the 30 s fallback: {waited:?}"
    );
    assert_eq!(complete(&worker, job, 2).await, "completed");
}
