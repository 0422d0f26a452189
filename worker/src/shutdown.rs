//! SIGTERM and SIGINT. The first stops claiming at once and starts the grace
//! period (the runtime drains, releases and flushes); a second exits the
//! process immediately, leaving the leases it held to expire.

use std::time::Instant;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Exit code after a second signal.
pub const EXIT_SECOND_SIGNAL: i32 = 1;

/// Installs the handlers; `stop` receives the moment the first signal came.
pub fn listen(stop: watch::Sender<Option<Instant>>) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        stop.send_replace(Some(Instant::now()));
        tracing::info!(
            signal = name,
            "stopping: no more claims; jobs in flight finish within the grace period"
        );
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(
            signal = name,
            "second signal: exiting now; the leases held expire and their jobs run again"
        );
        std::process::exit(EXIT_SECOND_SIGNAL);
    });
    Ok(())
}
