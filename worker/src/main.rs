//! `flowtrack-worker migrate` applies `sql/`; `flowtrack-worker run` performs
//! side effects. Both read `DATABASE_URL`.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_postgres::NoTls;

const USAGE: &str =
    "usage: flowtrack-worker migrate [--dir DIR] | run   (DATABASE_URL must be set)";

async fn connect() -> Result<tokio_postgres::Client, String> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set".to_string())?;
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to DATABASE_URL: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("database connection closed: {e}");
        }
    });
    Ok(client)
}

async fn migrate(args: &[String]) -> Result<(), String> {
    let dir = match args {
        [] => PathBuf::from("sql"),
        [flag, dir] if flag == "--dir" => PathBuf::from(dir),
        _ => return Err(USAGE.into()),
    };
    let mut client = connect().await?;
    let report = flowtrack_worker::migrate::run(&mut client, &dir)
        .await
        .map_err(|e| e.to_string())?;
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

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("migrate") => migrate(&args[1..]).await,
        Some("run") => match std::env::var("DATABASE_URL") {
            Ok(url) => flowtrack_worker::run::run(&url).await,
            Err(_) => Err("DATABASE_URL is not set".into()),
        },
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowtrack-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
