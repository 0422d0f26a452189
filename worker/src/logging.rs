//! Structured logs through `tracing`: human-readable text or one JSON object
//! per line, filtered by `RUST_LOG` (or the config file's `log_filter`).
//! Logs go to stderr, so `status` output on stdout stays clean.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat, filter: &str) {
    // The filter was validated with the configuration.
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
