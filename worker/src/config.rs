//! The worker's configuration: a TOML file (`--config FILE`) overridden by the
//! environment, validated before anything starts. A bad value is reported by
//! the name the operator used (the environment variable or the file's key) and
//! the process exits with code 2.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Exit code for a configuration or usage error.
pub const EXIT_CONFIG: u8 = 2;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `run` and `status` need, validated.
#[derive(Clone, PartialEq)]
pub struct Config {
    pub database_url: String,
    /// Only for logs and `locked_by`: fencing is by the claim's token.
    pub worker_name: String,
    /// Jobs in flight at most.
    pub concurrency: usize,
    /// Most jobs one claim asks for (it asks for fewer when fewer slots are free).
    pub claim_batch: usize,
    /// How long `claim_jobs` may park in the database when nothing is due.
    pub wait: Duration,
    /// Sleep between two empty claims when `wait` is zero (the polling fallback).
    pub poll: Duration,
    pub pool_size: usize,
    /// On SIGTERM, how long jobs in flight may take before they are released.
    pub grace: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// A `tracing` env-filter directive (`RUST_LOG`).
    pub log_filter: String,
    /// Most outcomes one `complete_jobs` or `fail_jobs` call carries.
    pub report_batch: usize,
    /// How long an outcome may wait for its batch to fill.
    pub report_flush: Duration,
    /// How often queue depth and lag are read for `/metrics`.
    pub queue_status_every: Duration,
    /// How often `internal.release_due_work()` runs due delays and
    /// schedules; `None` when off (pg_cron's minute tick alone).
    pub tick: Option<Duration>,
}

impl fmt::Debug for Config {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("worker_name", &self.worker_name)
            .field("concurrency", &self.concurrency)
            .field("claim_batch", &self.claim_batch)
            .field("wait", &self.wait)
            .field("poll", &self.poll)
            .field("pool_size", &self.pool_size)
            .field("grace", &self.grace)
            .field("metrics_addr", &self.metrics_addr)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("report_batch", &self.report_batch)
            .field("report_flush", &self.report_flush)
            .field("queue_status_every", &self.queue_status_every)
            .field("tick", &self.tick)
            .finish()
    }
}

/// `url` with any password replaced by `***`, for logs: the user-info of a
/// URL, a `password=` query parameter, or a key=value `password`.
pub fn redact_url(url: &str) -> String {
    let url = redact_param(url);
    let Some(scheme_end) = url.find("://") else {
        return url;
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.clone(),
    }
}

/// Replaces the value after every `password=` (up to `&`, a space or the end).
fn redact_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.to_ascii_lowercase().find("password=") {
        let at_boundary = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b' ');
        out.push_str(&rest[..i + 9]);
        rest = &rest[i + 9..];
        if at_boundary {
            out.push_str("***");
            let end = rest.find(['&', ' ']).unwrap_or(rest.len());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// A configuration error, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The file's shape: every key optional, unknown keys refused (a typo must
/// not silently fall back to a default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    worker_name: Option<String>,
    concurrency: Option<i64>,
    claim_batch: Option<i64>,
    wait_ms: Option<i64>,
    poll_ms: Option<i64>,
    pool_size: Option<i64>,
    grace_seconds: Option<f64>,
    metrics_addr: Option<String>,
    log_format: Option<String>,
    log_filter: Option<String>,
    report_batch: Option<i64>,
    report_flush_ms: Option<i64>,
    queue_status_seconds: Option<f64>,
    tick_ms: Option<i64>,
}

/// One setting: its file key and environment variable.
struct Key {
    file: &'static str,
    env: &'static str,
}

const DATABASE_URL: Key = Key {
    file: "database_url",
    env: "DATABASE_URL",
};
const WORKER_NAME: Key = Key {
    file: "worker_name",
    env: "FLOWTRACK_WORKER_NAME",
};
const CONCURRENCY: Key = Key {
    file: "concurrency",
    env: "FLOWTRACK_CONCURRENCY",
};
const CLAIM_BATCH: Key = Key {
    file: "claim_batch",
    env: "FLOWTRACK_CLAIM_BATCH",
};
const WAIT_MS: Key = Key {
    file: "wait_ms",
    env: "FLOWTRACK_WAIT_MS",
};
const POLL_MS: Key = Key {
    file: "poll_ms",
    env: "FLOWTRACK_POLL_MS",
};
const POOL_SIZE: Key = Key {
    file: "pool_size",
    env: "FLOWTRACK_POOL_SIZE",
};
const GRACE: Key = Key {
    file: "grace_seconds",
    env: "FLOWTRACK_GRACE_SECONDS",
};
const METRICS_ADDR: Key = Key {
    file: "metrics_addr",
    env: "FLOWTRACK_METRICS_ADDR",
};
const LOG_FORMAT: Key = Key {
    file: "log_format",
    env: "FLOWTRACK_LOG_FORMAT",
};
const LOG_FILTER: Key = Key {
    file: "log_filter",
    env: "RUST_LOG",
};
const REPORT_BATCH: Key = Key {
    file: "report_batch",
    env: "FLOWTRACK_REPORT_BATCH",
};
const REPORT_FLUSH_MS: Key = Key {
    file: "report_flush_ms",
    env: "FLOWTRACK_REPORT_FLUSH_MS",
};
const QUEUE_STATUS: Key = Key {
    file: "queue_status_seconds",
    env: "FLOWTRACK_QUEUE_STATUS_SECONDS",
};

