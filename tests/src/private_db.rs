//! A database of its own in the test cluster, migrated from `sql/`, for
//! tests that move global state (a watermark, retention with time travel)
//! which the tests sharing the main database would otherwise feel. It is not
//! pg_cron's database, so pg_cron is absent there and nothing runs in it
//! behind the test's back.

use tokio_postgres::Client;

use crate::notices::{connect_collecting, Notice, Notices};

/// A migrated private database; dropped when [`PrivateDb::drop_now`] runs.
pub struct PrivateDb {
    pub name: String,
    pub url: String,
    pub db: Client,
    notices: Notices,
}

impl PrivateDb {
    /// Creates `ft_<tag>_<pid>` (dropping a leftover), migrates it, and keeps
    /// every NOTICE the migrations raised.
    pub async fn create(tag: &str) -> Self {
        // Migrations also touch cluster-wide catalogs (roles and their
        // settings); two at once fail with "tuple concurrently updated".
        static MIGRATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _turn = MIGRATING.lock().await;
        let admin = crate::connect().await;
        let name = format!("ft_{tag}_{}", std::process::id());
        // One statement per call: neither may run inside a transaction block.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        let url = std::env::var("FLOWTRACK_TEST_DATABASE_URL")
            .expect("run these tests with ./dev test")
            .replacen("/flowtrack?", &format!("/{name}?"), 1);
        let (mut db, notices) = connect_collecting(&url).await;
        let dir = std::env::var("FLOWTRACK_TEST_SQL_DIR").expect("run these tests with ./dev test");
        flowtrack_worker::migrate::run(&mut db, std::path::Path::new(&dir))
            .await
            .unwrap_or_else(|e| panic!("migrate {name}: {e}"));
        PrivateDb {
            name,
            url,
            db,
            notices,
        }
    }

    /// The notices the migrations (and anything since) raised.
    pub fn notices(&self) -> Vec<Notice> {
        self.notices.seen()
    }

    /// Drops the database (its own connections first).
    pub async fn drop_now(self) {
        drop(self.db);
        let admin = crate::connect().await;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap_or_else(|e| panic!("drop database {}: {e}", self.name));
    }
}
