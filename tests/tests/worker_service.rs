//! The worker as a service: the real `flowtrack-worker` binary against the
//! test cluster, as the `flowtrack_worker` role. A worker killed with -9 in the
//! middle of a job, Postgres restarted under 10,000 jobs, SIGTERM under full
//! load, and `status` and `/metrics` checked against the database.
//!
//! A worker claims the due jobs of every workspace, so these tests take turns
//! (`TURN`) and each first pushes other workspaces' jobs (left by earlier test
//! binaries) an hour ahead, then looks only at its own workspace's jobs.
//! `./dev test` passes the worker's URL, the binary, and the cluster's data
//! directory with pg_ctl.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowtrack_tests::{column, connect, connect_to, fixtures};
use serde_json::{json, Value};
use tokio::sync::Mutex as AsyncMutex;
use tokio_postgres::Client;
use uuid::Uuid;

static TURN: AsyncMutex<()> = AsyncMutex::const_new(());

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run these tests with ./dev test"))
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

// ------------------------------------------------------------ the worker ----

/// A running `flowtrack-worker run`, its log in a file. Dropping it kills the
/// process (and prints the log's tail if the test is failing).
struct Worker {
    child: Child,
    log: std::path::PathBuf,
    metrics: Option<String>,
}

impl Worker {
    /// Starts the worker with the test defaults overridden by `vars`.
    fn start(vars: &[(&str, String)]) -> Worker {
        let log = std::env::temp_dir().join(format!("flowtrack-worker-{}.log", Uuid::new_v4()));
        let file = File::create(&log).unwrap();
        let mut cmd = Command::new("sh");
        // The test lock (fd 9 of ./dev) must not outlive the test in a worker.
        cmd.args([
            "-c",
            "exec 9>&-; exec \"$0\" \"$@\"",
            &env("FLOWTRACK_TEST_WORKER_BIN"),
            "run",
        ])
        .env("DATABASE_URL", env("FLOWTRACK_TEST_WORKER_DATABASE_URL"))
        .env("RUST_LOG", "info")
        .env("FLOWTRACK_EGRESS_ALLOW", "127.0.0.1")
        .env(
            "FLOWTRACK_WORKER_NAME",
            format!("svc-test-{}", &Uuid::new_v4().simple().to_string()[..6]),
        )
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
        for name in [
            "FLOWTRACK_METRICS_ADDR",
            "FLOWTRACK_LOG_FORMAT",
            "FLOWTRACK_CONCURRENCY",
            "FLOWTRACK_GRACE_SECONDS",
        ] {
            cmd.env_remove(name);
        }
        let mut metrics = None;
        for (name, value) in vars {
            if *name == "FLOWTRACK_METRICS_ADDR" {
                metrics = Some(format!("http://{value}/metrics"));
            }
            cmd.env(name, value);
        }
        let child = cmd.spawn().expect("start flowtrack-worker");
        Worker {
            child,
            log,
            metrics,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} failed");
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit; `None` after `limit`.
    async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            sleep_ms(20).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `/metrics` page parsed: series (name with labels) to value.
    fn scrape(&self) -> HashMap<String, f64> {
        self.try_scrape().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_scrape(&self) -> Result<HashMap<String, f64>, String> {
        let url = self
            .metrics
            .as_ref()
            .expect("started with FLOWTRACK_METRICS_ADDR");
        let response = ureq::get(url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let content_type = response.header("Content-Type").unwrap_or("").to_string();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Ok(parse_metrics(
            &response.into_string().map_err(|e| e.to_string())?,
        ))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- worker {} log (last 40 lines) ----", self.child.id());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Prometheus text format: every sample line as `series value`.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

fn metric(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// A free port on 127.0.0.1 for the worker's metrics.
fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

// -------------------------------------------------------------- database ----

/// Superuser, and one connection as the worker role (the late reports).
async fn connections() -> (Client, Client) {
    let db = connect().await;
    let worker = connect_to(&env("FLOWTRACK_TEST_WORKER_DATABASE_URL")).await;
    (db, worker)
}

async fn enqueue(db: &Client, ws: Uuid, kind: &str, payload: &Value, n: i64) -> Vec<Uuid> {
    column(
        db,
        "SELECT internal.enqueue_job($2, $3, $1) FROM generate_series(1::bigint, $4::bigint)",
        &[&ws, &kind, payload, &n],
    )
    .await
}

/// (queued, running, dead) jobs of workspace `ws`.
async fn counts(db: &Client, ws: Uuid) -> (i64, i64, i64) {
    let r = db
        .query_one(
            "SELECT (SELECT count(*) FROM internal.jobs WHERE workspace_id = $1 AND status = 'queued'),
                    (SELECT count(*) FROM internal.jobs WHERE workspace_id = $1 AND status = 'running'),
                    (SELECT count(*) FROM internal.dead_jobs WHERE workspace_id = $1)",
            &[&ws],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn forget(db: &Client, ws: Uuid) {
    db.execute("DELETE FROM internal.jobs WHERE workspace_id = $1", &[&ws])
        .await
        .unwrap();
    db.execute(
        "DELETE FROM internal.dead_jobs WHERE workspace_id = $1",
        &[&ws],
    )
    .await
    .unwrap();
}

/// Sets a kind's lease for one test; `restore` puts the old one back.
struct KindLease {
    kind: &'static str,
    old: i32,
}

impl KindLease {
    async fn set(db: &Client, kind: &'static str, seconds: i32) -> KindLease {
        let old: i32 = db
            .query_one(
                "UPDATE internal.job_kinds k SET lease_seconds = $2 FROM internal.job_kinds o
                  WHERE k.kind = $1 AND o.kind = k.kind RETURNING o.lease_seconds",
                &[&kind, &seconds],
            )
            .await
            .unwrap()
            .get(0);
        KindLease { kind, old }
    }

    async fn restore(self, db: &Client) {
        db.execute(
            "UPDATE internal.job_kinds SET lease_seconds = $2 WHERE kind = $1",
            &[&self.kind, &self.old],
        )
        .await
        .unwrap();
    }
}

// ------------------------------------------------------------- HTTP sink ----

/// One request the sink received.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    headers: HashMap<String, String>,
    body: String,
}

/// An HTTP server on 127.0.0.1 that records every request and answers 200
/// after holding it for `hold(n)` (n = requests before this one), or until
/// the sink is dropped.
struct Sink {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    closing: Arc<AtomicBool>,
}

impl Sink {
    fn start(hold: fn(usize) -> Duration) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closing = Arc::new(AtomicBool::new(false));
        let (s, c) = (seen.clone(), closing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if c.load(Ordering::Relaxed) {
                    return;
                }
                let (s, c) = (s.clone(), c.clone());
                std::thread::spawn(move || serve(stream, &s, &c, hold));
            }
        });
        Sink { url, seen, closing }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(
            self.url
                .trim_start_matches("http://")
                .trim_end_matches("/hook"),
        );
    }
}

fn serve(
    mut stream: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    closing: &AtomicBool,
    hold: fn(usize) -> Duration,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    let before = {
        let mut seen = seen.lock().unwrap();
        seen.push(Seen {
            at: Instant::now(),
            headers,
            body,
        });
        seen.len() - 1
    };
    let until = Instant::now() + hold(before);
    while Instant::now() < until && !closing.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

// ----------------------------------------------------------------- tests ----

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_setting() {
    let bin = env("FLOWTRACK_TEST_WORKER_BIN");
    let run = |vars: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&[("FLOWTRACK_CONCURRENCY", "many")], &["run"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("FLOWTRACK_CONCURRENCY: \"many\" is not a whole number"),
        "{err}"
    );
    let (code, err) = run(&[("FLOWTRACK_LOG_FORMAT", "xml")], &["run"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("FLOWTRACK_LOG_FORMAT"), "{err}");
    let file = std::env::temp_dir().join(format!("flowtrack-{}.toml", Uuid::new_v4()));
    std::fs::write(&file, "concurrency = 4\ngrace_secs = 3\n").unwrap();
    let (code, err) = run(&[], &["run", "--config", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown field `grace_secs`"), "{err}");
    let (code, err) = run(&[], &["run", "--config", "/nonexistent/flowtrack.toml"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--config /nonexistent/flowtrack.toml"),
        "{err}"
    );
    let (code, err) = run(&[], &["frobnicate"]);
    assert_eq!(code, Some(2), "{err}");
}

/// `kill -9` in the middle of a job: the job is reclaimed within lease plus
/// poll, performed again with the same idempotency key, completed once; a
/// late report under the dead worker's fence changes nothing.
#[tokio::test]
async fn a_killed_worker_s_job_is_reclaimed_and_completed_once() {
    let _turn = TURN.lock().await;
    let (db, worker_role) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    let lease = KindLease::set(&db, "http_request", 2).await;
    // The first delivery hangs (the worker dies holding it); later ones answer at once.
    let sink = Sink::start(|n| {
        if n == 0 {
            Duration::from_secs(120)
        } else {
            Duration::ZERO
        }
    });
    let payload = json!({"url": sink.url, "method": "POST", "body": {"hello": "once"}});
    let job = enqueue(&db, t.workspace_id, "http_request", &payload, 1).await[0];
    fixtures::quiet_others(&db, &[t.workspace_id]).await;

    let poll_ms = 200;
    let settings = || vec![("FLOWTRACK_WAIT_MS", poll_ms.to_string())];
    let mut first = Worker::start(&settings());
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.seen().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the job never reached the sink:\n{}",
            first.log()
        );
        assert!(first.alive(), "worker exited:\n{}", first.log());
        sleep_ms(20).await;
    }
    let r = db
        .query_one(
            "SELECT claims, status, attempts FROM internal.jobs WHERE id = $1",
            &[&job],
        )
        .await
        .unwrap();
    let (old_fence, status, attempts): (i32, String, i32) = (r.get(0), r.get(1), r.get(2));
    // Usually the first attempt. In full `./dev test` runs it was
    // sometimes the second: a claim before it reached no worker and its
    // lease lapsed (not yet explained; see the issue 10 note). The lease's
    // fence is read here either way, so the checks below hold.
    assert_eq!(status, "running", "{}", first.log());
    assert!(attempts >= 1, "{}", first.log());

    first.signal("-KILL");
    let killed = Instant::now();
    first
        .exit_within(Duration::from_secs(10))
        .await
        .expect("kill -9 ends the worker");
    let mut second = Worker::start(&settings());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 = db
            .query_one("SELECT count(*) FROM internal.jobs WHERE id = $1", &[&job])
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job was not completed again:\n{}",
            second.log()
        );
        sleep_ms(50).await;
    }
    let seen = sink.seen();
    assert_eq!(seen.len(), 2, "one delivery per lease: {seen:?}");
    let reclaimed_after = seen[1].at.duration_since(killed);
    // Lease 2 s (extended by heartbeats up to the kill) plus one 200 ms poll,
    // with generous room for a loaded machine.
    assert!(
        reclaimed_after < Duration::from_secs(10),
        "reclaimed {reclaimed_after:?} after the kill"
    );
    eprintln!("kill -9: the job ran again {reclaimed_after:?} after the kill (lease 2 s, poll {poll_ms} ms)");
    assert_eq!(seen[0].body, seen[1].body);
    let key = |s: &Seen| s.headers.get("idempotency-key").cloned();
    assert_eq!(
        key(&seen[0]),
        key(&seen[1]),
        "the same idempotency key on both attempts"
    );
    if let Some(k) = key(&seen[1]) {
        assert_eq!(k, job.to_string());
    }
    let dead: i64 = db
        .query_one(
            "SELECT count(*) FROM internal.dead_jobs WHERE id = $1",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dead, 0, "completed, not dead");

    // The dead worker's late reports, under its old fence, change nothing.
    let late: String = worker_role
        .query_one(
            "SELECT outcome FROM internal.complete_jobs('dead-worker', ARRAY[$1::uuid], ARRAY[$2::integer], ARRAY['{}'::jsonb])",
            &[&job, &old_fence],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, "stale");
    let late: String = worker_role
        .query_one(
            "SELECT outcome FROM internal.fail_jobs('dead-worker', ARRAY[$1::uuid], ARRAY[$2::integer], ARRAY['late'],
                                                   ARRAY[false], ARRAY['{}'::jsonb])",
            &[&job, &old_fence],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, "stale");
    let beats = worker_role
        .query(
            "SELECT id FROM internal.heartbeat_jobs('dead-worker', ARRAY[$1::uuid], ARRAY[$2::integer])",
            &[&job, &old_fence],
        )
        .await
        .unwrap();
    assert!(beats.is_empty(), "a dead lease is not extended");
    assert_eq!(
        counts(&db, t.workspace_id).await,
        (0, 0, 0),
        "nothing queued, running or dead"
    );

    second.signal("-TERM");
    let status = second
        .exit_within(Duration::from_secs(30))
        .await
        .expect("SIGTERM ends the worker");
    assert_eq!(status.code(), Some(0), "{}", second.log());
    lease.restore(&db).await;
    forget(&db, t.workspace_id).await;
}

/// A job longer than its lease keeps it by heartbeat: performed once,
/// completed, never stale.
#[tokio::test]
async fn a_job_longer_than_its_lease_keeps_it_by_heartbeat() {
    let _turn = TURN.lock().await;
    let (db, _) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    let lease = KindLease::set(&db, "http_request", 2).await;
    let sink = Sink::start(|_| Duration::from_secs(5));
    let payload = json!({"url": sink.url, "body": {"long": true}, "timeout_ms": 30000});
    let job = enqueue(&db, t.workspace_id, "http_request", &payload, 1).await[0];
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let worker = Worker::start(&[
        ("FLOWTRACK_METRICS_ADDR", free_addr()),
        ("FLOWTRACK_WAIT_MS", "200".into()),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: i64 = db
            .query_one("SELECT count(*) FROM internal.jobs WHERE id = $1", &[&job])
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not completed:\n{}",
            worker.log()
        );
        sleep_ms(50).await;
    }
    assert_eq!(sink.seen().len(), 1, "performed once");
    let m = worker.scrape();
    let http = |name: &str| {
        metric(
            &m,
            &format!("flowtrack_worker_{name}{{kind=\"http_request\"}}"),
        )
    };
    assert_eq!(http("jobs_succeeded_total"), 1.0);
    assert_eq!(http("jobs_stale_total"), 0.0);
    assert_eq!(http("leases_lost_total"), 0.0);
    assert!(
        http("job_duration_seconds_sum") >= 5.0,
        "the job outlived two leases"
    );
    assert_eq!(counts(&db, t.workspace_id).await, (0, 0, 0));
    lease.restore(&db).await;
    drop(worker);
    forget(&db, t.workspace_id).await;
}

/// A lease taken over by another claim: the heartbeat finds it lost and the
/// worker logs it; its report comes back stale, is logged with the job id
/// and changes nothing; the new holder's report counts.
#[tokio::test]
async fn a_lost_lease_is_logged_and_its_report_is_stale() {
    let _turn = TURN.lock().await;
    let (db, worker_role) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    let lease = KindLease::set(&db, "http_request", 2).await;
    let sink = Sink::start(|_| Duration::from_secs(3));
    let payload = json!({"url": sink.url, "body": {"taken": "over"}, "timeout_ms": 30000});
    let job = enqueue(&db, t.workspace_id, "http_request", &payload, 1).await[0];
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let worker = Worker::start(&[
        ("FLOWTRACK_METRICS_ADDR", free_addr()),
        ("FLOWTRACK_WAIT_MS", "200".into()),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.seen().is_empty() {
        assert!(Instant::now() < deadline, "{}", worker.log());
        sleep_ms(20).await;
    }
    // Expire the lease and claim the job again in one transaction, so the
    // worker's heartbeat cannot slip in between (it waits on the row lock).
    let messages = db
        .simple_query(&format!(
            "BEGIN;
             UPDATE internal.jobs SET locked_until = now() - interval '1 second' WHERE id = '{job}';
             SELECT id, fence FROM internal.claim_jobs('thief', 1);
             COMMIT;"
        ))
        .await
        .unwrap();
    let (id, fence): (Uuid, i32) = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                r.get(0).unwrap().parse().unwrap(),
                r.get(1).unwrap().parse().unwrap(),
            )),
            _ => None,
        })
        .expect("the expired job is claimed again");
    // The thief keeps its lease (30 s again, extended once), so the worker
    // does not reclaim the job in turn while the test looks.
    lease.restore(&db).await;
    let kept = worker_role
        .query(
            "SELECT id FROM internal.heartbeat_jobs('thief', ARRAY[$1::uuid], ARRAY[$2::integer])",
            &[&id, &fence],
        )
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(id, job);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = worker.scrape();
        if metric(
            &m,
            "flowtrack_worker_jobs_stale_total{kind=\"http_request\"}",
        ) >= 1.0
        {
            assert_eq!(
                metric(
                    &m,
                    "flowtrack_worker_leases_lost_total{kind=\"http_request\"}"
                ),
                1.0
            );
            assert_eq!(
                metric(
                    &m,
                    "flowtrack_worker_jobs_succeeded_total{kind=\"http_request\"}"
                ),
                0.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stale report:\n{}",
            worker.log()
        );
        sleep_ms(100).await;
    }
    let log = worker.log();
    let job_text = job.to_string();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("lease lost") && l.contains(&job_text)),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("report stale") && l.contains(&job_text)),
        "{log}"
    );
    // The stale report changed nothing: the thief still holds the job.
    let r = db
        .query_one(
            "SELECT status, claims, locked_by FROM internal.jobs WHERE id = $1",
            &[&job],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, i32>(1),
            r.get::<_, String>(2)
        ),
        ("running".into(), fence, "thief".into())
    );
    let done: String = worker_role
        .query_one(
            "SELECT outcome FROM internal.complete_jobs('thief', ARRAY[$1::uuid], ARRAY[$2::integer], ARRAY['{}'::jsonb])",
            &[&job, &fence],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(done, "completed");
    assert_eq!(
        sink.seen().len(),
        1,
        "the thief performed nothing; the worker once"
    );
    drop(worker);
    forget(&db, t.workspace_id).await;
}