const TICK_MS: Key = Key {
    file: "tick_ms",
    env: "FLOWTRACK_TICK_MS",
};

/// The environment variables the worker reads, for `--help`.
pub const ENV_HELP: &str = "\
configuration (environment overrides the --config TOML file; file keys in brackets):
  DATABASE_URL                    [database_url]      required
  FLOWTRACK_WORKER_NAME           [worker_name]       default host-pid-random (logs and locked_by only)
  FLOWTRACK_CONCURRENCY           [concurrency]       jobs in flight, default 32
  FLOWTRACK_CLAIM_BATCH           [claim_batch]       most jobs per claim, default 32
  FLOWTRACK_WAIT_MS               [wait_ms]           claim_jobs parks up to this long when idle, default 1000
  FLOWTRACK_POLL_MS               [poll_ms]           sleep between empty claims when wait_ms = 0, default 250
  FLOWTRACK_POOL_SIZE             [pool_size]         database connections, default 8 (at least 2)
  FLOWTRACK_GRACE_SECONDS         [grace_seconds]     SIGTERM drain period, default 25
  FLOWTRACK_METRICS_ADDR          [metrics_addr]      e.g. 127.0.0.1:9187 serves /metrics; unset = off
  FLOWTRACK_LOG_FORMAT            [log_format]        text | json, default text
  RUST_LOG                        [log_filter]        default info
  FLOWTRACK_REPORT_BATCH          [report_batch]      most outcomes per report call, default 256
  FLOWTRACK_REPORT_FLUSH_MS       [report_flush_ms]   longest an outcome waits for its batch, default 5
  FLOWTRACK_QUEUE_STATUS_SECONDS  [queue_status_seconds] queue depth/lag refresh for /metrics, default 5
  FLOWTRACK_TICK_MS               [tick_ms]           runs due delays and schedules this often, default 1000; 0 = off";

/// Where one raw value came from, for error messages.
fn source(key: &Key, from_env: bool) -> String {
    if from_env {
        key.env.to_string()
    } else {
        format!("{} (config file)", key.file)
    }
}

/// Reads settings from `env` (the process environment in production, a map
/// in tests) over `file` (the TOML text of `--config`, if given).
pub struct Loader<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: FileConfig,
}

impl<'a> Loader<'a> {
    pub fn new(
        env: &'a dyn Fn(&str) -> Option<String>,
        file_text: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let file = match file_text {
            None => FileConfig::default(),
            Some(text) => toml::from_str(text)
                .map_err(|e| ConfigError(format!("config file: {}", e.message())))?,
        };
        Ok(Loader { env, file })
    }

    /// The environment's value (empty counts as unset), else the file's.
    fn raw_str(&self, key: &Key, file: &Option<String>) -> Option<(String, String)> {
        match (self.env)(key.env).filter(|v| !v.trim().is_empty()) {
            Some(v) => Some((v.trim().to_string(), source(key, true))),
            None => file.clone().map(|v| (v, source(key, false))),
        }
    }

    fn int(
        &self,
        key: &Key,
        file: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        let (value, from) = match (self.env)(key.env).filter(|v| !v.trim().is_empty()) {
            Some(v) => (
                v.trim().parse::<i64>().map_err(|_| {
                    ConfigError(format!(
                        "{}: \"{}\" is not a whole number",
                        key.env,
                        v.trim()
                    ))
                })?,
                source(key, true),
            ),
            None => match file {
                Some(v) => (v, source(key, false)),
                None => return Ok(default),
            },
        };
        if value < min || value > max {
            return Err(ConfigError(format!(
                "{from}: {value} is out of range (allowed {min}..={max})"
            )));
        }
        Ok(value)
    }

