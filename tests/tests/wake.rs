//! Wake-ups without NOTIFY (issue 10, part 2), against real backends.
//!
//! The race: one worker connection loops "park, claim what is there (a
//! fresh statement), wait up to 60 s" while enqueuer connections commit rows
//! at random small offsets, round after round. The 60 s timeout is far past
//! the 2 s every row must be seen within, so the polling fallback cannot
//! hide a lost wake-up: each round's last commit has no later one to cover
//! for it. Then: a commit wakes a parked waiter in milliseconds, a rollback
//! does not; cancel and termination unpark; a server without flowtrack
//! preloaded falls back to polling. Scratch tables only, made as superuser.
//!
//! The tests share the server's wake-up state (a wake-up wakes every parked
//! backend), so they take turns.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use flowtrack_tests::{connect, connect_to};
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::Client;

static TURNS: Mutex<()> = Mutex::const_new(());

/// How long after its commit a row must have been seen: generous, this is
/// not a speed test (that is `./dev bench`), it only has to be far below
/// the 60 s polling timeout.
const SEEN_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stats {
    enabled: bool,
    parked: i32,
    parks: i64,
    wakes: i64,
    coalesced: i64,
    timeouts: i64,
}

async fn stats(db: &Client) -> Stats {
    let r = db
        .query_one(
            "SELECT enabled, parked, parks, wakes, coalesced, timeouts FROM flowtrack.wake_stats()",
            &[],
        )
        .await
        .unwrap();
    Stats {
        enabled: r.get(0),
        parked: r.get(1),
        parks: r.get(2),
        wakes: r.get(3),
        coalesced: r.get(4),
        timeouts: r.get(5),
    }
}