async fn restart_postgres() -> Duration {
    let data = env("FLOWTRACK_TEST_PGDATA");
    let log = env("FLOWTRACK_TEST_PG_LOG");
    let pg_ctl = format!("{}/pg_ctl", env("FLOWTRACK_TEST_PG_BIN"));
    let runas = std::env::var("FLOWTRACK_TEST_PG_RUNAS").unwrap_or_default();
    let mut args: Vec<String> = vec![];
    if !runas.is_empty() {
        args.extend(["sudo", "-u", &runas, "--"].map(String::from));
    }
    args.extend([
        pg_ctl,
        "-D".into(),
        data,
        "-l".into(),
        log,
        "-m".into(),
        "fast".into(),
        "-w".into(),
        "-t".into(),
        "60".into(),
        "restart".into(),
    ]);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .args(["-c", "exec 9>&-; exec \"$@\"", "sh"])
            .args(&args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

async fn reconnect() -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let url = env("FLOWTRACK_TEST_DATABASE_URL");
        if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            if client.simple_query("SELECT 1").await.is_ok() {
                return client;
            }
        }
        assert!(Instant::now() < deadline, "postgres did not come back");
        sleep_ms(100).await;
    }
}

/// Postgres restarted in the middle of 10,000 jobs: the worker reconnects on
/// its own; every job is done once, none lost, none left running.
#[tokio::test]
async fn a_postgres_restart_costs_only_the_calls_in_flight() {
    let _turn = TURN.lock().await;
    let (db, _) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    const JOBS: i64 = 10_000;
    enqueue(&db, t.workspace_id, "noop", &json!({"restart": true}), JOBS).await;
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let addr = free_addr();
    let started = Instant::now();
    let mut worker = Worker::start(&[
        ("FLOWTRACK_METRICS_ADDR", addr.clone()),
        ("FLOWTRACK_WAIT_MS", "200".into()),
    ]);
    // Restart once a good part, but not all, is done.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (queued, running, _) = counts(&db, t.workspace_id).await;
        if queued + running <= JOBS - 500 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress:\n{}", worker.log());
        assert!(worker.alive(), "worker exited:\n{}", worker.log());
        sleep_ms(10).await;
    }
    drop(db);
    let restart = restart_postgres().await;
    let db = reconnect().await;
    let (queued, running, _) = counts(&db, t.workspace_id).await;
    assert!(
        queued + running > 0,
        "the restart came after the last job; nothing was tested"
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (queued, running, dead) = counts(&db, t.workspace_id).await;
        assert_eq!(dead, 0, "no job may die of a restart");
        if queued + running == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{queued} queued and {running} running jobs left:\n{}",
            worker.log()
        );
        assert!(
            worker.alive(),
            "the worker exited on the restart:\n{}",
            worker.log()
        );
        sleep_ms(100).await;
    }
    let burn = started.elapsed();
    let m = worker.scrape();
    let errors: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("flowtrack_worker_db_errors_total{"))
        .map(|(_, v)| v)
        .sum();
    assert!(
        errors >= 1.0,
        "the restart reached the worker's calls: {errors} errors"
    );
    let succeeded = metric(&m, "flowtrack_worker_jobs_succeeded_total{kind=\"noop\"}");
    let stale = metric(&m, "flowtrack_worker_jobs_stale_total{kind=\"noop\"}");
    // A completion whose answer the restart swallowed is sent again and
    // comes back stale (the first send had committed): still once per job.
    assert_eq!(
        succeeded + stale,
        JOBS as f64,
        "succeeded {succeeded}, stale {stale}"
    );
    eprintln!(
        "{JOBS} jobs in {burn:?} with a restart of {restart:?} in the middle; worker: {errors} failed calls, {stale} stale re-sends"
    );

    worker.signal("-TERM");
    let status = worker
        .exit_within(Duration::from_secs(30))
        .await
        .expect("SIGTERM ends the worker");
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    forget(&db, t.workspace_id).await;
}