    fn seconds(
        &self,
        key: &Key,
        file: Option<f64>,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<Duration, ConfigError> {
        let (value, from) = match (self.env)(key.env).filter(|v| !v.trim().is_empty()) {
            Some(v) => (
                v.trim().parse::<f64>().map_err(|_| {
                    ConfigError(format!(
                        "{}: \"{}\" is not a number of seconds",
                        key.env,
                        v.trim()
                    ))
                })?,
                source(key, true),
            ),
            None => (file.unwrap_or(default), source(key, false)),
        };
        if !value.is_finite() || value < min || value > max {
            return Err(ConfigError(format!(
                "{from}: {value} is out of range (allowed {min}..={max} seconds)"
            )));
        }
        Ok(Duration::from_secs_f64(value))
    }

    /// Only the database URL (for `migrate`, which needs nothing else).
    pub fn database_url(&self) -> Result<String, ConfigError> {
        let (url, from) = self
            .raw_str(&DATABASE_URL, &self.file.database_url)
            .ok_or_else(|| {
                ConfigError(
                    "DATABASE_URL is not set (environment or database_url in the config file)"
                        .into(),
                )
            })?;
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| ConfigError(format!("{from}: not a PostgreSQL connection string: {e}")))?;
        Ok(url)
    }

    /// The whole configuration, validated.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let f = &self.file;
        let database_url = self.database_url()?;
        let worker_name = match self.raw_str(&WORKER_NAME, &f.worker_name) {
            Some((name, from)) => {
                if name.len() > 200 || name.chars().any(char::is_control) {
                    return Err(ConfigError(format!(
                        "{from}: at most 200 characters, no control characters"
                    )));
                }
                name
            }
            None => default_worker_name(),
        };
        let concurrency = self.int(&CONCURRENCY, f.concurrency, 32, 1, 10_000)? as usize;
        let claim_batch = self.int(&CLAIM_BATCH, f.claim_batch, 32, 1, 1000)? as usize;
        let wait_ms = self.int(&WAIT_MS, f.wait_ms, 1000, 0, 60_000)?;
        let poll_ms = self.int(&POLL_MS, f.poll_ms, 250, 1, 60_000)?;
        let pool_size = self.int(&POOL_SIZE, f.pool_size, 8, 2, 1000)? as usize;
        let grace = self.seconds(&GRACE, f.grace_seconds, 25.0, 0.0, 3600.0)?;
        let metrics_addr = match self.raw_str(&METRICS_ADDR, &f.metrics_addr) {
            None => None,
            Some((addr, from)) => Some(addr.parse::<SocketAddr>().map_err(|_| {
                ConfigError(format!(
                    "{from}: \"{addr}\" is not an address:port (e.g. 127.0.0.1:9187)"
                ))
            })?),
        };
        let log_format = match self.raw_str(&LOG_FORMAT, &f.log_format) {
            None => LogFormat::Text,
            Some((v, from)) => match v.to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(ConfigError(format!("{from}: \"{v}\" is not text or json"))),
            },
        };
        let log_filter = match self.raw_str(&LOG_FILTER, &f.log_filter) {
            None => "info".to_string(),
            Some((v, from)) => {
                tracing_subscriber::EnvFilter::try_new(&v)
                    .map_err(|e| ConfigError(format!("{from}: \"{v}\": {e}")))?;
                v
            }
        };
        let report_batch = self.int(&REPORT_BATCH, f.report_batch, 256, 1, 10_000)? as usize;
        let report_flush_ms = self.int(&REPORT_FLUSH_MS, f.report_flush_ms, 5, 0, 10_000)?;
        let queue_status_every =
            self.seconds(&QUEUE_STATUS, f.queue_status_seconds, 5.0, 0.1, 3600.0)?;
        let tick_ms = self.int(&TICK_MS, f.tick_ms, 1000, 0, 60_000)?;
        Ok(Config {
            database_url,
            worker_name,
            concurrency,
            claim_batch,
            wait: Duration::from_millis(wait_ms as u64),
            poll: Duration::from_millis(poll_ms as u64),
            pool_size,
            grace,
            metrics_addr,
            log_format,
            log_filter,
            report_batch,
            report_flush: Duration::from_millis(report_flush_ms as u64),
            queue_status_every,
            tick: (tick_ms > 0).then(|| Duration::from_millis(tick_ms as u64)),
        })
    }
}

/// `host-pid-xxxx`: readable in logs and distinct across containers that all
/// run as pid 1 (the random suffix); fencing never relies on it.
pub fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..6])
}

/// Reads `--config FILE` (if given) and the process environment.
pub fn from_process(config_file: Option<&str>) -> Result<Config, ConfigError> {
    let text = read_file(config_file)?;
    let env = |name: &str| std::env::var(name).ok();
    Loader::new(&env, text.as_deref())?.load()
}

