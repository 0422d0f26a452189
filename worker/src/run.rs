//! The side-effect loop: claim due jobs, perform them on blocking threads,
//! report each outcome, repeat.
//!
//! Wake-ups: the worker LISTENs on `flowtrack_jobs` for explicit nudges, but
//! enqueueing does not NOTIFY, because NOTIFY serialises commits (measured on
//! this project's machine: 4,899 commits/s without it, 649 with it). An idle
//! worker therefore also polls every `FLOWTRACK_POLL_MS` (default 250 ms), and
//! a full batch is followed immediately by another claim.

use std::time::Duration;

use futures_util::{stream, StreamExt};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::claim;
use crate::db;
use crate::deliver;
use crate::job::Outcome;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Connect, LISTEN, and process jobs until SIGINT/SIGTERM.
pub async fn run(url: &str) -> Result<(), String> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to DATABASE_URL: {e}"))?;
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
    // Drive the connection ourselves so notifications reach the loop.
    tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = wake_tx.send(());
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("database connection closed: {e}");
                    break;
                }
            }
        }
    });
    client
        .batch_execute("LISTEN flowtrack_jobs")
        .await
        .map_err(|e| e.to_string())?;

    let pool = db::pool(url, 4)?;
    let worker = format!("worker-{}", std::process::id());
    let batch = env_u64("FLOWTRACK_BATCH", 16) as i32;
    let poll = Duration::from_millis(env_u64("FLOWTRACK_POLL_MS", 250));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    println!("{worker}: listening on flowtrack_jobs, batch {batch}, poll {poll:?}");

    loop {
        let jobs = claim::claim(&client, &worker, batch, 0)
            .await
            .map_err(|e| format!("claim_jobs: {e}"))?;
        let full = jobs.len() as i32 == batch;
        let work = jobs.into_iter().map(|job| {
            let pool = &pool;
            async move {
                let outcome = deliver::perform(pool, &job).await;
                (job, outcome)
            }
        });
        for (job, outcome) in futures_util::future::join_all(work).await {
            if let Outcome::Failed { error, .. } = &outcome {
                eprintln!(
                    "{worker}: job {} ({}) attempt {} failed: {error}",
                    job.id, job.kind, job.attempt
                );
            }
            let verdict = claim::report(&client, &worker, &job, &outcome)
                .await
                .map_err(|e| format!("reporting job {}: {e}", job.id))?;
            if verdict == "stale" {
                eprintln!(
                    "{worker}: job {} report was stale: its lease had been lost",
                    job.id
                );
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = wake_rx.recv() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    println!("{worker}: stopped");
    Ok(())
}