/// Waits until `n` backends are parked.
async fn until_parked(db: &Client, n: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats(db).await.parked != n {
        assert!(
            Instant::now() < deadline,
            "never {n} parked: {:?}",
            stats(db).await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A scratch schema: a table of rows to claim, the worker's round (park,
/// claim, wait, claim: one statement, as internal.claim_jobs does it) and a
/// plain park-and-wait.
async fn scratch(db: &Client, schema: &str) {
    db.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE;
         CREATE SCHEMA {schema};
         CREATE TABLE {schema}.rows (id bigint PRIMARY KEY);
         CREATE FUNCTION {schema}.round(wait_ms integer) RETURNS TABLE (id bigint, waited boolean)
         LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
         DECLARE r record;
         BEGIN
             PERFORM flowtrack.worker_park();
             FOR r IN DELETE FROM {schema}.rows RETURNING rows.id LOOP
                 id := r.id; waited := false; RETURN NEXT;
             END LOOP;
             IF FOUND THEN
                 PERFORM flowtrack.worker_unpark();
                 RETURN;
             END IF;
             PERFORM flowtrack.worker_wait(wait_ms);
             FOR r IN DELETE FROM {schema}.rows RETURNING rows.id LOOP
                 id := r.id; waited := true; RETURN NEXT;
             END LOOP;
         END $$;
         CREATE FUNCTION {schema}.park_and_wait(wait_ms integer) RETURNS boolean
         LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
         BEGIN
             PERFORM flowtrack.worker_park();
             RETURN flowtrack.worker_wait(wait_ms);
         END $$;"
    ))
    .await
    .unwrap();
}

async fn drop_scratch(db: &Client, schema: &str) {
    db.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

fn url() -> String {
    std::env::var("FLOWTRACK_TEST_DATABASE_URL").expect("run with ./dev test")
}

/// xorshift64*: random offsets without a dependency; the seed is printed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One enqueuer's commit: when it was sent and when its COMMIT returned.
struct Committed {
    id: i64,
    sent: Instant,
    acked: Instant,
}

#[tokio::test]
async fn no_wake_up_is_lost_when_enqueues_race_parking() {
    let _turn = TURNS.lock().await;
    const ENQUEUERS: usize = 3;
    let rounds: i64 = std::env::var("FLOWTRACK_WAKE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let db = connect().await;
    scratch(&db, "wake_race").await;
    let before = stats(&db).await;
    assert!(before.enabled, "the test cluster preloads flowtrack");

    // The worker: park, claim, wait 60 s, claim; report what it saw.
    let worker = connect_to(&url()).await;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(i64, bool, Instant)>();
    let worker_task = tokio::spawn(async move {
        loop {
            let rows = worker
                .query("SELECT id, waited FROM wake_race.round(60000)", &[])
                .await
                .expect("the worker's round");
            let now = Instant::now();
            for r in rows {
                let id: i64 = r.get(0);
                if id < 0 {
                    return;
                }
                seen_tx.send((id, r.get(1), now)).unwrap();
            }
        }
    });

    // The enqueuers: each round, one row each, after 0-2 ms, committed
    // with wake_on_commit before or after the insert.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("race seed {seed}");
    let (commit_tx, mut commit_rx) = mpsc::unbounded_channel::<Committed>();
    let mut orders = Vec::new();
    let mut enqueuer_tasks = Vec::new();
    for e in 0..ENQUEUERS {
        let (order_tx, mut order_rx) = mpsc::unbounded_channel::<(i64, u64, bool)>();
        orders.push(order_tx);
        let db = connect_to(&url()).await;
        let commit_tx = commit_tx.clone();
        enqueuer_tasks.push(tokio::spawn(async move {
            while let Some((id, delay_us, wake_first)) = order_rx.recv().await {
                if delay_us >= 1000 {
                    tokio::time::sleep(Duration::from_micros(delay_us)).await;
                } else if delay_us > 0 {
                    tokio::task::yield_now().await;
                }
                let sql = if wake_first {
                    format!("BEGIN; SELECT flowtrack.wake_on_commit(); INSERT INTO wake_race.rows VALUES ({id}); COMMIT")
                } else {
                    format!("BEGIN; INSERT INTO wake_race.rows VALUES ({id}); SELECT flowtrack.wake_on_commit(); COMMIT")
                };
                let sent = Instant::now();
                db.batch_execute(&sql)
                    .await
                    .unwrap_or_else(|err| panic!("enqueuer {e}: {err}"));
                commit_tx
                    .send(Committed {
                        id,
                        sent,
                        acked: Instant::now(),
                    })
                    .unwrap();
            }
        }));
    }

    let mut rng = Rng(seed);
    let mut seen: HashMap<i64, (bool, Instant)> = HashMap::new();
    let mut after_ack = Vec::new(); // seen - COMMIT returned (0 if seen first)
    let mut after_send = Vec::new(); // seen - COMMIT sent
    let mut woken_after_send = Vec::new(); // the same, rows the worker waited for
    for round in 0..rounds {
        for (e, order) in orders.iter().enumerate() {
            let id = round * ENQUEUERS as i64 + e as i64;
            order
                .send((id, rng.below(2500), rng.below(2) == 0))
                .unwrap();
        }
        let mut commits = Vec::new();
        while commits.len() < ENQUEUERS {
            let c = tokio::time::timeout(Duration::from_secs(30), commit_rx.recv())
                .await
                .expect("an enqueuer hung")
                .unwrap();
            commits.push(c);
        }
        let deadline = commits.iter().map(|c| c.acked).max().unwrap() + SEEN_WITHIN;
        while commits.iter().any(|c| !seen.contains_key(&c.id)) {
            match tokio::time::timeout_at(deadline.into(), seen_rx.recv()).await {
                Ok(Some((id, waited, at))) => {
                    seen.insert(id, (waited, at));
                }
                _ => {
                    let missing: Vec<i64> = commits
                        .iter()
                        .filter(|c| !seen.contains_key(&c.id))
                        .map(|c| c.id)
                        .collect();
                    panic!(
                        "round {round} (seed {seed}): rows {missing:?} not seen within {SEEN_WITHIN:?} of their commit: a lost wake-up ({:?})",
                        stats(&db).await
                    );
                }
            }
        }
        for c in &commits {
            let (waited, at) = seen[&c.id];
            after_ack.push(at.saturating_duration_since(c.acked));
            after_send.push(at.saturating_duration_since(c.sent));
            if waited {
                woken_after_send.push(at.saturating_duration_since(c.sent));
            }
        }
    }

    // Stop the worker with a last row, then the enqueuers.
    db.batch_execute(
        "BEGIN; INSERT INTO wake_race.rows VALUES (-1); SELECT flowtrack.wake_on_commit(); COMMIT",
    )
    .await
    .unwrap();
    tokio::time::timeout(SEEN_WITHIN, worker_task)
        .await
        .expect("the worker was not woken by the last row")
        .unwrap();
    drop(orders);
    for t in enqueuer_tasks {
        t.await.unwrap();
    }
    let after = stats(&db).await;
    drop_scratch(&db, "wake_race").await;

    for v in [&mut after_ack, &mut after_send, &mut woken_after_send] {
        v.sort();
    }
    let show = |name: &str, v: &[Duration]| {
        println!(
            "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
            v.len(),
            ms(percentile(v, 0.50)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap())
        )
    };
    println!(
        "{rounds} rounds x {ENQUEUERS} enqueuers: {} rows, parks {}, wakes sent {}, coalesced {}, timeouts {}",
        after_ack.len(),
        after.parks - before.parks,
        after.wakes - before.wakes,
        after.coalesced - before.coalesced,
        after.timeouts - before.timeouts
    );
    show("seen after COMMIT returned", &after_ack);
    show("seen after COMMIT was sent", &after_send);
    show(
        "seen after COMMIT was sent, rows the worker slept for",
        &woken_after_send,
    );
    assert_eq!(
        after.timeouts, before.timeouts,
        "a 60 s wait timed out: the worker slept through a commit"
    );
    assert!(
        !woken_after_send.is_empty(),
        "the worker never slept: the race did not race"
    );
    assert_eq!(after.parked, 0, "every park was undone");
}

#[tokio::test]
async fn a_commit_wakes_a_parked_waiter_in_milliseconds_and_a_rollback_does_not() {
    let _turn = TURNS.lock().await;
    let db = connect().await;
    scratch(&db, "wake_commit").await;
    let enqueuer = connect().await;

    // Rolled back: the waiter sleeps to its timeout.
    let waiter = connect().await;
    let before = stats(&db).await;
    let wait = tokio::spawn(async move {
        let started = Instant::now();
        let woken: bool = waiter
            .query_one("SELECT wake_commit.park_and_wait(1500)", &[])
            .await
            .unwrap()
            .get(0);
        (woken, started.elapsed(), waiter)
    });
    until_parked(&db, 1).await;
    enqueuer
        .batch_execute("BEGIN; INSERT INTO wake_commit.rows VALUES (1); SELECT flowtrack.wake_on_commit(); ROLLBACK")
        .await
        .unwrap();
    let (woken, took, waiter) = wait.await.unwrap();
    assert!(!woken, "a rolled-back transaction woke the waiter");
    assert!(
        took >= Duration::from_millis(1500),
        "returned after {took:?}"
    );
    let mid = stats(&db).await;
    assert_eq!(mid.wakes, before.wakes, "a rollback sent a wake-up");
    assert_eq!(mid.timeouts, before.timeouts + 1);
    assert_eq!(mid.parked, 0);

    // Committed: woken at once, long before its 60 s.
    let wait = tokio::spawn(async move {
        let woken: bool = waiter
            .query_one("SELECT wake_commit.park_and_wait(60000)", &[])
            .await
            .unwrap()
            .get(0);
        (woken, Instant::now())
    });
    until_parked(&db, 1).await;
    let sent = Instant::now();
    enqueuer
        .batch_execute("BEGIN; INSERT INTO wake_commit.rows VALUES (2); SELECT flowtrack.wake_on_commit(); COMMIT")
        .await
        .unwrap();
    let acked = Instant::now();
    let (woken, at) = tokio::time::timeout(SEEN_WITHIN, wait)
        .await
        .expect("a commit did not wake the parked waiter")
        .unwrap();
    assert!(woken);
    println!(
        "woken {:.2} ms after COMMIT was sent ({:.2} ms after it returned)",
        ms(at.saturating_duration_since(sent)),
        ms(at.saturating_duration_since(acked))
    );
    let after = stats(&db).await;
    assert_eq!(after.wakes, mid.wakes + 1, "one wake-up sent");
    assert_eq!(after.parked, 0);
    drop_scratch(&db, "wake_commit").await;
}

/// The trigger the queue uses: any INSERT on the table wakes the waiter
/// once it commits, without the enqueuer calling anything.
#[tokio::test]
async fn the_statement_trigger_wakes_a_parked_waiter() {
    let _turn = TURNS.lock().await;
    let db = connect().await;
    scratch(&db, "wake_trigger").await;
    db.batch_execute(
        "CREATE TRIGGER wake AFTER INSERT ON wake_trigger.rows
             FOR EACH STATEMENT EXECUTE FUNCTION flowtrack.wake_workers()",
    )
    .await
    .unwrap();
    let waiter = connect().await;
    let wait = tokio::spawn(async move {
        waiter
            .query_one("SELECT wake_trigger.park_and_wait(60000)", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    });
    until_parked(&db, 1).await;
    db.batch_execute("INSERT INTO wake_trigger.rows SELECT g FROM generate_series(1, 10) g")
        .await
        .unwrap();
    let woken = tokio::time::timeout(SEEN_WITHIN, wait)
        .await
        .expect("an INSERT under the trigger did not wake the waiter")
        .unwrap();
    assert!(woken);
    drop_scratch(&db, "wake_trigger").await;
}

/// Query cancel and termination reach a sleeping waiter, and neither
/// leaves it parked.
#[tokio::test]
async fn cancel_and_terminate_end_a_wait_and_unpark() {
    let _turn = TURNS.lock().await;
    let db = connect().await;
    scratch(&db, "wake_cancel").await;
    for how in ["pg_cancel_backend", "pg_terminate_backend"] {
        let waiter = connect().await;
        let pid: i32 = waiter
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let wait = tokio::spawn(async move {
            let result = waiter
                .query_one("SELECT wake_cancel.park_and_wait(60000)", &[])
                .await;
            result
                .map(|_| ())
                .map_err(|e| e.code().map(|c| c.code().to_string()))
        });
        until_parked(&db, 1).await;
        let sent: bool = db
            .query_one(&format!("SELECT {how}($1)"), &[&pid])
            .await
            .unwrap()
            .get(0);
        assert!(sent);
        let result = tokio::time::timeout(SEEN_WITHIN, wait)
            .await
            .unwrap_or_else(|_| panic!("{how} did not end the wait"))
            .unwrap();
        match how {
            "pg_cancel_backend" => assert_eq!(result, Err(Some("57014".into())), "query_canceled"),
            _ => assert!(result.is_err(), "terminated: {result:?}"),
        }
        until_parked(&db, 0).await;
    }
    drop_scratch(&db, "wake_cancel").await;
}

/// The re-check after parking must see commits made after it parked: not
/// possible through one transaction snapshot, so refused.
#[tokio::test]
async fn parking_under_repeatable_read_is_refused() {
    let db = connect().await;
    let err = db
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT flowtrack.worker_park()")
        .await
        .unwrap_err();
    let err = err.as_db_error().expect("a database error");
    assert_eq!(err.code().code(), "25000");
    assert!(
        err.message().starts_with("worker_park:"),
        "{}",
        err.message()
    );
    assert!(err.hint().is_some());
}

#[tokio::test]
async fn a_negative_timeout_names_the_argument() {
    let db = connect().await;
    let err = db
        .query_one("SELECT flowtrack.worker_wait(-5)", &[])
        .await
        .unwrap_err();
    let err = err.as_db_error().unwrap();
    assert_eq!(err.code().code(), "22023");
    assert_eq!(
        err.message(),
        "timeout_ms: must be 0 or more milliseconds, got -5"
    );
    assert!(err.hint().is_some());
}

/// No role but the owner of the queue functions may call these.
#[tokio::test]
async fn only_the_owner_may_park_or_wake() {
    let db = connect().await;
    for f in [
        "flowtrack.worker_park()",
        "flowtrack.worker_wait(integer)",
        "flowtrack.worker_unpark()",
        "flowtrack.wake_on_commit()",
        "flowtrack.wake_stats()",
    ] {
        for role in ["anon", "authenticated", "authenticator", "flowtrack_worker"] {
            let may: bool = db
                .query_one(
                    "SELECT has_function_privilege($1, $2, 'EXECUTE')",
                    &[&role, &f],
                )
                .await
                .unwrap()
                .get(0);
            assert!(!may, "{role} may execute {f}");
        }
    }
}

// ---------------------------------------------------------------------------
// A server that does not preload flowtrack: no shared memory, polling.

fn run_as_pg(program: &std::path::Path, args: &[&str]) -> std::process::Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false);
    let mut cmd = if root {
        let mut c = Command::new("sudo");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).current_dir("/");
    cmd.output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

struct Cluster {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        run_as_pg(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn without_preloading_waits_poll_and_commits_wake_nobody() {
    let bin = std::path::PathBuf::from(
        std::env::var("FLOWTRACK_TEST_PG_BIN").expect("run with ./dev test"),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("flowtrack-wake-nopreload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster {
        dir: dir.clone(),
        bin: bin.clone(),
    };
    if Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        .trim_ascii()
        == b"0"
    {
        assert!(Command::new("chown")
            .arg("postgres:")
            .arg(&dir)
            .status()
            .unwrap()
            .success());
    }
    let data = dir.join("data");
    let out = run_as_pg(
        &bin.join("initdb"),
        &[
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
    );
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opts = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c shared_preload_libraries=''",
        dir.display()
    );
    let log = dir.join("postgres.log");
    let out = run_as_pg(
        &bin.join("pg_ctl"),
        &[
            "-D",
            data.to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ],
    );
    assert!(
        out.status.success(),
        "pg_ctl start: {} {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let db = connect_to(&url).await;
    db.batch_execute("CREATE EXTENSION flowtrack")
        .await
        .unwrap();
    let s = stats(&db).await;
    assert!(!s.enabled, "no shared memory without preloading: {s:?}");
    let parked: bool = db
        .query_one("SELECT flowtrack.worker_park()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!parked, "nowhere to park");
    // A commit that makes work due wakes nobody and does no harm.
    db.batch_execute("BEGIN; SELECT flowtrack.wake_on_commit(); COMMIT")
        .await
        .unwrap();
    // The wait is a plain sleep: the polling fallback.
    let started = Instant::now();
    let woken: bool = db
        .query_one("SELECT flowtrack.worker_wait(300)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!woken);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Still cancellable.
    let pid: i32 = db
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let other = connect_to(&url).await;
    let wait = tokio::spawn(async move {
        db.query_one("SELECT flowtrack.worker_wait(60000)", &[])
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    other
        .query_one("SELECT pg_cancel_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = tokio::time::timeout(SEEN_WITHIN, wait)
        .await
        .expect("cancel did not end the polling wait")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"));
    drop(other);
    drop(cluster);
}
