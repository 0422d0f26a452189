//! `flowtrack-worker run` performs side effects (the service);
//! `flowtrack-worker status` shows the queue; `flowtrack-worker migrate`
//! applies `sql/`. Exit codes: 0 done, 1 failed, 2 bad usage or configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use flowtrack_worker::config::{self, ConfigError, Loader, EXIT_CONFIG};
use tokio_postgres::NoTls;

const USAGE: &str = "\
usage: flowtrack-worker run     [--config FILE]
       flowtrack-worker status  [--json] [--config FILE]
       flowtrack-worker migrate [--dir DIR] [--config FILE]
       flowtrack-worker help";

/// Why the command failed: usage/configuration (exit 2) or at run time (exit 1).
enum Failure {
    Usage(String),
    Runtime(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(e.0)
    }
}

/// The command line after the subcommand: flags with a value, and switches.
struct Args {
    config: Option<String>,
    dir: Option<String>,
    json: bool,
}

fn parse(args: &[String], allowed: &[&str]) -> Result<Args, Failure> {
    let mut parsed = Args {
        config: None,
        dir: None,
        json: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if !allowed.contains(&flag) {
            return Err(Failure::Usage(format!(
                "unexpected argument \"{arg}\"\n{USAGE}"
            )));
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| Failure::Usage(format!("{flag} needs a value\n{USAGE}")))
        };
        match flag {
            "--config" => parsed.config = Some(value()?),
            "--dir" => parsed.dir = Some(value()?),
            "--json" if inline.is_none() => parsed.json = true,
            _ => {
                return Err(Failure::Usage(format!(
                    "unexpected argument \"{arg}\"\n{USAGE}"
                )))
            }
        }
    }
    Ok(parsed)
}

fn loader_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, Failure> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(15), connecting)
        .await
        .map_err(|_| Failure::Runtime("cannot connect to DATABASE_URL: timed out".into()))?
        .map_err(|e| Failure::Runtime(format!("cannot connect to DATABASE_URL: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("database connection closed: {e}");
        }
    });
    Ok(client)
}

async fn migrate(args: &[String]) -> Result<(), Failure> {
    let args = parse(args, &["--dir", "--config"])?;
    let text = config::read_file(args.config.as_deref())?;
    let url = Loader::new(&loader_env, text.as_deref())?.database_url()?;
    let dir = PathBuf::from(args.dir.unwrap_or_else(|| "sql".into()));
    let mut client = connect(&url).await?;
    let report = flowtrack_worker::migrate::run(&mut client, &dir)
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    for line in &report.applied {
        println!("applied {line}");
    }
    println!(
        "{} applied, {} already up to date",
        report.applied.len(),
        report.already
    );
    Ok(())
}

async fn status(args: &[String]) -> Result<(), Failure> {
    use flowtrack_worker::status;
    let args = parse(args, &["--json", "--config"])?;
    let text = config::read_file(args.config.as_deref())?;
    let url = Loader::new(&loader_env, text.as_deref())?.database_url()?;
    let client = connect(&url).await?;
    let rows = flowtrack_worker::claim::queue_status(&client)
        .await
        .map_err(|e| Failure::Runtime(format!("internal.queue_status(): {e}")))?;
    let summary = status::summarize(&rows);
    if args.json {
        println!("{}", status::render_json(&summary));
    } else {
        print!("{}", status::render_text(&summary));
    }
    Ok(())
}

async fn run(args: &[String]) -> Result<(), Failure> {
    let args = parse(args, &["--config"])?;
    let config = config::from_process(args.config.as_deref())?;
    flowtrack_worker::logging::init(config.log_format, &config.log_filter);
    flowtrack_worker::runtime::run(config).await.map_err(|e| {
        tracing::error!(error = %e, "worker stopped with an error");
        Failure::Runtime(e)
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str);
    if matches!(command, Some("help" | "--help" | "-h")) {
        println!("{USAGE}\n\n{}", config::ENV_HELP);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flowtrack-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rest = args.get(1..).unwrap_or_default();
    let result = runtime.block_on(async {
        match command {
            Some("migrate") => migrate(rest).await,
            Some("status") => status(rest).await,
            Some("run") => run(rest).await,
            Some(other) => Err(Failure::Usage(format!(
                "unknown command \"{other}\"\n{USAGE}"
            ))),
            None => Err(Failure::Usage(USAGE.into())),
        }
    });
    // Do not wait for side effects still on blocking threads (aborted jobs
    // whose leases were released): their results are no longer wanted.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("flowtrack-worker: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("flowtrack-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