/// The config file's text, or `None` without `--config`.
pub fn read_file(config_file: Option<&str>) -> Result<Option<String>, ConfigError> {
    config_file
        .map(|path| {
            std::fs::read_to_string(path).map_err(|e| ConfigError(format!("--config {path}: {e}")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(env: &[(&str, &str)], file: Option<&str>) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = move |name: &str| map.get(name).cloned();
        Loader::new(&get, file)?.load()
    }

    const URL: (&str, &str) = (
        "DATABASE_URL",
        "postgres://w:secret@127.0.0.1:5432/flowtrack",
    );

    #[test]
    fn defaults() {
        let c = load(&[URL], None).unwrap();
        assert_eq!(c.concurrency, 32);
        assert_eq!(c.claim_batch, 32);
        assert_eq!(c.wait, Duration::from_millis(1000));
        assert_eq!(c.grace, Duration::from_secs(25));
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_filter, "info");
        assert_eq!(c.tick, Some(Duration::from_millis(1000)));
        assert_eq!(
            load(&[URL, ("FLOWTRACK_TICK_MS", "0")], None).unwrap().tick,
            None
        );
        assert!(c.pool_size >= 2);
        let pid = std::process::id().to_string();
        assert!(c.worker_name.contains(&pid), "{}", c.worker_name);
    }

    #[test]
    fn env_overrides_file() {
        let file = r#"
            database_url = "postgres://file@127.0.0.1/flowtrack"
            concurrency = 4
            claim_batch = 2
            grace_seconds = 1.5
            metrics_addr = "127.0.0.1:9187"
            log_format = "json"
        "#;
        let c = load(&[("FLOWTRACK_CONCURRENCY", "64")], Some(file)).unwrap();
        assert_eq!(c.database_url, "postgres://file@127.0.0.1/flowtrack");
        assert_eq!(c.concurrency, 64);
        assert_eq!(c.claim_batch, 2);
        assert_eq!(c.grace, Duration::from_millis(1500));
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(c.log_format, LogFormat::Json);
        let c = load(&[URL, ("FLOWTRACK_LOG_FORMAT", "TEXT")], Some(file)).unwrap();
        assert_eq!(c.database_url, URL.1);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn empty_env_counts_as_unset() {
        let c = load(
            &[
                URL,
                ("FLOWTRACK_METRICS_ADDR", ""),
                ("FLOWTRACK_CONCURRENCY", " "),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.concurrency, 32);
    }

    #[test]
    fn errors_name_the_setting() {
        let err = |env: &[(&str, &str)], file: Option<&str>| load(env, file).unwrap_err().0;
        assert!(err(&[], None).contains("DATABASE_URL is not set"));
        assert!(err(&[("DATABASE_URL", "postgres://x:99999999/db")], None).contains("DATABASE_URL"));
        assert!(err(&[URL, ("FLOWTRACK_CONCURRENCY", "lots")], None)
            .contains("FLOWTRACK_CONCURRENCY: \"lots\" is not a whole number"));
        assert!(err(&[URL, ("FLOWTRACK_CONCURRENCY", "0")], None)
            .contains("FLOWTRACK_CONCURRENCY: 0 is out of range"));
        assert!(err(&[URL, ("FLOWTRACK_POOL_SIZE", "1")], None).contains("FLOWTRACK_POOL_SIZE"));
        assert!(err(&[URL, ("FLOWTRACK_GRACE_SECONDS", "-1")], None)
            .contains("FLOWTRACK_GRACE_SECONDS"));
        assert!(err(&[URL, ("FLOWTRACK_GRACE_SECONDS", "NaN")], None)
            .contains("FLOWTRACK_GRACE_SECONDS"));
        assert!(err(&[URL, ("FLOWTRACK_METRICS_ADDR", "9187")], None)
            .contains("FLOWTRACK_METRICS_ADDR"));
        assert!(err(&[URL, ("FLOWTRACK_LOG_FORMAT", "xml")], None).contains("is not text or json"));
        assert!(err(&[URL, ("RUST_LOG", "info,[")], None).contains("RUST_LOG"));
        assert!(err(&[URL], Some("concurency = 3")).contains("unknown field `concurency`"));
        assert!(err(&[URL], Some("concurrency = \"3\"")).contains("config file"));
        assert!(err(&[URL], Some("claim_batch = 0"))
            .contains("claim_batch (config file): 0 is out of range"));
    }

    #[test]
    fn debug_hides_the_password() {
        let c = load(&[URL], None).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("postgres://w:***@127.0.0.1:5432/flowtrack"),
            "{shown}"
        );
        assert_eq!(
            redact_url("postgres://127.0.0.1/db"),
            "postgres://127.0.0.1/db"
        );
        assert_eq!(
            redact_url("host=x password=y user=z"),
            "host=x password=*** user=z"
        );
        assert_eq!(
            redact_url("postgres:///db?host=/run&password=p&user=u"),
            "postgres:///db?host=/run&password=***&user=u"
        );
    }
}
