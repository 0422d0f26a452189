//! The worker's connection pool. Every database call goes through it, so a
//! restarted Postgres costs the calls in flight, not the process.

pub use deadpool_postgres::{Client, Pool};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio_postgres::NoTls;

/// A pool of at most `size` connections to `url`. Connections are made on
/// first use and checked before reuse, so a broken one is replaced.
pub fn pool(url: &str, size: usize) -> Result<Pool, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("DATABASE_URL: {e}"))?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| format!("connection pool: {e}"))
}