/// JSON log lines of a worker, parsed (every line must be one object).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect()
}

/// SIGTERM under full load: claiming stops, jobs in flight finish (or, past
/// the grace period, are released), reports are flushed, exit 0, nothing
/// left running. A second signal exits at once.
#[tokio::test]
async fn sigterm_drains_within_the_grace_period() {
    let _turn = TURN.lock().await;
    let (db, _) = connections().await;

    // Full load of quick jobs: everything in flight finishes and is reported.
    let t = fixtures::tenant(&db, "pro").await;
    const JOBS: i64 = 20_000;
    enqueue(&db, t.workspace_id, "noop", &json!({}), JOBS).await;
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let mut worker = Worker::start(&[
        ("FLOWTRACK_GRACE_SECONDS", "10".into()),
        ("FLOWTRACK_LOG_FORMAT", "json".into()),
    ]);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (queued, running, _) = counts(&db, t.workspace_id).await;
        if queued + running <= JOBS - 2000 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress:\n{}", worker.log());
        sleep_ms(10).await;
    }
    worker.signal("-TERM");
    let signalled = Instant::now();
    let status = worker
        .exit_within(Duration::from_secs(30))
        .await
        .expect("the worker exits");
    let drain = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    assert!(
        drain < Duration::from_secs(10),
        "drained in {drain:?}, grace 10 s"
    );
    let (queued, running, dead) = counts(&db, t.workspace_id).await;
    assert_eq!((running, dead), (0, 0), "nothing left running or dead");
    assert!(queued > 0, "stopped before the end of the queue");
    let unattempted: i64 = db
        .query_one(
            "SELECT count(*) FROM internal.jobs WHERE workspace_id = $1 AND attempts = 0 AND run_at <= now()",
            &[&t.workspace_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        unattempted, queued,
        "what is left is due and was never attempted"
    );
    let lines = json_lines(&worker.log());
    let stopped = lines
        .iter()
        .find(|l| l["message"] == "stopped cleanly")
        .unwrap_or_else(|| panic!("no 'stopped cleanly' line:\n{}", worker.log()));
    eprintln!(
        "full load: drained in {drain:?} (worker says {} ms)",
        stopped["drain_ms"]
    );
    forget(&db, t.workspace_id).await;

    // Jobs that outlast the grace period are released at its end: not
    // counted as attempts, due again at once.
    let t = fixtures::tenant(&db, "pro").await;
    let sink = Sink::start(|_| Duration::from_secs(120));
    let payload = json!({"url": sink.url, "body": {"slow": true}, "timeout_ms": 60000});
    enqueue(&db, t.workspace_id, "http_request", &payload, 6).await;
    fixtures::quiet_others(&db, &[t.workspace_id]).await;
    let mut worker = Worker::start(&[
        ("FLOWTRACK_GRACE_SECONDS", "2".into()),
        ("FLOWTRACK_CONCURRENCY", "4".into()),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.seen().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "4 slow jobs never started:\n{}",
            worker.log()
        );
        sleep_ms(20).await;
    }
    assert_eq!(
        counts(&db, t.workspace_id).await,
        (2, 4, 0),
        "4 in flight, 2 waiting for a slot"
    );
    worker.signal("-TERM");
    let signalled = Instant::now();
    let status = worker
        .exit_within(Duration::from_secs(30))
        .await
        .expect("the worker exits");
    let drain = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    assert!(
        drain >= Duration::from_secs(2),
        "the jobs had their grace period: {drain:?}"
    );
    assert!(
        drain < Duration::from_secs(9),
        "released promptly after the grace: {drain:?}"
    );
    assert_eq!(
        counts(&db, t.workspace_id).await,
        (6, 0, 0),
        "all 6 queued again"
    );
    let attempts = column::<i32>(
        &db,
        "SELECT attempts FROM internal.jobs WHERE workspace_id = $1 AND run_at <= now()",
        &[&t.workspace_id],
    )
    .await;
    assert_eq!(
        attempts,
        vec![0; 6],
        "a release gives the attempt back; due at once"
    );
    assert!(worker.log().contains("leases released"), "{}", worker.log());
    eprintln!("slow jobs: released and exited {drain:?} after SIGTERM (grace 2 s)");

    // A second signal does not wait for the grace period.
    let mut worker = Worker::start(&[
        ("FLOWTRACK_GRACE_SECONDS", "60".into()),
        ("FLOWTRACK_CONCURRENCY", "2".into()),
    ]);
    let before = sink.seen().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.seen().len() < before + 2 {
        assert!(
            Instant::now() < deadline,
            "slow jobs never started:\n{}",
            worker.log()
        );
        sleep_ms(20).await;
    }
    worker.signal("-TERM");
    sleep_ms(300).await;
    assert!(
        worker.alive(),
        "the first signal waits for the jobs in flight"
    );
    worker.signal("-TERM");
    let status = worker
        .exit_within(Duration::from_secs(5))
        .await
        .expect("a second signal exits at once");
    assert_eq!(status.code(), Some(1), "{}", worker.log());
    drop(sink);
    forget(&db, t.workspace_id).await;

    // An idle worker parked in claim_jobs stops at once: the parked claim is
    // cancelled, not waited out.
    fixtures::quiet_others(&db, &[]).await;
    let mut worker = Worker::start(&[("FLOWTRACK_WAIT_MS", "30000".into())]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !worker.log().contains("worker starting") {
        assert!(Instant::now() < deadline, "{}", worker.log());
        sleep_ms(20).await;
    }
    sleep_ms(500).await;
    worker.signal("-TERM");
    let signalled = Instant::now();
    let status = worker
        .exit_within(Duration::from_secs(20))
        .await
        .expect("the worker exits");
    let stop = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    assert!(
        stop < Duration::from_secs(5),
        "a 30 s park was waited out: {stop:?}"
    );
    eprintln!("idle: stopped {stop:?} after SIGTERM while parked (wait_ms 30000)");
}

/// `flowtrack-worker status` and `/metrics` show what the database holds.
#[tokio::test]
async fn status_and_metrics_match_the_database() {
    let _turn = TURN.lock().await;
    let (db, worker_role) = connections().await;
    let t = fixtures::tenant(&db, "pro").await;
    let ws = t.workspace_id;
    // 6 due now, 3 an hour ahead; of the due ones, the test claims 2 (they
    // stay running) and 2 more that it fails for good (dead).
    enqueue(&db, ws, "noop", &json!({}), 6).await;
    let later = enqueue(&db, ws, "noop", &json!({}), 3).await;
    db.execute(
        "UPDATE internal.jobs SET run_at = now() + interval '1 hour' WHERE id = ANY ($1)",
        &[&later],
    )
    .await
    .unwrap();
    fixtures::quiet_others(&db, &[ws]).await;
    db.execute(
        "UPDATE internal.jobs SET run_at = now() - interval '3 seconds' WHERE workspace_id = $1 AND NOT id = ANY ($2)",
        &[&ws, &later],
    )
    .await
    .unwrap();
    let claimed = worker_role
        .query(
            "SELECT id, fence FROM internal.claim_jobs('status-test', 4)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4);
    let (ids, fences): (Vec<Uuid>, Vec<i32>) = claimed[..2]
        .iter()
        .map(|r| (r.get::<_, Uuid>(0), r.get::<_, i32>(1)))
        .unzip();
    let outcomes = column::<String>(
        &worker_role,
        "SELECT outcome FROM internal.fail_jobs('status-test', $1, $2, ARRAY['no', 'no'], ARRAY[false, false], ARRAY['{}'::jsonb, '{}'::jsonb])",
        &[&ids, &fences],
    )
    .await;
    assert_eq!(outcomes, ["dead", "dead"]);
    assert_eq!(counts(&db, ws).await, (5, 2, 2));

    // status --json, as the worker role, against counts taken straight from the tables.
    let lag_before: f64 = db
        .query_one(
            "SELECT extract(epoch FROM now() - min(run_at))::float8 FROM internal.jobs
              WHERE workspace_id = $1 AND status = 'queued' AND run_at <= now()",
            &[&ws],
        )
        .await
        .unwrap()
        .get(0);
    let out = Command::new(env("FLOWTRACK_TEST_WORKER_BIN"))
        .args(["status", "--json"])
        .env("DATABASE_URL", env("FLOWTRACK_TEST_WORKER_DATABASE_URL"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mine = status["by_workspace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workspace_id"] == json!(ws))
        .unwrap_or_else(|| panic!("workspace missing from {status}"));
    assert_eq!(
        (
            &mine["queued"],
            &mine["due"],
            &mine["running"],
            &mine["dead"]
        ),
        (&json!(5), &json!(2), &json!(2), &json!(2)),
        "{mine}"
    );
    let lag = mine["lag_seconds"].as_f64().unwrap();
    assert!(
        lag >= lag_before && lag < lag_before + 30.0,
        "lag {lag}, at least {lag_before}"
    );
    let by_kind = |kind: &str| -> Value {
        status["by_kind"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kind"] == kind)
            .cloned()
            .unwrap_or(json!({"queued": 0, "due": 0, "running": 0, "dead": 0}))
    };
    let kinds = db
        .query(
            "SELECT k.kind,
                    (SELECT count(*) FROM internal.jobs j WHERE j.kind = k.kind AND j.status = 'queued'),
                    (SELECT count(*) FROM internal.jobs j WHERE j.kind = k.kind AND j.status = 'queued' AND j.run_at <= now()),
                    (SELECT count(*) FROM internal.jobs j WHERE j.kind = k.kind AND j.status = 'running'),
                    (SELECT count(*) FROM internal.dead_jobs d WHERE d.kind = k.kind)
               FROM internal.job_kinds k",
            &[],
        )
        .await
        .unwrap();
    for r in &kinds {
        let kind: String = r.get(0);
        let got = by_kind(&kind);
        let want: [i64; 4] = [r.get(1), r.get(2), r.get(3), r.get(4)];
        let shown = [&got["queued"], &got["due"], &got["running"], &got["dead"]]
            .map(|v| v.as_i64().unwrap());
        assert_eq!(shown, want, "kind {kind}: status {got}");
    }
    // The text form shows the same row.
    let out = Command::new(env("FLOWTRACK_TEST_WORKER_BIN"))
        .arg("status")
        .env("DATABASE_URL", env("FLOWTRACK_TEST_WORKER_DATABASE_URL"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&ws.to_string()))
        .unwrap_or_else(|| panic!("no line for the workspace:\n{text}"));
    let numbers: Vec<&str> = line.split_whitespace().skip(1).take(4).collect();
    assert_eq!(numbers, ["5", "2", "2", "2"], "{line}");

    // A worker performs the 2 due jobs; /metrics counts them and shows the queue.
    let addr = free_addr();
    let worker = Worker::start(&[
        ("FLOWTRACK_METRICS_ADDR", addr),
        ("FLOWTRACK_QUEUE_STATUS_SECONDS", "0.2".into()),
        ("FLOWTRACK_WAIT_MS", "200".into()),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(m) = worker.try_scrape() {
            if metric(&m, "flowtrack_worker_jobs_succeeded_total{kind=\"noop\"}") >= 2.0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the 2 due jobs were not done:\n{}",
            worker.log()
        );
        sleep_ms(50).await;
    }
    assert_eq!(counts(&db, ws).await, (3, 2, 2));
    // The queue gauges catch up within a refresh; then they equal the tables.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (m, want) = loop {
        let m = worker.scrape();
        let r = db
            .query_one(
                "SELECT (SELECT count(*) FROM internal.jobs WHERE kind = 'noop' AND status = 'queued'),
                        (SELECT count(*) FROM internal.jobs WHERE kind = 'noop' AND status = 'queued' AND run_at <= now()),
                        (SELECT count(*) FROM internal.jobs WHERE kind = 'noop' AND status = 'running'),
                        (SELECT count(*) FROM internal.dead_jobs WHERE kind = 'noop')",
                &[],
            )
            .await
            .unwrap();
        let want: [f64; 4] = [0, 1, 2, 3].map(|i| r.get::<_, i64>(i) as f64);
        let shown = ["depth", "due", "running", "dead"]
            .map(|g| metric(&m, &format!("flowtrack_queue_{g}{{kind=\"noop\"}}")));
        if shown == want {
            break (m, want);
        }
        assert!(
            Instant::now() < deadline,
            "gauges {shown:?}, tables {want:?}"
        );
        sleep_ms(100).await;
    };
    assert!(
        want[0] >= 3.0 && want[2] >= 2.0 && want[3] >= 2.0,
        "{want:?}"
    );
    let noop = |name: &str| metric(&m, &format!("flowtrack_worker_{name}{{kind=\"noop\"}}"));
    assert_eq!(noop("jobs_claimed_total"), 2.0);
    assert_eq!(noop("jobs_succeeded_total"), 2.0);
    assert_eq!(noop("jobs_failed_total"), 0.0);
    assert_eq!(noop("jobs_in_flight"), 0.0);
    assert_eq!(noop("job_duration_seconds_count"), 2.0);
    assert_eq!(noop("enqueue_to_start_seconds_count"), 2.0);
    // They were due 3 s before the worker started.
    assert_eq!(
        metric(
            &m,
            "flowtrack_worker_enqueue_to_start_seconds_bucket{kind=\"noop\",le=\"2.5\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &m,
            "flowtrack_worker_enqueue_to_start_seconds_bucket{kind=\"noop\",le=\"+Inf\"}"
        ),
        2.0
    );
    assert!(noop("enqueue_to_start_seconds_sum") >= 6.0);
    drop(worker);
    forget(&db, ws).await;
}
